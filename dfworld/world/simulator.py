"""EventWorld: a procedural 2D world with actions, text events and persistent content.

The agent (green square) moves with discrete actions and collects coins (orange). Two to four
persistent objects, each with a unique colour, a shape and a motion drawn per episode, drift
and bounce; no prompt describes them, and events leave them untouched unless an event names
their colour. Text events change the time of day, the weather, or one object (appear, vanish,
recolour). Entities never overlap (they keep a gap), so every one of them is visible in every
frame and the probes can read the state back exactly.

Everything is deterministic per seed and event sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from dfworld.world.config import ACTION_DELTAS, ACTIONS, COLOR_NAMES, SHAPES, TIMES, WEATHERS, WorldConfig
from dfworld.world.events import Event, parse_event
from dfworld.world.render import Renderer


@dataclass
class ObjectState:
    """One persistent object. Position is continuous; it is drawn at the rounded centre."""

    color: str
    shape: str
    x: float
    y: float
    vx: float
    vy: float

    @property
    def center(self) -> tuple[int, int]:
        return int(round(self.x)), int(round(self.y))


@dataclass
class WorldState:
    """The full true state at one frame."""

    frame: int
    time: str
    weather: str
    objects: list[ObjectState | None]  # one entry per slot; None is an empty slot
    agent: tuple[int, int]
    coin: tuple[int, int]
    coins: int = 0  # coins collected so far
    terminated: bool = False  # the task is done (coins_to_win reached); the world keeps running

    def copy(self) -> WorldState:
        return replace(self, objects=[None if o is None else replace(o) for o in self.objects])

    def object_with_color(self, color: str) -> int | None:
        """The slot holding the object of `color`, or None."""
        for i, o in enumerate(self.objects):
            if o is not None and o.color == color:
                return i
        return None

    def used_colors(self) -> set[str]:
        return {o.color for o in self.objects if o is not None}


@dataclass
class EventResult:
    """What an event did: whether it applied, and why not if it did not."""

    event: Event
    applied: bool
    reason: str = ""


def action_index(action: object) -> int:
    """An action as its index; accepts an index or an action name. Raises for anything else."""
    if isinstance(action, str):
        if action not in ACTIONS:
            raise ValueError(f"unknown action name {action!r}; expected one of {ACTIONS}")
        return ACTIONS.index(action)
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise TypeError(f"an action must be an int in [0, {len(ACTIONS)}) or a name in {ACTIONS}, got {action!r}")
    if not 0 <= int(action) < len(ACTIONS):
        raise ValueError(f"action index {int(action)} is out of range [0, {len(ACTIONS)}); actions: {ACTIONS}")
    return int(action)


@dataclass
class EventWorld:
    """The simulator. `reset(seed)` then `step(action)` and `apply_event(event)`."""

    config: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.config)
        self.state: WorldState | None = None
        self._rng = np.random.default_rng(0)
        c = self.config
        self._r_obj, self._r_agent, self._r_coin = c.px(c.object_radius), c.px(c.agent_radius), c.px(c.coin_radius)
        self._gap = c.px(2)

    # -- episode -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Draw a new episode's content from `seed` and return its first frame."""
        self._rng = np.random.default_rng(seed)
        rng, c = self._rng, self.config
        state = WorldState(
            frame=0,
            time=str(rng.choice(TIMES)),
            weather="clear",
            objects=[None] * c.max_objects,
            agent=(0, 0),
            coin=(0, 0),
        )
        self.state = state
        state.agent = self._free_position(self._r_agent)
        n = int(rng.integers(c.min_objects, c.max_objects))  # leave a slot free for "appear"
        for slot, color_idx in enumerate(rng.choice(len(COLOR_NAMES), size=n, replace=False)):
            state.objects[slot] = self._new_object(COLOR_NAMES[color_idx])
        state.coin = self._free_position(self._r_coin)
        return self.render()

    def _require_state(self) -> WorldState:
        if self.state is None:
            raise RuntimeError("EventWorld: call reset(seed) before step() or apply_event()")
        return self.state

    def step(self, action: int | str) -> tuple[np.ndarray, float]:
        """Advance one frame under `action`; return the new frame and the reward."""
        state = self._require_state()
        dx, dy = ACTION_DELTAS[action_index(action)]
        speed = self.config.agent_speed * self.config.px(1)
        # 1. Move the agent unless an object or a wall is in the way (the coin is not in the way).
        target = (state.agent[0] + dx * speed, state.agent[1] + dy * speed)
        if self._inside(target, self._r_agent) and not self._blocked(target, self._r_agent, skip=("agent", "coin")):
            state.agent = target
        # 2. Collect the coin on touch, and put a new one in free space.
        reward = 0.0
        if self._near(state.agent, self._r_agent, state.coin, self._r_coin):
            reward = 1.0
            state.coins += 1
            state.terminated = state.terminated or state.coins >= self.config.coins_to_win
            state.coin = self._free_position(self._r_coin, skip=("coin",))
        # 3. Drift the objects; an object that would hit a wall or another entity turns back.
        for slot, obj in enumerate(state.objects):
            if obj is not None and (obj.vx or obj.vy):
                self._move_object(slot, obj)
        state.frame += 1
        return self.render(), reward

    def apply_event(self, event: Event | str) -> EventResult:
        """Apply a text event (an Event or any paraphrase) to the current state."""
        state = self._require_state()
        ev = parse_event(event) if isinstance(event, str) else event
        kind = ev.kind
        if kind.startswith("time_"):
            state.time = kind.removeprefix("time_")
        elif kind.startswith("weather_"):
            state.weather = kind.removeprefix("weather_")
        elif kind == "object_appear":
            if ev.color in state.used_colors():
                return EventResult(ev, False, f"a {ev.color} object already exists")
            if None not in state.objects:
                return EventResult(ev, False, f"all {self.config.max_objects} object slots are taken")
            state.objects[state.objects.index(None)] = self._new_object(ev.color)
        elif kind == "object_vanish":
            slot = state.object_with_color(ev.color)
            if slot is None:
                return EventResult(ev, False, f"there is no {ev.color} object")
            state.objects[slot] = None
        elif kind == "object_recolor":
            slot = state.object_with_color(ev.color)
            if slot is None:
                return EventResult(ev, False, f"there is no {ev.color} object")
            if ev.to_color in state.used_colors():
                return EventResult(ev, False, f"a {ev.to_color} object already exists")
            state.objects[slot].color = ev.to_color  # type: ignore[union-attr]
        return EventResult(ev, True)

    def render(self) -> np.ndarray:
        """The current frame, uint8 HWC RGB."""
        s = self._require_state()
        objects = [(o.color, o.shape, *o.center) for o in s.objects if o is not None]
        return self.renderer.draw(s.time, s.weather, s.frame, objects, s.coin, s.agent)

    # -- geometry ------------------------------------------------------------------------------
    def _inside(self, p: tuple[int, int], r: int) -> bool:
        c = self.config
        return r <= p[0] <= c.width - 1 - r and c.sky_rows + r <= p[1] <= c.height - 1 - r

    def _near(self, p: tuple[int, int], rp: int, q: tuple[int, int], rq: int) -> bool:
        reach = rp + rq + self._gap
        return abs(p[0] - q[0]) <= reach and abs(p[1] - q[1]) <= reach

    def _entities(self, skip: tuple[str | int, ...]):
        """(centre, half-size) of every entity not in `skip` ('agent', 'coin' or object slots)."""
        s = self.state
        if "agent" not in skip:
            yield s.agent, self._r_agent
        if "coin" not in skip:
            yield s.coin, self._r_coin
        for i, o in enumerate(s.objects):
            if o is not None and i not in skip:
                yield o.center, self._r_obj

    def _blocked(self, p: tuple[int, int], r: int, skip: tuple[str | int, ...] = ()) -> bool:
        return any(self._near(p, r, q, rq) for q, rq in self._entities(skip))

    def _free_position(self, r: int, skip: tuple[str | int, ...] = ()) -> tuple[int, int]:
        c, rng = self.config, self._rng
        for _ in range(1000):
            p = (int(rng.integers(r, c.width - r)), int(rng.integers(c.sky_rows + r, c.height - r)))
            if not self._blocked(p, r, skip):
                return p
        raise RuntimeError("EventWorld: no free position found; the scene is too crowded for this resolution")

    def _new_object(self, color: str) -> ObjectState:
        c, rng = self.config, self._rng
        x, y = self._free_position(self._r_obj)
        vx = vy = 0.0
        if rng.random() >= c.static_fraction:
            speed = float(rng.choice(c.object_speeds)) * c.scale
            if rng.random() < 0.5:
                vx = speed * rng.choice((-1.0, 1.0))
            else:
                vy = speed * rng.choice((-1.0, 1.0))
        return ObjectState(color, str(rng.choice(SHAPES)), float(x), float(y), vx, vy)

    def _move_object(self, slot: int, obj: ObjectState) -> None:
        nx, ny = obj.x + obj.vx, obj.y + obj.vy
        p = (int(round(nx)), int(round(ny)))
        if p != obj.center and (not self._inside(p, self._r_obj) or self._blocked(p, self._r_obj, skip=(slot,))):
            obj.vx, obj.vy = -obj.vx, -obj.vy
            return
        obj.x, obj.y = nx, ny

    # -- true state as arrays ------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The true state of the current frame as fixed-shape arrays (for data sets and tests)."""
        s = self._require_state()
        k = self.config.max_objects
        present = np.zeros(k, bool)
        color = np.full(k, -1, np.int8)
        shape = np.full(k, -1, np.int8)
        pos = np.zeros((k, 2), np.int16)
        for i, o in enumerate(s.objects):
            if o is not None:
                present[i], color[i], shape[i] = True, COLOR_NAMES.index(o.color), SHAPES.index(o.shape)
                pos[i] = o.center
        return {
            "time": np.int8(TIMES.index(s.time)),
            "weather": np.int8(WEATHERS.index(s.weather)),
            "obj_present": present,
            "obj_color": color,
            "obj_shape": shape,
            "obj_pos": pos,
            "agent_pos": np.array(s.agent, np.int16),
            "coin_pos": np.array(s.coin, np.int16),
            "coins": np.int16(s.coins),
        }
