"""Learning curves: episode returns of rollouts, return against frames as JSON and as a matplotlib plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase


def first_episode_returns(rollout: TensorDictBase) -> torch.Tensor:
    """Return of each row's first episode in a rollout [N, T] that starts at a reset: rewards up to its first done."""
    reward = rollout["next", "reward"].squeeze(-1)  # [N, T]
    done = rollout["next", "done"].squeeze(-1).long()  # [N, T]
    in_first = (done.cumsum(-1) - done) == 0  # [N, T]: step t ends or precedes the first done
    return (reward * in_first).sum(-1)  # [N]


def write_curve(rows: list[dict], out: str | Path, title: str) -> tuple[Path, Path]:
    """`out`/curve.json (one row per batch) and `out`/curve.png; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "curve.json"
    js.write_text(json.dumps(rows, indent=1))
    return js, plot_curves({"": rows}, out / "curve.png", title)


def plot_curves(curves: dict[str, list[dict]], path: str | Path, title: str, references: dict[str, float] | None = None) -> Path:
    """Mean return of each batch's episodes (band: one standard deviation) against frames, one line per curve.

    Rows scored in the real game (`real_return`, ppo.score_in_real_game) add dashed lines with markers
    in the same colour; `references` draws horizontal lines (e.g. the random and scripted agents).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, rows in curves.items():
        if not rows:
            continue
        x = np.array([r["frames"] for r in rows])
        y = np.array([r["return_mean"] for r in rows])
        s = np.array([r["return_std"] for r in rows])
        (line,) = ax.plot(x, y, label=label or None, marker="." if len(x) < 30 else None)
        ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15)
        scored = [r for r in rows if "real_return" in r]
        if scored:
            ax.plot([r["frames"] for r in scored], [r["real_return"] for r in scored], "o--", color=line.get_color(), ms=3,
                    label=f"{label}, scored in the real game" if label else "scored in the real game")
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="0.4", ls=(0, (1, 1 + i)), lw=1, label=f"{name} ({value:.2f})")
    ax.set_xlabel("frames")
    ax.set_ylabel("episode return (coins)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
