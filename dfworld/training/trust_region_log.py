"""The trust-region log of the stream and delta stages: one JSON row per chunk, its table and plot.

Both stages write, per generator update and row, the trust-region weight w (1 for stream) and
the consistency measures against the chunk index since the row's last event switch
(`trust_region.jsonl` in the run directory), so the two runs compare chunk by chunk; the plot
(`trust_region.png`) is refreshed at every checkpoint. Only rank 0 writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dfworld.training.distributed import rank

MEASURE_NAMES = ("w", "relative_step", "history", "direction")


class TrustRegionLog:
    """`trust_region.jsonl` of one run: rows appended per chunk, trimmed to a checkpoint on resume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def clear(self) -> None:
        """Forget the rows of an earlier, unrelated run in the same directory."""
        if rank() == 0:
            self.path.unlink(missing_ok=True)

    def write(self, step: int, since: list[int], w: torch.Tensor, measures: dict[str, torch.Tensor]) -> None:
        """One row per batch row: its chunks since the last switch (-1: none yet), w and every measure."""
        if rank() != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            for r in range(len(since)):
                row = {"step": step, "row": r, "since_switch": since[r], "w": float(w[r])}
                row.update({k: float(v[r]) for k, v in measures.items()})
                f.write(json.dumps(row) + "\n")

    def trim(self, next_step: int) -> None:
        """Drop rows of steps at or past `next_step`: a resumed run writes them again."""
        if rank() == 0 and self.path.is_file():
            rows = [r for r in self.path.read_text().splitlines() if r and json.loads(r)["step"] < next_step]
            self.path.write_text("".join(r + "\n" for r in rows))

    def plot(self, title: str) -> None:
        """Refresh `trust_region.png` beside the log (nothing before the first row)."""
        if rank() == 0 and self.path.is_file():
            plot_trust_region(self.path, self.path.with_suffix(".png"), title=title)


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
