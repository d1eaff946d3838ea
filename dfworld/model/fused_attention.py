"""Attention under a key mask as one fused kernel in the exported graphs: ONNX Runtime's MultiHeadAttention.

The exported graphs used to spell attention out as ONNX ops (matmul, the mask's Where, softmax, the
NaN guard, matmul): at batch 64 the Where and the softmax alone took a quarter of the chunk graph's
time. ORT's contrib `com.microsoft.MultiHeadAttention` does it in one kernel, and on the CPU its
flash-attention path (tiled, online softmax) runs only when the node has no mask input: at the chunk's
shape at batch 64, 5.1 ms, 14.4 ms with a mask, 28.8 ms spelled out (docs/experiments/rollout-speed.md,
session 26). So the key
mask rides in the head channels instead. Queries get one more channel, 1; keys get the key's bias
there, 0 where the key is valid and `MASKED` where it is not; values get a zero channel, dropped
after. A valid key's score is the same sum plus 1 x 0; a masked key's score is `scale x MASKED`
(about -17,700 at the generator's head width), whose exponential is 0 in fp32, as a -inf mask's is.
Every query row attends at least one valid key in the graphs that use it (the chunk's own keys; a
text's first token), so no row is all masked.

Sink keys in a cached step (dfworld.model.transformer's module docstring: the sink is matched by a
second, shifted rotation of the query, both products in one attention call by doubling the head
width). Inside one chunk every query is shifted by the same amount d (per row), and rotary scores
depend on the difference of the two rotations only, so q(p - d) . k(s) = q(p) . k(s + d): the
sink's keys are rotated on by d instead, and the head width stays Dh (half the work of the doubled
product). Only the time pairs move; the spatial pairs of the sink query equal the plain query's.
The cache's rotated, masked keys are built once per chunk for all its passes (`AttendedCache`).

Eager torch (training, the torch rollout) does not come here; the op's torch body (SDPA) is what
the exporter traces through, and what runs if an exported module is called eagerly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from dfworld.model.layers import rope_apply

MASKED = -1.0e5  # a masked key's bias, before the scale: exp(scale x MASKED) is 0 in fp32 at any head width up to 10^6
ORT_DOMAIN = "com.microsoft"


@torch.library.custom_op("dfworld::fused_attention", mutates_args=())
def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Unmasked attention: q [B, T, H D] (heads side by side), k and v [B, H, S, D] -> [B, T, H D]."""
    B, T, _ = q.shape
    D = k.shape[-1]
    o = F.scaled_dot_product_attention(q.view(B, T, heads, D).transpose(1, 2), k, v, scale=scale)
    return o.transpose(1, 2).reshape(B, T, heads * D)


@fused_attention.register_fake
def _(q, k, v, heads, scale):
    return q.new_empty(q.shape[0], q.shape[1], heads * v.shape[-1])


def fused_attention_symbolic(g, q, k, v, heads, scale):
    """`dfworld::fused_attention` as ORT's MultiHeadAttention (query BSNH flattened, key and value BNSH)."""
    from torch.onnx import symbolic_helper as sh

    return g.op(f"{ORT_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=sh._get_const(heads, "i", "heads"),
                scale_f=sh._get_const(scale, "f", "scale"))


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of q [B, H, T, D] over keys and values [B, H, S, D + 1] that carry the key mask's channel (module
    docstring: the keys' bias, the values' zero); -> [B, T, H D]."""
    B, H, T, D = q.shape
    q = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1).transpose(1, 2).reshape(B, T, H * (D + 1))
    o = fused_attention(q, k, v, H, scale)
    return o.view(B, T, H, D + 1)[..., :D].reshape(B, T, H * D)


def with_bias(k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values [B, H, S, D] with the key mask's channel: [B, H, S, D + 1] (key_valid [B, S] bool; None: all valid)."""
    if key_valid is None:
        return F.pad(k, (0, 1)), F.pad(v, (0, 1))
    B, H, S, _ = k.shape
    bias = torch.where(key_valid, 0.0, MASKED).to(k.dtype)[:, None, :, None].expand(B, H, S, 1)
    return torch.cat([k, bias], dim=-1), F.pad(v, (0, 1))


