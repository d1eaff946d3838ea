"""Scores, confidence intervals, tables, plots and videos of a `dfworld bench` run.

The metric definitions are in `dfworld.bench.suite_runner`. Per episode, each source's probe
readings reduce to additive sums (plus the list of reaction delays and the per-d consistency
sums), so a metric over any set of episodes, bootstrap resamples included, is a sum then a ratio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfworld.bench.fidelity import (
    FIDELITY_METRICS,
    HORIZONS,
    FidelityStats,
    by_check,
    by_kind,
    episode_fidelity,
    fidelity_curve,
    fidelity_headline,
    horizon_name,
)
from dfworld.bench.metrics import (
    BEFORE_FRAMES,
    REACTION_FRAMES,
    consistency_curve,
    frame_valid,
    reaction_delay,
    scene_fit,
    untouched_content,
)
from dfworld.world.config import WorldConfig
from dfworld.world.events import Event, parse_event
from dfworld.world.probes import Blob, FrameReading, read_frame
from dfworld.world.scripts import Episode

REFERENCE = "reference"  # the source name of the simulator's own episodes

# additive per-episode sums: consistency (sum of event means, events, untouched objects), drift least
# squares (pairs, sum d, sum c, sum d^2, sum d c), reactivity (events), validity (valid, frames), agent error (sum, pairs)
_SUMS = ("cons", "cons_n", "objs", "n", "sd", "sc", "sdd", "sdc", "events", "valid", "frames", "err", "err_n")
TABLE_METRICS = ("consistency", "untouched_objects", "drift_per_100", "reactivity@16", "median_delay", "validity", "agent_error_px")
METRICS = TABLE_METRICS + ("agent_error_median_px",) + FIDELITY_METRICS
_DIGITS = {"consistency": 3, "untouched_objects": 2, "drift_per_100": 3, "reactivity@16": 3, "median_delay": 1, "validity": 3,
           "agent_error_px": 2, "agent_error_median_px": 2, **dict.fromkeys(FIDELITY_METRICS, 3)}  # decimals in bench.md
BOOTSTRAP = 1000  # resamples of the percentile bootstrap


@dataclass
class EpisodeStats:
    """One source's scores on one episode, in additive form."""

    sums: np.ndarray  # [len(_SUMS)]
    delays: list[int]  # d0 of every event that took effect
    cons_d: np.ndarray  # [2, D] sum and count of c_e(d) per d, D the longest event window
    fidelity: FidelityStats  # faithful frames and coin pick-ups against the simulator (dfworld.bench.fidelity)
    agent_errors: np.ndarray  # [n] the agent distance of every frame where both find it


def _blob_to_list(b: Blob | None) -> list | None:
    return None if b is None else [round(b.x, 2), round(b.y, 2), b.area]


def _blob_from_list(v: list | None) -> Blob | None:
    return None if v is None else Blob(*v)


def probe(frames: np.ndarray, world: WorldConfig) -> list[dict]:
    """Probe readings of frames [F, H, W, 3] with their scene fit, as parts store them."""
    out = []
    for frame in frames:
        r = read_frame(frame, world)
        out.append({"time": r.time, "weather": r.weather, "objects": {c: _blob_to_list(b) for c, b in r.objects.items()},
                    "agent": _blob_to_list(r.agent), "coin": _blob_to_list(r.coin), "fit": round(scene_fit(frame, world), 4)})
    return out


def reading_from_dict(d: dict) -> tuple[FrameReading, float]:
    """A stored reading back as a FrameReading, and its scene fit."""
    objects = {c: _blob_from_list(v) for c, v in d["objects"].items()}
    return FrameReading(d["time"], d["weather"], objects, _blob_from_list(d["agent"]), _blob_from_list(d.get("coin"))), d["fit"]


def applied_events(reference_part: dict) -> list[tuple[int, Event]]:
    return [(e["t"], parse_event(e["text"])) for e in reference_part["events"] if e["applied"]]


