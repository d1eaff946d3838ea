"""Attention geometry of the block-causal generator, and teacher forcing in one pass.

`block_causal_frame_mask` is what a chunk sees in a rollout: its own chunk, the sink and the
rolling window (dfworld.model.transformer's docstring). Teacher forcing trains every chunk of a
real clip as a rollout would denoise it: given the clean frames before it. One pass holds two
copies of the clip, clean then noisy, at the same time positions; a clean frame attends as in
the block-causal forward (it writes the cache), a noisy frame of chunk j attends the clean frames
the cache would hold when chunk j is generated and the noisy frames of its own chunk. Rather than
one dense mask over both copies (4x the attention of one copy, and the mask's memory traffic),
`TeacherForcingPlan` runs each chunk of each copy against just the keys it may see.
`held_chunks_kv` is the same geometry for the chunks a cache holds: their keys and values in one
pass (the ONNX rollout's re-cache and context writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from dfworld.model.fused_attention import HeldChunkKeys


@lru_cache(maxsize=32)
def block_causal_frame_mask(frames: int, chunk: int, sink: int, window: int) -> torch.Tensor:
    """[F, F] bool: query frame q may attend key frame k (own chunk, sink, window)."""
    q = torch.arange(frames)[:, None]
    k = torch.arange(frames)[None, :]
    start = (q // chunk) * chunk
    return (k < start + chunk) & ((k < sink) | (k >= start - window))


@dataclass
class TeacherForcingPlan:
    """Which keys each query of the (clean, noisy) token sequence attends; `attend` runs it."""

    chunks: list[tuple[int, int, torch.Tensor]]  # per chunk of each copy, in order: query token range [a, b), key indices

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """q, k, v [B, H, 2T, *] -> attention output [B, H, 2T, Dv]."""
        out = []
        for a, b, keys in self.chunks:
            out.append(F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, keys], v[:, :, keys], scale=scale))
        return torch.cat(out, 2)


def teacher_forcing_plan(frames: int, chunk: int, sink: int, window: int, tubelet: int, group_tokens: int, device) -> TeacherForcingPlan:
    """The plan for `frames` frames (whole chunks) in groups of `tubelet` frames of `group_tokens` tokens."""
    fm = block_causal_frame_mask(frames, chunk, sink, window)
    T = frames // tubelet * group_tokens
    tok = torch.arange(frames // tubelet).repeat_interleave(group_tokens) * tubelet  # the first frame of each token's group
    per_chunk = chunk // tubelet * group_tokens
    clean, noisy = [], []
    for j in range(frames // chunk):
        held = torch.nonzero(torch.isin(tok, torch.nonzero(fm[j * chunk, : j * chunk]).flatten())).flatten()  # clean frames before
        own = j * per_chunk + torch.arange(per_chunk)
        clean.append((j * per_chunk, (j + 1) * per_chunk, torch.cat([held, own]).to(device)))
        noisy.append((T + j * per_chunk, T + (j + 1) * per_chunk, torch.cat([held, T + own]).to(device)))
    return TeacherForcingPlan(clean + noisy)


def reference_frames(clean: torch.Tensor, chunk: int, previous_chunk: bool = False) -> torch.Tensor:
    """[B, F, ...]: for every frame, the last clean frame before its chunk, or with `previous_chunk` the frame
    `chunk` frames before it (the previous chunk, frame by frame); zeros in the first chunk."""
    B, Fr = clean.shape[:2]
    if previous_chunk:
        return torch.cat([torch.zeros_like(clean[:, :chunk]), clean[:, : Fr - chunk]], 1)
    last = torch.cat([torch.zeros_like(clean[:, :1]), clean[:, chunk - 1 : Fr - 1 : chunk]], 1)  # [B, F/K, ...]
    return last.repeat_interleave(chunk, 1)


def teacher_forcing(model, x, sigma, text, actions, clean) -> torch.Tensor:
    """Velocity of the noisy frames x [B, F, C, h, w] given their clean copy `clean` = (latents, sigma);
    `text` is the model's `condition_text`."""
    cfg = model.config
    if cfg.attention != "block_causal":
        raise ValueError("teacher forcing is for the block_causal generator")
    x_clean, sigma_clean = clean
    if x_clean.shape != x.shape or sigma_clean.shape != sigma.shape:
        raise ValueError(f"the clean copy {tuple(x_clean.shape)} must match the noisy frames {tuple(x.shape)}")
    model._check_inputs(x, sigma, actions)
    model._check_inputs(x_clean, sigma_clean, actions)
    B, Fr = x.shape[:2]
    if Fr % cfg.chunk_frames:
        raise ValueError(f"teacher forcing takes whole chunks of {cfg.chunk_frames} frames, got {Fr} frames")
    G = Fr // cfg.tubelet
    both = torch.cat([x_clean, x], 1)  # [B, 2F, ...]: the clean copy, then the noisy one
    c, a = model._condition(torch.cat([sigma_clean, sigma], 1), text, torch.cat([actions, actions], 1))
    h = model.embed(both, reference_frames(x_clean, cfg.chunk_frames, cfg.prev_chunk).repeat(1, 2, 1, 1, 1) if cfg.prev_frame else None)
    h = h + a[:, :, None]  # [B, 2G, S, D]
    frames = model._frame_positions(torch.zeros(B, dtype=torch.long, device=x.device), Fr)
    frames = torch.cat([frames, frames], 1)  # both copies sit at the same times
    rope = model._rope(frames)
    rope_s, key_sink = None, None
    if cfg.sink_frames > 0:
        rope_s = model._rope(model._sink_query_positions(frames))
        sink = torch.cat([frames[:, :Fr] < cfg.sink_frames, torch.zeros_like(frames[:, Fr:], dtype=torch.bool)], 1)
        key_sink = model._tokens(sink)[:, None, :, None]  # noisy keys rotate at their absolute time, as a cached chunk's
    plan = teacher_forcing_plan(Fr, cfg.chunk_frames, cfg.sink_frames, cfg.window_frames, cfg.tubelet, cfg.spatial_tokens, x.device)
    for block, text_kv in zip(model.blocks, text.kv):
        h, _ = block(h, c, text_kv, text.mask, (rope, rope_s, rope, key_sink, plan))
    ref = reference_frames(x_clean, cfg.chunk_frames, cfg.prev_chunk) if cfg.prev_skip else None
    return model.skip(model._output(h[:, G:], c[:, G:]), x, ref)


