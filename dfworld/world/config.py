"""EventWorld configuration and the palette shared by the renderer and the probes.

The renderer draws only these colours, and the probes read them back, so both import them from
here. Sizes are given at the 64x64 reference resolution and scaled with the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Actions: index -> name. Movement is one step of `agent_speed` pixels per frame.
ACTIONS: tuple[str, ...] = ("noop", "up", "down", "left", "right")
ACTION_DELTAS: tuple[tuple[int, int], ...] = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))  # (dx, dy)

# Scene-wide attributes that text events change.
TIMES: tuple[str, ...] = ("day", "dusk", "night")
WEATHERS: tuple[str, ...] = ("clear", "rain", "snow")

# Persistent objects: six colours, each used by at most one object per episode, so a colour names
# an object. RGB.
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "yellow": (235, 225, 50),
    "blue": (50, 90, 240),
    "pink": (215, 60, 210),
    "cyan": (50, 215, 225),
    "purple": (120, 40, 170),
}
COLOR_NAMES: tuple[str, ...] = tuple(OBJECT_COLORS)
SHAPES: tuple[str, ...] = ("circle", "square")

AGENT_COLOR: tuple[int, int, int] = (40, 200, 60)
COIN_COLOR: tuple[int, int, int] = (255, 140, 0)

SKY_COLORS: dict[str, tuple[int, int, int]] = {
    "day": (135, 200, 240),
    "dusk": (245, 150, 80),
    "night": (20, 24, 60),
}
GROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "day": (170, 150, 110),
    "dusk": (140, 105, 90),
    "night": (50, 50, 65),
}
RAIN_COLOR: tuple[int, int, int] = (70, 80, 125)
SNOW_COLOR: tuple[int, int, int] = (250, 250, 250)
# How each weather tints the ground: rain darkens it (wet), snow blends it toward snow lit by the
# time of day.
RAIN_GROUND_GAIN = 0.72
SNOW_GROUND_MIX = 0.6
TIME_BRIGHTNESS: dict[str, float] = {"day": 1.0, "dusk": 0.8, "night": 0.32}


def ground_color(time: str, weather: str) -> tuple[int, int, int]:
    """The flat ground colour for a (time of day, weather) pair."""
    base = GROUND_COLORS[time]
    if weather == "rain":
        return tuple(int(round(c * RAIN_GROUND_GAIN)) for c in base)  # type: ignore[return-value]
    if weather == "snow":
        lit = [s * TIME_BRIGHTNESS[time] for s in (225, 225, 230)]
        mixed = [(1 - SNOW_GROUND_MIX) * b + SNOW_GROUND_MIX * s for b, s in zip(base, lit)]
        return tuple(int(round(c)) for c in mixed)  # type: ignore[return-value]
    return base


SEED_RANGE = 2**63  # episode seeds are ints in [0, 2**63): EventWorld, the world model and torch's generators take them


# real frames every episode starts from (dfworld.world.episodes.real_start): one chunk of the world model
START_FRAMES = 4


def check_seed(seed: object) -> int:
    """An episode seed: an int (not a bool) in [0, 2**63); raises naming the value otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < SEED_RANGE:
        raise ValueError(f"a seed must be an int in [0, 2**63), got {seed!r}")
    return int(seed)


MAX_RADIUS = 8  # largest entity half-size at 64x64: four objects, the agent and the coin still fit the ground
MAX_SPEED = 4  # fastest movement in pixels per frame at 64x64


@dataclass(frozen=True)
class WorldConfig:
    """EventWorld settings. Sizes are in pixels at 64x64 and scale with the frame."""

    height: int = 64  # frame height in pixels (multiple of 16, at least 32)
    width: int = 64  # frame width in pixels (multiple of 16, at least 32)
    fps: int = 16  # frames per second of the simulated clock (render_fps of the envs)
    min_objects: int = 2  # fewest persistent objects drawn at reset
    max_objects: int = 4  # object slots; an "appear" event needs a free one
    object_radius: int = 4  # half-size of an object (circle radius or half the square side)
    agent_radius: int = 3  # half-size of the agent square
    coin_radius: int = 3  # coin circle radius
    agent_speed: int = 1  # agent pixels per frame for a movement action
    object_speeds: tuple[float, ...] = (0.25, 0.5)  # drift speeds in pixels per frame
    static_fraction: float = 0.35  # probability that an object does not move
    coins_to_win: int = 3  # coins collected before the episode terminates

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            v = getattr(self, name)
            if v < 32 or v % 16:
                raise ValueError(f"WorldConfig.{name}={v}: must be a multiple of 16 and at least 32")
        if not 1 <= self.min_objects <= self.max_objects <= len(COLOR_NAMES) - 1:
            raise ValueError(
                f"WorldConfig needs 1 <= min_objects ({self.min_objects}) <= max_objects "
                f"({self.max_objects}) <= {len(COLOR_NAMES) - 1} (one colour must stay free)"
            )
        if self.fps <= 0 or self.coins_to_win <= 0:
            raise ValueError(f"WorldConfig: fps ({self.fps}) and coins_to_win ({self.coins_to_win}) must be positive")
        for name in ("object_radius", "agent_radius", "coin_radius"):  # in reference pixels: 8 leaves room for every entity
            if not 1 <= getattr(self, name) <= MAX_RADIUS:
                raise ValueError(f"WorldConfig.{name}={getattr(self, name)}: must be in [1, {MAX_RADIUS}] (pixels at 64x64)")
        if not 1 <= self.agent_speed <= MAX_SPEED:
            raise ValueError(f"WorldConfig.agent_speed={self.agent_speed}: must be in [1, {MAX_SPEED}] pixels per frame")
        speeds = self.object_speeds
        if not speeds or not all(isinstance(s, (int, float)) and math.isfinite(s) and 0 < s <= MAX_SPEED for s in speeds):
            raise ValueError(f"WorldConfig.object_speeds={list(speeds)}: one or more finite speeds in (0, {MAX_SPEED}] pixels per frame")
        if not 0.0 <= self.static_fraction <= 1.0:
            raise ValueError(f"WorldConfig.static_fraction={self.static_fraction}: must be a probability in [0, 1]")

    @property
    def scale(self) -> float:
        """Pixels per reference pixel (1.0 at 64x64)."""
        return min(self.height, self.width) / 64.0

    @property
    def sky_rows(self) -> int:
        """Rows of the sky band at the top of the frame."""
        return self.height // 4

    def px(self, size: float) -> int:
        """A reference size scaled to this resolution, at least one pixel."""
        return max(1, int(round(size * self.scale)))
