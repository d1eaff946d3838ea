"""Probes: read EventWorld state back from pixels alone.

They know the palette (as a person who has seen the world knows its colours) but nothing of the
true state, so they run unchanged on simulator frames and on generated frames.

- time of day and weather: the median colour of the sky band and of the ground, matched to the
  nine (time, weather) prototypes the renderer would draw; medians ignore particles and entities.
- entities (each object colour, the agent, the coin): every ground pixel goes to its nearest
  colour among the entity colours and the measured ground colour; for each entity colour the
  largest connected blob above a minimum area is the entity, and its centroid is its position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from dfworld.world.config import (
    AGENT_COLOR,
    COIN_COLOR,
    COLOR_NAMES,
    OBJECT_COLORS,
    SKY_COLORS,
    TIMES,
    WEATHERS,
    WorldConfig,
    ground_color,
)

ENTITY_NAMES: tuple[str, ...] = COLOR_NAMES + ("agent", "coin")
_ENTITY_RGB = np.array([OBJECT_COLORS[c] for c in COLOR_NAMES] + [AGENT_COLOR, COIN_COLOR], np.float32)
_SCENES: tuple[tuple[str, str], ...] = tuple((t, w) for t in TIMES for w in WEATHERS)
_SCENE_FEATURES = np.array([SKY_COLORS[t] + ground_color(t, w) for t, w in _SCENES], np.float32)  # [9, 6]
MAX_UNMIX_RESIDUAL = 45.0  # RGB distance from the ground-to-colour line beyond which a pixel is ground


@dataclass
class Blob:
    """A detected entity: centroid (x, y) in pixels and area in pixels."""

    x: float
    y: float
    area: int


@dataclass
class FrameReading:
    """What the probes read from one frame."""

    time: str
    weather: str
    objects: dict[str, Blob] = field(default_factory=dict)  # colour -> blob, present objects only
    agent: Blob | None = None
    coin: Blob | None = None


def _min_areas(config: WorldConfig) -> np.ndarray:
    # A third of the smallest drawn area of each entity kind; smaller blobs are edge artefacts.
    def disc(r: int) -> float:
        return np.pi * r * r

    obj = disc(config.px(config.object_radius)) / 3
    agent = (2 * config.px(config.agent_radius) + 1) ** 2 / 3
    coin = disc(config.px(config.coin_radius)) / 3
    return np.array([obj] * len(COLOR_NAMES) + [agent, coin], np.float32)


def read_scene(frame: np.ndarray, config: WorldConfig) -> tuple[str, str, np.ndarray]:
    """(time, weather, ground RGB) of one frame from the medians of the sky and the ground."""
    s = config.sky_rows
    sky = np.median(frame[:s].reshape(-1, 3), axis=0)
    ground = np.median(frame[s:].reshape(-1, 3), axis=0)
    feat = np.concatenate([sky, ground]).astype(np.float32)
    time, weather = _SCENES[int(np.argmin(((_SCENE_FEATURES - feat) ** 2).sum(1)))]
    return time, weather, ground.astype(np.float32)


def _entity_labels(pix: np.ndarray, ground: np.ndarray) -> np.ndarray:
    """Label each ground-region pixel with an entity index, or -1 for ground.

    Blurred edges blend an entity with the ground, and such a blend can sit closer to a third
    palette colour than to either (blue on night ground looks purple). So each pixel p is unmixed
    against every entity colour c along the line from the ground g: p ~ g + a (c - g). The entity
    is the one with the smallest residual; the pixel is counted only if a >= 0.5 (mostly entity)
    and the residual is small.
    """
    p = pix.reshape(-1, 3).astype(np.float32) - ground  # [P, 3]
    v = _ENTITY_RGB - ground  # [E, 3]
    vv = np.maximum((v * v).sum(1), 1.0)  # [E]
    dots = p @ v.T  # [P, E]
    a = np.clip(dots / vv, 0.0, 1.0)
    res = (p * p).sum(1, keepdims=True) - 2 * a * dots + a * a * vv  # squared distance to the line
    best = res.argmin(1)
    rows = np.arange(len(p))
    keep = (a[rows, best] >= 0.5) & (res[rows, best] <= MAX_UNMIX_RESIDUAL**2)
    return np.where(keep, best, -1).reshape(pix.shape[:2])


def read_frame(frame: np.ndarray, config: WorldConfig | None = None, entities: tuple[str, ...] | None = None) -> FrameReading:
    """Read the state of one uint8 HWC RGB frame.

    `entities`: the names (of ENTITY_NAMES) to find; None: all. A pixel's label weighs every entity colour either way,
    so an entity read alone is the blob it is in a full reading; the others are left out (the reward reads the agent
    and the coin only).
    """
    config = config or WorldConfig(height=frame.shape[0], width=frame.shape[1])
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"probes read uint8 HWC RGB frames, got dtype {frame.dtype} shape {frame.shape}")
    if frame.shape[:2] != (config.height, config.width):
        raise ValueError(f"frame is {frame.shape[:2]} but the world is {(config.height, config.width)}")
    if entities is not None and set(entities) - set(ENTITY_NAMES):
        raise ValueError(f"unknown entities {sorted(set(entities) - set(ENTITY_NAMES))}; the probes find {list(ENTITY_NAMES)}")
    time, weather, ground = read_scene(frame, config)
    s = config.sky_rows
    label = _entity_labels(frame[s:], ground)
    reading = FrameReading(time, weather)
    min_area = _min_areas(config)
    for e, name in enumerate(ENTITY_NAMES):
        if entities is not None and name not in entities:
            continue
        mask = (label == e).view(np.uint8)
        if mask.sum() < min_area[e]:
            continue
        n, _, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[best, cv2.CC_STAT_AREA])
        if area < min_area[e]:
            continue
        blob = Blob(float(cents[best, 0]), float(cents[best, 1]) + s, area)
        if name == "agent":
            reading.agent = blob
        elif name == "coin":
            reading.coin = blob
        else:
            reading.objects[name] = blob
    return reading


def read_frames(frames: np.ndarray, config: WorldConfig | None = None) -> list[FrameReading]:
    """Read every frame of a [F, H, W, 3] uint8 array."""
    return [read_frame(f, config) for f in frames]


def degrade(frames: np.ndarray, blur_sigma: float = 1.0, noise_sigma: float = 8.0, seed: int = 0) -> np.ndarray:
    """Gaussian blur then Gaussian pixel noise (sigma in 0-255 units): a stand-in for generated frames."""
    rng = np.random.default_rng(seed)
    flat = frames.reshape((-1,) + frames.shape[-3:])
    out = np.stack([cv2.GaussianBlur(f, (0, 0), blur_sigma) if blur_sigma > 0 else f for f in flat])
    out = out.astype(np.float32) + rng.normal(0.0, noise_sigma, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(frames.shape)


def score_readings(readings: list[FrameReading], states: dict[str, np.ndarray]) -> dict[str, float]:
    """Probe accuracy against true state (EventWorld.state_arrays stacked over frames).

    Classes: time and weather accuracy, and object presence accuracy over every (frame, colour)
    pair. Positions: errors in pixels of objects found where they are, and of the agent and coin
    (an entity the probe missed counts as a presence error, not a position error).
    """
    n = len(readings)
    time_ok = weather_ok = 0
    presence, obj_err, agent_err, coin_err = [], [], [], []
    for f, r in enumerate(readings):
        time_ok += r.time == TIMES[states["time"][f]]
        weather_ok += r.weather == WEATHERS[states["weather"][f]]
        truth = {
            COLOR_NAMES[c]: p
            for c, p, ok in zip(states["obj_color"][f], states["obj_pos"][f], states["obj_present"][f])
            if ok
        }
        for c in COLOR_NAMES:
            presence.append((c in truth) == (c in r.objects))
            if c in truth and c in r.objects:
                obj_err.append(np.hypot(r.objects[c].x - truth[c][0], r.objects[c].y - truth[c][1]))
        for blob, key, errs in ((r.agent, "agent_pos", agent_err), (r.coin, "coin_pos", coin_err)):
            presence.append(blob is not None)
            if blob is not None:
                errs.append(np.hypot(blob.x - states[key][f][0], blob.y - states[key][f][1]))
    pos = np.array(obj_err + agent_err + coin_err)
    return {
        "frames": n,
        "time_acc": time_ok / n,
        "weather_acc": weather_ok / n,
        "presence_acc": float(np.mean(presence)),
        "pos_err_mean": float(pos.mean()) if len(pos) else float("nan"),
        "pos_err_p99": float(np.percentile(pos, 99)) if len(pos) else float("nan"),
        "pos_err_max": float(pos.max()) if len(pos) else float("nan"),
    }
