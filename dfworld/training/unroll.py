"""The generator's rollout with gradient through its own history (backpropagation through time).

`Rollout` (dfworld.rollout) commits every chunk detached, as Self Forcing does: no gradient ever
crosses chunks, so no loss teaches a chunk what its errors do to the chunks after it. `unroll` runs
the same rollout (the cache's sink and ring window, each chunk's reference frame, the sampler's
levels, the context written chunk by chunk, a text event re-caching the held chunks under the new
text) out of place: every committed chunk's keys and values keep their graph, so a loss on a late
chunk reaches the passes that drew the earlier ones. This is how deterministic simulators trained
as world models keep long rollouts on track (autoregressive fine-tuning through several steps);
the fidelity stage trains through it against the simulator's own frames.

Within a chunk, only the last level runs with gradient (as Self Forcing); the cache writes do.
tests/test_unroll.py holds it equal to `Rollout` under the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dfworld.model.kv_cache import KVCache
from dfworld.model.teacher_forcing import reference_frames
from dfworld.model.transformer import VideoTransformer
from dfworld.rollout import denoise, forward_at
from dfworld.schedule import SamplerConfig, student_sigmas


@dataclass
class Event:
    """A text event before generated chunk `chunk`: rows [B] (bool) take the text [B, L, D] / mask [B, L] (other rows' ignored)."""

    chunk: int
    rows: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor


@dataclass
class _Chunk:
    """A committed chunk: latents, actions and reference frame [B, K, ...], first frame index."""

    latents: torch.Tensor
    actions: torch.Tensor
    prev: torch.Tensor | None
    start: int


def unroll(
    model: VideoTransformer,
    sampler: SamplerConfig,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    context: torch.Tensor,
    context_actions: torch.Tensor,
    actions: torch.Tensor,
    noise: torch.Tensor,
    events: list[Event] = (),
) -> torch.Tensor:
    """Generated latents [B, F, C, h, w] under per-frame actions [B, F] (whole chunks), after the real `context`
    [B, n, C, h, w] (whole chunks, at most the cache) under `context_actions` [B, n].

    `text` [B, L, D], `text_mask` [B, L]: the rows' condition at the start, padded to the model's text tokens.
    `noise` [B, J, levels, K, C, h, w]: chunk j's noise at each level (J = 1: the same for every chunk, as
    `repeat_noise`). Every row is at the same frame; all of it runs with autograd when it is on.
    """
    cfg, K = model.config, model.config.chunk_frames
    B, n = context.shape[:2]
    if n == 0 or n % K or n > cfg.sink_frames + cfg.window_frames or actions.shape[1] % K:
        raise ValueError(f"context ({n} frames) and actions ({actions.shape[1]} frames) must be whole chunks of {K}, the context "
                         f"at most the {cfg.sink_frames + cfg.window_frames} frames the cache holds")
    sigmas = student_sigmas(sampler.timesteps, sampler.shift).tolist()
    if noise.shape[2] != len(sigmas) or noise.shape[1] not in (1, actions.shape[1] // K):
        raise ValueError(f"noise {tuple(noise.shape)}: [B, 1 or chunks, {len(sigmas)} levels, K, C, h, w]")
    device = context.device
    empty = KVCache(cfg, B, device)
    cond = model.condition_text(text, text_mask)
    prev_ctx = reference_frames(context, K, cfg.prev_chunk) if cfg.prev_frame else None
    held: list[_Chunk] = []
    cache = empty
    for s in range(0, n, K):  # 1. the context, chunk by chunk, as the rollout's reset writes it
        chunk = _Chunk(context[:, s : s + K], context_actions[:, s : s + K], None if prev_ctx is None else prev_ctx[:, s : s + K], s)
        cache = _write(model, sampler, cache, chunk, cond)
        held.append(chunk)
    by_chunk = {e.chunk: e for e in events}
    out = []
    for j in range(actions.shape[1] // K):
        start = n + j * K
        if j in by_chunk:  # 2. a text event: the rows' condition changes, their held chunks are rewritten under it
            e = by_chunk[j]
            text = torch.where(e.rows[:, None, None], e.text, text)
            text_mask = torch.where(e.rows[:, None], e.mask, text_mask)
            cond = model.condition_text(text, text_mask)
            fresh = empty
            for chunk in _in_cache(held, start, cfg.sink_frames, cfg.window_frames):
                fresh = _write(model, sampler, fresh, chunk, cond)
            r = e.rows.to(device)
            cache = KVCache.over(cfg, torch.where(r[None, :, None, None, None], fresh.k, cache.k),
                                 torch.where(r[None, :, None, None, None], fresh.v, cache.v), torch.where(r[:, None], fresh.valid, cache.valid))
        a = actions[:, j * K : (j + 1) * K]
        last = held[-1].latents if cfg.prev_chunk else held[-1].latents[:, -1:].expand(-1, K, -1, -1, -1)
        prev = last if cfg.prev_frame else None
        first = torch.full((B,), start, dtype=torch.long, device=device)
        chunk_noise = noise[:, min(j, noise.shape[1] - 1)]
        x0 = denoise(lambda x, sigma: forward_at(model, x, sigma, cond, None, a, first, cache, prev)[0],  # 3. the chunk's levels
                     lambda i: chunk_noise[:, i], sigmas, grad_level=len(sigmas) - 1, solver=sampler.solver)
        chunk = _Chunk(x0, a, prev, start)
        cache = _write(model, sampler, cache, chunk, cond)  # 4. committed with its graph
        held.append(chunk)
        out.append(x0)
    return torch.cat(out, 1)


def _write(model, sampler: SamplerConfig, cache: KVCache, chunk: _Chunk, cond) -> KVCache:
    """The cache with a clean chunk's keys and values written at its frames, out of place."""
    start = torch.full((chunk.latents.shape[0],), chunk.start, dtype=torch.long, device=chunk.latents.device)
    _, (k, v) = forward_at(model, chunk.latents, sampler.context_noise, cond, None, chunk.actions, start, cache, chunk.prev)
    return KVCache.over(model.config, *cache.written(start, k, v))


def _in_cache(held: list[_Chunk], frame: int, sink: int, window: int) -> list[_Chunk]:
    """The chunks a cache holds before `frame`, oldest first: the sink's, then the window's (`Rollout._recache`)."""
    return [c for c in held if c.start < sink or c.start >= max(sink, frame - window)]
