"""The backend choice: a generator checkpoint built into the sampler a world-model env runs on.

The envs receive a built `WorldModelSampler` (as DIAMOND's world-model env receives its
sampler): the rollout, the decoder of its latents, the encoder of reset images. Which backend
runs the generator is decided here, once:

- `torch`: `dfworld.rollout.Rollout` on the eager generator, the codec decoding;
- `onnx`: `dfworld.runtime.OrtRollout` and the decoder graph in ONNX Runtime (the `cpu` or `gpu`
  extra), exported on first use into the export cache unless `onnx_dir` holds an export.

The decoder is the small one distilled from the codec's (dfworld.model.fast_decoder) where the
checkpoint carries one, as the shipped default does: the probes read its frames as the full
decoder's (docs/experiments/rollout-speed.md, session 25); `decoder="full"` asks for the codec's
VAE decoder, the only one of a checkpoint without a fast one.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from dfworld.model.codec import LatentCodec
from dfworld.model.loading import load_bundle
from dfworld.rollout import Rollout
from dfworld.shipped import resolve_checkpoint

BACKENDS = ("torch", "onnx")  # torch: the eager model; onnx: ONNX Runtime graphs


@dataclass
class WorldModelSampler:
    """What a world-model env runs on: B rows of one generator, the decoder, the reset-image encoder."""

    rollout: Rollout  # the rows' caches, noise streams and conditions (an OrtRollout on onnx)
    decoder: object  # .decode(latents [..., C, h, w]) -> uint8 frames [..., H, W, 3]: the codec or its graph
    codec: LatentCodec  # encodes reset images into context latents
    checkpoint: Path  # the generator checkpoint directory
    backend: str  # torch or onnx
    threads: int | None = None  # torch intra-op threads while the sampler runs (None: the process's setting)

    @contextmanager
    def threads_scope(self):
        """torch runs on `threads` threads inside, and on the process's setting again after."""
        before = torch.get_num_threads()
        if self.threads is None or self.threads == before:
            yield
            return
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @property
    def chunk_frames(self) -> int:
        return self.rollout.cfg.chunk_frames

    @property
    def image_size(self) -> int:
        return self.codec.config.image_size


def build_sampler(
    checkpoint: str | Path | None,
    num_rows: int,
    backend: str = "torch",
    device: str = "cpu",
    onnx_dir: str | Path | None = None,
    threads: int | None = None,
    decoder: str | None = None,
    sampler: Mapping | None = None,
) -> WorldModelSampler:
    """Load a generator checkpoint (a directory or a shipped name; None: the default) for `num_rows` rows on `backend`.

    `threads`: the CPU threads of the generator and decoder: ONNX Runtime's per session, and torch's
    intra-op threads while the sampler runs (`WorldModelSampler.threads_scope`; the process's
    setting is restored after each call); None uses torch's setting. `decoder`: "fast" (the checkpoint's
    fast decoder; refused where it carries none), "full" (the VAE's) or None (fast where carried, else full).
    `sampler`: SamplerConfig fields replacing the
    checkpoint's (e.g. {"timesteps": [1000, 500]}: two levels, where it was distilled for four); on
    onnx the export is keyed on the sampler used, so each schedule has an export of its own.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    path = resolve_checkpoint(checkpoint)
    bundle = load_bundle(path, sampler)
    dev = torch.device(device)
    codec = bundle.codec.to(dev)
    codec.use_decoder(decoder or None)
    if backend == "onnx":
        from dfworld.runtime.export import ensure_export
        from dfworld.runtime.rollout import OrtRollout, load_onnx
        from dfworld.runtime.session import import_onnxruntime

        import_onnxruntime()  # before exporting: without it the export would be of no use
        graphs, decoder = load_onnx(ensure_export(bundle, onnx_dir), bundle, dev, threads, batch=num_rows)
        rollout = OrtRollout(graphs, bundle.conditioner, num_rows, bundle.sampler)
    else:
        rollout = Rollout(bundle.generator.to(dev), bundle.conditioner, num_rows, bundle.sampler, dev)
        decoder = codec
    return WorldModelSampler(rollout, decoder, codec, path, backend, threads)
