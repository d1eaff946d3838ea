"""WorldModel-v0 speed: frames/s by batch, step latency, text-event latency, flatness over 2,000 steps.

    python benchmarks/bench_env.py                          # default model size, untrained weights
    python benchmarks/bench_env.py --checkpoint PATH        # a trained generator checkpoint

Speed does not depend on the weights, so without a checkpoint the script writes one with the
default configs (dfworld/configs/model/default.yaml as block_causal, codec/default.yaml) and
random weights. A step generates one chunk (4 frames): 4 denoising passes, 1 cache write, decode,
and the probe-based reward.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import psutil
import torch

from dfworld.configuration import build, compose_group
from dfworld.envs.world_model import WorldModelVectorEnv
from dfworld.model.codec import CodecConfig, LatentCodec
from dfworld.model.loading import TextConfig, write_generator_checkpoint
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.world.events import all_event_texts


def random_generator_checkpoint(path: str) -> str:
    """A generator checkpoint of the default shapes with random weights (speed figures without the shipped one)."""
    model_cfg = build(TransformerConfig, {**compose_group("model", "default"), "attention": "block_causal"})
    codec = LatentCodec(build(CodecConfig, compose_group("codec", "default")))
    text = TextConfig(encoder="vocab", max_tokens=model_cfg.text_tokens, dim=model_cfg.text_dim)
    return str(write_generator_checkpoint(path, VideoTransformer(model_cfg), codec, text))


def timed_steps(env: WorldModelVectorEnv, n: int, rng: np.random.Generator, texts=None, event_rows: int | None = None) -> list[float]:
    """Wall times of n steps: actions, or with `texts` a text event in the first `event_rows` rows (all by default)."""
    out = []
    for i in range(n):
        actions = list(rng.integers(0, 5, env.num_envs))
        if texts is not None:
            for r in range(env.num_envs if event_rows is None else event_rows):
                actions[r] = texts[(i + r) % len(texts)]
        t0 = time.perf_counter()
        env.step(actions)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="generator checkpoint (default: untrained default-size model)")
    parser.add_argument("--batches", default="1,16,64", help="batch sizes to time")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per batch size")
    parser.add_argument("--long", type=int, default=2000, help="steps of the flatness episode (batch 1; 0 skips it)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    ckpt = args.checkpoint or random_generator_checkpoint(os.path.join(tmp.name, "ckpt"))
    rng = np.random.default_rng(0)
    texts = all_event_texts("train")
    print(f"checkpoint: {args.checkpoint or 'untrained, default model and codec configs'}; device {args.device}, threads {args.threads}")
    print("\n| batch | env steps/s | frames/s | step p50 | step p95 |\n|---|---|---|---|---|")
    events = []
    for B in [int(b) for b in args.batches.split(",")]:
        env = WorldModelVectorEnv(B, ckpt, device=args.device, backend=args.backend, threads=args.threads)
        env.reset(seed=0)
        timed_steps(env, 3, rng)  # warm-up
        t = timed_steps(env, args.steps, rng)
        chunk = env.core.chunk
        p50, p95 = np.percentile(t, 50), np.percentile(t, 95)
        print(f"| {B} | {B / np.mean(t):,.1f} | {B * chunk / np.mean(t):,.1f} | {p50 * 1e3:.1f} ms | {p95 * 1e3:.1f} ms |")
        # text-event steps (re-encode + re-cache + chunk): one row's event (a re-cache runs on that row alone), every row's
        one, every = (np.percentile(timed_steps(env, args.steps, rng, texts, n), 50) for n in (1, None))
        events.append(f"| {B} | {p50 * 1e3:.1f} ms | {one * 1e3:.1f} ms ({one / p50:.2f}x) | {every * 1e3:.1f} ms ({every / p50:.2f}x) |")
        env.close()
    print("\n| batch | action step p50 | text event in one row | text event in every row |\n|---|---|---|---|")
    print("\n".join(events))

    if args.long <= 0:
        tmp.cleanup()
        return
    env = WorldModelVectorEnv(1, ckpt, device=args.device, backend=args.backend, threads=args.threads)
    env.reset(seed=0)
    proc = psutil.Process(os.getpid())
    times, mem = [], []
    for i in range(args.long):
        t0 = time.perf_counter()
        env.step([int(rng.integers(0, 5))])
        times.append(time.perf_counter() - t0)
        mem.append(proc.memory_info().rss / 2**20)
    first, last = times[20:220], times[-200:]
    print(f"\n{args.long}-step episode, batch 1: median step {statistics.median(first) * 1e3:.1f} ms (steps 20-220) vs "
          f"{statistics.median(last) * 1e3:.1f} ms (last 200): ratio {statistics.median(last) / statistics.median(first):.3f}; "
          f"RSS {np.mean(mem[20:220]):.0f} MB vs {np.mean(mem[-200:]):.0f} MB: ratio {np.mean(mem[-200:]) / np.mean(mem[20:220]):.3f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
