"""ONNX Runtime against torch eager and torch.compile: the chunk step and env frames/s, by batch.

    python benchmarks/bench_onnx.py                       # default model size, untrained weights, 2 threads
    python benchmarks/bench_onnx.py --checkpoint PATH     # a trained generator checkpoint

Speed does not depend on the weights, so without a checkpoint the script writes one with the
default configs (as `bench_env.py` does). All three backends run in this one process with the
same thread count (torch.set_num_threads and ORT intra_op_num_threads):

- chunk step: `Rollout.generate` / `OrtRollout.generate` (per-row noise, 4 denoising levels, the cache
  write, the history), median over the timed steps after warm-up;
- env: `WorldModelVectorEnv.step` with actions (the chunk step, decoding 4 frames per row, the
  probe reward); frames/s = batch x 4 / median step.

Every backend is built and warmed up first (torch.compile compiles the generator, and in the
env also the codec decoder, once per batch size; the warm-up times are printed), then the
backends are timed in turn, one call each per round, so that a change of machine load hits all
of them alike. Ratios are speedups: eager time / ORT time, compile time / ORT time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial

import numpy as np
import torch

from dfworld.envs.world_model import WorldModelVectorEnv
from dfworld.model.loading import load_bundle
from dfworld.rollout import Rollout
from dfworld.runtime import OrtRollout, export_onnx, load_onnx

# the same untrained default-size checkpoint as bench_env.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_env import random_generator_checkpoint

BACKENDS = ("eager", "compile", "onnx")


def interleaved_medians(fns: dict, steps: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn (one call of each per round).

    Interleaving keeps the comparison fair on a shared machine: a load change hits every backend alike.
    """
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def chunk_rollout(backend: str, bundle, onnx_model, B: int):
    if backend == "onnx":
        return OrtRollout(onnx_model, bundle.conditioner, B, bundle.sampler)
    generator = torch.compile(bundle.generator, dynamic=False) if backend == "compile" else bundle.generator
    return Rollout(generator, bundle.conditioner, B, bundle.sampler)


def random_step(env: WorldModelVectorEnv, rng: np.random.Generator) -> None:
    env.step(rng.integers(0, 5, env.num_envs))


def compile_env(env: WorldModelVectorEnv) -> None:
    core = env.core
    core.rollout.generator = torch.compile(core.rollout.generator, dynamic=False)
    core.codec.vae.decoder = torch.compile(core.codec.vae.decoder, dynamic=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="generator checkpoint (default: untrained default-size model)")
    parser.add_argument("--batches", default="1,16", help="batch sizes to time")
    parser.add_argument("--steps", type=int, default=30, help="timed steps at batch 1 (a quarter of them, at least 5, at larger batches)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each backend first (compilation happens here)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and ORT intra_op_num_threads")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="subset of eager,compile,onnx")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backends = args.backends.split(",")
    tmp = tempfile.TemporaryDirectory()
    ckpt = args.checkpoint or random_generator_checkpoint(os.path.join(tmp.name, "ckpt"))
    bundle = load_bundle(ckpt)
    t0 = time.perf_counter()
    onnx_dir = export_onnx(bundle, os.path.join(tmp.name, "onnx"))
    export_s = time.perf_counter() - t0
    onnx_model, _ = load_onnx(onnx_dir, bundle, threads=args.threads)
    params = sum(p.numel() for p in bundle.generator.parameters())
    print(f"checkpoint: {args.checkpoint or 'untrained, default model and codec configs'} ({params / 1e6:.2f} M generator parameters); "
          f"threads {args.threads}; torch {torch.__version__}; ONNX export {export_s:.1f} s")

    rows = []  # (measure, batch, {backend: seconds})
    K = bundle.generator.config.chunk_frames
    rng = np.random.default_rng(0)
    for B in [int(b) for b in args.batches.split(",")]:
        steps = args.steps if B == 1 else max(5, args.steps // 4)
        torch._dynamo.reset()
        actions = torch.randint(0, 5, (B, K), generator=torch.Generator().manual_seed(0))
        rollouts, envs = {}, {}
        for backend in backends:  # 1. build and warm up every backend (torch.compile compiles here)
            t0 = time.perf_counter()
            rollouts[backend] = r = chunk_rollout(backend, bundle, onnx_model, B)
            r.reset(list(range(B)), ["night falls"] * B, list(range(B)))
            for _ in range(args.warmup):
                r.generate(actions)
            envs[backend] = env = WorldModelVectorEnv(
                B, ckpt, backend="onnx" if backend == "onnx" else "torch", onnx_dir=onnx_dir if backend == "onnx" else None,
                threads=args.threads,
            )
            if backend == "compile":
                compile_env(env)
            env.reset(seed=0)
            for _ in range(args.warmup):
                random_step(env, rng)
            print(f"- warm-up, batch {B}, {backend}: {time.perf_counter() - t0:.1f} s")
        # 2. time them in turn
        rows.append(("chunk step", B, interleaved_medians({b: partial(r.generate, actions) for b, r in rollouts.items()}, steps)))
        rows.append(("env step (incl. decode)", B, interleaved_medians({b: partial(random_step, e, rng) for b, e in envs.items()}, steps)))
        for env in envs.values():
            env.close()

    head = " | ".join(f"{b}" for b in backends)
    print(f"\n| measure | batch | {head} | ORT speedup vs eager | ORT speedup vs compile |")
    print("|---" * (4 + len(backends)) + "|")
    for measure, B, s in rows:
        fps = {b: f" ({B * K / s[b]:,.1f} frames/s)" if measure.startswith("env") else "" for b in backends}
        cells = " | ".join(f"{s[b] * 1e3:,.1f} ms{fps[b]}" for b in backends)
        vs_eager = f"{s['eager'] / s['onnx']:.2f}x" if {"eager", "onnx"} <= s.keys() else "-"
        vs_compile = f"{s['compile'] / s['onnx']:.2f}x" if {"compile", "onnx"} <= s.keys() else "-"
        print(f"| {measure} | {B} | {cells} | {vs_eager} | {vs_compile} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
