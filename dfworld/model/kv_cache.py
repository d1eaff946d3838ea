"""A static-shape KV cache for block-causal generation: sink frames plus a rolling window.

Slots, per layer: `[sink_frames | window_frames] x tokens_per_frame`. Frame f goes to slot f when
f < sink_frames, otherwise to `sink_frames + (f - sink_frames) % window_frames`: the window is a
ring buffer. Keys are stored already rotated at their absolute time position, so the order of
slots does not matter to attention. Shapes never change, so the cost of a step is the same at
frame 10 and at frame 10,000, and the cache can be an explicit fixed-size input and output of an
exported graph. Rows of a batch may be at different frames (partial resets).

Two writes: `KVCache.update` in place, touching only the chunk's slots (the torch rollout, and the
ONNX Runtime rollout after its chunk and held graphs, which return the chunks' keys and values), and
the out-of-place `cache_write` where a written cache must be a value (`dfworld.training.unroll`,
whose gradient runs through it). Tests hold the two to the same contents.
"""

from __future__ import annotations

import torch


def frame_slots(frames: torch.Tensor, sink_frames: int, window_frames: int) -> torch.Tensor:
    """Cache frame slot of absolute frame indices [...]: the sink slots, then the ring window."""
    if window_frames > 0:
        ring = sink_frames + (frames - sink_frames).remainder(window_frames)
    else:
        ring = frames.clamp(max=max(sink_frames - 1, 0))
    return torch.where(frames < sink_frames, frames, ring)