def episode_stats(
    readings: list[FrameReading], fits: list[float], events: list[tuple[int, Event]], real: list[FrameReading],
    real_pickups: list[int] = (), generated_pickups: list[int] | None = None, chunk: int = 4,
) -> EpisodeStats:
    """Score one source's readings of one episode against its events and the real readings.

    `real_pickups`: frames of the simulator's coin pick-ups; `generated_pickups`: steps where the
    source's reward fired (None for the reference itself).
    """
    F = len(readings)
    ends = [t for t, _ in events[1:]] + [F]  # an event's window ends at the next event
    s = dict.fromkeys(_SUMS, 0.0)
    delays: list[int] = []
    cons_d = np.zeros((2, max((e - t for (t, _), e in zip(events, ends)), default=0)))  # [2, longest window]
    for (t, ev), end in zip(events, ends):
        after = readings[t:end]
        before = readings[max(0, t - BEFORE_FRAMES) : t]
        curve = consistency_curve(ev, before, after)
        if curve is not None:
            s["objs"] += len(untouched_content(ev, before).objects)
            d = np.arange(len(curve))
            s["cons"] += curve.mean()
            s["cons_n"] += 1
            s["n"] += len(d)
            s["sd"] += d.sum()
            s["sc"] += curve.sum()
            s["sdd"] += (d * d).sum()
            s["sdc"] += (d * curve).sum()
            cons_d[0, : len(curve)] += curve
            cons_d[1, : len(curve)] += 1
        s["events"] += 1
        if (d0 := reaction_delay(ev, after)) is not None:
            delays.append(d0)
    s["valid"] = sum(frame_valid(r, f) for r, f in zip(readings, fits))
    s["frames"] = F
    errors = [float(np.hypot(r.agent.x - q.agent.x, r.agent.y - q.agent.y))
              for r, q in zip(readings, real) if r.agent is not None and q.agent is not None]
    s["err"], s["err_n"] = float(sum(errors)), len(errors)
    fid = episode_fidelity(readings, real, events, list(real_pickups), generated_pickups, chunk)
    return EpisodeStats(np.array([s[k] for k in _SUMS]), delays, cons_d, fid, np.array(errors))


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def headline(stats: list[EpisodeStats]) -> dict[str, float | None]:
    """The headline metrics over a set of episodes (repeats allowed)."""
    s = dict(zip(_SUMS, np.sum([e.sums for e in stats], 0)))
    quick = [d for e in stats for d in e.delays if d < REACTION_FRAMES]
    var = s["n"] * s["sdd"] - s["sd"] ** 2
    return {
        "consistency": _ratio(s["cons"], s["cons_n"]),
        "untouched_objects": _ratio(s["objs"], s["cons_n"]),  # objects per scored event: what consistency was measured on
        "drift_per_100": _ratio(100 * (s["n"] * s["sdc"] - s["sd"] * s["sc"]), var) if var > 1e-9 else None,
        "reactivity@16": _ratio(len(quick), s["events"]),
        "median_delay": float(np.median(quick)) if quick else None,
        "validity": _ratio(s["valid"], s["frames"]),
        "agent_error_px": _ratio(s["err"], s["err_n"]),
        "agent_error_median_px": float(np.median(np.concatenate([e.agent_errors for e in stats]))) if s["err_n"] else None,
        **fidelity_headline([e.fidelity for e in stats]),
    }


def bootstrap_ci(stats: list[EpisodeStats], seed: int = 0) -> dict[str, list[float] | None]:
    """Percentile 95% intervals of each headline metric, resampling episodes; None under two episodes."""
    if len(stats) < 2:
        return dict.fromkeys(METRICS)
    rng = np.random.default_rng(seed)
    draws = [headline([stats[i] for i in rng.integers(len(stats), size=len(stats))]) for _ in range(BOOTSTRAP)]
    out: dict[str, list[float] | None] = {}
    for m in METRICS:
        vals = [d[m] for d in draws if d[m] is not None]
        out[m] = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else None
    return out


