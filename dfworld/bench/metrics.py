"""Metrics on probe readings: does an event hold, and how persistent is the content it did not target."""

from __future__ import annotations

import numpy as np

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
