"""Drawing EventWorld frames with numpy and OpenCV.

A frame is a sky band (time of day, with animated rain or snow) over flat ground (tinted by time
and weather), with the persistent objects, the coin and the agent drawn on top. Backgrounds are
cached per (time, weather, animation phase), so a frame costs one copy plus a few primitives.
"""

from __future__ import annotations

import cv2
import numpy as np

from dfworld.world.config import (
    AGENT_COLOR,
    COIN_COLOR,
    COLOR_NAMES,
    OBJECT_COLORS,
    RAIN_COLOR,
    SKY_COLORS,
    SNOW_COLOR,
    TIMES,
    WEATHERS,
    WorldConfig,
    ground_color,
)

WEATHER_PERIOD = 16  # frames before the rain/snow animation repeats, at every resolution


class Renderer:
    """Draws frames for one WorldConfig; holds the background cache."""

    def __init__(self, config: WorldConfig):
        self.config = config
        self._backgrounds: dict[tuple[str, str, int], np.ndarray] = {}
        self._snow = self._snow_flakes()

    def _snow_flakes(self) -> np.ndarray:
        # Fixed flake positions in the sky band (x, y), one per 8x8 reference cell, jittered.
        cfg = self.config
        rng = np.random.default_rng(0)
        cell = cfg.px(8)
        xs, ys = np.meshgrid(np.arange(0, cfg.width, cell), np.arange(0, cfg.sky_rows, cell))
        jitter = rng.integers(0, max(1, cell - cfg.px(2)), size=(2,) + xs.shape)
        return np.stack([xs + jitter[0], ys + jitter[1]], -1).reshape(-1, 2)

    def background(self, time: str, weather: str, frame: int) -> np.ndarray:
        """The scene without entities at `frame` (read-only; copy before drawing)."""
        key = (time, weather, frame % WEATHER_PERIOD)
        bg = self._backgrounds.get(key)
        if bg is None:
            bg = self._draw_background(*key)
            bg.setflags(write=False)
            self._backgrounds[key] = bg
        return bg

    def _draw_background(self, time: str, weather: str, phase: int) -> np.ndarray:
        cfg = self.config
        if time not in TIMES or weather not in WEATHERS:
            raise ValueError(f"cannot draw time={time!r} weather={weather!r}; expected {TIMES} x {WEATHERS}")
        img = np.empty((cfg.height, cfg.width, 3), np.uint8)
        s = cfg.sky_rows
        img[:s] = SKY_COLORS[time]
        img[s:] = ground_color(time, weather)
        shift = phase * cfg.px(1)  # particles fall one reference pixel per frame
        if weather == "rain":
            # Dashes in every 4th column, staggered, falling with the phase.
            y, x = np.mgrid[0:s, 0 : cfg.width]
            period = cfg.px(8)
            mask = (x % cfg.px(4) < cfg.px(1)) & (((y - shift + 3 * (x // cfg.px(4))) % period) < cfg.px(5))
            img[:s][mask] = RAIN_COLOR
        elif weather == "snow":
            size = cfg.px(2)
            for fx, fy in self._snow:
                y0 = (fy + shift) % s
                img[y0 : min(s, y0 + size), fx : fx + size] = SNOW_COLOR
        return img

    def draw(self, time: str, weather: str, frame: int, objects, coin, agent) -> np.ndarray:
        """Render one frame. `objects` holds (colour, shape, x, y) with integer centres."""
        cfg = self.config
        img = self.background(time, weather, frame).copy()
        r = cfg.px(cfg.object_radius)
        for color, shape, x, y in objects:
            rgb = OBJECT_COLORS[color]
            if shape == "circle":
                cv2.circle(img, (x, y), r, rgb, -1, lineType=cv2.LINE_8)
            else:
                cv2.rectangle(img, (x - r, y - r), (x + r, y + r), rgb, -1)
        rc = cfg.px(cfg.coin_radius)
        cv2.circle(img, coin, rc, COIN_COLOR, -1, lineType=cv2.LINE_8)
        ra = cfg.px(cfg.agent_radius)
        ax, ay = agent
        cv2.rectangle(img, (ax - ra, ay - ra), (ax + ra, ay + ra), AGENT_COLOR, -1)
        return img


def entity_boxes_mask(states: dict[str, np.ndarray], config: WorldConfig, color: str | None = None) -> np.ndarray:
    """Where the entities are drawn: a bool mask [F, H, W] from true states stacked over F frames.

    Each present object, the coin and the agent cover the square box the renderer draws them in
    (a circle's bounding square). The teacher weights its loss by this mask (TeacherStageConfig.entity_weight).
    With `color`, only the objects of that colour (no agent, no coin): the object an event names
    (TeacherStageConfig.event_weight).
    """
    present, pos = np.asarray(states["obj_present"]), np.asarray(states["obj_pos"])
    if color is not None:
        present = present & (np.asarray(states["obj_color"]) == COLOR_NAMES.index(color))
    F = present.shape[0]
    mask = np.zeros((F, config.height, config.width), bool)
    ro, rc, ra = config.px(config.object_radius), config.px(config.coin_radius), config.px(config.agent_radius)

    def box(f: int, x: int, y: int, r: int) -> None:
        mask[f, max(0, y - r) : max(0, y + r + 1), max(0, x - r) : max(0, x + r + 1)] = True

    for f in range(F):
        for ok, (x, y) in zip(present[f], pos[f]):
            if ok:
                box(f, int(x), int(y), ro)
        if color is None:
            box(f, *map(int, states["coin_pos"][f]), rc)
            box(f, *map(int, states["agent_pos"][f]), ra)
    return mask
