"""The roofline of a world-model step: FLOPs per generated frame, this machine's peak, each part's utilisation.

    python benchmarks/bench_roofline.py                                  # shipped default, 2 threads, batch 1,16,64
    python benchmarks/bench_roofline.py --checkpoint PATH --batches 1,16 --threads 1,2

A step of `WorldModel-v0` generates one chunk (K frames) per row: the transformer's denoising passes
and its cache write (`Rollout.generate`), the codec decoder on the K frames, and the probes that
read the reward from each row's last decoded frame (as `CoinCounter.update` does). This script

1. counts each part's FLOPs with `torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions;
   a multiply-add is 2 FLOPs; the attention products from the shapes, which it does not count on CPU), per generated frame; for the transformer (every
   denoising pass and the cache write) also the share of the text's projections (its pooled
   condition and cross-attention keys and values, computed once per chunk) and the shares by operator;
2. measures the machine's peak per thread count: a large fp32 matmul (`--matmul`); and at batch B
   the transformer's widest matmul alone (the MLP's first linear over the chunk's tokens: what a
   matmul of the model's own shape, D = 128 deep, reaches) and the decoder's costliest convolution
   alone, at the shapes they run at;
3. times each part at each batch on torch eager and ONNX Runtime (interleaved rounds, one call of each
   measure per round, medians after a warm-up round) and reads its achieved GFLOP/s against the matmul
   peak of the same thread count.

The probes are numpy and OpenCV code without matmuls: they get a time, not a utilisation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dfworld.model.loading import load_bundle
from dfworld.rollout import Rollout
from dfworld.runtime import OrtRollout, export_onnx, load_onnx
from dfworld.shipped import shipped_checkpoint
from dfworld.world.config import WorldConfig
from dfworld.world.probes import read_frame

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_onnx import interleaved_medians  # noqa: E402


def median_seconds(fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int, threads: int, steps: int) -> float:
    """GFLOP/s of an n x n x n fp32 matmul on `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: a @ b, steps) / 1e9


def flops(fn) -> tuple[int, dict[str, int]]:
    """Total FLOPs of fn() and the FLOPs by operator."""
    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def costliest_conv(decoder: torch.nn.Module, latents: torch.Tensor, decode) -> tuple[torch.nn.Conv2d, torch.Tensor, int]:
    """The decoder's conv with the most FLOPs at this input, its input, and its FLOPs."""
    seen: list[tuple[int, torch.nn.Conv2d, torch.Tensor]] = []

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        seen.append((2 * output.numel() * module.in_channels // module.groups * k, module, inputs[0].detach().clone()))

    handles = [m.register_forward_hook(hook) for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        decode(latents)
    finally:
        for h in handles:
            h.remove()
    f, module, x = max(seen, key=lambda s: s[0])
    return module, x, f


def text_kv_flops(cfg, rows: int) -> int:
    """FLOPs of the prompt's projection and cross-attention keys and values, computed once per chunk
    (`VideoTransformer.condition_text`; before, once per pass: levels + 1 times)."""
    return 2 * cfg.text_tokens * (cfg.text_dim * cfg.dim + cfg.depth * cfg.dim * 2 * cfg.dim) * rows


def attention_flops(cfg, rows: int, passes: int) -> int:
    """FLOPs of the self- and cross-attention products (Q K^T and A V) of one chunk's passes, with a full cache:
    FlopCounterMode does not count SDPA's CPU kernel. At the head width the model needs: the exported graphs
    match the sink by rotating its keys (dfworld.model.fused_attention); the eager path's doubled head width
    (both rotations of the query in one call) is its own overhead, not the model's work."""
    T = cfg.chunk_frames * cfg.tokens_per_frame
    keys = (cfg.sink_frames + cfg.window_frames) * cfg.tokens_per_frame + T
    width = cfg.head_dim
    self_attn = 2 * T * keys * 2 * width * cfg.heads
    cross = 2 * T * cfg.text_tokens * 2 * cfg.head_dim * cfg.heads
    return (self_attn + cross) * cfg.depth * passes * rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="generator checkpoint (default: the shipped default)")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--threads", default="1,2", help="thread counts of the peak; the parts are timed at the last")
    parser.add_argument("--matmul", type=int, default=1024, help="side of the peak's fp32 matmul")
    parser.add_argument("--steps", type=int, default=10, help="timed calls per measure (medians)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--decoder", default="full", choices=("full", "fast"), help="the codec decoder measured")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    ckpt = args.checkpoint or str(shipped_checkpoint("default"))
    bundle = load_bundle(ckpt)
    gen, codec, cfg = bundle.generator, bundle.codec.use_decoder(args.decoder), bundle.generator.config
    K, levels = cfg.chunk_frames, len(bundle.sampler.timesteps)
    tmp = tempfile.TemporaryDirectory()
    onnx_dir = export_onnx(bundle, Path(tmp.name) / "onnx")

    # 2. peaks, per thread count
    peaks = {t: matmul_peak(args.matmul, t, args.steps) for t in threads}
    torch.set_num_threads(threads[-1])
    world = WorldConfig(height=codec.config.image_size, width=codec.config.image_size)
    print(f"checkpoint {ckpt}; {sum(p.numel() for p in gen.parameters()) / 1e6:.2f} M generator parameters; "
          f"{levels} levels + 1 cache write per chunk of {K} frames; {args.decoder} decoder; torch {torch.__version__}")
    print("\n| threads | fp32 matmul peak (" + f"{args.matmul}^3) |\n|---|---|")
    for t in threads:
        print(f"| {t} | {peaks[t]:.1f} GFLOP/s |")

    report = {"checkpoint": ckpt, "peaks_gflops": peaks, "batches": {}}
    print("\n| batch | part | GFLOP per frame | torch ms / chunk | torch util | ORT ms / chunk | ORT util |\n|---|---|---|---|---|---|---|")
    for B in [int(b) for b in args.batches.split(",")]:
        actions = torch.randint(0, 5, (B, K), generator=torch.Generator().manual_seed(0))
        onnx_model, onnx_decoder = load_onnx(onnx_dir, bundle, threads=threads[-1], batch=B)  # as the envs open them
        roll = {"torch": Rollout(gen, bundle.conditioner, B, bundle.sampler),
                "onnx": OrtRollout(onnx_model, bundle.conditioner, B, bundle.sampler)}
        for r in roll.values():
            r.reset(list(range(B)), ["the night begins"] * B, list(range(B)))
        # 1. FLOPs of each part
        with torch.inference_mode():
            step_flops, by_op = flops(lambda: roll["torch"].generate(actions))
            attn = attention_flops(cfg, B, levels + 1)
            step_flops += attn
            latents = roll["torch"].generate(actions)
            dec_flops, _ = flops(lambda: codec.decode(latents))
            conv, conv_in, conv_flops = costliest_conv(codec.fast if args.decoder == "fast" else codec.vae.decoder, latents, codec.decode)
        frames_u8 = codec.decode(latents).reshape(-1, world.height, world.width, 3).numpy()
        # the transformer's widest matmul alone, at its shape: the MLP's first linear over the chunk's tokens
        mlp = torch.nn.Linear(cfg.dim, int(cfg.dim * cfg.mlp_ratio))
        mlp_in = torch.randn(B * K * cfg.tokens_per_frame, cfg.dim)
        mlp_flops = 2 * mlp_in.shape[0] * cfg.dim * mlp.out_features
        kv = text_kv_flops(cfg, B)
        # 3. times: every measure one call per round, so a change of load hits them alike
        with torch.inference_mode():
            warm = {"step torch": lambda: roll["torch"].generate(actions),
                                     "step onnx": lambda: roll["onnx"].generate(actions),
                                     "decode torch": lambda: codec.decode(latents),
                                     "decode onnx": lambda: onnx_decoder.decode(latents),
                                     "conv": lambda: conv(conv_in),
                                     "mlp": lambda: mlp(mlp_in),
                    "probes": lambda: [read_frame(f, world) for f in frames_u8[K - 1 :: K]]}  # the env reads each row's last frame
            for fn in warm.values():
                fn()
            t = interleaved_medians(warm, args.steps)
        t_step, t_dec = {"torch": t["step torch"], "onnx": t["step onnx"]}, {"torch": t["decode torch"], "onnx": t["decode onnx"]}
        t_conv, t_probe, t_mlp = t["conv"], t["probes"], t["mlp"]
        peak = peaks[threads[-1]]
        n = B * K

        def util(f, s):
            return f"{f / s / 1e9 / peak:.0%}"

        rows = [("transformer (passes + cache write)", step_flops, t_step),
                ("  of it: attention products (counted from the shapes)", attn, None),
                ("  of it: the text's projections (once per chunk)", kv, None),
                ("  its widest matmul alone (torch; the MLP's [B T, D] x [D, 4 D])", mlp_flops, {"torch": t_mlp}),
                ("decoder", dec_flops, t_dec),
                ("  costliest conv alone (torch)", conv_flops, {"torch": t_conv}),
                ("probes (reward)", 0, {"torch": t_probe})]
        for name, f, t in rows:
            cells = []
            for b in ("torch", "onnx"):
                s = (t or {}).get(b)
                cells += ["-", "-"] if s is None else [f"{s * 1e3:,.1f}", util(f, s) if f else "-"]
            print(f"| {B} | {name} | {f / n / 1e9:.3f} | " + " | ".join(cells) + " |")
        by_op["attention products (shapes)"] = attn
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:4]
        print(f"| {B} | transformer by operator | " + ", ".join(f"{k} {v / step_flops:.0%}" for k, v in top) + " | | | | |")
        report["batches"][B] = {"flops": {"transformer": step_flops, "attention": attn, "text_kv": kv, "decoder": dec_flops, "conv": conv_flops},
                                "seconds": {"step": t_step, "decoder": t_dec, "conv": t_conv, "mlp": t_mlp, "probes": t_probe},
                                "transformer_by_op": by_op}
    if args.out:
        import json

        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    tmp.cleanup()


if __name__ == "__main__":
    main()
