"""`ActionOnly`: the envs with a `Discrete(5)` action space, for RL libraries that cannot sample text.

Stable-Baselines3, CleanRL and TorchRL's `GymWrapper` draw actions from the action space; a
`Text` space defeats them (TorchRL's wrapper samples the prompt "a string", which both envs
refuse). `ActionOnly` keeps the agent's choice to the five moves and sends the text events
itself, from a schedule or an event script:

    env = ActionOnly(gym.make("dfworld/WorldModel-v0"), events=[(8, "night falls")], frame_stack=4)
    model = stable_baselines3.PPO("CnnPolicy", env).learn(10_000)

An event due before step k is sent as its own env step (the agent stands still for that step,
as a text step does in both envs; its reward counts towards step k), then the agent's action.
Observations are the last frame, or the last `frame_stack` frames stacked on the channel axis
([H, W, 3 * frame_stack] uint8, what SB3's `CnnPolicy` reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dfworld.envs.spaces import parse_schedule
from dfworld.world.config import ACTIONS


def script_schedules(script: str | Path, frames_per_step: int) -> list[dict[int, str]]:
    """Per episode of an event script (a shipped suite or a file), its events by step (frame // frames_per_step)."""
    from dfworld.world.suite import resolve_script

    out = []
    for ep in resolve_script(str(script)).episodes:
        sched: dict[int, str] = {}
        for item in ep.events():
            step = item.t // frames_per_step
            if step in sched:
                raise ValueError(f"script {script}: episode {ep.id!r} has two events in step {step} (frames "
                                 f"{step * frames_per_step}-{step * frames_per_step + frames_per_step - 1}, line {item.line}); "
                                 "one event per step can be sent")
            sched[step] = item.event
        out.append(sched)
    return out


class ActionOnly(gym.Wrapper):
    """A dfworld env (EventWorld-v0 or WorldModel-v0) with `Discrete(5)` actions and scheduled text events.

    Args:
        env: the env to wrap.
        events: None (no events); a schedule of (step, text) pairs or {"step", "event"} dicts, the same every episode; or an event
            script (a shipped suite name such as "core", or a script file), episode i of the script
            giving the events of the i-th reset (cycling).
        frame_stack: observations stack the last this many frames on the channel axis.
    """

    def __init__(self, env: gym.Env, events: Sequence | str | Path | None = None, frame_stack: int = 1):
        super().__init__(env)
        if isinstance(frame_stack, bool) or not isinstance(frame_stack, int) or frame_stack < 1:
            raise ValueError(f"frame_stack must be a positive int, got {frame_stack!r}")
        base = env.observation_space
        if not isinstance(base, spaces.Box) or base.shape[-1] != 3:
            raise ValueError(f"ActionOnly wraps an env with [H, W, 3] frames, got {base}")
        self.frame_stack = frame_stack
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.observation_space = spaces.Box(0, 255, base.shape[:2] + (3 * frame_stack,), np.uint8)
        if events is None:
            self.schedules = [{}]
        elif isinstance(events, (str, Path)):
            self.schedules = script_schedules(events, int(getattr(env.unwrapped, "frames_per_step", None) or env.unwrapped.core.chunk))
        else:
            self.schedules = [parse_schedule(events, "ActionOnly's events")]
        self.episode = -1
        self.t = 0
        self.frames: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        return np.concatenate(self.frames[-self.frame_stack :], axis=-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.episode += 1
        self.t = 0
        self.frames = [obs] * self.frame_stack
        return self._obs(), info

    def step(self, action):
        if isinstance(action, np.ndarray) and action.shape in ((), (1,)):
            action = action.reshape(())[()]
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) or not 0 <= action < len(ACTIONS):
            raise ValueError(f"ActionOnly takes an action in [0, {len(ACTIONS)}), got {action!r}")
        reward, info = 0.0, {}
        event = self.schedules[self.episode % len(self.schedules)].get(self.t)
        if event is not None:  # the event's own step: the agent stands still
            obs, r, terminated, truncated, info = self.env.step(event)
            reward += float(r)
            self.frames.append(obs)
            if terminated or truncated:
                self.t += 1
                return self._obs(), reward, terminated, truncated, info
        obs, r, terminated, truncated, step_info = self.env.step(int(action))
        reward += float(r)
        info = {**info, **step_info}
        if event is not None:
            info["event"] = event
        self.frames.append(obs)
        self.frames = self.frames[-self.frame_stack :]
        self.t += 1
        return self._obs(), reward, terminated, truncated, info
