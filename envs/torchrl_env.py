"""The world model as a native TorchRL environment (batched, partial resets, text events as indices).

Keys: `pixels` uint8 [N, H, W, 3] observation; actions `action` (Categorical over the 5 moves) and
`event` (Categorical: 0 = no event, i > 0 = `event_bank[i - 1]`, a text event applied before the
step's chunk). Text events are indices so that every spec is a tensor and any TorchRL policy,
collector or replay buffer handles them; the bank defaults to every training wording of every
EventWorld event.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from dfworld.envs.world_model import WorldModelCore
from dfworld.world.events import all_event_texts


class WorldModelTorchRLEnv(EnvBase):
    """N world-model rows as a TorchRL EnvBase with batch_size [N]."""

    def __init__(
        self,
        num_envs: int = 1,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        event_bank: list[str] | None = None,
        max_episode_steps: int | None = 250,
        coins_to_win: int = 3,
    ):
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.core = WorldModelCore(num_envs, checkpoint, device, coins_to_win)
        self.event_bank = list(event_bank if event_bank is not None else all_event_texts("train"))
        self.max_episode_steps = max_episode_steps
        self._seed = 0
        N = num_envs
        H, W, _ = self.core.last.shape[1:]
        self.observation_spec = Composite(
            pixels=Bounded(0, 255, (N, H, W, 3), dtype=torch.uint8, device=device), shape=(N,), device=device
        )
        self.action_spec = Composite(
            action=Categorical(5, shape=(N,), dtype=torch.int64, device=device),
            event=Categorical(len(self.event_bank) + 1, shape=(N,), dtype=torch.int64, device=device),
            shape=(N,),
            device=device,
        )
        self.reward_spec = Unbounded((N, 1), dtype=torch.float32, device=device)
        flag = Categorical(2, shape=(N, 1), dtype=torch.bool, device=device)
        self.full_done_spec = Composite(done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=(N,), device=device)

    def _seeds(self, rows: list[int]) -> list[int]:
        seeds = [self._seed + 1000 * int(self.core.steps.sum()) + r for r in rows]
        self._seed += 1
        return seeds

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        N = self.batch_size[0]
        mask = np.ones(N, bool)
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict["_reset"].reshape(N).cpu().numpy().astype(bool)
        rows = [int(r) for r in np.flatnonzero(mask)]
        if rows:
            self.core.reset(rows, self._seeds(rows), [{} for _ in rows])
        pixels = torch.from_numpy(self.core.last.copy()).to(self.device)
        false = torch.zeros(N, 1, dtype=torch.bool, device=self.device)
        return TensorDict({"pixels": pixels, "done": false, "terminated": false.clone(), "truncated": false.clone()}, batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        moves = tensordict["action"].reshape(-1).cpu().numpy().astype(np.int64)
        events = tensordict.get("event", torch.zeros_like(tensordict["action"])).reshape(-1).cpu().numpy()
        if (events < 0).any() or (events > len(self.event_bank)).any():
            raise ValueError(f"event index out of range [0, {len(self.event_bank)}]: {events.tolist()}")
        texts = [self.event_bank[e - 1] if e > 0 else None for e in events]
        frames, rewards, terminated, _ = self.core.step(moves, texts)
        truncated = np.zeros_like(terminated)
        if self.max_episode_steps is not None:
            truncated = (self.core.steps >= self.max_episode_steps) & ~terminated
        t = torch.as_tensor(terminated, device=self.device)[:, None]
        tr = torch.as_tensor(truncated, device=self.device)[:, None]
        return TensorDict(
            {
                "pixels": torch.from_numpy(frames[:, -1].copy()).to(self.device),
                "reward": torch.as_tensor(rewards, device=self.device)[:, None],
                "done": t | tr,
                "terminated": t,
                "truncated": tr,
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed: int | None):
        self._seed = int(seed or 0)
