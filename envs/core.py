"""`WorldModelCore`: one sampler serving B rows, the engine under every world-model env.

WorldModel-v0 (one row), its vector env and the TorchRL env all run on it: it resets rows, applies
text events (re-encode and re-cache), generates one chunk per step, decodes it, and reads the
reward from the frames (`dfworld.envs.reward`). It receives a built sampler
(`dfworld.runtime.backends.build_sampler`).

Every episode starts in the world: by default a row's context is EventWorld's start for its seed
(`dfworld.world.episodes.real_start`: the reset frame and still frames after it, one chunk, under
its initial prompt), so the seed fixes the scene, and EventWorld-v0 with the same seed shows the
same frames. Option "image" gives the context frames instead (one frame, held still, or whole
chunks of them); option "start": "noise" keeps the old start, a first chunk generated from noise
and the prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dfworld.envs.reward import CoinCounter
from dfworld.envs.spaces import parse_schedule
from dfworld.runtime.backends import WorldModelSampler
from dfworld.world.config import START_FRAMES, WorldConfig, check_seed
from dfworld.world.episodes import real_start
from dfworld.world.events import TIMES, initial_prompt, validate_text
from dfworld.world.simulator import EventWorld

RESET_OPTIONS = {"prompt", "image", "events", "start"}  # per row; the vector env also takes "reset_mask"
STARTS = ("real", "noise")  # reset option "start" (without an image): EventWorld's start for the seed, or noise


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
        self.start_frames = -(-START_FRAMES // self.chunk) * self.chunk  # a real start: whole chunks, at least START_FRAMES
        self.held_frames = self.rollout.history.shape[1]  # the most context frames the cache holds
        self.sim = EventWorld(self.world)  # plays the real starts

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
        prompts, contexts, schedules = [], [], []
        for seed, opt in zip(seeds, options):  # 1. check every row, and make the real starts (the world model's state is untouched)
            check_seed(seed)
            if not isinstance(opt, dict):
                raise TypeError(f"reset options must be a dict, got {type(opt).__name__}")
            if unknown := set(opt) - RESET_OPTIONS:
                raise ValueError(f"unknown reset option(s) {sorted(unknown)}; WorldModel-v0 accepts {sorted(RESET_OPTIONS)}")
            start = opt.get("start", "real")
            if start not in STARTS:
                raise ValueError(f"reset option 'start' must be one of {STARTS}, got {start!r}")
            prompt = None if opt.get("prompt") is None else validate_text(opt["prompt"])
            image = self._check_image(opt.get("image"))
            if image is None and start == "real":
                st = real_start(self.sim, int(seed), self.start_frames, prompt)  # a prompt is the start's event, as in EventWorld-v0
                image, prompt = st.frames, st.prompt
            prompts.append(prompt if prompt is not None else initial_prompt(TIMES[int(seed) % len(TIMES)]))
            contexts.append(image)
            schedules.append(parse_schedule(opt.get("events", ())))
        encoded = self.rollout.encode(prompts)
        self.rollout.encode(sorted({t for s in schedules for t in s.values()}))  # scheduled events: refused now, not at their step
        # 2. reset, one rollout call per context length (no context: the first chunk comes from noise)
        groups: dict[int, list[int]] = {}
        for j, c in enumerate(contexts):
            groups.setdefault(0 if c is None else len(c), []).append(j)
        obs = np.zeros((len(rows),) + self.last.shape[1:], np.uint8)
        for n, members in groups.items():
            rs = [rows[j] for j in members]
            latents = None
            if n:
                with torch.inference_mode():
                    frames = torch.from_numpy(np.stack([contexts[j] for j in members])).to(self.device)
                    latents = self.codec.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
            self.rollout.reset(rs, [prompts[j] for j in members], [seeds[j] for j in members], latents,
                               encoded=(encoded[0][members], encoded[1][members]))
        for r, sched in zip(rows, schedules):
            self.counters[r].reset()
            self.steps[r] = 0
            self.schedules[r] = sched
        if noise := [j for j, c in enumerate(contexts) if c is None]:  # the first chunk under noop actions; its last frame
            frames = self._generate(np.zeros(self.B, np.int64), [rows[j] for j in noise])
            obs[noise] = frames[[rows[j] for j in noise], -1]
        for j, c in enumerate(contexts):  # a given context: its last frame is the observation
            if c is not None:
                obs[j] = self.last[rows[j]] = c[-1]
                self.counters[rows[j]].update(obs[j])
        return obs

    def _check_image(self, image) -> np.ndarray | None:
        """A reset image as context frames [n, H, W, 3] (n = 1: one frame, which the rollout holds still for a chunk)."""
        if image is None:
            return None
        image = np.asarray(image)
        want, K = (self.world.height, self.world.width, 3), self.chunk
        if image.dtype != np.uint8 or image.shape[-3:] != want or image.ndim not in (3, 4):
            raise ValueError(f"reset option 'image' must be a uint8 frame {want} or frames [n, *{want}], got {image.dtype} {image.shape}")
        if image.ndim == 3:
            return image[None]  # held still for a chunk by the rollout
        if len(image) == 0 or len(image) % K or len(image) > self.held_frames:
            raise ValueError(f"reset option 'image': {len(image)} frames; give whole chunks of {K} frames, "
                             f"at most the {self.held_frames} the model's cache holds")
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
