"""What a text event's re-cache buys: the bench with the re-cache cut down, against the rollout's own.

    python benchmarks/bench_recache.py                               # shipped default, core and core-heldout, 12 episodes
    python benchmarks/bench_recache.py --variants full,none --scripts core --out outputs/bench-recache

A text event re-encodes the row's condition and re-caches (LongLive): every chunk still in the cache
(the sink and the window) is written again under the new text, one block-causal pass over 16 frames,
which is what makes an event step dearer than an action step (BENCHMARKS.md, "Rollout speed"). This
ablation runs `dfworld bench` (torch backend, the same episodes, seeds, actions and events) with the
re-cache replaced, in this process only, by a cheaper one:

- `full`: the rollout's own (`Rollout._recache`);
- `window`: the window's chunks written again, the sink's keys and values kept from the old text;
- `last<n>`: only the newest n chunks written again (over the older ones as they were);
- `none`: no re-cache; the event only changes the text the next chunks read.

A partial re-cache marks the chunks it rewrites as not valid first, so each sees only what it would
have seen when first written (the chunks before it, itself). Printed: the faithful fraction (frames
that match EventWorld's on the same seeds, actions and events), consistency, reactivity@16, validity
and the agent's median error per variant and script (mean [95% interval over episodes]), and
the bench's own event-step / action-step ratio (torch; the partial variants run on every row of the batch, the
rollout's own on the event's rows only, so that column compares `full` with `none` alone); the full reports go
to `--out`/<variant>-<script>/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

from dfworld.cli import main as dfworld_main
from dfworld.rollout import Rollout, _held

FULL = Rollout._recache
FIGURES = ("faithful", "consistency", "reactivity@16", "validity", "agent_error_median_px")


def partial_recache(keep):
    """A `Rollout._recache` that writes again only the chunk starts `keep(starts)` picks of each row's held chunks."""

    def recache(self: Rollout, rows: torch.Tensor) -> None:
        c, K = self.cfg, self.cfg.chunk_frames
        per_row = [keep([s for s in range(0, c.sink_frames, K) if s < nb] + list(range(max(c.sink_frames, nb - c.window_frames), nb, K)))
                   if on else [] for nb, on in zip(self.frame.tolist(), rows.tolist())]
        m = max(map(len, per_row))
        if m == 0:
            return
        for r, starts in enumerate(per_row):  # the rewritten chunks' slots: unseen by the chunks written before them
            for s in starts:
                self.cache.valid[r, self.cache.slot_index(torch.tensor([s], device=self.device))[0]] = False
        starts = torch.tensor([s + [0] * (m - len(s)) for s in per_row], device=self.device)
        held = torch.tensor([[j < len(s) for j in range(m)] for s in per_row], device=self.device)
        frames = (starts[:, :, None] + torch.arange(K, device=self.device)).flatten(1)  # [B, m K]
        slots = self._slots(frames)
        prev = None if self.history_prev is None else _held(self.history_prev, slots)
        self._write_held(self.cache, _held(self.history, slots), _held(self.history_actions, slots), frames, held, prev, self._text())

    return recache


def cell(figure: dict) -> str:
    """A bench summary figure as 'mean [low, high]' (n/a where the episodes gave none)."""
    value, ci = figure.get("value"), figure.get("ci95")
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def variant(name: str, sink_frames: int):
    if name == "full":
        return FULL
    if name == "none":
        return lambda self, rows: None
    if name == "window":
        return partial_recache(lambda starts: [s for s in starts if s >= sink_frames])
    if name.startswith("last") and name[4:].isdigit() and int(name[4:]) > 0:
        return partial_recache(lambda starts: starts[-int(name[4:]) :])
    raise SystemExit(f"unknown variant {name!r}: full, window, last<n> or none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="dfworld/checkpoints/default")
    parser.add_argument("--variants", default="full,window,last1,none")
    parser.add_argument("--scripts", default="core,core-heldout")
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="outputs/bench-recache")
    args = parser.parse_args()
    from dfworld.model.loading import load_bundle

    sink = load_bundle(args.checkpoint).generator.config.sink_frames
    print("| variant | script | " + " | ".join(FIGURES) + " | event step / action step (bench, torch, batch 12) |\n|---|---|"
          + "---|" * (len(FIGURES) + 1))
    for name in args.variants.split(","):
        Rollout._recache = variant(name, sink)
        try:
            for script in args.scripts.split(","):
                out = Path(args.out) / f"{name}-{script}"
                out.mkdir(parents=True, exist_ok=True)
                with open(out / "bench.log", "w") as log, contextlib.redirect_stdout(log):  # its report is out/bench.md
                    code = dfworld_main(["bench", "--script", script, "--episodes", str(args.episodes), "--frames", "240", "--batch", "12",
                                         "--threads", str(args.threads), "--out", str(out), "--checkpoint", f"default={args.checkpoint}",
                                         "--restart"])  # the bench resumes finished parts, which do not record the variant
                if code:
                    raise SystemExit(f"dfworld bench failed for {name} on {script}")
                summary = json.loads((out / "bench.json").read_text())["summary"]["default"]
                cells = [cell(summary[f]) for f in FIGURES]
                event, action = summary["event_step_ms"], summary["action_step_ms"]  # ms, the bench's means
                cells.append(f"{event / action:.2f}x" if event and action else "n/a")
                print(f"| {name} | {script} | " + " | ".join(cells) + " |", flush=True)
        finally:
            Rollout._recache = FULL


if __name__ == "__main__":
    main()
