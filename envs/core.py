"""`WorldModelCore`: one sampler serving B rows, the engine under every world-model env.

WorldModel-v0 (one row), its vector env and the TorchRL env all run on it: it resets rows (from
noise or a given frame, with a prompt and an event schedule), applies text events (re-encode and
re-cache), generates one chunk per step, decodes it, and reads the reward from the frames
(`dfworld.envs.reward`). It receives a built sampler (`dfworld.runtime.backends.build_sampler`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dfworld.envs.reward import CoinCounter
from dfworld.envs.spaces import parse_schedule
from dfworld.runtime.backends import WorldModelSampler
from dfworld.world.config import WorldConfig, check_seed
from dfworld.world.events import TIMES, initial_prompt, validate_text

RESET_OPTIONS = {"prompt", "image", "events"}  # per row; the vector env also takes "reset_mask"


class WorldModelCore:
    """One sampler serving B rows: reset, events, steps, decoding, rewards."""

    def __init__(self, sampler: WorldModelSampler, coins_to_win: int = 3):
        self.sampler = sampler
        self.rollout, self.decoder, self.codec = sampler.rollout, sampler.decoder, sampler.codec
        self.device = self.rollout.device
        self.checkpoint = sampler.checkpoint
        self.backend = sampler.backend
        size = sampler.image_size
        self.world = WorldConfig(height=size, width=size, coins_to_win=coins_to_win)
        self.chunk = sampler.chunk_frames
        self.B = self.rollout.B
        self.counters = [CoinCounter(self.world, self.chunk) for _ in range(self.B)]
        self.steps = np.zeros(self.B, np.int64)
        self.schedules: list[dict[int, str]] = [{} for _ in range(self.B)]
        self.last = np.zeros((self.B, size, size, 3), np.uint8)

    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        return self.decoder.decode(latents).cpu().numpy()  # [B, K, H, W, 3]

    def reset(self, rows: list[int], seeds: list[int], options: list[dict[str, Any]]) -> np.ndarray:
        """`_reset` on the sampler's threads."""
        with self.sampler.threads_scope():
            return self._reset(rows, seeds, options)

    def step(self, moves: np.ndarray, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        """`_step` on the sampler's threads."""
        with self.sampler.threads_scope():
            return self._step(moves, texts)

    def _reset(self, rows: list[int], seeds: list[int], options: list[dict[str, Any]]) -> np.ndarray:
        """Start episodes in `rows`; returns their first observations [len(rows), H, W, 3].

        Every option of every row is checked, and every text the episodes will need (prompts and
        scheduled events) is encoded, before any row changes: a refused reset leaves all episodes
        as they were, and a scheduled event cannot fail later, at its step.
        """
        if not rows:
            return self.last[:0].copy()
        prompts, images, schedules = [], [], []
        for seed, opt in zip(seeds, options):
            check_seed(seed)
            if not isinstance(opt, dict):
                raise TypeError(f"reset options must be a dict, got {type(opt).__name__}")
            if unknown := set(opt) - RESET_OPTIONS:
                raise ValueError(f"unknown reset option(s) {sorted(unknown)}; WorldModel-v0 accepts {sorted(RESET_OPTIONS)}")
            prompt = opt["prompt"] if opt.get("prompt") is not None else initial_prompt(TIMES[int(seed) % len(TIMES)])
            prompts.append(validate_text(prompt))
            images.append(self._check_image(opt.get("image")))
            schedules.append(parse_schedule(opt.get("events", ())))
        with_image = [i for i, im in enumerate(images) if im is not None]
        if with_image and len(with_image) != len(rows):
            raise ValueError("reset: give an initial image for every reset row or for none")
        self.rollout.encode(sorted({t for s in schedules for t in s.values()}))  # scheduled events: refused now, not at their step
        context = None
        if with_image:
            with torch.inference_mode():
                context = self.codec.encode(torch.from_numpy(np.stack(images)).to(self.device))
        self.rollout.reset(rows, prompts, seeds, context)
        for r, sched in zip(rows, schedules):
            self.counters[r].reset()
            self.steps[r] = 0
            self.schedules[r] = sched
        if context is not None:
            obs = np.stack(images)
            self.last[rows] = obs
            for r, o in zip(rows, obs):
                self.counters[r].update(o)
            return obs
        # no image: the first chunk is generated under noop actions; its last frame is the observation
        frames = self._generate(np.zeros(self.B, np.int64), rows)
        return frames[rows, -1]

    def _check_image(self, image) -> np.ndarray | None:
        if image is None:
            return None
        image = np.asarray(image)
        want = (self.world.height, self.world.width, 3)
        if image.dtype != np.uint8 or image.shape != want:
            raise ValueError(f"reset option 'image' must be a uint8 array {want}, got {image.dtype} {image.shape}")
        return image

    def _generate(self, moves: np.ndarray, rows: list[int] | None = None) -> np.ndarray:
        actions = torch.as_tensor(np.repeat(moves[:, None], self.chunk, 1), dtype=torch.long)
        keep = list(range(self.B)) if rows is None else rows
        mask = torch.zeros(self.B, dtype=torch.bool)
        mask[keep] = True
        frames = self._decode(self.rollout.generate(actions, mask))
        for r in keep:
            self.last[r] = frames[r, -1]
            self.counters[r].update(frames[r, -1])
        return frames

    def _step(self, moves: np.ndarray, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        """One chunk for every row. Returns frames [B, K, H, W, 3], rewards [B], terminated [B], applied events."""
        events: list[str | None] = []
        for r in range(self.B):
            events.append(texts[r] if texts[r] is not None else self.schedules[r].get(int(self.steps[r])))
        switch = [r for r, t in enumerate(events) if t is not None]
        if switch:
            self.rollout.set_prompt(switch, [events[r] for r in switch])
        before = np.array([c.coins for c in self.counters])
        frames = self._generate(moves)
        self.steps += 1
        coins = np.array([c.coins for c in self.counters])
        rewards = (coins - before).astype(np.float32)
        terminated = coins >= self.world.coins_to_win
        return frames, rewards, terminated, events
