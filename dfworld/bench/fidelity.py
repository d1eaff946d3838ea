"""Fidelity: does a generated frame show the scene the simulator shows on the same seed, actions and events?

The probes read both frames (`dfworld.world.probes`). A generated frame is **faithful** when
- time of day and weather read the same;
- the same set of object colours is found, and each object is within `OBJECT_PX` (3 px) of the
  real one, except objects placed by chance (one that appeared through an event, or recoloured
  from such an object): those count by presence only;
- the agent is found in both, within `AGENT_PX` (2 px);
- the coin is found in both or in neither, and until the first real pick-up (after which the
  simulator respawns it at random) within `OBJECT_PX`.
Weather particles are never compared (the probes' medians ignore them).

Coin pick-ups read from generated frames (the reward of WorldModel-v0) are matched to the
simulator's: a generated pick-up at step k matches a real one at step k' (frame // chunk) when
|k - k'| <= 1, each real pick-up matched once. precision = matched / generated, recall =
matched / real.

Each check's own pass rate by horizon (`by_check`) says which part fails first.

Everything reduces to additive sums per episode (`FidelityStats`), so a fraction over any set of
episodes, bootstrap resamples included, is a sum then a ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dfworld.world.episodes import match_pickups
from dfworld.world.events import Event
from dfworld.world.probes import Blob, FrameReading

OBJECT_PX = 3.0
AGENT_PX = 2.0
HORIZONS = ((0, 16), (16, 64), (64, 240), (240, None))  # frames since reset: [a, b)


def horizon_name(a: int, b: int | None) -> str:
    return f"faithful_{a}_{b - 1}" if b is not None else f"faithful_{a}+"


def _near(a: Blob | None, b: Blob | None, px: float) -> bool:
    return a is not None and b is not None and float(np.hypot(a.x - b.x, a.y - b.y)) <= px


def chance_colors(events: list[tuple[int, Event]], frames: int) -> list[frozenset[str]]:
    """Per frame, the object colours whose position was drawn by chance (appeared through an event)."""
    out, chance, i = [], set(), 0
    for f in range(frames):
        while i < len(events) and events[i][0] <= f:
            ev = events[i][1]
            if ev.kind == "object_appear":
                chance.add(ev.color)
            elif ev.kind == "object_recolor" and ev.color in chance:
                chance.add(ev.to_color)
            i += 1
        out.append(frozenset(chance))
    return out


def frame_checks(gen: FrameReading, real: FrameReading, chance: frozenset[str], coin_placed: bool) -> dict[str, bool]:
    """Each part of the faithful test for one frame (module docstring)."""
    objects_same = set(gen.objects) == set(real.objects)
    placed = objects_same and all(_near(gen.objects[c], b, OBJECT_PX) for c, b in real.objects.items() if c not in chance)
    coin = (gen.coin is None) == (real.coin is None) and (not coin_placed or real.coin is None or _near(gen.coin, real.coin, OBJECT_PX))
    return {
        "scene": gen.time == real.time and gen.weather == real.weather,
        "objects": placed,
        "agent": _near(gen.agent, real.agent, AGENT_PX),
        "coin": coin,
    }


CHECKS = ("scene", "objects", "agent", "coin")


def check_frames(gen: list[FrameReading], real: list[FrameReading], events: list[tuple[int, Event]],
                 first_pickup: int | None) -> dict[str, np.ndarray]:
    """Per check (`CHECKS`), [F] bool: which generated frames pass it."""
    chance = chance_colors(events, len(real))
    rows = [frame_checks(g, r, c, first_pickup is None or f < first_pickup) for f, (g, r, c) in enumerate(zip(gen, real, chance))]
    return {k: np.array([row[k] for row in rows], bool) for k in CHECKS}


def faithful_frames(gen: list[FrameReading], real: list[FrameReading], events: list[tuple[int, Event]],
                    first_pickup: int | None) -> np.ndarray:
    """[F] bool: which generated frames are faithful to the real ones (every check passes)."""
    return passes_all(check_frames(gen, real, events, first_pickup))


def passes_all(checks: dict[str, np.ndarray]) -> np.ndarray:
    """[F] bool: the frames that pass every check of `check_frames`' result."""
    return np.logical_and.reduce([np.asarray(checks[k], bool) for k in CHECKS])


