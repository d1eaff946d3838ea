"""The autoregressive sampler: a block-causal generator, its KV cache, and per-row episode state.

One `Rollout` serves B rows (environments) with one model. Each call to `step` produces the next
chunk of frames for every row:

1. the chunk starts from per-row noise (one torch.Generator per row, seeded at reset, so a row's
   frames do not depend on the other rows); with `repeat_noise` every chunk of an episode draws
   the same noise, its seed's (FreeNoise's noise rescheduling, arXiv 2310.15169): content the
   context does not pin down is then drawn alike in every chunk instead of anew;
2. a few denoising steps (Self Forcing's 4-step schedule): predict x0, re-noise to the next
   level, until the last level gives the clean chunk;
3. the clean chunk is run once more at `context_noise` to write its keys and values into the
   cache, and kept in a latent history laid out like the cache.

A `prev_frame` model also reads each chunk's reference (the clean frame(s) before it, zeros at an
episode's start), kept beside the history so a re-cache writes it exactly as the first time.

A text event re-encodes the row's condition and re-caches (LongLive): the frames still in the
cache (sink and window) are replayed under the new text in time order, which rewrites their keys
and values. Actions are per frame. Rows reset independently.

A re-cache and a reset's context write their chunks into the rows' emptied cache, oldest first, on
those rows alone: one cached pass per chunk here, one block-causal pass in `OrtRollout`
(`teacher_forcing.held_chunks_kv`, the same keys and values to 1e-5). Model compute goes through
`_write_held`, `_write` and `generate`'s level loop; `OrtRollout` runs them in ONNX Runtime.
"""

from __future__ import annotations

import torch

from dfworld.model.conditioning import TextConditioner
from dfworld.model.kv_cache import KVCache, frame_slots
from dfworld.model.teacher_forcing import reference_frames
from dfworld.model.transformer import TextCondition, VideoTransformer
from dfworld.schedule import SamplerConfig, student_sigmas
from dfworld.world.config import check_seed


def forward_at(model: VideoTransformer, x, sigma: float, text, text_mask, actions, start, cache: KVCache, prev=None):
    """The generator on a chunk x [B, F, C, h, w] at noise level `sigma` for every frame: (velocity, (k, v)).

    `prev` [B, F, C, h, w]: the chunk's reference frame (models with `prev_frame`).
    """
    s = torch.full(x.shape[:2], sigma, device=x.device)  # [B, F]
    return model(x, s, text, text_mask, actions, start_frame=start, cache=cache, prev=prev)


def denoise(velocity, noise, sigmas: list[float], grad_level: int | None = None, solver: str = "renoise") -> torch.Tensor:
    """The sampler for one chunk: the x0 predicted at the last level of `sigmas`.

    `velocity(x, sigma)` is the model; `noise(i)` the fresh noise of level i (drawn when needed,
    so the random streams advance level by level). Between levels, `renoise` (Self Forcing's
    few-step sampler) re-noises x0 to the next level, x = (1 - s') x0 + s' eps (dfworld.schedule);
    `euler` takes the flow's ODE step, x = x0 + (s' / s) (x - x0) = x + (s' - s) v, and draws no
    noise after level 0. Only level `grad_level` (if any) runs with autograd on, when it is on.
    """
    grad = torch.is_grad_enabled()
    x = noise(0)
    for i, sigma in enumerate(sigmas):
        with torch.set_grad_enabled(grad and i == grad_level):
            x0 = x - sigma * velocity(x, sigma)
        if i + 1 < len(sigmas):
            nxt = sigmas[i + 1]
            x = x0 + (nxt / sigma) * (x - x0) if solver == "euler" else (1 - nxt) * x0 + nxt * noise(i + 1)
    return x0