def curves(stats: list[EpisodeStats]) -> dict[str, list[float | None]]:
    """C(d), the mean consistency d frames after an event, and R(d), the fraction of events in effect by d."""
    D = max(e.cons_d.shape[1] for e in stats)
    cons = np.zeros((2, D))
    for e in stats:
        cons[:, : e.cons_d.shape[1]] += e.cons_d
    n_events = sum(e.sums[_SUMS.index("events")] for e in stats)
    delays = np.array([d for e in stats for d in e.delays], np.int64)
    reach = np.searchsorted(np.sort(delays), np.arange(D), side="right")  # events with d0 <= d
    return {
        "consistency": [float(c / n) if n else None for c, n in cons.T],
        "reactivity": [float(r / n_events) if n_events else None for r in reach],
        "faithful": fidelity_curve([e.fidelity for e in stats]),
    }


# -- outputs ----------------------------------------------------------------------------------


def _fmt(value: float | None, ci: list[float] | None, digits: int) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else text


def markdown(config: dict, summary: dict) -> str:
    n_events = summary[next(iter(summary))]["events"]
    lines = [
        f"# dfworld bench: {config['script']}, {len(config['episodes'])} episodes of up to {config['frames']} frames, {n_events} events",
        "",
        "Mean [95% bootstrap interval over episodes]. Definitions: dfworld/bench/suite_runner.py.",
        "",
        "| source | consistency | untouched objects /event | drift /100 frames | reactivity@16 | median delay (frames) | validity"
        + " | agent error (px) | fps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        cells = [_fmt(s[m]["value"], s[m]["ci95"], _DIGITS[m]) for m in TABLE_METRICS]
        label = f"{name} (EventWorld)" if name == "reference" else name
        lines.append(f"| {label} | {' | '.join(cells)} | {s['fps']:.1f} |")
    gens = {n: s for n, s in summary.items() if n != "reference"}
    fid = ("faithful",) + tuple(m for m in FIDELITY_METRICS if m.startswith("faithful_")) + ("agent_error_median_px",
                                                                                              "pickup_precision", "pickup_recall")
    lines += ["", "Fidelity against the simulator on the same seeds, actions and events (dfworld/bench/fidelity.py):", "",
              "| source | " + " | ".join(m.replace("_", " ") for m in fid) + " |", "|---|" + "---|" * len(fid)]
    for name, s in gens.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(s[m]["value"], s[m]["ci95"], _DIGITS[m]) for m in fid) + " |")
    kinds = sorted({k for s in gens.values() for k in s["faithful_by_kind"]})
    if kinds:
        lines += ["", "| source | " + " | ".join(f"faithful after {k}" for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
        for name, s in gens.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(s["faithful_by_kind"].get(k), None, 3) for k in kinds) + " |")
    spans = [horizon_name(a, b) for a, b in HORIZONS]
    rows = [(name, k, row) for name, s in gens.items() for k, row in s.get("checks_by_horizon", {}).items()]
    if rows:
        lines += ["", "Each check of the faithful test alone, the fraction of frames passing it (which fails first):", "",
                  "| source | check | all | " + " | ".join(spans) + " |", "|---|---|---|" + "---|" * len(spans)]
        lines += [f"| {name} | {k} | " + " | ".join(_fmt(row.get(m), None, 3) for m in ["all", *spans]) + " |" for name, k, row in rows]
    if gens:
        lines += ["", "| checkpoint | text-event step (ms) | action step (ms) | rows per step |", "|---|---|---|---|"]
        for name, s in gens.items():
            ev, ac = (_fmt(s[k], None, 1) for k in ("event_step_ms", "action_step_ms"))
            lines.append(f"| {name} | {ev} | {ac} | {s['rows']} |")
    return "\n".join(lines) + "\n"