@dataclass
class FidelityStats:
    """One source's fidelity on one episode, in additive form."""

    per_frame: np.ndarray  # [F] float: 1 where faithful
    kinds: dict[str, list[float]] = field(default_factory=dict)  # event kind -> [faithful frames, frames] in its windows
    pickups: tuple[int, int, int] = (0, 0, 0)  # matched, generated, real
    checks: dict[str, np.ndarray] = field(default_factory=dict)  # check -> [F] float: 1 where that check passes

    def sums(self) -> dict[str, float]:
        out = {"faithful": float(self.per_frame.sum()), "faithful_n": float(len(self.per_frame))}
        for a, b in HORIZONS:
            part = self.per_frame[a:b]
            out[horizon_name(a, b)], out[horizon_name(a, b) + "_n"] = float(part.sum()), float(len(part))
        out["pickups_matched"], out["pickups_generated"], out["pickups_real"] = map(float, self.pickups)
        return out


def episode_fidelity(gen: list[FrameReading], real: list[FrameReading], events: list[tuple[int, Event]],
                     real_pickup_frames: list[int], generated_pickup_steps: list[int] | None, chunk: int) -> FidelityStats:
    """Score one episode; `generated_pickup_steps` None for the reference itself (then it scores 1 everywhere)."""
    first = min(real_pickup_frames) if real_pickup_frames else None
    checks = check_frames(gen, real, events, first)
    flags = passes_all(checks).astype(float)
    ends = [t for t, _ in events[1:]] + [len(real)]
    kinds: dict[str, list[float]] = {}
    for (t, ev), end in zip(events, ends):
        k = kinds.setdefault(ev.kind, [0.0, 0.0])
        k[0] += float(flags[t:end].sum())
        k[1] += float(len(flags[t:end]))
    real_steps = [f // chunk for f in real_pickup_frames]
    gen_steps = real_steps if generated_pickup_steps is None else generated_pickup_steps
    return FidelityStats(flags, kinds, (match_pickups(gen_steps, real_steps), len(gen_steps), len(real_steps)),
                         {k: v.astype(float) for k, v in checks.items()})


def fidelity_headline(stats: list[FidelityStats]) -> dict[str, float | None]:
    """Faithful fractions (overall, per horizon) and pick-up precision and recall over a set of episodes."""
    s: dict[str, float] = {}
    for e in stats:
        for k, v in e.sums().items():
            s[k] = s.get(k, 0.0) + v
    out = {"faithful": s["faithful"] / s["faithful_n"] if s.get("faithful_n") else None}
    for a, b in HORIZONS:
        n = horizon_name(a, b)
        out[n] = s[n] / s[n + "_n"] if s.get(n + "_n") else None
    out["pickup_precision"] = s["pickups_matched"] / s["pickups_generated"] if s.get("pickups_generated") else None
    out["pickup_recall"] = s["pickups_matched"] / s["pickups_real"] if s.get("pickups_real") else None
    return out


FIDELITY_METRICS = ("faithful",) + tuple(horizon_name(a, b) for a, b in HORIZONS) + ("pickup_precision", "pickup_recall")


def fidelity_curve(stats: list[FidelityStats]) -> list[float | None]:
    """The faithful fraction at each frame since reset, over episodes long enough to have it."""
    F = max(len(e.per_frame) for e in stats)
    num, den = np.zeros(F), np.zeros(F)
    for e in stats:
        num[: len(e.per_frame)] += e.per_frame
        den[: len(e.per_frame)] += 1
    return [float(a / b) if b else None for a, b in zip(num, den)]


def by_kind(stats: list[FidelityStats]) -> dict[str, float]:
    """The faithful fraction of the frames after each kind of event (up to the next event)."""
    tot: dict[str, list[float]] = {}
    for e in stats:
        for k, (a, n) in e.kinds.items():
            t = tot.setdefault(k, [0.0, 0.0])
            t[0] += a
            t[1] += n
    return {k: a / n for k, (a, n) in sorted(tot.items()) if n}


def by_check(stats: list[FidelityStats]) -> dict[str, dict[str, float | None]]:
    """Each check's pass rate, overall ("all") and per horizon: which part of the faithful test fails first."""
    out: dict[str, dict[str, float | None]] = {}
    for k in CHECKS:
        parts = [e.checks[k] for e in stats if k in e.checks]
        row = {"all": float(np.concatenate(parts).mean()) if parts and sum(map(len, parts)) else None}
        for a, b in HORIZONS:
            span = [p[a:b] for p in parts]
            n = sum(map(len, span))
            row[horizon_name(a, b)] = float(sum(x.sum() for x in span) / n) if n else None
        out[k] = row
    return out
