"""`dfworld/EventWorld-v0`: the real EventWorld simulator as a Gymnasium environment."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dfworld.envs.spaces import keys_to_action, make_action_space, parse_step_input
from dfworld.world.config import START_FRAMES, WorldConfig, check_seed
from dfworld.world.episodes import real_start
from dfworld.world.events import parse_event
from dfworld.world.simulator import EventWorld

_RESET_OPTIONS = {"prompt"}


class EventWorldEnv(gym.Env):
    """The EventWorld simulator behind the same interface as the world model.

    ## Description
    A 2D scene: a sky that shows the time of day and the weather, and ground on which an agent
    (green square) collects coins (orange) among two to four persistent objects of unique
    colours that drift and bounce. Text events change the time of day, the weather, or one
    object (appear, vanish, recolour); nothing else changes. One step runs `frames_per_step`
    frames of the 16 frames/s clock; `render_fps` is the step rate (16 / frames_per_step), as
    `render()` shows one frame per step.

    ## Action space
    `Dict(kind=Discrete(2), action=Discrete(5), prompt=EventText)`. kind 0 moves the agent
    (0 noop, 1 up, 2 down, 3 left, 4 right); kind 1 applies the text event `prompt` (any
    paraphrase of an EventWorld event) and the agent stands still. `step()` also accepts a plain
    int (an action) or a plain str (a text event).

    ## Observation space
    `Box(0, 255, (height, width, 3), uint8)`: the last frame of the step. `info["frames"]`
    holds every frame of the step, `[frames_per_step, H, W, 3]`.

    ## Rewards
    +1 for each coin collected; a new coin then appears in free space.

    ## Episode end
    Terminated when `coins_to_win` coins have been collected. Truncated by the registered
    TimeLimit (250 steps).

    ## Arguments
    - `render_mode`: None or "rgb_array".
    - `frames_per_step`: simulated frames per step (default 4, the world model's chunk).
    - `world`: a WorldConfig or a dict of its fields (resolution, object counts, ...).

    - `start_frames`: the frames `reset` plays (default 4, the world model's context): the reset
      frame, then frames in which the agent stands still (`dfworld.world.episodes.real_start`);
      the observation is the last, `info["frames"]` holds them all. WorldModel-v0 starts from the
      same frames for the same seed, so both envs begin in one scene.

    `reset(seed=..., options={"prompt": text})` applies an event to the initial scene.
    An event text that is not an EventWorld event raises ValueError and changes nothing; an
    event that cannot apply (no red object to recolour) is reported in `info["event_applied"]`
    and `info["event_reason"]`.

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": WorldConfig().fps / 4}  # the step rate at 4 frames per step

    def __init__(self, render_mode: str | None = None, frames_per_step: int = 4, world: WorldConfig | dict | None = None,
                 start_frames: int = START_FRAMES):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use None or 'rgb_array'")
        if isinstance(frames_per_step, bool) or not isinstance(frames_per_step, int) or frames_per_step < 1:
            raise ValueError(f"frames_per_step must be a positive int, got {frames_per_step!r}")
        if isinstance(start_frames, bool) or not isinstance(start_frames, int) or start_frames < 1:
            raise ValueError(f"start_frames must be a positive int, got {start_frames!r}")
        self.start_frames = start_frames
        self.config = world if isinstance(world, WorldConfig) else WorldConfig(**(world or {}))
        # one rendered frame per step: videos (RecordVideo) and play() run at the step rate, in real time
        self.metadata = {**self.metadata, "render_fps": self.config.fps / frames_per_step}
        self.render_mode = render_mode
        self.frames_per_step = frames_per_step
        self.world = EventWorld(self.config)
        self.observation_space = spaces.Box(0, 255, (self.config.height, self.config.width, 3), np.uint8)
        self.action_space = make_action_space()
        self._frame: np.ndarray | None = None
        self._prompt = ""
        self._done = False
        self._closed = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._check_open()
        if seed is not None:  # everything is checked before any change, the random stream included
            seed = check_seed(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict, got {type(options).__name__}")
        options = dict(options or {})
        if unknown := set(options) - _RESET_OPTIONS:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; EventWorld-v0 accepts {sorted(_RESET_OPTIONS)}")
        if "prompt" in options:
            parse_event(options["prompt"])  # a text that is no event raises here, changing nothing
        super().reset(seed=seed)
        world_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        start = real_start(self.world, world_seed, self.start_frames, options.get("prompt"))
        self._frame, self._prompt = start.frames[-1], start.prompt
        info: dict[str, Any] = {"world_seed": world_seed, "frames": start.frames, **start.event}
        self._done = False
        info.update(self._state_info())
        return self._frame, info

    def step(self, action):
        self._check_open()
        if self._frame is None:
            raise RuntimeError("EventWorld-v0: call reset() before step()")
        if self._done:
            raise RuntimeError("EventWorld-v0: the episode has terminated; call reset() before step()")
        move, text = parse_step_input(action)
        info: dict[str, Any] = {}
        if text is not None:
            info.update(self._apply(text, parse_event(text)))  # a text that is no event raises here, changing nothing
        frames, reward = [], 0.0
        for _ in range(self.frames_per_step):
            frame, r = self.world.step(move)
            frames.append(frame)
            reward += r
        self._frame = frames[-1]
        terminated = self.world.state.terminated
        self._done = terminated
        info["frames"] = np.stack(frames)
        info.update(self._state_info())
        return self._frame, reward, terminated, False, info

    def get_keys_to_action(self) -> dict[tuple, dict]:
        """Keys for `gymnasium.utils.play.play(env, noop=0)`: WASD and the arrow keys."""
        return keys_to_action()

    def render(self):
        if self.render_mode == "rgb_array":
            if self._frame is None:
                raise RuntimeError("EventWorld-v0: call reset() before render()")
            return self._frame.copy()
        return None

    def close(self):
        self._closed = True

    # -- helpers -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("EventWorld-v0: the environment is closed; make a new one")

    def _apply(self, text: str, event) -> dict[str, Any]:
        res = self.world.apply_event(event)
        if res.applied:
            self._prompt = text
        return {"event": text, "event_applied": res.applied, "event_reason": res.reason}

    def _state_info(self) -> dict[str, Any]:
        s = self.world.state
        return {"prompt": self._prompt, "frame_index": s.frame, "coins": s.coins, "state": self.world.state_arrays()}
