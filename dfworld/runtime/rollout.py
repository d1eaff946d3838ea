"""The ONNX Runtime rollout: `dfworld.rollout.Rollout` with the generator's compute in exported graphs.

`OrtRollout` is a `Rollout` (same constructor order, reset, generate, set_prompt, prompts, frame,
B, recent, state, ...): per-row state, the noise streams (one torch.Generator per row, drawn
level by level exactly as the torch sampler draws them) and the re-cache order stay in torch;
only the model calls are replaced:

- a step runs `chunk.onnx` once (every denoising level plus the write pass), whose keys and values of the
  clean chunk are written into the cache in place (`KVCache.update`);
- an episode's context or a re-cache (m chunks into the rows' emptied cache, one pass) runs `held<m>.onnx`,
  whose keys and values are written in place the same way (`KVCache.update_chunks`).

The cache is one set of fixed-size buffers on the device (on CUDA it stays on the GPU); the graphs
read it through I/O binding and write only the slots of the chunks they made. Where a graph runs one
row (the chunk graph of a one-row rollout, a held graph on one row's reset or event), it runs in a
session with the batch axis fixed at load, so its shape arithmetic folds into constants
(`dfworld.runtime.session.OnnxGraph`; docs/experiments/rollout-speed.md, session 27). Training paths
(`generate(exit_step=...)`) stay with the torch rollout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dfworld.configuration import build
from dfworld.model.codec import CodecConfig
from dfworld.model.conditioning import TextConditioner
from dfworld.model.kv_cache import KVCache
from dfworld.model.loading import GeneratorBundle
from dfworld.model.transformer import TransformerConfig
from dfworld.rollout import Rollout
from dfworld.runtime.export import CHUNK_KV, check_export, graph_names, held_chunks, layer_inputs, read_export
from dfworld.runtime.session import OnnxGraph, open_graphs
from dfworld.schedule import SamplerConfig


class OnnxGenerator:
    """The exported generator: its config, its chunk graph and its held<m> graphs (`held[m]`).

    It stands where `Rollout` takes the torch model (which it reads only through `.config`);
    `OrtRollout` calls its graphs.
    """

    def __init__(self, config: TransformerConfig, sigmas: list[float], chunk: OnnxGraph, held: dict[int, OnnxGraph],
                 batch: int | None = None):
        self.config, self.sigmas, self.chunk, self.held, self.batch = config, sigmas, chunk, held, batch
        self.device, self.provider = chunk.device, chunk.provider


class OnnxDecoder:
    """The exported codec decoder, with `LatentCodec.decode`'s call: latents [..., C, h, w] -> uint8 [..., H, W, 3]."""

    def __init__(self, config: CodecConfig, graph: OnnxGraph):
        self.config, self.graph, self.device = config, graph, graph.device

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        lead, flat = latents.shape[:-3], latents.reshape((-1,) + latents.shape[-3:]).to(self.device, torch.float32)
        size = self.config.image_size
        frames = torch.empty((flat.shape[0], size, size, 3), dtype=torch.uint8, device=self.device)
        self.graph({"latents": flat}, {"frames": frames})
        return frames.reshape(lead + frames.shape[1:])


def load_onnx(
    onnx_dir: str | Path, bundle: GeneratorBundle | None = None, device: torch.device | str = "cpu", threads: int | None = None,
    tuning: dict | None = None, batch: int | None = None,
) -> tuple[OnnxGenerator, OnnxDecoder]:
    """The graphs of an export directory on `device` (CUDA provider on a GPU, else CPU).

    With `bundle` (the loaded checkpoint), the export must come from it (ExportError otherwise).
    A GPU that cannot be used gives a warning and the CPU provider. `tuning`: ORT session settings
    (`dfworld.runtime.session.session_options`). `batch`: the rollouts' rows (None: any). The held
    graphs get a session with the batch axis fixed at one row (a reset or an event of one row) beside
    their any-batch one (`OnnxGraph`; each session holds its own copy of the graph's weights, a few MB
    here); the chunk graph gets one only for a one-row rollout, and then serves that batch alone. The
    decoder keeps one session (fixing its axis gained nothing).
    """
    onnx_dir = Path(onnx_dir)
    record = read_export(onnx_dir)
    if bundle is not None:
        check_export(record, bundle, onnx_dir)
    model = build(TransformerConfig, record["model"], f"{onnx_dir}/export.json: model")
    codec = build(CodecConfig, record["codec"], f"{onnx_dir}/export.json: codec")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive int or None, got {batch!r}")
    names = graph_names(model)
    # a session with the batch fixed at one row (OnnxGraph) where a graph runs one row: the chunk graph of a one-row
    # rollout, a held graph on a reset's or an event's one row (fixed at a large batch, the chunk graph ran slower)
    sizes = {name: ((1,), True) for name in names if name.startswith("held")}
    sizes["chunk"] = ((1,), False) if batch == 1 else ((), True)
    graphs = open_graphs({name: onnx_dir / f"{name}.onnx" for name in names}, torch.device(device), threads, tuning, sizes)
    held = {m: graphs[f"held{m}"] for m in range(1, held_chunks(model) + 1)}
    return OnnxGenerator(model, record["sigmas"], graphs["chunk"], held, batch), OnnxDecoder(codec, graphs["decoder"])