def plot_curves(path: Path, summary: dict, key: str, ylabel: str, xlabel: str = "frames since the event") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, s in summary.items():
        y = np.array([np.nan if v is None else v for v in s["curves"][key]], float)
        ax.plot(np.arange(len(y)), y, label=name, lw=2 if name == "reference" else 1.5, ls="--" if name == "reference" else "-")
    if key == "reactivity":
        ax.axvline(REACTION_FRAMES, color="grey", lw=0.8, ls=":", label=f"K = {REACTION_FRAMES}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_videos(out: Path, parts, episodes: list[Episode], sources: list[str], world: WorldConfig, n: int) -> list[str]:
    """real | checkpoint ... side by side for the first `n` episodes, captioned with the current prompt."""
    from dfworld.video import caption_strip, compose, side_by_side, write_mp4
    from dfworld.world.episodes import play_episode
    from dfworld.world.simulator import EventWorld

    scale = max(1, 128 // world.width)
    paths = []
    for i, ep in enumerate(episodes[:n]):
        rec = play_episode(ep, EventWorld(world))
        columns = [rec.frames] + [parts.frames(s, i) for s in sources]
        names = ["real"] + sources
        grid = []
        for f, prompt in enumerate(rec.prompts()):
            row = side_by_side([compose(c[f], scale, name) for c, name in zip(columns, names)])
            grid.append(np.concatenate([row, caption_strip(row.shape[1], f"{f:3d} {prompt}")], 0))
        paths.append(str(write_mp4(out / f"video_{ep.id}.mp4", np.stack(grid), world.fps)))
    return paths


def write_report(out: Path, parts, episodes: list[Episode], sources: list[str], world: WorldConfig, config: dict) -> dict:
    """Score every source from its parts; write bench.json, bench.md, the two plots and the videos."""
    refs = [parts.load(REFERENCE, i) for i in range(len(episodes))]
    real = [[reading_from_dict(d)[0] for d in p["readings"]] for p in refs]
    summary, per_episode = {}, {}
    for source in [REFERENCE] + sources:
        loaded = [parts.load(source, i) for i in range(len(episodes))]
        stats = []
        for p, ref, rr in zip(loaded, refs, real):
            readings, fits = zip(*(reading_from_dict(d) for d in p["readings"]))
            gen_pickups = None if source == REFERENCE else p.get("pickups", [])
            stats.append(episode_stats(list(readings), list(fits), applied_events(ref), rr, ref.get("pickups", []), gen_pickups,
                                       p.get("chunk", 4)))
        value, ci = headline(stats), bootstrap_ci(stats)
        steps = {k: [s for p in loaded for s in p.get("step_s", {}).get(k, [])] for k in ("event", "action")}
        summary[source] = {
            **{m: {"value": value[m], "ci95": ci[m]} for m in METRICS},
            "fps": sum(p["frames"] for p in loaded) / max(sum(p["seconds"] for p in loaded), 1e-9),
            "event_step_ms": 1000 * float(np.mean(steps["event"])) if steps["event"] else None,
            "action_step_ms": 1000 * float(np.mean(steps["action"])) if steps["action"] else None,
            "rows": loaded[0].get("rows", 1),
            "episodes": len(stats),
            "events": int(sum(e.sums[_SUMS.index("events")] for e in stats)),
            "curves": curves(stats),
            "faithful_by_kind": by_kind([e.fidelity for e in stats]),
            "checks_by_horizon": by_check([e.fidelity for e in stats]),
        }
        per_episode[source] = [{"episode": ep.id, **headline([e])} for ep, e in zip(episodes, stats)]
    out.mkdir(parents=True, exist_ok=True)
    videos = write_videos(out, parts, episodes, sources, world, config["video_episodes"])
    report = {"config": config, "summary": summary, "episodes": per_episode, "videos": videos}
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    (out / "bench.md").write_text(markdown(config, summary))
    plot_curves(out / "consistency_vs_frames.png", summary, "consistency", "untouched content kept")
    plot_curves(out / "reactivity_vs_frames.png", summary, "reactivity", "events in effect (cumulative)")
    plot_curves(out / "faithful_vs_frames.png", summary, "faithful", "faithful frames", "frames since reset")
    return report
