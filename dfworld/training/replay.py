"""The critic's replay buffer of generator windows (TorchRL), and its state for exact resume."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict


def make_replay_buffer(capacity: int, batch_size: int):
    """A TorchRL replay buffer of `capacity` generator windows, sampled `batch_size` at a time."""
    from torchrl.data import LazyTensorStorage, ReplayBuffer

    return ReplayBuffer(storage=LazyTensorStorage(capacity), batch_size=batch_size)


def buffer_state(rb) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The replay buffer's contents and write position (for exact resume)."""
    sd = rb.state_dict()
    store = sd["_storage"]
    tensors = {}
    if store.get("initialized") and store.get("_storage") is not None:
        data = store["_storage"]
        data = data.to_dict() if hasattr(data, "to_dict") else data
        tensors = {f"rb.{k}": v for k, v in data.items()}
    meta = {"len": int(store.get("_len", 0)), "initialized": bool(store.get("initialized", False)),
            "cursor": int(sd["_writer"]["_cursor"]), "write_count": int(sd["_writer"].get("_write_count", 0))}
    return tensors, meta


def load_buffer_state(rb, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Refill an empty replay buffer with what `buffer_state` saved, in the same slots."""
    if not meta.get("initialized") or meta["len"] == 0:
        return
    n = meta["len"]
    rb.extend(TensorDict({k[3:]: v[:n] for k, v in tensors.items() if k.startswith("rb.")}, batch_size=[n]))
    rb._writer._cursor = meta["cursor"]  # the next slot to overwrite, as before the stop
    rb._writer._write_count = meta["write_count"]