def key_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of q [B, H, T, D] over k, v [B, H, S, D] where key_valid [B, S] (bool); -> [B, T, H D].

    The mask as a head channel (module docstring), so the exported graph runs the fused kernel.
    """
    return biased_attention(q, *with_bias(k, v, key_valid), scale)


class AttendedCache(NamedTuple):
    """A KV cache as an exported cached step's attention reads it, built once per chunk (`attended_cache`) and read by
    all the chunk's passes (its denoising levels and its write): each layer's keys with the sink's keys rotated on by the
    chunk's shift and the key mask's channel, its values with theirs. Per pass only the chunk's own keys are appended
    (one copy of the keys and one of the values), instead of rotating, masking and padding the whole cache again."""

    k: list[torch.Tensor]  # per layer [B, H, S, Dh + 1]
    v: list[torch.Tensor]  # per layer [B, H, S, Dh + 1]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_kv: tuple[torch.Tensor, torch.Tensor],
               scale: float) -> torch.Tensor:
        """q [B, H, T, Dh] rotated at its absolute positions, the chunk's own k, v [B, H, T, Dh] (all valid), and this
        layer's (keys, values) of the attended cache -> [B, T, H Dh]."""
        k, v = with_bias(k, v, None)
        return biased_attention(q, torch.cat([cache_kv[0], k], dim=2), torch.cat([cache_kv[1], v], dim=2), scale)


def attended_cache(cache, shift: tuple[torch.Tensor, torch.Tensor]) -> AttendedCache:
    """The `AttendedCache` of a `KVCache` (its layers' keys and values, its valid slots, its sink's slots first) for a chunk
    whose sink query is shifted by `shift` (cos, sin [B, 1, 1, Dh/2]; `VideoTransformer._sink_key_shift`)."""
    c = cache.config
    n = c.sink_frames * c.tokens_per_frame
    ks, vs = [], []
    for i in range(c.depth):
        k = cache.k[i]
        if n:
            k = torch.cat([rope_apply(k[:, :, :n], *shift), k[:, :, n:]], dim=2)
        k, v = with_bias(k, cache.v[i], cache.valid)
        ks.append(k)
        vs.append(v)
    return AttendedCache(ks, vs)


class HeldChunkKeys(NamedTuple):
    """The keys of a held pass (`dfworld.model.teacher_forcing.held_chunks_kv`: m chunks written in one pass).

    Chunk j's queries attend the chunks before it that the row holds, and their own chunk: one unmasked-kernel
    call per chunk over just those keys (no dense [mT, mT] mask, no work on the keys a chunk may not see), the
    other rows' missing chunks as the key channel's bias. As in a cached step, chunk j's sink keys are rotated on
    by its shift instead of a second, shifted rotation of its queries (module docstring).
    """

    held: torch.Tensor  # [B, m] bool: chunk i is in the row's cache
    tokens: int  # T, the tokens of one chunk
    key_sink: torch.Tensor | None  # [B, 1, m T, 1] bool: which keys are sink keys (None: no sink)
    shifts: list[tuple[torch.Tensor, torch.Tensor]] | None  # per chunk j: cos, sin [B, 1, 1, Dh/2] of its shift d_j

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache_kv: None, scale: float) -> torch.Tensor:
        """q [B, H, m T, Dh] rotated at its absolute positions; k, v [B, H, m T, Dh] (a held pass reads no cache)
        -> [B, m T, H Dh]."""
        T, out = self.tokens, []
        own = torch.ones_like(self.held[:, :1]).expand(-1, T)
        for j in range(self.held.shape[1]):
            seen = slice(0, (j + 1) * T)  # chunks 0..j
            kj = k[:, :, seen]
            if self.key_sink is not None:
                kj = torch.where(self.key_sink[:, :, seen], rope_apply(kj, *self.shifts[j]), kj)
            valid = torch.cat([self.held[:, :j].repeat_interleave(T, dim=1), own], dim=1)  # [B, (j + 1) T]
            out.append(key_masked_attention(q[:, :, j * T : (j + 1) * T], kj, v[:, :, seen], valid, scale))
        return torch.cat(out, dim=1)
