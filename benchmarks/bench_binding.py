"""Does the teacher bind colour words? The colour matrix of "a <colour> object appears".

    python benchmarks/bench_binding.py --checkpoint runs/teacher/checkpoint [--checkpoint other ...] [--n 8]
        [--guidance 3] [--plot docs/figures/teacher_colour_binding.png]

For each object colour the teacher samples `n` clips of "a <colour> object appears" (16 frames,
still agent, CFG, 24 Euler steps, repeated noise), every colour from the same `n` noise draws, so
the rows differ only by the colour word. The probes then list the persistent objects of each
clip. Row c, column d: the fraction of the clips prompted with c in which a d object persists.
A teacher that binds colour words has a high diagonal (the prompt's colour is there) over a lower
off-diagonal (the colours its noise happens to draw); a teacher that ignores them has rows alike.
The held-out clip evaluation (`dfworld eval teacher`) gives the same verdict over few clips per
event; this isolates the colour word.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dfworld.bench.metrics import persistent_objects
from dfworld.checkpoint import load_checkpoint
from dfworld.model.loading import codec_from, conditioner_from, transformer_from
from dfworld.sampling import sample_clips
from dfworld.world.config import COLOR_NAMES, WorldConfig
from dfworld.world.probes import read_frames


def colour_matrix(checkpoint: str, n: int, guidance: float, frames: int = 16, batch: int = 16) -> np.ndarray:
    """[colours, colours]: fraction of clips prompted with row's colour in which column's colour persists."""
    ckpt = load_checkpoint(checkpoint, stage="teacher")
    model, cond, codec = transformer_from(ckpt, "teacher").eval(), conditioner_from(ckpt), codec_from(ckpt).eval()
    size = ckpt.config["codec"]["image_size"]
    world = WorldConfig(height=size, width=size)  # EventWorld at the codec's frame size
    shift = float(ckpt.config.get("shift", 3.0))
    out = np.zeros((len(COLOR_NAMES), len(COLOR_NAMES)))
    with torch.inference_mode():
        for i, colour in enumerate(COLOR_NAMES):
            for start in range(0, n, batch):
                b = min(batch, n - start)
                text, mask = cond([f"a {colour} object appears"] * b)
                actions = torch.zeros(b, frames, dtype=torch.long)  # the agent stays: only the prompt varies
                rng = torch.Generator().manual_seed(1000 + start)  # the same noise for every colour
                lat = sample_clips(model, text, mask, actions, frames, 24, guidance, shift, rng, repeat_noise=True)
                for clip in codec.decode(lat).numpy():
                    found = persistent_objects(read_frames(clip, world))
                    out[i] += [c in found for c in COLOR_NAMES]
    return out / n


def plot(matrices: dict[str, np.ndarray], path: str) -> None:
    """One heat map per checkpoint, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4.0), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w" if m[i, j] < 0.6 else "k", fontsize=8)
        ax.set_xticks(range(len(COLOR_NAMES)), COLOR_NAMES, rotation=45)
        ax.set_yticks(range(len(COLOR_NAMES)), [f'"a {c} object appears"' for c in COLOR_NAMES], fontsize=8)
        diag = np.trace(m) / len(m)
        ax.set_title(f"{name}\nprompted colour present {diag:.2f}", fontsize=9)
        ax.set_xlabel("colour persisting in the sampled clip")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", help="a teacher checkpoint (repeat to compare; name=path names it)")
    ap.add_argument("--n", type=int, default=8, help="clips per colour")
    ap.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot", help="write the matrices as heat maps to this PNG")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    k = len(COLOR_NAMES)
    matrices = {}
    for spec in args.checkpoint or ["runs/teacher/checkpoint"]:
        name, _, path = spec.rpartition("=")
        m = matrices[name or path] = colour_matrix(path, args.n, args.guidance)
        print(f"\n{name or path} ({path}): rows the prompt's colour, columns the colours that persist ({args.n} clips a row, CFG {args.guidance})\n")
        print("| prompt | " + " | ".join(COLOR_NAMES) + " |")
        print("|---" * (k + 1) + "|")
        for i, c in enumerate(COLOR_NAMES):
            print(f"| {c} | " + " | ".join(f"**{v:.2f}**" if j == i else f"{v:.2f}" for j, v in enumerate(m[i])) + " |")
        diag, off = float(np.trace(m) / k), float((m.sum() - np.trace(m)) / (k * (k - 1)))
        print(f"\nprompted colour present: {diag:.2f}; another given colour present: {off:.2f}; persistent objects per clip: {m.sum(1).mean():.2f}")
    if args.plot:
        plot(matrices, args.plot)


if __name__ == "__main__":
    main()