def held_chunks_kv(model, x, sigma, text, actions, frames, held, prev=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values [L, B, H, F N, Dh] of clean chunks x [B, F, C, h, w] in one pass: what writing them one by one,
    oldest first, into a cache that holds nothing else gives (a re-cache, an episode's context).

    `frames` [B, F]: each frame's absolute index (each chunk's frames consecutive, chunks in time order, gaps
    allowed: the sink, then the window). Chunk j of a row attends itself and the chunks before it where `held`
    [B, F / K] is true (`HeldChunkKeys`: one fused attention call per chunk over just those keys); the keys and
    values of chunks not held are computed but mean nothing. `sigma` [B, F], `text` the model's `condition_text`,
    `prev` each frame's reference frame (models with `prev_frame`).
    """
    cfg = model.config
    K = cfg.chunk_frames
    c, a = model._condition(sigma, text, actions)
    h = model.embed(x, prev) + a[:, :, None]  # [B, G, S, D]
    rope = model._rope(frames)
    key_sink = shifts = None
    if cfg.sink_frames > 0:  # as the cached step: a sink key is seen from the sink-shifted query, i.e. rotated on by the shift
        key_sink = model._tokens(frames < cfg.sink_frames)[:, None, :, None]
        shifts = [model._sink_key_shift(frames[:, j]) for j in range(0, frames.shape[1], K)]
    keys = HeldChunkKeys(held, K * cfg.tokens_per_frame, key_sink, shifts)
    ks, vs = [], []
    for block, text_kv in zip(model.blocks, text.kv):
        h, (k, v) = block(h, c, text_kv, text.mask, (rope, None, rope, None, keys))
        ks.append(k)
        vs.append(v)
    return torch.stack(ks), torch.stack(vs)
