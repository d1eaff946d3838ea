"""`dfworld sweep`: Delta Forcing's trust region swept, each point trained and benched side by side.

Every point of the grid (by default the trust radius `trust_region.rho` times the continuity
weight `trust_region.lam`) is one delta stage, trained from the pipeline's dmd checkpoint with
the pipeline's teacher, exactly as `dfworld pipeline` trains its delta stage, with the point's
overrides on top. All points and the baselines (the pipeline's stream and delta checkpoints)
then run one bench on the same episodes and seeds: `run_sweep` receives the bench as a function
(`dfworld sweep` passes `dfworld.bench.suite_runner.run_bench`), so training imports nothing
from the benchmarks. The sweep writes:

- `<out>/<point>/`: the point's delta run (checkpoint, trust_region.jsonl and .png);
- `<out>/bench/`: the bench report of every point and baseline (bench.json, bench.md, plots);
- `<out>/sweep.json`, `<out>/sweep.md`: per point, the mean trust-region weight without a
  switch and at the switch chunk (the dip the method needs), and the bench's consistency,
  reactivity@16 and validity with 95% intervals;
- `<out>/sweep.png`: consistency against reactivity@16, one marker per point and baseline:
  the trade-off the paper claims to improve (more consistency at the same reactivity).

A stopped sweep resumes: finished points are skipped, an unfinished one resumes from its
checkpoint, and the bench resumes from its parts.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfworld.configuration import to_dict


@dataclass(frozen=True)
class SweepConfig:
    """`dfworld sweep` (configs/sweep.yaml)."""

    runs: str = "runs"  # the pipeline's run directories: <runs>/teacher, <runs>/dmd (and the baselines)
    clips: str = "data/clips"  # the clips data set the pipeline used
    out: str = "outputs/sweep"  # sweep directory: one delta run per point, bench/, sweep.json/md/png
    grid: dict = field(default_factory=lambda: {"trust_region": {"rho": [0.5, 1.0, 2.0], "lam": [0.5, 1.0]}})  # delta-stage keys -> values
    overrides: tuple[str, ...] = ()  # delta-stage overrides shared by every point (e.g. train.max_minutes=7)
    baselines: tuple[str, ...] = ("stream", "delta")  # pipeline stages benched beside the points (<runs>/<stage>)
    script: str = "core"  # bench: a shipped suite or a script file
    episodes: int = 12  # bench: the first N episodes (0: all)
    frames: int = 240  # bench: frames per episode
    batch: int = 12  # bench: episodes generated at once
    device: str = "cpu"  # bench: cpu or cuda

    def __post_init__(self) -> None:
        flat = grid_axes(self.grid)
        if not flat or not all(isinstance(v, (list, tuple)) and v for v in flat.values()):
            raise ValueError(f"sweep grid must nest delta-stage keys down to non-empty lists of values, got {self.grid!r}")


def grid_axes(grid: dict, prefix: str = "") -> dict[str, list]:
    """The grid's leaves as dotted keys: {"trust_region": {"rho": [..]}} -> {"trust_region.rho": [..]}."""
    out: dict[str, list] = {}
    for key, value in grid.items():
        if isinstance(value, dict):
            out.update(grid_axes(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def points(cfg: SweepConfig) -> dict[str, list[str]]:
    """Point name -> its overrides, over the product of the grid's values (names usable as bench names)."""
    axes = grid_axes(cfg.grid)
    keys = list(axes)
    out = {}
    for values in itertools.product(*(axes[k] for k in keys)):
        name = "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in zip(keys, values))
        out[name] = [f"{k}={v}" for k, v in zip(keys, values)]
    return out


def delta_config(cfg: SweepConfig, name: str, point: list[str]):
    """The delta stage of one point: the pipeline's wiring, the shared overrides, then the point's."""
    from dfworld.training.pipeline import PipelineConfig, wiring
    from dfworld.training.stages import stage_config

    wired = [o for o in wiring(PipelineConfig(runs=cfg.runs, clips=cfg.clips), "delta") if not o.startswith("train.out=")]
    return stage_config("delta", wired + list(cfg.overrides) + point + [f"train.out={Path(cfg.out) / name}"])


def trust_region_summary(log: Path) -> dict[str, float | None]:
    """Mean w before any switch and at the switch chunk, from a delta run's trust_region.jsonl."""
    from dfworld.training.trust_region_log import read_jsonl, trust_region_table

    w = trust_region_table(read_jsonl(log))["w"] if log.is_file() else {}
    return {"w_no_switch": w[-1][0] if -1 in w else None, "w_at_switch": w[0][0] if 0 in w else None}


def run_sweep(cfg: SweepConfig, bench: Callable[[list[str], Path], dict]) -> dict:
    """Train every point, then `bench(["name=checkpoint", ...], out_dir)` (returning bench.json's content) over them all."""
    from dfworld.training.loop import Loop
    from dfworld.training.pipeline import finished
    from dfworld.training.stages.delta import DeltaStage

    out, runs = Path(cfg.out), Path(cfg.runs)
    grid = points(cfg)
    # 1. check the inputs before training anything
    for stage in ("teacher", "dmd") + tuple(cfg.baselines):
        if not (runs / stage / "checkpoint" / "config.json").is_file():
            raise FileNotFoundError(f"the sweep needs {runs / stage / 'checkpoint'}; run `dfworld pipeline runs={cfg.runs}` first")
    configs = {name: delta_config(cfg, name, point) for name, point in grid.items()}
    # 2. train every point (skipping finished ones, resuming a stopped one)
    for name, scfg in configs.items():
        if finished(out / name, scfg.train.steps, scfg.train.max_minutes) is not None:
            print(f"[sweep] {name}: finished, skipped")
            continue
        print(f"[sweep] {name}: training ({' '.join(grid[name])})")
        Loop(DeltaStage(scfg)).run()
    # 3. one bench over the baselines and every point
    specs = [f"{s}={runs / s / 'checkpoint'}" for s in cfg.baselines] + [f"{n}={out / n / 'checkpoint'}" for n in grid]
    results = bench(specs, out / "bench")
    # 4. the sweep table and the trade-off plot
    rows = []
    for source in list(cfg.baselines) + list(grid):
        s = results["summary"][source]
        log = (runs / source if source in cfg.baselines else out / source) / "trust_region.jsonl"
        rows.append({
            "name": source, "overrides": grid.get(source, ["(pipeline baseline)"]), **trust_region_summary(log),
            **{m: s[m] for m in ("consistency", "reactivity@16", "validity")},
        })
    report = {"config": to_dict(cfg), "bench": str(out / "bench" / "bench.json"), "events": results["summary"]["reference"]["events"],
              "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(report, indent=1))
    (out / "sweep.md").write_text(markdown(report))
    plot_tradeoff(rows, out / "sweep.png")
    return report


def _cell(metric: dict, digits: int = 3) -> str:
    v, ci = metric["value"], metric["ci95"]
    if v is None:
        return "n/a"
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{v:.{digits}f}"


def markdown(report: dict) -> str:
    c = report["config"]
    lines = [
        f"# Trust-region sweep: {c['script']}, {c['episodes'] or 'all'} episodes x {c['frames']} frames, {report['events']} events",
        "",
        "Mean [95% bootstrap interval over episodes]; w: mean trust-region weight of the training windows with no switch "
        "yet / at the switch chunk.",
        "",
        "| point | overrides | w (no switch / at switch) | consistency | reactivity@16 | validity |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        w = " / ".join("-" if r[k] is None else f"{r[k]:.3f}" for k in ("w_no_switch", "w_at_switch"))
        lines.append(f"| {r['name']} | {' '.join(r['overrides'])} | {w} | {_cell(r['consistency'])} | {_cell(r['reactivity@16'])} | "
                     f"{_cell(r['validity'])} |")
    return "\n".join(lines) + "\n"


def plot_tradeoff(rows: list[dict], path: Path) -> Path:
    """Consistency against reactivity@16 with their 95% intervals, one marker per row (named in the legend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in rows:
        x, y = r["reactivity@16"], r["consistency"]
        if x["value"] is None or y["value"] is None:
            continue
        xerr = np.abs(np.array(x["ci95"])[:, None] - x["value"]) if x["ci95"] else None
        yerr = np.abs(np.array(y["ci95"])[:, None] - y["value"]) if y["ci95"] else None
        marker = "s" if r["overrides"] == ["(pipeline baseline)"] else "o"
        ax.errorbar(x["value"], y["value"], xerr=xerr, yerr=yerr, fmt=marker, capsize=3, alpha=0.8, label=r["name"])
    ax.set_xlabel("reactivity@16 (events in effect within 16 frames)")
    ax.set_ylabel("consistency (untouched content kept)")
    ax.set_title("Trust-region sweep: up and to the right is better")
    ax.legend(fontsize=7, title="squares: pipeline baselines", title_fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
