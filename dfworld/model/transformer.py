"""One video transformer for every role: teacher and critic (full attention), generator (block-causal).

Input: latent frames x [B, F, C, h, w] at per-frame noise levels sigma [B, F], text tokens
[B, L, Dt] with mask [B, L], and per-frame actions [B, F]. Output: the flow-matching velocity
v = eps - x0 for every frame (same shape as x).

- Tokens: tubelets. A token covers `tubelet` consecutive frames (t) times a p x p patch of
  latent pixels (ViViT's tubelet embedding, arXiv 2103.15691), so a group of t frames holds
  S = (h/p)^2 tokens, N = S / t per frame on average. With t = 1 a token is one frame's patch.
  Each token gets a learned spatial position and its group's action embedding: one table per
  frame offset inside the group, summed, so the order of the actions in a group matters.
  The frames of a group share one noise level (the student denoises whole chunks anyway).
- Time: rotary positions over the frame index of each group's first frame (RoFormer).
  Optionally space too (`rope_space` > 0, axial 3D RoPE as in video DiTs): that many rotary
  pairs of each head encode the token's patch row and as many its column, the rest time, so
  attention sees relative offsets in space as well as in time; the learned spatial position
  stays. Spatial angles do not depend on the frame, so the cache and the sink are unchanged.
- Conditioning: per-group adaLN-zero from the noise level, the pooled text and the actions
  (DiT); cross-attention to the text tokens. A learned null text and a null action are the
  unconditional input for classifier-free guidance.
- Attention: `full` over all frames, or `block_causal` over chunks of `chunk_frames` frames
  (bidirectional inside a chunk, causal across chunks), restricted to `sink_frames` at the start
  plus a rolling window of the last `window_frames` frames (LongLive's frame sink).

Sink positions. A sink key would be ever further away in time as an episode goes on, a distance
never seen in training. So a sink frame i is always placed as if it sat just before the window:
at position max(S, s - W) - S + i for a query chunk starting at s. Keys are rotated once at
their absolute positions; the query is rotated twice (at its absolute position for window keys,
and shifted for sink keys), and both products go through one SDPA call by concatenating the two
rotations along the head dimension, with each key zero in the half it does not use. The
full-sequence forward (training) and the cached chunk step (generation) compute exactly the same.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dfworld.model.config import ATTENTION_MODES, TransformerConfig  # noqa: F401  (TransformerConfig is imported from here)
from dfworld.model.fused_attention import AttendedCache, HeldChunkKeys, attended_cache, key_masked_attention
from dfworld.model.kv_cache import KVCache
from dfworld.model.layers import MLP, RMSNorm, modulate, rope_angles, rope_apply, timestep_embedding
from dfworld.model.teacher_forcing import TeacherForcingPlan, block_causal_frame_mask, teacher_forcing

SKIP_SCALE = 20.0  # prev_skip: the gate is learned at this scale (20 x one Adam step per step)


class TextCondition(NamedTuple):
    """A text as the model reads it (`VideoTransformer.condition_text`)."""

    pooled: torch.Tensor  # [B, D]: the masked mean of the projected tokens, in every block's adaLN conditioning
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block: cross-attention keys and values [B, H, L, Dh]
    mask: torch.Tensor  # [B, L] bool


class Attention(nn.Module):
    """Self-attention with rotary time positions, optional sink positioning and a KV cache."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.q_norm, self.k_norm = RMSNorm(cfg.head_dim), RMSNorm(cfg.head_dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x, rope_q, rope_qs, rope_k, key_sink, mask, cache_kv=None):
        """x [B, T, D]; rope_* are (cos, sin) pairs [B, 1, T, Dh/2]; key_sink [B, 1, Tk, 1] or None.

        Returns the output [B, T, D] and this input's rotated keys and values [B, H, T, Dh].
        """
        B, T, _ = x.shape
        H, Dh = self.cfg.heads, self.cfg.head_dim
        q, k, v = self.qkv(x).view(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, Dh]
        q, k = self.q_norm(q), self.k_norm(k)
        k = rope_apply(k, *rope_k)
        new_kv = (k, v)
        q_abs = rope_apply(q, *rope_q)
        if isinstance(mask, (AttendedCache, HeldChunkKeys)):  # an exported cached step, a held pass: fused (fused_attention)
            return self.out(mask.attend(q_abs, k, v, cache_kv, Dh**-0.5)), new_kv
        if cache_kv is not None:
            k = torch.cat([cache_kv[0], k], dim=2)  # [B, H, S + T, Dh]
            v = torch.cat([cache_kv[1], v], dim=2)
        if key_sink is not None:
            q = torch.cat([q_abs, rope_apply(q, *rope_qs)], dim=-1)  # [B, H, T, 2 Dh]
            k = torch.cat([k * ~key_sink, k * key_sink], dim=-1)
        else:
            q = q_abs
        if isinstance(mask, TeacherForcingPlan):
            o = mask.attend(q, k, v, Dh**-0.5)
        elif key_sink is not None and not torch.onnx.is_in_onnx_export():
            # values as wide as the doubled queries and keys: SDPA's fused CPU kernel needs one head width
            # (its math fallback runs 1.4x slower at batch 1 and 2.7x at batch 16); the zero half is dropped
            o = F.scaled_dot_product_attention(q, k, F.pad(v, (0, Dh)), attn_mask=mask, scale=Dh**-0.5)[..., :Dh]
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=Dh**-0.5)
        return self.out(o.transpose(1, 2).reshape(B, T, H * Dh)), new_kv


class CrossAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, H, L, Dh] of the projected text tokens [B, L, D]: the same for every pass under one text."""
        B, L, D = text.shape
        k, v = self.kv(text).view(B, L, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, Dh = self.heads, D // self.heads
        q = self.q(x).view(B, T, H, Dh).transpose(1, 2)
        k, v = text_kv
        if torch.onnx.is_in_onnx_export():
            return self.out(key_masked_attention(q, k, v, text_mask, Dh**-0.5))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=text_mask[:, None, None, :])
        return self.out(o.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm_x = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.cross = CrossAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(cfg.dim, int(cfg.dim * cfg.mlp_ratio))
        self.ada = nn.Linear(cfg.dim, 6 * cfg.dim)
        nn.init.zeros_(self.ada.weight)  # adaLN-zero: every block starts as the identity
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, c, text_kv, text_mask, attn_args, cache_kv=None):
        """x [B, G, S, D] (groups of tubelet frames x their tokens); c [B, G, D] per-group conditioning;
        text_kv this block's cross-attention keys and values (`CrossAttention.text_kv`)."""
        B, G, S, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c))[:, :, None].chunk(6, dim=-1)  # each [B, G, 1, D]
        h = modulate(self.norm1(x), sh1, sc1).reshape(B, G * S, D)
        a, new_kv = self.attn(h, *attn_args, cache_kv=cache_kv)
        x = x + g1 * a.view(B, G, S, D)
        x = x + self.cross(self.norm_x(x).view(B, G * S, D), text_kv, text_mask).view(B, G, S, D)
        x = x + g2 * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x, new_kv