class OrtRollout(Rollout):
    """`Rollout` whose chunk step and cache writes run in ONNX Runtime (module docstring)."""

    def __init__(self, generator: OnnxGenerator, conditioner: TextConditioner, batch: int, sampler: SamplerConfig | None = None):
        if generator.batch is not None and generator.batch != batch:
            raise ValueError(f"these graphs were opened for rollouts of {generator.batch} rows, not {batch}: "
                             f"load_onnx(..., batch={batch}) (or batch=None, for any)")
        super().__init__(generator, conditioner, batch, sampler or SamplerConfig(), generator.device)
        if [round(s, 6) for s in self.sigmas] != [round(s, 6) for s in generator.sigmas]:
            raise ValueError(f"sampler levels {self.sigmas} differ from the exported graph's {generator.sigmas}; export again")

    def _text(self) -> None:
        return None  # the graphs read the rows' text and share its projections across their passes

    def _rows_text(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text[idx], self.text_mask[idx]  # the graphs' text inputs for a sub-batch

    def _kv_buffers(self, rows: int, tokens: int) -> list[torch.Tensor]:
        """Empty keys and values [L, rows, H, tokens, Dh] for a graph's CHUNK_KV outputs."""
        c = self.cfg
        return [torch.empty((c.depth, rows, c.heads, tokens, c.head_dim), device=self.device) for _ in CHUNK_KV]

    def _write_held(self, cache: KVCache, chunks: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor, held: torch.Tensor,
                    prev: torch.Tensor | None, text: tuple[torch.Tensor, torch.Tensor]) -> KVCache:
        inputs = {"latents": chunks.float(), "actions": actions.long(), "frames": frames.long(), "held": held,
                  "text": text[0], "text_mask": text[1], **self._prev_input(prev)}
        kv = self._kv_buffers(cache.batch, frames.shape[1] * self.cfg.tokens_per_frame)
        graph = self.generator.held[held.shape[1]]
        graph({k: t for k, t in inputs.items() if k in graph.inputs}, dict(zip(CHUNK_KV, kv)))  # some read no `held` (reads_held)
        cache.update_chunks(frames, *kv, held)
        return cache

    def _prev_input(self, prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The reference frames for the graphs of a `prev_frame` model (nothing for the others)."""
        return {} if prev is None else {"prev": prev.float().contiguous()}

    def _generate(self, actions: torch.Tensor, rows: torch.Tensor | None, exit_step: int | None) -> torch.Tensor:
        """The next chunk (clean latents [B, K, C, h, w]); inference only: `exit_step` is for the torch rollout."""
        if exit_step is not None:
            raise ValueError("OrtRollout runs inference only; generate(exit_step=...) is for training with the torch Rollout")
        actions, rows = self._step_inputs(actions, rows)
        self.cache.check_writable(self.frame)
        # the same per-row noise as Rollout: each row's stream draws level 0, 1, ... in turn
        self._start_chunk_noise(rows)
        # [B, levels, K, C, h, w]; the euler solver draws level 0 only, as the torch sampler does
        drawn = 1 if self.sampler.solver == "euler" else len(self.sigmas)
        noise = torch.stack([self._noise(self._chunk_shape, rows) if i < drawn else torch.zeros((self.B,) + self._chunk_shape, device=self.device)
                             for i in range(len(self.sigmas))], 1)
        x0 = torch.empty((self.B,) + self._chunk_shape, device=self.device)
        c = self.cfg
        k, v = self._kv_buffers(self.B, c.chunk_frames * c.tokens_per_frame)
        prev = self._reference()
        inputs = {"noise": noise, "actions": actions.long(), "frame": self.frame, "text": self.text, "text_mask": self.text_mask,
                  **dict(zip(layer_inputs(c), (*self.cache.k, *self.cache.v))), "cache_valid": self.cache.valid, **self._prev_input(prev)}
        self.generator.chunk(inputs, {"latents": x0, **dict(zip(CHUNK_KV, (k, v)))})
        self.cache.update(self.frame, k, v, rows)
        self._remember(x0, actions, rows, prev)
        return x0