def cache_write(
    k: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    slots: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cache (k, v [L, B, H, S, Dh], valid [B, S]) with k_new, v_new [L, B, H, T, Dh] written at token slots [B, T].

    Out of place. With a bool mask `rows` [B], only those rows are written; the others keep
    their contents and validity.
    """
    idx = _expand(slots, k)
    if rows is not None:
        # rows not written keep their slots: point them at their own current contents
        keep = ~rows[None, :, None, None, None]
        k_new = torch.where(keep, k.gather(3, idx), k_new)
        v_new = torch.where(keep, v.gather(3, idx), v_new)
    k = k.scatter(3, idx, k_new.to(k.dtype))
    v = v.scatter(3, idx, v_new.to(v.dtype))
    written = torch.ones_like(slots, dtype=torch.bool) if rows is None else rows[:, None].expand_as(slots)
    valid = valid.scatter(1, slots, valid.gather(1, slots) | written)
    return k, v, valid


class KVCache:
    """Keys, values and slot validity for every layer; owned by the sampler, read by the model."""

    def __init__(self, config, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        c = config
        slots = (c.sink_frames + c.window_frames) * c.tokens_per_frame
        shape = (c.depth, batch, c.heads, slots, c.head_dim)
        self._attach(
            config,
            torch.zeros(shape, device=device, dtype=dtype),  # k [L, B, H, S, Dh]
            torch.zeros(shape, device=device, dtype=dtype),  # v [L, B, H, S, Dh]
            torch.zeros(batch, slots, device=device, dtype=torch.bool),  # valid [B, S]
        )

    @classmethod
    def over(cls, config, k, v, valid: torch.Tensor) -> KVCache:
        """A cache around existing tensors (an exported graph's inputs): k, v [L, B, H, S, Dh], or lists of each layer's
        [B, H, S, Dh] (read only: `written` and `update` need the stacked form); nothing is allocated or copied."""
        cache = cls.__new__(cls)
        cache._attach(config, k, v, valid)
        return cache

    def _attach(self, config, k, v, valid: torch.Tensor) -> None:
        c = config
        self.config = config
        self.slots = (c.sink_frames + c.window_frames) * c.tokens_per_frame
        held = k[0].shape[2] if isinstance(k, list) else k.shape[3]  # a list: one [B, H, S, Dh] per layer (a graph's inputs)
        if held != self.slots or valid.shape[1] != self.slots:
            raise ValueError(f"cache tensors hold {held} slots; this config needs {self.slots}")
        self.k, self.v, self.valid = k, v, valid
        # static: which slots are sink slots (their keys are matched by the sink-positioned query)
        self.is_sink = torch.arange(self.slots, device=valid.device) < c.sink_frames * c.tokens_per_frame

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
        frames = start_frame[:, None] + torch.arange(c.chunk_frames, device=start_frame.device)  # [B, K]
        slot = frame_slots(frames, c.sink_frames, c.window_frames)
        tok = slot[:, :, None] * c.tokens_per_frame + torch.arange(c.tokens_per_frame, device=start_frame.device)
        return tok.flatten(1)

    def select(self, idx: torch.Tensor) -> KVCache:
        """A copy of the cache of rows `idx` [n]."""
        return KVCache.over(self.config, self.k[:, idx], self.v[:, idx], self.valid[idx])

    def assign(self, idx: torch.Tensor, other: KVCache) -> None:
        """Rows `idx` [n] take the contents of `other` (a cache of n rows), in place."""
        self.k[:, idx], self.v[:, idx], self.valid[idx] = other.k, other.v, other.valid

    def check_writable(self, start_frame: torch.Tensor) -> None:
        c = self.config
        if c.window_frames == 0 and bool((start_frame >= c.sink_frames).any()):
            raise ValueError("this cache has no window: frames past the sink cannot be stored")

    def written(self, start_frame: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor | None = None):
        """(k, v, valid) after writing a chunk's keys and values [L, B, H, K*N, Dh] at start_frame [B]; out of place."""
        return cache_write(self.k, self.v, self.valid, self.slot_index(start_frame), k, v, rows)

    def update(self, start_frame: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Write a chunk's keys and values [L, B, H, K*N, Dh] at start_frame [B] (only `rows`, if given), in place.

        Only the chunk's slots are touched (an indexed assignment), not a copy of the whole cache: the same
        contents as `written`, which the exported graphs use where a cache must be a graph output.
        """
        self.check_writable(start_frame)
        slots = self.slot_index(start_frame)  # [B, T]
        if rows is not None and bool(rows.all()):
            rows = None  # every row writes (the rollouts pass a mask even then)
        run = slots[:1, :1] + torch.arange(slots.shape[1], device=slots.device)  # [1, T]: row 0's first slot onwards
        if rows is None and slots.shape[0] and torch.equal(slots, run.expand_as(slots)):
            a, T = int(slots[0, 0]), slots.shape[1]
            # every row writes the same run of slots (rows in step, the usual case): one strided copy, no index
            self.k[..., a : a + T, :] = k.to(self.k.dtype)
            self.v[..., a : a + T, :] = v.to(self.v.dtype)
            self.valid[:, a : a + T] = True
            return
        row = torch.arange(slots.shape[0], device=slots.device)[:, None].expand_as(slots)
        if rows is not None:
            row, slots, k, v = row[rows], slots[rows], k[:, rows], v[:, rows]
        # advanced indices on dims 1 and 3 put their [n, T] first: the values as [n, T, L, H, Dh]
        self.k[:, row, :, slots] = k.permute(1, 3, 0, 2, 4).to(self.k.dtype)
        self.v[:, row, :, slots] = v.permute(1, 3, 0, 2, 4).to(self.v.dtype)
        self.valid[row, slots] = True

    def update_chunks(self, frames: torch.Tensor, k: torch.Tensor, v: torch.Tensor, held: torch.Tensor) -> None:
        """Write n chunks' keys and values [L, B, H, n*K*N, Dh] at frames [B, n*K] in place, chunk j in the rows of the
        bool mask held[:, j] [B, n] (a held pass's output: `dfworld.model.teacher_forcing.held_chunks_kv`)."""
        K, T = self.config.chunk_frames, self.config.chunk_frames * self.config.tokens_per_frame
        for j in range(held.shape[1]):
            self.update(frames[:, j * K], k[..., j * T : (j + 1) * T, :], v[..., j * T : (j + 1) * T, :], held[:, j])

    def state(self) -> dict[str, torch.Tensor]:
        return {"k": self.k, "v": self.v, "valid": self.valid}


def _expand(idx: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """[B, T] slot indices -> [L, B, H, T, Dh] for gather/scatter on a [L, B, H, S, Dh] buffer."""
    L, _, H, _, Dh = buf.shape
    return idx[None, :, None, :, None].expand(L, -1, H, -1, Dh)