class VideoTransformer(nn.Module):
    """The shared video transformer (see the module docstring)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = cfg = config
        self.patch_in = nn.Linear(cfg.patch_dim, cfg.dim)
        if cfg.prev_frame:  # zero-initialised: a model starts as it was without it
            self.prev_in = nn.Linear(cfg.patch_dim, cfg.dim)
            nn.init.zeros_(self.prev_in.weight)
            nn.init.zeros_(self.prev_in.bias)
        self.pos = nn.Parameter(torch.randn(cfg.spatial_tokens, cfg.dim) * 0.02)
        # one table of n_actions + 1 rows (the last: null action) per frame offset inside a tubelet
        self.action = nn.Embedding(cfg.tubelet * (cfg.n_actions + 1), cfg.dim)
        self.time = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.text_in = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.dim))
        self.null_text = nn.Parameter(torch.randn(1, cfg.text_dim) * 0.02)  # the unconditional text
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        if cfg.prev_skip:  # zero: a model starts as it was without it
            self.skip_gate = nn.Parameter(torch.zeros(()))
        self.ada_out = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.patch_out = nn.Linear(cfg.dim, cfg.patch_dim)
        for layer in (self.ada_out, self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # -- conditioning --------------------------------------------------------------------------
    def drop_condition(self, text, text_mask, actions, drop_text, drop_actions):
        """Replace the text (rows where drop_text [B] is true) and actions (drop_actions [B]) by null ones.

        Used for condition dropout in training and for the unconditional branch of CFG; the null
        text stays differentiable, so it is learned.
        """
        slot0 = text.new_zeros(text.shape[:2] + (1,))
        slot0[:, 0] = 1.0
        null_full = slot0 * self.null_text  # [B, L, Dt]: the null token in slot 0, zeros after
        null_m = torch.zeros_like(text_mask)
        null_m[:, 0] = True
        dt = drop_text[:, None, None]
        text = torch.where(dt, null_full, text)
        text_mask = torch.where(drop_text[:, None], null_m, text_mask)
        actions = torch.where(drop_actions[:, None], torch.full_like(actions, self.config.n_actions), actions)
        return text, text_mask, actions

    def condition_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> TextCondition:
        """What the model reads of a text [B, L, Dt] with mask [B, L]: its pooled projection and every block's
        cross-attention keys and values. It does not depend on the frames, so a caller that runs several passes
        under one text (the denoising levels of a chunk, a re-cache) computes it once and passes it as `text`."""
        tx = self.text_in(text)  # [B, L, D]
        m = text_mask[..., None].to(tx.dtype)
        pooled = (tx * m).sum(1) / m.sum(1).clamp(min=1)  # [B, D]
        return TextCondition(pooled, [block.cross.text_kv(tx) for block in self.blocks], text_mask)

    def _condition(self, sigma, text: TextCondition, actions):
        """Per-group conditioning c [B, G, D] and group action embeddings [B, G, D]."""
        cfg = self.config
        t = self.time(timestep_embedding(self._group(sigma), cfg.dim))  # [B, G, D]
        B, Fr = actions.shape
        offset = torch.arange(cfg.tubelet, device=actions.device).repeat(Fr // cfg.tubelet) * (cfg.n_actions + 1)  # [F]
        a = self.action(actions + offset).view(B, Fr // cfg.tubelet, cfg.tubelet, cfg.dim).sum(2)  # [B, G, D]
        return t + text.pooled[:, None] + a, a

    def _group(self, per_frame: torch.Tensor) -> torch.Tensor:
        """[B, F] -> [B, G]: the value of each group's first frame."""
        return per_frame[:, :: self.config.tubelet]

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        B, Fr, C, h, w = x.shape
        t, p = self.config.tubelet, self.config.patch
        x = x.reshape(B, Fr // t, t, C, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 3, 5, 7)
        return x.reshape(B, Fr // t, (h // p) * (w // p), t * C * p * p)  # [B, G, S, t C p p]

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        B, G, S, _ = x.shape
        g, t, p = cfg.latent_size // cfg.patch, cfg.tubelet, cfg.patch
        x = x.reshape(B, G, g, g, t, cfg.latent_channels, p, p).permute(0, 1, 4, 5, 2, 6, 3, 7)
        return x.reshape(B, G * t, cfg.latent_channels, cfg.latent_size, cfg.latent_size)

    # -- positions and masks -------------------------------------------------------------------
    def _frame_positions(self, start_frame: torch.Tensor, frames: int) -> torch.Tensor:
        return start_frame[:, None] + torch.arange(frames, device=start_frame.device)  # [B, F]

    def _sink_query_positions(self, frame: torch.Tensor) -> torch.Tensor:
        """Query positions for sink keys: the sink sits just before the window (module docstring)."""
        c = self.config
        start = (frame // c.chunk_frames) * c.chunk_frames
        return frame - torch.clamp(start - c.window_frames, min=c.sink_frames) + c.sink_frames

    def _sink_key_shift(self, start_frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, 1, Dh/2]: the rotation that moves a sink key by what the sink query is shifted by, for a chunk
        at start_frame [B] (the time pairs; the spatial pairs stay)."""
        cfg = self.config
        time_pairs = cfg.head_dim // 2 - 2 * cfg.rope_space
        cos, sin = rope_angles((start_frame - self._sink_query_positions(start_frame))[:, None], 2 * time_pairs, cfg.rope_theta)
        pad = (0, 2 * cfg.rope_space)
        return F.pad(cos, pad, value=1.0)[:, None], F.pad(sin, pad)[:, None]  # [B, 1, 1, Dh/2]

    def _tokens(self, per_frame: torch.Tensor) -> torch.Tensor:
        """[B, F] -> [B, G * S] = [B, F * N], repeating each group's (first frame's) value over its tokens."""
        return self._group(per_frame).repeat_interleave(self.config.spatial_tokens, dim=1)

    def _rope(self, positions: torch.Tensor):
        cfg = self.config
        time_pairs = cfg.head_dim // 2 - 2 * cfg.rope_space
        cos, sin = rope_angles(self._tokens(positions), 2 * time_pairs, cfg.rope_theta)  # [B, T, time_pairs]
        if cfg.rope_space:
            B, T = cos.shape[:2]
            cs, ss = self._space_angles(positions.device)  # [S, 2 rope_space], the same for every group
            cos = torch.cat([cos, cs.repeat(T // cfg.spatial_tokens, 1).expand(B, T, -1)], dim=-1)
            sin = torch.cat([sin, ss.repeat(T // cfg.spatial_tokens, 1).expand(B, T, -1)], dim=-1)
        return cos[:, None], sin[:, None]  # [B, 1, T, Dh/2]

    def _space_angles(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [S, 2 rope_space] of each patch's row, then column, in a group."""
        cfg = self.config
        g = cfg.latent_size // cfg.patch
        idx = torch.arange(cfg.spatial_tokens, device=device)
        row, col = rope_angles(idx // g, 2 * cfg.rope_space, cfg.rope_space_theta), rope_angles(idx % g, 2 * cfg.rope_space, cfg.rope_space_theta)
        return torch.cat([row[0], col[0]], dim=-1), torch.cat([row[1], col[1]], dim=-1)

    def _check_inputs(self, x: torch.Tensor, sigma: torch.Tensor, actions: torch.Tensor) -> None:
        cfg = self.config
        want = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        if x.ndim != 5 or tuple(x.shape[2:]) != want:
            raise ValueError(f"latents must be [B, F, {want[0]}, {want[1]}, {want[2]}], got {tuple(x.shape)}")
        if sigma.shape != x.shape[:2] or actions.shape != x.shape[:2]:
            raise ValueError(f"sigma {tuple(sigma.shape)} and actions {tuple(actions.shape)} must be [B, F] = {tuple(x.shape[:2])}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) > cfg.n_actions):
            bad = actions[(actions < 0) | (actions > cfg.n_actions)][0].item()
            raise ValueError(f"unknown action index {bad}; actions are 0..{cfg.n_actions - 1} (and {cfg.n_actions} = null)")
        t = cfg.tubelet
        if t > 1:
            if x.shape[1] % t:
                raise ValueError(f"{x.shape[1]} frames do not split into tubelets of {t} frames")
            groups = sigma.view(sigma.shape[0], -1, t)
            if not bool((groups == groups[..., :1]).all()):
                raise ValueError(f"the {t} frames of a tubelet must share one noise level; sigma varies inside a tubelet")

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        text: torch.Tensor | TextCondition,
        text_mask: torch.Tensor | None,
        actions: torch.Tensor,
        start_frame: torch.Tensor | None = None,
        cache: KVCache | AttendedCache | None = None,
        clean: tuple[torch.Tensor, torch.Tensor] | None = None,
        prev: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Velocity for x, and (with a cache) this chunk's keys and values [L, B, H, K*N, Dh].

        `text` is the text tokens [B, L, Dt] with `text_mask` [B, L], or their `condition_text` (then
        `text_mask` is not read).

        Without a cache: the whole sequence from frame 0 (or `start_frame` in full mode).
        With a cache (block_causal only): one chunk starting at `start_frame` [B], attending to
        the cache; the caller writes the returned keys and values with `cache.update`.
        With `clean` = (latents, sigma) of the same frames (block_causal, no cache): teacher
        forcing. Each chunk of the noisy x sees the clean frames before it exactly as a cached
        rollout's chunk sees its history (dfworld.model.teacher_forcing), in one pass over both
        copies; the velocity of the noisy copy is returned.
        `prev` [B, F, C, h, w] (with `prev_frame`): each frame's reference frame, the last clean
        frame before its chunk (zeros where there is none); teacher forcing builds it from `clean`.
        """
        cfg = self.config
        if not isinstance(text, TextCondition):
            text = self.condition_text(text, text_mask)
        if clean is not None:
            return teacher_forcing(self, x, sigma, text, actions, clean), None
        B, Fr = x.shape[:2]
        N, t = cfg.tokens_per_frame, cfg.tubelet
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self._check_inputs(x, sigma, actions)
        if start_frame is None:
            start_frame = torch.zeros(B, dtype=torch.long, device=x.device)
        frames = self._frame_positions(start_frame, Fr)  # [B, F]
        c, a = self._condition(sigma, text, actions)
        h = self.embed(x, prev) + a[:, :, None]  # [B, G, S, D]

        # 1. attention geometry: rotations, which keys are sink keys, and the mask
        rope_q = rope_k = self._rope(frames)
        rope_qs, key_sink, mask, caches = None, None, None, [None] * cfg.depth
        if cfg.attention == "block_causal":
            sink_on = cfg.sink_frames > 0
            if sink_on:
                rope_qs = self._rope(self._sink_query_positions(frames))
            if cache is None:
                if bool((start_frame != 0).any()):
                    raise ValueError("a block-causal forward without a cache starts at frame 0")
                fm = block_causal_frame_mask(Fr, cfg.chunk_frames, cfg.sink_frames, cfg.window_frames)[::t, ::t].to(x.device)
                S = cfg.spatial_tokens
                mask = fm.repeat_interleave(S, 0).repeat_interleave(S, 1)  # [T, T], T = G S = F N
                if sink_on:
                    key_sink = self._tokens(frames < cfg.sink_frames)[:, None, :, None]
            else:
                if Fr != cfg.chunk_frames:
                    raise ValueError(f"a cached step takes one chunk of {cfg.chunk_frames} frames, got {Fr}")
                if torch.onnx.is_in_onnx_export() or isinstance(cache, AttendedCache):  # the fused form (fused_attention)
                    cache = cache if isinstance(cache, AttendedCache) else attended_cache(cache, self._sink_key_shift(start_frame))
                    mask, rope_qs = cache, None
                else:
                    cur = torch.ones(B, Fr * N, dtype=torch.bool, device=x.device)
                    mask = torch.cat([cache.valid, cur], dim=1)[:, None, None, :]  # [B, 1, 1, S + T]
                    if sink_on:  # current-chunk keys use the absolute rotation
                        key_sink = torch.cat([cache.is_sink.expand(B, -1), torch.zeros_like(cur)], dim=1)[:, None, :, None]
                caches = [(cache.k[i], cache.v[i]) for i in range(cfg.depth)]
        elif cache is not None:
            raise ValueError("full attention does not use a KV cache")

        # 2. blocks
        new_k, new_v = [], []
        for block, text_kv, cache_kv in zip(self.blocks, text.kv, caches):
            h, (k, v) = block(h, c, text_kv, text.mask, (rope_q, rope_qs, rope_k, key_sink, mask), cache_kv)
            new_k.append(k)
            new_v.append(v)

        # 3. output
        kv = (torch.stack(new_k), torch.stack(new_v)) if cache is not None else None
        return self.skip(self._output(h, c), x, prev), kv

    def skip(self, v: torch.Tensor, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """The velocity v of x plus, with `prev_skip`, the gated skip from the reference frame (SKIP_SCALE lets Adam move the gate)."""
        if not self.config.prev_skip:
            return v
        if self.config.prev_chunk:  # the reference is the previous chunk: the skip copies its last frame
            K = self.config.chunk_frames
            prev = prev.unflatten(1, (-1, K))[:, :, -1:].expand(-1, -1, K, *prev.shape[2:]).flatten(1, 2)
        return v + SKIP_SCALE * self.skip_gate * (x - prev)

    def embed(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """Tokens [B, G, S, D] of latents x [B, F, ...]: patches, positions, and (prev_frame) the reference frame's patches."""
        h = self.patch_in(self._patchify(x)) + self.pos
        if self.config.prev_frame:
            if prev is None or prev.shape != x.shape:
                raise ValueError(f"this model reads a reference frame per frame: prev must be {tuple(x.shape)}, got "
                                 f"{None if prev is None else tuple(prev.shape)}")
            h = h + self.prev_in(self._patchify(prev))
        return h

    def _output(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada_out(F.silu(c))[:, :, None].chunk(2, dim=-1)
        return self._unpatchify(self.patch_out(modulate(self.norm_out(h), shift, scale)))
