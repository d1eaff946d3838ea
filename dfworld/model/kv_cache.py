"""A static-shape KV cache for block-causal generation: sink frames plus a rolling window.

Slots, per layer: `[sink_frames | window_frames] x tokens_per_frame`. Frame f goes to slot f when
f < sink_frames, otherwise to `sink_frames + (f - sink_frames) % window_frames`: the window is a
ring buffer. Keys are stored already rotated at their absolute time position, so the order of
slots does not matter to attention. Shapes never change, so the cost of a step is the same at
frame 10 and at frame 10,000, and the cache can be an explicit fixed-size input and output of an
exported graph. Rows of a batch may be at different frames (partial resets).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys, values and slot validity for every layer; owned by the sampler, read by the model."""

    def __init__(self, config, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.config = config
        c = config
        self.slots = (c.sink_frames + c.window_frames) * c.tokens_per_frame
        shape = (c.depth, batch, c.heads, self.slots, c.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # [L, B, H, S, Dh]
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.valid = torch.zeros(batch, self.slots, device=device, dtype=torch.bool)  # [B, S]
        # static: which slots are sink slots (their keys are matched by the sink-positioned query)
        self.is_sink = torch.arange(self.slots, device=device) < c.sink_frames * c.tokens_per_frame

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    def reset(self, rows: torch.Tensor | None = None) -> None:
        """Forget everything (rows=None) or only the rows where the bool mask `rows` [B] is true."""
        if rows is None:
            self.k.zero_()
            self.v.zero_()
            self.valid.zero_()
            return
        self.k[:, rows] = 0
        self.v[:, rows] = 0
        self.valid[rows] = False

    def slot_index(self, start_frame: torch.Tensor) -> torch.Tensor:
        """Token slots [B, chunk_frames * tokens_per_frame] of the chunk starting at start_frame [B]."""
        c = self.config
        frames = start_frame[:, None] + torch.arange(c.chunk_frames, device=start_frame.device)  # [B, C]
        if c.window_frames > 0:
            ring = c.sink_frames + (frames - c.sink_frames).remainder(c.window_frames)
        else:
            ring = frames.clamp(max=max(c.sink_frames - 1, 0))
        slot = torch.where(frames < c.sink_frames, frames, ring)
        tok = slot[:, :, None] * c.tokens_per_frame + torch.arange(c.tokens_per_frame, device=start_frame.device)
        return tok.flatten(1)

    def update(self, start_frame: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Write a chunk's keys and values [L, B, H, C*N, Dh] at start_frame [B] (only `rows`, if given)."""
        c = self.config
        if c.window_frames == 0 and bool((start_frame >= c.sink_frames).any()):
            raise ValueError("this cache has no window: frames past the sink cannot be stored")
        idx = self.slot_index(start_frame)  # [B, T]
        if rows is not None:
            # rows not written keep their slots: point them at their own current contents
            keep = ~rows
            k = torch.where(keep[None, :, None, None, None], self.k.gather(3, _expand(idx, self.k)), k)
            v = torch.where(keep[None, :, None, None, None], self.v.gather(3, _expand(idx, self.v)), v)
        self.k.scatter_(3, _expand(idx, self.k), k.to(self.k.dtype))
        self.v.scatter_(3, _expand(idx, self.v), v.to(self.v.dtype))
        written = torch.ones_like(idx, dtype=torch.bool) if rows is None else rows[:, None].expand_as(idx)
        self.valid.scatter_(1, idx, self.valid.gather(1, idx) | written)

    def state(self) -> dict[str, torch.Tensor]:
        return {"k": self.k, "v": self.v, "valid": self.valid}


def _expand(idx: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """[B, T] slot indices -> [L, B, H, T, Dh] for gather/scatter on a [L, B, H, S, Dh] buffer."""
    L, _, H, _, Dh = buf.shape
    return idx[None, :, None, :, None].expand(L, -1, H, -1, Dh)