class Rollout:
    """Owns the KV cache and the per-row state of B generated episodes."""

    def __init__(
        self,
        generator: VideoTransformer,
        conditioner: TextConditioner,
        batch: int,
        sampler: SamplerConfig = SamplerConfig(),
        device: torch.device | str = "cpu",
    ):
        cfg = generator.config
        if cfg.attention != "block_causal":
            raise ValueError(f"a rollout needs a block_causal generator, got attention={cfg.attention!r}")
        self.generator, self.conditioner, self.sampler = generator, conditioner, sampler
        self.cfg, self.B, self.device = cfg, batch, torch.device(device)
        self.sigmas = student_sigmas(sampler.timesteps, sampler.shift).tolist()
        self.cache = KVCache(cfg, batch, self.device)
        n_frames = cfg.sink_frames + cfg.window_frames
        lat = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        self.history = torch.zeros((batch, n_frames) + lat, device=self.device)  # clean latents, cache layout
        self.history_actions = torch.zeros(batch, n_frames, dtype=torch.long, device=self.device)
        # each held frame's reference frame (prev_frame models only)
        self.history_prev = torch.zeros_like(self.history) if cfg.prev_frame else None
        self.frame = torch.zeros(batch, dtype=torch.long, device=self.device)  # next frame index per row
        # text padded to the model's width, always: a row's frames must not depend on what other
        # rows or earlier episodes said (a wider padding changes the float summation order)
        self.text = torch.zeros(batch, cfg.text_tokens, cfg.text_dim, device=self.device)
        self.text_mask = torch.zeros(batch, cfg.text_tokens, dtype=torch.bool, device=self.device)
        self.prompts = [""] * batch
        self.rngs = [torch.Generator(device=self.device).manual_seed(i) for i in range(batch)]  # one noise stream per row
        self.seeds = list(range(batch))  # each row's episode seed (repeat_noise rewinds to it every chunk)

    # -- per-row state -------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts' token embeddings [N, L, D] and mask [N, L], checked against the model's text width.

        Raises (naming the prompt) when a prompt cannot be encoded or is too long; changes nothing, so
        callers check every text of an episode with it before they touch any state.
        """
        if not prompts:
            return self.text[:0], self.text_mask[:0]
        tokens, mask = self.conditioner(prompts, self.device)
        if tokens.shape[1] > self.text.shape[1]:
            long = prompts[int(mask.sum(1).argmax())]
            raise ValueError(f"prompt {long!r} is {tokens.shape[1]} tokens; the model reads at most {self.text.shape[1]}")
        return tokens, mask

    def _set_text(self, rows: list[int], prompts: list[str], encoded: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        tokens, mask = encoded if encoded is not None else self.encode(prompts)
        for j, r in enumerate(rows):
            self.text[r].zero_()
            self.text_mask[r] = False
            n = int(mask[j].sum())
            self.text[r, :n] = tokens[j, :n]
            self.text_mask[r, :n] = True
            self.prompts[r] = prompts[j]

    @torch.no_grad()
    def reset(
        self, rows: list[int], prompts: list[str], seeds: list[int], context: torch.Tensor | None = None,
        context_actions: torch.Tensor | None = None, encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Start new episodes in `rows` with their prompts and seeds.

        `context`: optional clean latents of the frames the episodes continue, [len(rows), n, C, h, w]
        with n a multiple of the chunk and at most what the cache holds (sink + window), under
        `context_actions` [len(rows), n] (default: noop); they are written into the cache chunk by
        chunk, as if generated, and generation continues after them. A single frame [len(rows), C, h, w] is held
        still for a chunk.
        """
        if not (len(rows) == len(prompts) == len(seeds)):
            raise ValueError("reset needs one prompt and one seed per row")
        for s in seeds:  # 1. check everything before any state changes: a refused reset leaves the episodes as they were
            check_seed(s)
        if context is not None:
            context, context_actions = self._check_context(len(rows), context, context_actions)
        encoded = self.encode(prompts) if encoded is None else encoded
        mask = torch.zeros(self.B, dtype=torch.bool, device=self.device)
        mask[rows] = True
        self.cache.reset(mask)  # 2. the rows' new episodes
        self.history[mask] = 0
        self.history_actions[mask] = 0
        if self.history_prev is not None:
            self.history_prev[mask] = 0
        self.frame[mask] = 0
        self._set_text(rows, prompts, encoded)
        for r, s in zip(rows, seeds):
            self.rngs[r].manual_seed(int(s))
            self.seeds[r] = int(s)
        if context is not None:  # 3. the context, as if generated
            K, n = self.cfg.chunk_frames, context.shape[1]
            chunks = torch.zeros((self.B,) + context.shape[1:], device=self.device)  # [B, n, C, h, w]
            chunks[mask] = context
            actions = torch.zeros(self.B, n, dtype=torch.long, device=self.device)
            actions[mask] = context_actions
            prev = reference_frames(chunks, K, self.cfg.prev_chunk) if self.history_prev is not None else None
            frames = torch.arange(n, device=self.device).expand(self.B, n)
            self._write_fresh(mask, chunks, actions, frames, mask[:, None].expand(-1, n // K), prev)
            for f in range(0, n, K):
                self._remember(chunks[:, f : f + K], actions[:, f : f + K], mask, None if prev is None else prev[:, f : f + K])

    def _check_context(self, n_rows: int, context: torch.Tensor, actions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Context latents [R, n, C, h, w] and actions [R, n] on the device, checked (see `reset`)."""
        lat, K = tuple(self.history.shape[2:]), self.cfg.chunk_frames
        if context.ndim == 4:
            context = context[:, None]
        if context.ndim == 5 and context.shape[1] == 1:  # one frame, held still for a chunk
            context = context.expand(-1, K, -1, -1, -1)
        if context.ndim != 5 or context.shape[0] != n_rows or tuple(context.shape[2:]) != lat:
            raise ValueError(f"context must be latents [{n_rows}, n, {', '.join(map(str, lat))}] (or one frame per row), "
                             f"got {list(context.shape)}")
        n, held = context.shape[1], self.history.shape[1]
        if n == 0 or n % K or n > held:
            raise ValueError(f"a context of {n} frames: it must be whole chunks of {K} frames, at most the {held} the cache holds")
        if actions is None:
            actions = torch.zeros(n_rows, n, dtype=torch.long)
        if tuple(actions.shape) != (n_rows, n):
            raise ValueError(f"context actions must be [{n_rows}, {n}], got {list(actions.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.cfg.n_actions):
            raise ValueError(f"context actions must be 0..{self.cfg.n_actions - 1}")
        return context.to(self.device, torch.float32), actions.to(self.device, torch.long)

    @torch.no_grad()
    def set_prompt(self, rows: list[int], prompts: list[str]) -> None:
        """A text event: the rows' condition becomes `prompts`, and their cache is rebuilt under it."""
        self._set_text(rows, prompts)
        mask = torch.zeros(self.B, dtype=torch.bool, device=self.device)
        mask[rows] = True
        self._recache(mask)

    # -- generation ----------------------------------------------------------------------------
    def _text(self) -> TextCondition | None:
        """The rows' text as the model reads it, computed once for the passes that share it (a chunk's levels
        and its cache write, a re-cache); None where the compute reads `self.text` itself (OrtRollout)."""
        return self.generator.condition_text(self.text, self.text_mask)

    def _forward(self, x, sigma: float, actions, start, prev, text: TextCondition):
        return forward_at(self.generator, x, sigma, text, None, actions, start, self.cache, prev)

    def _reference(self) -> torch.Tensor | None:
        """The next chunk's reference frames, [B, K, C, h, w]: each row's last committed frame held for the chunk, or
        with `prev_chunk` its last committed chunk frame by frame (zeros before any).

        None for a model without `prev_frame`, which reads none.
        """
        if self.history_prev is None:
            return None
        K = self.cfg.chunk_frames
        n = K if self.cfg.prev_chunk else 1  # prev_chunk: the previous chunk's frames, else its last one held for the chunk
        frames = (self.frame[:, None] - n + torch.arange(n, device=self.device)).clamp(min=0)
        last = self.history.gather(1, self._slots(frames)[:, :, None, None, None].expand((-1, n) + self.history.shape[2:]))
        last = torch.where((self.frame > 0)[:, None, None, None, None], last, torch.zeros_like(last))  # [B, n, C, h, w]
        return last.expand((-1, K) + self.history.shape[2:])

    def _noise(self, shape, rows: torch.Tensor) -> torch.Tensor:
        """Per-row noise; rows not generating draw nothing, so their random streams are untouched."""
        return torch.stack(
            [
                torch.randn(shape, generator=g, device=self.device) if on else torch.zeros(shape, device=self.device)
                for g, on in zip(self.rngs, rows.tolist())
            ]
        )

    def _start_chunk_noise(self, rows: torch.Tensor) -> None:
        """Before a chunk's noise is drawn: with `repeat_noise`, rewind the rows' streams to their seeds."""
        if self.sampler.repeat_noise:
            for r in torch.nonzero(rows).flatten().tolist():
                self.rngs[r].manual_seed(self.seeds[r])

    def _slots(self, frames: torch.Tensor) -> torch.Tensor:
        """History slots of frame indices [B, n] (the cache's frame layout)."""
        return frame_slots(frames, self.cfg.sink_frames, self.cfg.window_frames)

    def _write(self, chunk: torch.Tensor, actions: torch.Tensor, start: torch.Tensor, rows: torch.Tensor, prev: torch.Tensor | None,
               text: TextCondition | None) -> None:
        """Write the keys and values of a clean chunk [B, K, C, h, w] starting at frames start [B] into the cache of `rows`."""
        _, (k, v) = self._forward(chunk, self.sampler.context_noise, actions, start, prev, text)
        self.cache.update(start, k, v, rows=rows)

    def _write_held(self, cache: KVCache, chunks: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor, held: torch.Tensor,
                    prev: torch.Tensor | None, text: TextCondition | tuple[torch.Tensor, torch.Tensor]) -> KVCache:
        """Clean chunks [n, m K, C, h, w] at frames [n, m K] into `cache` (n rows, holding nothing else), oldest first: chunk
        j in the rows of held [n, m], each through the cached step. `text`: the rows' (`_rows_text`). Returns the cache."""
        K = self.cfg.chunk_frames
        for j in range(held.shape[1]):
            part = slice(j * K, (j + 1) * K)
            start = frames[:, j * K]
            _, (k, v) = forward_at(self.generator, chunks[:, part], self.sampler.context_noise, text, None, actions[:, part], start, cache,
                                   None if prev is None else prev[:, part])
            cache.update(start, k, v, rows=held[:, j])
        return cache

    def _write_fresh(self, rows: torch.Tensor, chunks: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor, held: torch.Tensor,
                     prev: torch.Tensor | None) -> None:
        """`_write_held` on the emptied cache of `rows` [B] (held [B, m] within them), run on those rows alone: on a copy of
        their cache when they are not the whole batch, put back after. Inputs are batch-sized."""
        idx = torch.nonzero(rows).flatten()
        if not idx.numel():
            return
        if idx.numel() == self.B:
            self.cache = self._write_held(self.cache, chunks, actions, frames, held, prev, self._rows_text(idx))
            return
        part = self._write_held(self.cache.select(idx), chunks[idx], actions[idx], frames[idx], held[idx],
                                None if prev is None else prev[idx], self._rows_text(idx))
        self.cache.assign(idx, part)

    def _rows_text(self, idx: torch.Tensor) -> TextCondition | tuple[torch.Tensor, torch.Tensor]:
        """The text condition of rows `idx` alone (`_text` for a sub-batch)."""
        return self.generator.condition_text(self.text[idx], self.text_mask[idx])

    def _remember(self, chunk: torch.Tensor, actions: torch.Tensor, rows: torch.Tensor, prev: torch.Tensor | None) -> None:
        """Keep a committed chunk (and its reference frame) in the history of `rows` and advance their frame counters."""
        K = self.cfg.chunk_frames
        slots = self._slots(self.frame[:, None] + torch.arange(K, device=self.device))  # [B, K]
        for b in torch.nonzero(rows).flatten().tolist():
            self.history[b, slots[b]] = chunk[b]
            self.history_actions[b, slots[b]] = actions[b]
            if prev is not None:
                self.history_prev[b, slots[b]] = prev[b]
        self.frame.add_(rows.to(self.frame.dtype) * K)  # in place: the tensor stays a normal one under inference mode

    def generate(self, actions: torch.Tensor, rows: torch.Tensor | None = None, exit_step: int | None = None) -> torch.Tensor:
        """The next chunk under per-frame actions [B, K]; returns its clean latents [B, K, C, h, w].

        With a bool mask `rows` [B], only those rows advance (the batch is still computed at once).
        `exit_step=None` runs every level, under inference mode (the envs). With an exit level
        (training, Self Forcing) the chunk is the x0 predicted at that level: every level before
        it runs without gradient, the exit level with gradient when autograd is on. The cache is
        written from the detached output, so no gradient ever crosses chunks.
        """
        with torch.inference_mode(exit_step is None):
            return self._generate(actions, rows, exit_step)

    def _generate(self, actions: torch.Tensor, rows: torch.Tensor | None, exit_step: int | None) -> torch.Tensor:
        actions, rows = self._step_inputs(actions, rows)
        last = len(self.sigmas) - 1 if exit_step is None else exit_step
        if not 0 <= last < len(self.sigmas):
            raise ValueError(f"exit_step {exit_step} is not one of the {len(self.sigmas)} denoising levels")
        self._start_chunk_noise(rows)
        prev, text = self._reference(), self._text()
        x0 = denoise(  # 1-2. denoise from per-row noise, re-noising between levels
            lambda x, sigma: self._forward(x, sigma, actions, self.frame, prev, text)[0],
            lambda i: self._noise(self._chunk_shape, rows),
            self.sigmas[: last + 1],
            grad_level=last,
            solver=self.sampler.solver,
        )
        with torch.no_grad():
            self._write(x0.detach(), actions, self.frame, rows, prev, text)  # 3. write the cache and keep the chunk
            self._remember(x0.detach(), actions, rows, prev)
        return x0

    @property
    def _chunk_shape(self) -> tuple[int, ...]:
        return (self.cfg.chunk_frames,) + tuple(self.history.shape[2:])  # [K, C, h, w]

    def _step_inputs(self, actions: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked actions [B, K] and the bool row mask [B] (all rows when None), on the device."""
        K = self.cfg.chunk_frames
        if actions.shape != (self.B, K):
            raise ValueError(f"actions must be [B, K] = [{self.B}, {K}], got {tuple(actions.shape)}")
        rows = torch.ones(self.B, dtype=torch.bool, device=self.device) if rows is None else rows.to(self.device)
        return actions.to(self.device), rows

    def reseed(self, seeds: list[int]) -> None:
        """Reseed every row's noise stream (training draws fresh noise each step)."""
        for g, s in zip(self.rngs, seeds):
            g.manual_seed(int(s))
        self.seeds = [int(s) for s in seeds]

    def recent(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `n` committed clean latents [B, n, C, h, w] and actions [B, n], in time order.

        Every row must have at least `n` frames, all of them still held (n <= window, or the
        episode is short enough that the sink holds them).
        """
        c = self.cfg
        lo = int(self.frame.min())
        if n > lo:
            raise ValueError(f"asked for the last {n} frames, but a row has only {lo}")
        if n > c.window_frames and lo > c.sink_frames + c.window_frames:
            raise ValueError(f"only the last {c.window_frames} frames (and the sink) are held, asked for {n}")
        frames = self.frame[:, None] - n + torch.arange(n, device=self.device)  # [B, n]
        slots = self._slots(frames)
        idx = slots[:, :, None, None, None].expand((-1, -1) + self.history.shape[2:])
        return self.history.gather(1, idx), self.history_actions.gather(1, slots)

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors of the rollout (cache, history, positions, text): a training checkpoint keeps them."""
        return {**{f"cache.{k}": v for k, v in self.cache.state().items()}, "history": self.history,
                "history_actions": self.history_actions, "frame": self.frame, "text": self.text, "text_mask": self.text_mask,
                **({"history_prev": self.history_prev} if self.history_prev is not None else {}),
                "seeds": torch.tensor(self.seeds, dtype=torch.int64)}

    def load_state(self, tensors: dict[str, torch.Tensor], prompts: list[str]) -> None:
        """Restore what `state` returned (and the rows' prompts)."""
        self.cache.k.copy_(tensors["cache.k"])
        self.cache.v.copy_(tensors["cache.v"])
        self.cache.valid.copy_(tensors["cache.valid"])
        self.history.copy_(tensors["history"])
        self.history_actions.copy_(tensors["history_actions"])
        if self.history_prev is not None and "history_prev" in tensors:
            self.history_prev.copy_(tensors["history_prev"])
        self.frame.copy_(tensors["frame"])
        self.text, self.text_mask = tensors["text"].clone().to(self.device), tensors["text_mask"].clone().to(self.device)
        self.prompts = list(prompts)
        if "seeds" in tensors:  # checkpoints written before repeat_noise existed do not hold them
            self.seeds = [int(x) for x in tensors["seeds"].tolist()]

    @torch.no_grad()
    def _recache(self, rows: torch.Tensor) -> None:
        """Rewrite the frames still in the cache of `rows`, in time order, under their current text."""
        c, K = self.cfg, self.cfg.chunk_frames
        self.cache.reset(rows)
        # stored chunk starts per row: the sink chunks, then the window's chunks, oldest first
        per_row = [[s for s in range(0, c.sink_frames, K) if s < nb] + list(range(max(c.sink_frames, nb - c.window_frames), nb, K))
                   if on else [] for nb, on in zip(self.frame.tolist(), rows.tolist())]
        m = max(map(len, per_row))
        if m == 0:
            return
        starts = torch.tensor([s + [0] * (m - len(s)) for s in per_row], device=self.device)  # [B, m]
        held = torch.tensor([[j < len(s) for j in range(m)] for s in per_row], device=self.device)
        frames = (starts[:, :, None] + torch.arange(K, device=self.device)).flatten(1)  # [B, m K]
        slots = self._slots(frames)
        prev = None if self.history_prev is None else _held(self.history_prev, slots)
        self._write_fresh(rows, _held(self.history, slots), _held(self.history_actions, slots), frames, held, prev)


def _held(history: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """The frames at history slots [B, n] of a per-row history [B, frames, ...]: [B, n, ...]."""
    return history.gather(1, slots.view(slots.shape + (1,) * (history.ndim - 2)).expand(slots.shape + history.shape[2:]))
