"""Model figures: teacher and student forward throughput, and a cached student step over 1,000 chunks.

    python benchmarks/bench_model.py                 # the default model config, CPU
    python benchmarks/bench_model.py --model large --device cuda
    python benchmarks/bench_model.py patch=2 tubelet=4   # tubelet tokens

The flatness check runs the block-causal generator chunk after chunk with its static KV cache
(sink + rolling window) and compares the cost and the memory of the last 100 chunks with the
first 100 after warm-up: with a static cache both ratios should stay near 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psutil
import torch

from dfworld.configuration import build, compose_group
from dfworld.model.kv_cache import KVCache
from dfworld.model.transformer import TransformerConfig, VideoTransformer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def inputs(cfg: TransformerConfig, B: int, F: int, device):
    x = torch.randn(B, F, cfg.latent_channels, cfg.latent_size, cfg.latent_size, device=device)
    sigma = torch.rand(B, F, device=device)
    text = torch.randn(B, 8, cfg.text_dim, device=device)
    mask = torch.ones(B, 8, dtype=torch.bool, device=device)
    actions = torch.randint(0, cfg.n_actions, (B, F), device=device)
    return x, sigma, text, mask, actions


@torch.inference_mode()
def throughput(model: VideoTransformer, B: int, F: int, device, repeats: int = 10) -> float:
    """Frames per second of a full-sequence forward of B clips of F frames."""
    args = inputs(model.config, B, F, device)
    for _ in range(2):
        model(*args)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(*args)
        sync(device)
        times.append(time.perf_counter() - t0)
    return B * F / statistics.median(times)


@torch.inference_mode()
def cached_steps(model: VideoTransformer, chunks: int, device, B: int = 1) -> tuple[list[float], list[float]]:
    """Seconds and process memory (MB) of each cached chunk step (one forward + cache write)."""
    cfg = model.config
    cache = KVCache(cfg, B, device)
    x, sigma, text, mask, actions = inputs(cfg, B, cfg.chunk_frames, device)
    proc = psutil.Process(os.getpid())
    times, mem = [], []
    for c in range(chunks):
        start = torch.full((B,), c * cfg.chunk_frames, device=device)
        sync(device)
        t0 = time.perf_counter()
        _, (k, v) = model(x, sigma, text, mask, actions, start_frame=start, cache=cache)
        cache.update(start, k, v)
        sync(device)
        times.append(time.perf_counter() - t0)
        mem.append(torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else proc.memory_info().rss / 2**20)
    return times, mem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model config name in dfworld/configs/model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--chunks", type=int, default=1000, help="chunks in the flatness run")
    parser.add_argument("overrides", nargs="*", help="overrides of the model config, e.g. patch=2 tubelet=4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fields = compose_group("model", args.model, [f"model.{o}" for o in args.overrides])
    base = build(TransformerConfig, fields)
    teacher = VideoTransformer(base).to(device).eval()
    student = VideoTransformer(build(TransformerConfig, {**fields, "attention": "block_causal"})).to(device).eval()
    params = sum(p.numel() for p in teacher.parameters())
    print(f"model {args.model} {' '.join(args.overrides)}: {params / 1e6:.2f} M parameters, patch {base.patch} x tubelet {base.tubelet}, "
          f"{base.tokens_per_frame} tokens/frame, device {device}, threads {args.threads}")
    print("\n| forward (no grad) | batch x frames | frames/s |\n|---|---|---|")
    for B, F in [(1, 16), (16, 16)]:
        print(f"| teacher (full attention) | {B} x {F} | {throughput(teacher, B, F, device):,.0f} |")
        print(f"| student (block-causal, whole sequence) | {B} x {F} | {throughput(student, B, F, device):,.0f} |")
    times, mem = cached_steps(student, args.chunks, device)
    first, last = times[10:110], times[-100:]
    r_t = statistics.median(last) / statistics.median(first)
    r_m = statistics.mean(mem[-100:]) / statistics.mean(mem[10:110])
    print(f"\nCached student step (1 chunk of {base.chunk_frames} frames, batch 1) over {args.chunks} chunks:")
    print(f"- median step, chunks 10-110: {statistics.median(first) * 1e3:.2f} ms; last 100: {statistics.median(last) * 1e3:.2f} ms; "
          f"ratio last/first {r_t:.3f}")
    memory = "CUDA allocated" if device.type == "cuda" else "process RSS"
    print(f"- memory ({memory}), chunks 10-110: {statistics.mean(mem[10:110]):.1f} MB; last 100: {statistics.mean(mem[-100:]):.1f} MB; "
          f"ratio {r_m:.3f}")


if __name__ == "__main__":
    main()
