"""The world model and the EventWorld simulator as native TorchRL environments (batched, partial resets).

Both have the same keys, so an agent written for one runs in the other: `pixels` uint8
[N, H, W, 3] observation; `action` (Categorical over the 5 moves); `reward` [N, 1]; `done`,
`terminated`, `truncated` [N, 1]. A step is one chunk of `frames_per_step` frames in both.

The world model also takes `event` (Categorical: 0 = no event, i > 0 = `event_bank[i - 1]`, a
text event applied before the step's chunk). Text events are indices so that every spec is a
tensor and any TorchRL policy, collector or replay buffer handles them; the bank defaults to
every training wording of every EventWorld event, and `event_bank=[]` allows moves only.

`MixedTorchRLEnv` puts rows of both in one batch (Dyna-style: real and generated frames in the same
updates).

Seeds: `set_seed(s)` makes the next reset rows start episodes with seeds s, s + 1, ... in row
order (a full reset gives row r the seed s + r), so a seeded run is reproducible and episodes
can be matched across agents and across the two environments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from dfworld.world.config import ACTIONS


class _FramesEnv(EnvBase):
    """N rows of frames with move actions: specs, seeds, partial resets and the time limit.

    Subclasses implement `_reset_rows(rows, seeds) -> frames [len(rows), H, W, 3]` and
    `_step_rows(moves, tensordict) -> (last frames [N, H, W, 3], rewards [N], terminated [N])`.
    """

    def __init__(self, num_envs: int, frame_shape: tuple[int, int], device: str, max_episode_steps: int | None,
                 extra_actions: dict | None = None):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}")
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        N, (H, W) = num_envs, frame_shape
        self.max_episode_steps = max_episode_steps
        self.episode_steps = np.zeros(N, np.int64)
        self._next_seed = 0
        self._pixels = torch.zeros(N, H, W, 3, dtype=torch.uint8)
        self.observation_spec = Composite(
            pixels=Bounded(0, 255, (N, H, W, 3), dtype=torch.uint8, device=device), shape=(N,), device=device
        )
        actions = {"action": Categorical(len(ACTIONS), shape=(N,), dtype=torch.int64, device=device)}
        actions.update(extra_actions or {})
        self.action_spec = Composite(**actions, shape=(N,), device=device)
        self.reward_spec = Unbounded((N, 1), dtype=torch.float32, device=device)
        flag = Categorical(2, shape=(N, 1), dtype=torch.bool, device=device)
        self.full_done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=(N,), device=device)

    def _reset_rows(self, rows: list[int], seeds: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _step_rows(self, moves: np.ndarray, tensordict: TensorDictBase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        N = self.batch_size[0]
        mask = np.ones(N, bool)
        if tensordict is not None and "_reset" in tensordict:
            mask = tensordict["_reset"].reshape(N).cpu().numpy().astype(bool)
        rows = [int(r) for r in np.flatnonzero(mask)]
        if rows:
            seeds = list(range(self._next_seed, self._next_seed + len(rows)))
            self._next_seed += len(rows)
            self._pixels[rows] = torch.from_numpy(np.ascontiguousarray(self._reset_rows(rows, seeds)))
            self.episode_steps[rows] = 0
        false = torch.zeros(N, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            {"pixels": self._pixels.clone().to(self.device), "done": false, "terminated": false.clone(), "truncated": false.clone()},
            batch_size=self.batch_size,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        moves = tensordict["action"].reshape(-1).cpu().numpy().astype(np.int64)
        if (moves < 0).any() or (moves >= len(ACTIONS)).any():
            raise ValueError(f"action index out of range [0, {len(ACTIONS)}): {moves.tolist()}")
        frames, rewards, terminated = self._step_rows(moves, tensordict)
        self.episode_steps += 1
        truncated = np.zeros_like(terminated)
        if self.max_episode_steps is not None:
            truncated = (self.episode_steps >= self.max_episode_steps) & ~terminated
        self._pixels = torch.from_numpy(np.ascontiguousarray(frames))
        t = torch.as_tensor(terminated, device=self.device)[:, None]
        tr = torch.as_tensor(truncated, device=self.device)[:, None]
        return TensorDict(
            {
                "pixels": self._pixels.clone().to(self.device),
                "reward": torch.as_tensor(rewards, dtype=torch.float32, device=self.device)[:, None],
                "done": t | tr,
                "terminated": t,
                "truncated": tr,
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed: int | None) -> None:
        self._next_seed = int(seed or 0)


class WorldModelTorchRLEnv(_FramesEnv):
    """N world-model rows as a TorchRL EnvBase with batch_size [N]; reward from the probes."""

    def __init__(
        self,
        num_envs: int = 1,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        event_bank: list[str] | None = None,
        max_episode_steps: int | None = 250,
        coins_to_win: int = 3,
        backend: str = "torch",
        threads: int | None = 1,
        decoder: str | None = None,
        sampler: dict | None = None,
    ):
        from dfworld.envs.core import WorldModelCore
        from dfworld.runtime.backends import build_sampler
        from dfworld.world.events import all_event_texts

        core = WorldModelCore(build_sampler(checkpoint, num_envs, backend, device, threads=threads, decoder=decoder,
                                                 sampler=sampler), coins_to_win)
        bank = list(event_bank if event_bank is not None else all_event_texts("train"))
        event = Categorical(len(bank) + 1, shape=(num_envs,), dtype=torch.int64, device=device)
        super().__init__(num_envs, core.last.shape[1:3], device, max_episode_steps, {"event": event})
        self.core, self.event_bank = core, bank
        self.frames_per_step = core.chunk

    def _reset_rows(self, rows: list[int], seeds: list[int]) -> np.ndarray:
        return self.core.reset(rows, seeds, [{} for _ in rows])

    def _step_rows(self, moves: np.ndarray, tensordict: TensorDictBase):
        events = tensordict.get("event", None)
        events = np.zeros_like(moves) if events is None else events.reshape(-1).cpu().numpy()
        if (events < 0).any() or (events > len(self.event_bank)).any():
            raise ValueError(f"event index out of range [0, {len(self.event_bank)}]: {events.tolist()}")
        texts = [self.event_bank[e - 1] if e > 0 else None for e in events]
        frames, rewards, terminated, _ = self.core.step(moves, texts)
        return frames[:, -1], rewards, terminated


class EventWorldTorchRLEnv(_FramesEnv):
    """N EventWorld-v0 environments (the simulator, the real world) as a TorchRL EnvBase; moves only.

    Each row is an `EventWorldEnv` with `frames_per_step` frames per step (give the world model's
    chunk so a step means the same in both); reward and termination are the simulator's.
    """

    def __init__(
        self,
        num_envs: int = 1,
        frames_per_step: int = 4,
        world=None,
        device: str = "cpu",
        max_episode_steps: int | None = 250,
    ):
        from dfworld.envs.event_world import EventWorldEnv

        envs = [EventWorldEnv(frames_per_step=frames_per_step, world=world) for _ in range(num_envs)]
        super().__init__(num_envs, (envs[0].config.height, envs[0].config.width), device, max_episode_steps)
        self.envs = envs
        self.frames_per_step = frames_per_step

    def _reset_rows(self, rows: list[int], seeds: list[int]) -> np.ndarray:
        return np.stack([self.envs[r].reset(seed=s)[0] for r, s in zip(rows, seeds)])

    def _step_rows(self, moves: np.ndarray, tensordict: TensorDictBase):
        out = [env.step(int(m)) for env, m in zip(self.envs, moves)]
        frames = np.stack([o[0] for o in out])
        return frames, np.array([o[1] for o in out], np.float32), np.array([o[2] for o in out], bool)


class MixedTorchRLEnv(_FramesEnv):
    """Dyna-style experience in one batch: the first rows are a world-model env's, the others the real EventWorld's.

    One agent steps both at once (Sutton's Dyna: real and imagined experience in the same updates). Row
    r < n_world is `world`'s row r, a later row `real`'s row r - n_world; the two must make frames of
    the same size and chunk, and take moves only. Seeds and the time limit are this env's, per row.
    """

    def __init__(self, world: WorldModelTorchRLEnv, real: EventWorldTorchRLEnv, device: str = "cpu",
                 max_episode_steps: int | None = 250):
        shape_w, shape_r = tuple(world._pixels.shape[1:3]), tuple(real._pixels.shape[1:3])
        if shape_w != shape_r or world.frames_per_step != real.frames_per_step:
            raise ValueError(f"the world model makes {shape_w} frames, {world.frames_per_step} per step, the real env "
                             f"{shape_r}, {real.frames_per_step}: a mixed batch needs the same")
        self.n_world = world.batch_size[0]
        super().__init__(self.n_world + real.batch_size[0], shape_w, device, max_episode_steps)
        self.world, self.real = world, real
        self.frames_per_step = world.frames_per_step

    def _reset_rows(self, rows: list[int], seeds: list[int]) -> np.ndarray:
        out = np.empty((len(rows),) + tuple(self._pixels.shape[1:]), np.uint8)
        for env, mine, offset in ((self.world, lambda r: r < self.n_world, 0), (self.real, lambda r: r >= self.n_world, self.n_world)):
            picked = [i for i, r in enumerate(rows) if mine(r)]
            if picked:
                out[picked] = env._reset_rows([rows[i] - offset for i in picked], [seeds[i] for i in picked])
        return out

    def _step_rows(self, moves: np.ndarray, tensordict: TensorDictBase):
        n = self.n_world
        fw, rw, tw = self.world._step_rows(moves[:n], TensorDict({}, batch_size=[n]))
        fr, rr, tr = self.real._step_rows(moves[n:], None)
        return np.concatenate([fw, fr]), np.concatenate([rw, rr]).astype(np.float32), np.concatenate([tw, tr]).astype(bool)

    def close(self, **kwargs) -> None:
        self.world.close(**kwargs)
        self.real.close(**kwargs)
        super().close(**kwargs)
