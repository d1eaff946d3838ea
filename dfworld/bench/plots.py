"""Plots of training diagnostics (matplotlib, written to files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MEASURE_NAMES = ("w", "relative_step", "history", "direction")


def trust_region_table(rows: list[dict], max_since: int = 12) -> dict[str, dict[int, tuple[float, float, int]]]:
    """Mean, 95% half-width and count of w and each measure per chunk index since the last switch.

    Index -1 collects chunks of rows that have not met a switch yet; indices above `max_since`
    are pooled into `max_since`.
    """
    out: dict[str, dict[int, tuple[float, float, int]]] = {}
    for name in MEASURE_NAMES:
        groups: dict[int, list[float]] = {}
        for r in rows:
            if name in r:
                groups.setdefault(min(int(r["since_switch"]), max_since), []).append(float(r[name]))
        out[name] = {
            k: (float(np.mean(v)), float(1.96 * np.std(v) / np.sqrt(len(v))) if len(v) > 1 else 0.0, len(v))
            for k, v in sorted(groups.items())
        }
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_trust_region(log: str | Path, out: str | Path, title: str = "", max_since: int = 12) -> Path:
    """w_k and the consistency measures against the chunk index since the last switch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = trust_region_table(read_jsonl(log), max_since)
    fig, axes = plt.subplots(1, len(MEASURE_NAMES), figsize=(4 * len(MEASURE_NAMES), 3.2))
    for ax, name in zip(axes, MEASURE_NAMES):
        stats = table[name]
        ks = [k for k in stats if k >= 0]
        if ks:
            mean = np.array([stats[k][0] for k in ks])
            half = np.array([stats[k][1] for k in ks])
            ax.plot(ks, mean, marker="o", label="since a switch")
            ax.fill_between(ks, mean - half, mean + half, alpha=0.25)
        if -1 in stats:
            ax.axhline(stats[-1][0], color="gray", linestyle="--", label="no switch yet")
        ax.set_xlabel(f"chunks since the last switch ({max_since} = {max_since} or more)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
