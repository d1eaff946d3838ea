"""Training-step speed in fp32 and in bf16 autocast (`train.precision`), on the real codec and teacher stages.

    python benchmarks/bench_precision.py                  # default codec and model configs, CPU
    python benchmarks/bench_precision.py --steps 8 --threads 2

Builds a small clips data set, trains the codec for one step (a checkpoint for the teacher), then
times `stage.train_step` of the codec and of the teacher with precision fp32 and bf16 in turn, one
step of each per round, so both see the same machine load; medians over rounds. Also reports how far
the teacher's velocity on one fixed batch moves under bf16 (relative RMS difference against fp32).
Speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dfworld.configuration import build, compose_group
from dfworld.model.codec import CodecConfig
from dfworld.model.transformer import TransformerConfig
from dfworld.training.loop import Loop, TrainConfig, autocast
from dfworld.training.stages.codec import CodecStage, CodecStageConfig
from dfworld.training.stages.teacher import TeacherStage, TeacherStageConfig
from dfworld.world.datasets import ClipsConfig, write_clips


def time_steps(stage, rounds: int) -> dict[str, float]:
    """Median seconds of one train_step per precision, alternating fp32 and bf16 each round."""
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(rounds + 1):  # round 0 warms both paths up
        for precision in times:
            cfg = dataclasses.replace(stage.train, precision=precision)
            rng = torch.Generator().manual_seed(r)
            t0 = time.perf_counter()
            with autocast(cfg, stage.device):
                stage.train_step(100 + r, rng)
            if r:
                times[precision].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed rounds (one step per precision each)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--clips", type=int, default=64, help="clips in the scratch data set")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    write_clips(ClipsConfig(out=str(tmp / "clips"), n=args.clips), progress=False)

    codec_cfg = CodecStageConfig(
        clips=str(tmp / "clips"), codec=build(CodecConfig, compose_group("codec", "default")),
        train=TrainConfig(out=str(tmp / "codec"), steps=1, batch_size=24, ema=0.0, loggers=()),
    )
    codec = CodecStage(codec_cfg)
    Loop(codec).run()  # one step: the checkpoint the teacher encodes its clips with
    teacher = TeacherStage(TeacherStageConfig(
        clips=str(tmp / "clips"), codec_checkpoint=str(tmp / "codec" / "checkpoint"),
        model=build(TransformerConfig, compose_group("model", "default")),
        train=TrainConfig(out=str(tmp / "teacher"), batch_size=16, loggers=()),
    ))

    rows = {"codec (batch 24 frames)": time_steps(codec, args.steps), "teacher (batch 16 clips x 16 frames)": time_steps(teacher, args.steps)}

    # the numbers themselves: the teacher's velocity on one fixed batch, with every weight drawn at
    # random (a fresh model outputs zeros: adaLN-zero), in fp32 and under bf16 autocast
    from dfworld.schedule import add_noise

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in teacher.model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    idx = torch.randint(len(teacher.latents), (16,), generator=g)
    x0 = teacher.latents[idx]
    sigma = torch.rand(16, 1, generator=g).expand(16, x0.shape[1])
    x = add_noise(x0, torch.randn(x0.shape, generator=g), sigma)
    v = {}
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), autocast(dataclasses.replace(teacher.train, precision=precision), teacher.device):
            v[precision] = teacher.model(x, sigma, teacher.text[idx], teacher.text_mask[idx], teacher.actions[idx])[0].float()
    rel = float((v["bf16"] - v["fp32"]).norm() / v["fp32"].norm())

    print(f"threads {args.threads}, {torch.__version__}, rounds {args.steps} (medians)\n")
    print("| step | fp32 | bf16 autocast | fp32 / bf16 |\n|---|---|---|---|")
    for name, t in rows.items():
        print(f"| {name} | {t['fp32'] * 1e3:.0f} ms | {t['bf16'] * 1e3:.0f} ms | {t['fp32'] / t['bf16']:.2f}x |")
    print(f"\nteacher velocity on one batch (random weights), bf16 against fp32: relative RMS difference {rel:.2e}")


if __name__ == "__main__":
    main()
