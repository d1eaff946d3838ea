"""Metrics on probe readings: does an event hold, and how persistent is the content it did not target."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from dfworld.world.config import SKY_COLORS, TIMES, WEATHERS, WorldConfig, ground_color
from dfworld.world.events import Event
from dfworld.world.probes import FrameReading


def event_holds(event: Event, reading: FrameReading) -> bool:
    """Whether the probe reading shows the event's effect."""
    kind = event.kind
    if kind.startswith("time_"):
        return reading.time == kind.removeprefix("time_")
    if kind.startswith("weather_"):
        return reading.weather == kind.removeprefix("weather_")
    if kind == "object_appear":
        return event.color in reading.objects
    if kind == "object_vanish":
        return event.color not in reading.objects
    return event.to_color in reading.objects and event.color not in reading.objects


def persistent_objects(readings: list[FrameReading], majority: float = 0.5) -> set[str]:
    """Object colours found in more than `majority` of the frames."""
    counts: dict[str, int] = {}
    for r in readings:
        for c in r.objects:
            counts[c] = counts.get(c, 0) + 1
    return {c for c, n in counts.items() if n > majority * len(readings)}


def object_detection_rate(readings: list[FrameReading], exclude: set[str] = frozenset()) -> float:
    """Fraction of (frame, persistent object) pairs in which the probe finds the object.

    A clip with no persistent object scores 0: the scene lost its content.
    """
    objs = persistent_objects(readings) - set(exclude)
    if not objs:
        return 0.0
    return float(np.mean([[c in r.objects for c in sorted(objs)] for r in readings]))


# -- scripted-suite metrics (dfworld bench; definitions in dfworld.bench.suite_runner) ------------

BEFORE_FRAMES = 8  # frames before an event that define the content it must leave alone
REACTION_FRAMES = 16  # K: an event must take effect within this many frames to count as reactive
SCENE_RATIO = 0.5  # a scene reads as a (time, weather) when its nearest prototype is this much nearer than the next


def scene_fit(frame: np.ndarray, config: WorldConfig) -> float:
    """Distance of a frame's (sky, ground) medians to the nearest (time, weather) prototype over
    the distance to the second nearest: 0 for a rendered scene, near 1 for an ambiguous or foreign one."""
    s = config.sky_rows
    feat = np.concatenate([np.median(frame[:s].reshape(-1, 3), 0), np.median(frame[s:].reshape(-1, 3), 0)])
    protos = np.array([SKY_COLORS[t] + ground_color(t, w) for t in TIMES for w in WEATHERS], np.float64)  # [9, 6]
    d1, d2 = np.sort(np.linalg.norm(protos - feat, axis=1))[:2]
    return float(d1 / max(d2, 1e-6))


def frame_valid(reading: FrameReading, fit: float) -> bool:
    """The probes read a time and weather unambiguously (scene_fit <= SCENE_RATIO) and find the agent."""
    return fit <= SCENE_RATIO and reading.agent is not None


def _mode(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0]


@dataclass(frozen=True)
class Untouched:
    """The content an event did not target, as read in the frames just before it."""

    objects: frozenset[str]  # persistent object colours, the event's colours excluded
    agent: bool  # the agent was found in most frames before
    time: str | None  # the time of day before, unless the event targets time
    weather: str | None  # the weather before, unless the event targets weather

    @property
    def size(self) -> int:
        return len(self.objects) + int(self.agent) + (self.time is not None) + (self.weather is not None)

    def kept(self, reading: FrameReading) -> float:
        """Fraction of the untouched content that `reading` still shows unchanged."""
        same = sum(c in reading.objects for c in self.objects) + int(self.agent and reading.agent is not None)
        same += (self.time is not None and reading.time == self.time) + (self.weather is not None and reading.weather == self.weather)
        return same / self.size


def untouched_content(event: Event, before: list[FrameReading]) -> Untouched:
    """What `event` must leave alone, from the readings of the frames before it (non-empty)."""
    targets = {c for c in (event.color, event.to_color) if c is not None}
    return Untouched(
        objects=frozenset(persistent_objects(before) - targets),
        agent=sum(r.agent is not None for r in before) > len(before) / 2,
        time=None if event.target == "time" else _mode([r.time for r in before]),
        weather=None if event.target == "weather" else _mode([r.weather for r in before]),
    )


def consistency_curve(event: Event, before: list[FrameReading], after: list[FrameReading]) -> np.ndarray | None:
    """c(d) for d = 0..len(after)-1: the fraction of untouched content still read the same d frames
    after the event; None when there is nothing before the event or nothing untouched."""
    if not before or not after:
        return None
    content = untouched_content(event, before)
    if content.size == 0:
        return None
    return np.array([content.kept(r) for r in after], np.float64)


def reaction_delay(event: Event, after: list[FrameReading]) -> int | None:
    """d0, the first frame after the event (0 = the event's own frame) where its effect holds,
    provided it then holds in most frames of `after` from d0 on; None when it never takes effect."""
    holds = np.array([event_holds(event, r) for r in after], bool)
    if not holds.any():
        return None
    d0 = int(np.argmax(holds))
    return d0 if holds[d0:].mean() > 0.5 else None
