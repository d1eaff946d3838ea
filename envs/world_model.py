"""`dfworld/WorldModel-v0`: the trained generator as a Gymnasium environment, single and batched.

Both environments run on one `WorldModelCore` (`dfworld.envs.core`): one generator, one KV cache, B rows. A step
generates one chunk of frames per row; an action is held for the chunk; a text event re-encodes
the row's condition and re-caches (LongLive) before the chunk is generated.

The core receives a built sampler (`dfworld.runtime.backends.build_sampler`: checkpoint and
backend); reward and termination come from the probes on the generated frames
(`dfworld.envs.reward`).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dfworld.envs.core import RESET_OPTIONS, WorldModelCore
from dfworld.envs.spaces import keys_to_action, make_action_space, parse_batch_input, parse_step_input
from dfworld.runtime.backends import build_sampler
from dfworld.world.config import SEED_RANGE, WorldConfig, check_seed


@contextmanager
def rng_kept_on_error(env):
    """A reset the core refuses leaves the env's own random stream as it was."""
    saved = copy.deepcopy((env._np_random, env._np_random_seed))
    try:
        yield
    except Exception:
        env._np_random, env._np_random_seed = saved
        raise


class WorldModelEnv(gym.Env):
    """The world model as an environment: EventWorld-v0's interface, frames from the generator.

    ## Description
    Each step generates one chunk of frames (4 by default) with the block-causal generator and its
    KV cache. Text events change the condition and re-cache; actions condition every frame.

    ## Action space
    `Dict(kind=Discrete(2), action=Discrete(5), prompt=EventText)`, as EventWorld-v0; `step()`
    also takes a plain int (an action) or a plain str (any sentence: the world model reads free
    text, so wording outside the EventWorld grammar is allowed; empty or over-long text is not).

    ## Observation space
    `Box(0, 255, (H, W, 3), uint8)`: the last generated frame; `info["frames"]` holds the chunk.

    ## Rewards
    +1 per coin collected, read from the generated frames by the probes (module docstring).

    ## Episode end
    Terminated after `coins_to_win` coins; truncated by the registered TimeLimit (250 steps).

    ## Arguments
    - `checkpoint`: a generator checkpoint directory, or a shipped one by name: "default" (Delta
      Forcing, then stage fidelity; used when none is given), "dmd" or "stream" (the baselines).
    - `render_mode`: None or "rgb_array". `device`: "cpu" or "cuda". `coins_to_win`: 3.
    - `backend`: "torch" (default) or "onnx": the generator and decoder run as ONNX Runtime graphs
      (CUDA execution provider with I/O binding on a "cuda" device, the CPU provider otherwise;
      needs the `cpu` or `gpu` extra). Same frames within float tolerance for the same seeds.
    - `onnx_dir`: an export directory (`dfworld export onnx`) for the onnx backend; when None,
      the checkpoint is exported on first use into `$DFWORLD_ONNX_CACHE/<key>/` (default
      `~/.cache/dfworld/onnx/<key>/`, the key a digest of the checkpoint's weights and configs).
    - `threads`: CPU threads of the generator and decoder (torch's while the env computes, the
      process's setting restored after; ONNX Runtime's); None: torch's own setting. Default 1: on
      the 2-core machine it is 1.4-1.5x slower than 2 when idle, and 4-42x faster than 2 beside one
      busy process (benchmarks/bench_threads.py, BENCHMARKS.md).
    - `decoder`: None (the default: the checkpoint's fast decoder where it carries one, as the
      shipped default does, else the codec's VAE decoder), "fast" or "full" (the VAE's). The probes
      read the shipped default's fast-decoded frames as its full-decoded ones (BENCHMARKS.md).
    - `sampler`: SamplerConfig fields replacing the checkpoint's, e.g. `{"timesteps": [1000, 500]}`
      (two denoising passes per chunk where it was distilled for four: faster, and less faithful).

    `reset(seed=..., options={"prompt": text, "image": uint8 HWC frame, "events": [(step, text), ...]})`;
    without a prompt, the initial prompt is a time-of-day sentence chosen by the seed.

    ## Version history
    - v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": WorldConfig().fps / 4}  # the step rate at 4 frames per step

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        coins_to_win: int = 3,
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
        threads: int | None = 1,
        decoder: str | None = None,
        sampler: dict | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use None or 'rgb_array'")
        self.core = WorldModelCore(build_sampler(checkpoint, 1, backend, device, onnx_dir, threads, decoder, sampler), coins_to_win)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.core.world.fps / self.core.chunk}  # one rendered frame per step
        self.observation_space = spaces.Box(0, 255, self.core.last.shape[1:], np.uint8)
        self.action_space = make_action_space()
        self._started = self._done = self._closed = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self._closed:
            raise RuntimeError("WorldModel-v0: the environment is closed; make a new one")
        if seed is not None:
            check_seed(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict, got {type(options).__name__}")
        with rng_kept_on_error(self):
            super().reset(seed=None if seed is None else int(seed))
            row_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31))
            obs = self.core.reset([0], [row_seed], [dict(options or {})])[0]
        self._started, self._done = True, False
        return obs, {"prompt": self.core.rollout.prompts[0], "seed": row_seed}

    def step(self, action):
        if self._closed:
            raise RuntimeError("WorldModel-v0: the environment is closed; make a new one")
        if not self._started:
            raise RuntimeError("WorldModel-v0: call reset() before step()")
        if self._done:
            raise RuntimeError("WorldModel-v0: the episode has terminated; call reset() before step()")
        move, text = parse_step_input(action)
        frames, rewards, terminated, events = self.core.step(np.array([move]), [text])
        self._done = bool(terminated[0])
        info = {"frames": frames[0], "prompt": self.core.rollout.prompts[0], "coins": self.core.counters[0].coins}
        if events[0] is not None:
            info["event"] = events[0]
        return frames[0, -1], float(rewards[0]), bool(terminated[0]), False, info

    def get_keys_to_action(self) -> dict[tuple, dict]:
        """Keys for `gymnasium.utils.play.play(env, noop=0)`: WASD and the arrow keys."""
        return keys_to_action()

    def render(self):
        if self.render_mode == "rgb_array":
            if not self._started:
                raise RuntimeError("WorldModel-v0: call reset() before render()")
            return self.core.last[0].copy()
        return None

    def close(self):
        self._closed = True


class WorldModelVectorEnv(VectorEnv):
    """N rows of the world model on one generator, with per-row events and same-step autoreset.

    Actions: a batched Dict (`kind` [N], `action` [N], `prompt` N strings), an int array [N], or a
    list of N per-row inputs (int, str or Dict). A row that terminates or is truncated is reset in
    the same step: its observation is the new episode's first one, and `info["final_obs"]`
    and `info["final_info"]` hold the end of the old one. `reset(options={"reset_mask": mask})`
    resets only the masked rows; the other options ("prompt", "image", "events") are sequences of
    N per-row values, None for a row's default. Arguments as WorldModel-v0 (`backend="onnx"` and
    `onnx_dir`, `decoder` and `sampler` included), plus `num_envs` and `max_episode_steps`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": WorldConfig().fps / 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        checkpoint: str | Path | None = None,
        render_mode: str | None = None,
        device: str = "cpu",
        coins_to_win: int = 3,
        max_episode_steps: int | None = None,
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
        threads: int | None = 1,
        decoder: str | None = None,
        sampler: dict | None = None,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.core = WorldModelCore(build_sampler(checkpoint, num_envs, backend, device, onnx_dir, threads, decoder, sampler), coins_to_win)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.core.world.fps / self.core.chunk}
        self.max_episode_steps = max_episode_steps
        self.single_observation_space = spaces.Box(0, 255, self.core.last.shape[1:], np.uint8)
        self.single_action_space = make_action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._started = np.zeros(num_envs, bool)
        self._closed = False

    def _given_seeds(self, seed) -> list[int] | None:
        """Per-row seeds from `reset(seed=...)`: an int s gives s, s + 1, ...; a sequence one per row."""
        if seed is None:
            return None
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
            if not 0 <= int(seed) <= SEED_RANGE - self.num_envs:  # rows take seed, seed + 1, ...
                raise ValueError(f"a seed must be an int in [0, 2**63 - {self.num_envs}] for {self.num_envs} rows, got {seed!r}")
            return [int(seed) + r for r in range(self.num_envs)]
        if isinstance(seed, (list, tuple, np.ndarray)):
            if len(seed) != self.num_envs:
                raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seed)}")
            return [check_seed(s) for s in seed]
        raise TypeError(f"reset seed must be an int or a sequence of {self.num_envs} ints, got {type(seed).__name__}")

    def reset(self, *, seed=None, options: dict[str, Any] | None = None):
        if self._closed:
            raise RuntimeError("WorldModel-v0 (vector): the environment is closed; make a new one")
        # 1. check every argument before anything changes
        given = self._given_seeds(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict, got {type(options).__name__}")
        options = dict(options or {})
        if unknown := set(options) - RESET_OPTIONS - {"reset_mask"}:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; the vector env accepts {sorted(RESET_OPTIONS | {'reset_mask'})}")
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, bool)))
        if mask.shape != (self.num_envs,) or mask.dtype != bool:
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}")
        rows = [int(r) for r in np.flatnonzero(mask)]
        for k, v in options.items():  # per-row options: one value per row of the batch
            if not hasattr(v, "__len__") or isinstance(v, (str, bytes, dict)) or len(v) != self.num_envs:
                raise ValueError(f"vector reset option {k!r} must be a sequence of {self.num_envs} per-row values (None for a default)")
        per_row = [{k: v[r] for k, v in options.items() if v[r] is not None} for r in rows]
        with rng_kept_on_error(self):  # 2. the episodes
            if given is not None:
                self._np_random, self._np_random_seed = gym.utils.seeding.np_random(given[0])
                seeds = [given[r] for r in rows]
            else:
                seeds = [int(s) for s in self.np_random.integers(2**31, size=len(rows))]
            obs = self.core.reset(rows, seeds, per_row)
        self._started[rows] = True
        out = self.core.last.copy()
        out[rows] = obs
        return out, {}

    def step(self, actions):
        if self._closed:
            raise RuntimeError("WorldModel-v0 (vector): the environment is closed; make a new one")
        if not self._started.all():
            raise RuntimeError("WorldModel-v0 (vector): call reset() before step()")
        moves, texts = parse_batch_input(actions, self.num_envs)
        frames, rewards, terminated, events = self.core.step(moves, texts)
        truncated = np.zeros(self.num_envs, bool)
        if self.max_episode_steps is not None:
            truncated = (self.core.steps >= self.max_episode_steps) & ~terminated
        obs = frames[:, -1].copy()
        infos: dict[str, Any] = {
            "frames": frames,  # [N, K, H, W, 3]
            "coins": np.array([c.coins for c in self.core.counters]),
            "prompt": np.array(self.core.rollout.prompts, dtype=object),
            "event": np.array(events, dtype=object),  # the text event applied at this step, or None
        }
        done = terminated | truncated
        if done.any():
            rows = [int(r) for r in np.flatnonzero(done)]
            infos["final_obs"] = np.array([obs[r] if d else None for r, d in enumerate(done)], dtype=object)
            infos["final_info"] = {"coins": infos["coins"].copy()}
            infos["_final_obs"] = done.copy()
            infos["_final_info"] = done.copy()
            seeds = [int(s) for s in self.np_random.integers(2**31, size=len(rows))]
            obs[rows] = self.core.reset(rows, seeds, [{} for _ in rows])
        return obs, rewards, terminated, truncated, infos

    def render(self):
        if self.render_mode == "rgb_array":
            return self.core.last.copy()
        return None

    def close_extras(self, **kwargs):
        self._closed = True
