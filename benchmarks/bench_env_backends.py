"""The world-model env as a user makes it, on torch and on ONNX Runtime, each decoder: frames/s at batch 1 and 64.

    python benchmarks/bench_env_backends.py                                 # shipped default, the envs' default threads
    python benchmarks/bench_env_backends.py --threads 2 --batches 1,16,64 --configs torch:full,onnx:full,onnx:fast
    python benchmarks/bench_env_backends.py --configs onnx:full,onnx:full:1000/500,onnx:fast:1000   # sampler levels

`gym.make("dfworld/WorldModel-v0", backend=..., decoder=...)` at batch 1 and `gym.make_vec(...,
num_envs=N, ...)` above it, with the envs' own `threads` unless `--threads` is given: what an
agent's loop gets (the chunk step, decoding the chunk, the probe reward, the wrappers). The
configurations (backend:decoder; by default every backend with the full decoder, and with the
fast one where the checkpoint carries it; a third field, levels joined by '/', overrides the
sampler's schedule as `sampler={"timesteps": ...}` does) are stepped in turn, one random action step of each
per round (medians), so a change of machine load hits all alike; ratios are against the first.
`benchmarks/bench_onnx.py` times the chunk step alone.
"""

from __future__ import annotations

import argparse
import os
import sys

import gymnasium as gym
import numpy as np

import dfworld  # noqa: F401  (registers the envs)
from dfworld.model.loading import load_bundle
from dfworld.shipped import shipped_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_onnx import interleaved_medians  # noqa: E402

BACKENDS = ("torch", "onnx")


def make(B: int, backend: str, decoder: str, checkpoint: str, threads: int | None, levels: str = ""):
    kw = {"checkpoint": checkpoint, "backend": backend, "decoder": decoder, **({"threads": threads} if threads else {})}
    if levels:
        kw["sampler"] = {"timesteps": [float(t) for t in levels.split("/")]}
    return gym.make("dfworld/WorldModel-v0", **kw) if B == 1 else gym.make_vec("dfworld/WorldModel-v0", num_envs=B, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="generator checkpoint (default: the shipped default)")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--threads", type=int, default=0, help="the envs' threads (0: their default)")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds at batch 1 (a quarter, at least 3, above)")
    parser.add_argument("--configs", default="", help="backend:decoder[:levels],... (default: each backend, full and where carried "
                                                      "fast; levels e.g. 1000/500, default the checkpoint's)")
    args = parser.parse_args()
    ckpt = args.checkpoint or str(shipped_checkpoint("default"))
    if args.configs:
        configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    else:
        decoders = ("full", "fast") if load_bundle(ckpt).codec.fast is not None else ("full",)
        configs = [(b, d) for d in decoders for b in BACKENDS]
    names = [":".join(c) for c in configs]
    print(f"checkpoint {ckpt}; threads {args.threads or 'the envs default'}\n")
    print("| batch | " + " | ".join(f"{n} step | {n} frames/s" for n in names) + " | " + " | ".join(f"{n} vs {names[0]}" for n in names[1:])
          + " |\n|---|" + "---|" * (3 * len(names) - 1))
    for B in [int(b) for b in args.batches.split(",")]:
        envs = {n: make(B, *c[:2], ckpt, args.threads or None, *c[2:]) for n, c in zip(names, configs)}
        rng = np.random.default_rng(0)

        def step(env, B=B):
            return env.step(rng.integers(0, 5, B) if B > 1 else int(rng.integers(0, 5)))

        for env in envs.values():
            env.reset(seed=0)
            for _ in range(2):  # warm-up
                frames = step(env)[4]["frames"]
        K = frames.shape[-4]  # frames per step: [K, H, W, 3], or [B, K, H, W, 3]

        t = interleaved_medians({n: (lambda e=e: step(e)) for n, e in envs.items()}, args.steps if B == 1 else max(3, args.steps // 4))
        print(f"| {B} | " + " | ".join(f"{t[n] * 1e3:,.1f} ms | {B * K / t[n]:,.1f}" for n in names) + " | "
              + " | ".join(f"{t[names[0]] / t[n]:.2f}x" for n in names[1:]) + " |")
        for env in envs.values():
            env.close()


if __name__ == "__main__":
    main()
