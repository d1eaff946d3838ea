"""What ONNX Runtime's settings give on the chunk step: optimisation level, spinning, memory arena; and ORT's profile.

    python benchmarks/bench_ort_options.py                         # shipped default, batch 1 and 64, 2 threads
    python benchmarks/bench_ort_options.py --profile outputs/ort   # also ORT's own profile of the chunk graph

Every setting opens its own sessions on one export of the checkpoint; the settings are then timed
in turn, one chunk step (`OrtRollout.generate`: every denoising level and the cache write in one
graph) of each per round, medians, so a change of machine load hits them alike. The first row
is the envs' configuration (`dfworld.runtime.session.session_options` defaults). With
`--profile`, the default settings run again with ORT's profiler on, and the chunk graph's
operators are summed by type (share of the kernel time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from dfworld.model.loading import load_bundle
from dfworld.runtime import OrtRollout, export_onnx, load_onnx
from dfworld.shipped import shipped_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_onnx import interleaved_medians  # noqa: E402

SETTINGS = {
    "envs' default (all optimisations, no spinning)": {},
    "spinning (ORT's own default)": {"session.intra_op.allow_spinning": "1"},
    "optimisation: extended": {"graph_optimization_level": "extended"},
    "optimisation: basic": {"graph_optimization_level": "basic"},
    "no memory pattern": {"enable_mem_pattern": False},
    "no CPU arena": {"enable_cpu_mem_arena": False},
}


def ready_rollout(onnx_model, bundle, B: int) -> OrtRollout:
    r = OrtRollout(onnx_model, bundle.conditioner, B, bundle.sampler)
    r.reset(list(range(B)), ["the night begins"] * B, list(range(B)))
    return r


def profile_summary(path: str) -> list[tuple[str, float]]:
    """Share of kernel time per operator type in an ORT profile (JSON trace events)."""
    by_op: dict[str, float] = defaultdict(float)
    for ev in json.loads(Path(path).read_text()):
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            by_op[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0)
    total = sum(by_op.values()) or 1.0
    return sorted(((op, d / total) for op, d in by_op.items()), key=lambda x: -x[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="generator checkpoint (default: the shipped default)")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed rounds at batch 1 (a quarter, at least 3, at larger batches)")
    parser.add_argument("--profile", default=None, help="directory for ORT's profile of the default settings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = args.checkpoint or str(shipped_checkpoint("default"))
    bundle = load_bundle(ckpt)
    tmp = tempfile.TemporaryDirectory()
    onnx_dir = export_onnx(bundle, Path(tmp.name) / "onnx")
    models = {name: load_onnx(onnx_dir, bundle, threads=args.threads, tuning=tuning)[0] for name, tuning in SETTINGS.items()}
    K = bundle.generator.config.chunk_frames
    print(f"checkpoint {ckpt}; threads {args.threads}\n\n| setting | batch | chunk step | frames/s | vs default |\n|---|---|---|---|---|")
    for B in [int(b) for b in args.batches.split(",")]:
        actions = torch.randint(0, 5, (B, K), generator=torch.Generator().manual_seed(0))
        rollouts = {name: ready_rollout(m, bundle, B) for name, m in models.items()}
        fns = {name: (lambda r=r: r.generate(actions)) for name, r in rollouts.items()}
        for fn in fns.values():
            fn()
        t = interleaved_medians(fns, args.steps if B == 1 else max(3, args.steps // 4))
        base = t[next(iter(SETTINGS))]
        for name, s in t.items():
            print(f"| {name} | {B} | {s * 1e3:,.1f} ms | {B * K / s:,.1f} | {base / s:.2f}x |")
    if args.profile:
        out = Path(args.profile)
        out.mkdir(parents=True, exist_ok=True)
        tuning = {"enable_profiling": True, "profile_file_prefix": str(out / "chunk")}
        model, _ = load_onnx(onnx_dir, bundle, threads=args.threads, tuning=tuning)
        for B in [int(b) for b in args.batches.split(",")]:
            r = ready_rollout(model, bundle, B)
            for _ in range(3):
                r.generate(torch.zeros(B, K, dtype=torch.long))
        for size, session in model.chunk.sessions.items():  # every session the chunk graph ran in writes its own profile
            path = session.end_profiling()
            print(f"\nORT profile of the chunk graph ({'any batch' if size is None else f'batch {size}'}: {path}), kernel time by operator type:")
            for op, share in profile_summary(path)[:12]:
                print(f"- {op}: {share:.1%}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
