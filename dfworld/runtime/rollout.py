"""The ONNX Runtime rollout: `dfworld.rollout.Rollout` with the generator's compute in exported graphs.

`OrtRollout` is a `Rollout` (same constructor order, reset, generate, set_prompt, prompts, frame,
B, recent, state, ...): per-row state, the noise streams (one torch.Generator per row, drawn
level by level exactly as the torch sampler draws them) and the re-cache order stay in torch;
only the model calls are replaced:

- a step runs `chunk.onnx` once (every denoising level plus the write pass), whose keys and values of the
  clean chunk are written into the cache in place (`KVCache.update`);
- an episode's context or a re-cache (m chunks into the rows' emptied cache, one pass) runs `held<m>.onnx`.

The cache is two sets of fixed-size buffers on the device; a held graph reads one and writes the
other, and they swap (no copies, and on CUDA the cache stays on the GPU). Training paths
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
from dfworld.runtime.export import CACHE_OUTPUTS, CHUNK_KV, check_export, graph_names, held_chunks, layer_inputs, read_export
from dfworld.runtime.session import OnnxGraph, open_graphs
from dfworld.schedule import SamplerConfig


class OnnxGenerator:
    """The exported generator: its config, its chunk graph and its held<m> graphs (`held[m]`).

    It stands where `Rollout` takes the torch model (which it reads only through `.config`);
    `OrtRollout` calls its graphs.
    """

    def __init__(self, config: TransformerConfig, sigmas: list[float], chunk: OnnxGraph, held: dict[int, OnnxGraph]):
        self.config, self.sigmas, self.chunk, self.held = config, sigmas, chunk, held
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
    tuning: dict | None = None,
) -> tuple[OnnxGenerator, OnnxDecoder]:
    """The graphs of an export directory on `device` (CUDA provider on a GPU, else CPU).

    With `bundle` (the loaded checkpoint), the export must come from it (ExportError otherwise).
    A GPU that cannot be used gives a warning and the CPU provider. `tuning`: ORT session settings
    (`dfworld.runtime.session.session_options`).
    """
    onnx_dir = Path(onnx_dir)
    record = read_export(onnx_dir)
    if bundle is not None:
        check_export(record, bundle, onnx_dir)
    model = build(TransformerConfig, record["model"], f"{onnx_dir}/export.json: model")
    codec = build(CodecConfig, record["codec"], f"{onnx_dir}/export.json: codec")
    graphs = open_graphs({name: onnx_dir / f"{name}.onnx" for name in graph_names(model)}, torch.device(device), threads, tuning)
    held = {m: graphs[f"held{m}"] for m in range(1, held_chunks(model) + 1)}
    return OnnxGenerator(model, record["sigmas"], graphs["chunk"], held), OnnxDecoder(codec, graphs["decoder"])


class OrtRollout(Rollout):
    """`Rollout` whose chunk step and cache writes run in ONNX Runtime (module docstring)."""

    def __init__(self, generator: OnnxGenerator, conditioner: TextConditioner, batch: int, sampler: SamplerConfig | None = None):
        super().__init__(generator, conditioner, batch, sampler or SamplerConfig(), generator.device)
        if [round(s, 6) for s in self.sigmas] != [round(s, 6) for s in generator.sigmas]:
            raise ValueError(f"sampler levels {self.sigmas} differ from the exported graph's {generator.sigmas}; export again")
        self.spare = KVCache(self.cfg, batch, self.device)  # the held graphs write the next cache here, then the two swap

    @staticmethod
    def _run_on(graph: OnnxGraph, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], cache: KVCache,
                spare: KVCache, text: tuple[torch.Tensor, torch.Tensor]) -> tuple[KVCache, KVCache]:
        """Run a graph on `cache` (any batch, with inputs and `text` (tokens, mask) of its rows) into `spare`: (written, free)."""
        inputs = {**inputs, "text": text[0], "text_mask": text[1], "cache_k": cache.k, "cache_v": cache.v, "cache_valid": cache.valid}
        graph(inputs, {**outputs, **dict(zip(CACHE_OUTPUTS, (spare.k, spare.v, spare.valid)))})
        return spare, cache

    def _text(self) -> None:
        return None  # the graphs read the rows' text and share its projections across their passes

    def _rows_text(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text[idx], self.text_mask[idx]  # the graphs' text inputs for a sub-batch

    def _write_held(self, cache: KVCache, chunks: torch.Tensor, actions: torch.Tensor, frames: torch.Tensor, held: torch.Tensor,
                    prev: torch.Tensor | None, text: tuple[torch.Tensor, torch.Tensor]) -> KVCache:
        inputs = {"latents": chunks.float(), "actions": actions.long(), "frames": frames.long(), "held": held, **self._prev_input(prev)}
        own = cache is self.cache  # the batch's cache writes into the spare buffers; a sub-batch's into new ones
        spare = self.spare if own else KVCache(self.cfg, cache.batch, self.device)
        written, free = self._run_on(self.generator.held[held.shape[1]], inputs, {}, cache, spare, text)
        if own:
            self.spare = free
        return written

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
        k, v = (torch.empty((c.depth, self.B, c.heads, c.chunk_frames * c.tokens_per_frame, c.head_dim), device=self.device) for _ in CHUNK_KV)
        prev = self._reference()
        inputs = {"noise": noise, "actions": actions.long(), "frame": self.frame, "text": self.text, "text_mask": self.text_mask,
                  **dict(zip(layer_inputs(c), (*self.cache.k, *self.cache.v))), "cache_valid": self.cache.valid, **self._prev_input(prev)}
        self.generator.chunk(inputs, {"latents": x0, **dict(zip(CHUNK_KV, (k, v)))})
        self.cache.update(self.frame, k, v, rows)
        self._remember(x0, actions, rows, prev)
        return x0
