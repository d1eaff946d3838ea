"""ONNX export of a generator checkpoint: the fused chunk step, the context writes, and the decoder.

Graphs with a dynamic batch axis (and text length); the KV cache is an explicit input and
output of fixed size ([L, B, H, S, Dh], S = (sink + window) x N tokens per frame), and no graph
holds an If, Loop or Scan node, so the shapes and the control flow are static (what CUDA graphs
need). K is the chunk's frames, C, h, w a latent frame's channels and size:

- `chunk.onnx`: every denoising level of one chunk (the sampler's sigmas are constants of the
  graph), then the write pass of the clean chunk: its keys and values, which the caller writes
  into its cache in place (`KVCache.update`: T slots per row, not a copy of the whole cache).
  in:  noise [B, levels, K, C, h, w] f32, text [B, Lt, Dt] f32, text_mask [B, Lt] bool,
       actions [B, K] i64, frame [B] i64 (the chunk's first frame), cache_k0 .. cache_k<L-1>,
       cache_v0 .. cache_v<L-1> [B, H, S, Dh] f32 (each layer's, bound to the cache's own
       buffers: no split of a stacked cache inside the graph), cache_valid [B, S] bool
  out: latents [B, K, C, h, w] f32, chunk_k, chunk_v [L, B, H, T, Dh] f32 (T = K N tokens)
- `held<m>.onnx`, m = 1 .. (sink + window) / K: the keys and values of m clean chunks in one pass,
  for a cache that holds nothing else for those rows (an episode's context, a re-cache; the caller
  empties the rows and writes chunk j where held[:, j], in place: `KVCache.update_chunks`). Each
  chunk's attention is one fused call over the keys it may see (`HeldChunkKeys`).
  in:  latents [B, m K, C, h, w] f32, text, text_mask, actions [B, m K] i64, frames [B, m K] i64
       (each frame's index), held [B, m] bool (chunk j is in the rows' cache where held[:, j])
  out: chunk_k, chunk_v [L, B, H, m T, Dh] f32
- `decoder.onnx`: the codec decoder. in: latents [N, C, h, w] f32; out: frames [N, H, W, 3] u8

`export.json` records the checkpoint's configs
(model, codec, sampler, text) and its digest (`dfworld.checkpoint.checkpoint_digest`); a directory exported from
another checkpoint is refused when loaded against this one. `ensure_export` exports on first
use into a cache directory keyed by the checkpoint (`~/.cache/dfworld/onnx/<key>/`, or
`$DFWORLD_ONNX_CACHE/<key>/`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from dfworld.checkpoint import checkpoint_digest
from dfworld.model.fused_attention import ORT_DOMAIN, AttendedCache, attended_cache, fused_attention_symbolic
from dfworld.model.kv_cache import KVCache
from dfworld.model.loading import GeneratorBundle
from dfworld.model.teacher_forcing import held_chunks_kv
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.rollout import denoise, forward_at
from dfworld.schedule import student_sigmas

EXPORT_FORMAT = "dfworld-onnx"
EXPORT_VERSION = 9  # bump when the graphs' inputs, outputs or semantics change
OPSET = 17
CONFIG_SECTIONS = ("model", "codec", "sampler", "text")  # the checkpoint configs an export depends on
CACHE_ENV = "DFWORLD_ONNX_CACHE"

CACHE_INPUTS = ["cache_k", "cache_v", "cache_valid"]
CHUNK_KV = ["chunk_k", "chunk_v"]
GRAPHS = {  # name: (inputs, outputs)
    "chunk": (["noise", "text", "text_mask", "actions", "frame", *CACHE_INPUTS], ["latents", *CHUNK_KV]),
    "held": (["latents", "text", "text_mask", "actions", "frames", "held"], CHUNK_KV),  # one per m: held<m>
    "decoder": (["latents"], ["frames"]),
}


def held_chunks(config: TransformerConfig) -> int:
    """The most chunks a row's cache holds (the sink's and the window's): the largest held<m> graph."""
    return (config.sink_frames + config.window_frames) // config.chunk_frames


def graph_names(config: TransformerConfig) -> list[str]:
    """The graphs of an export of this model."""
    return ["chunk", *(f"held{m}" for m in range(1, held_chunks(config) + 1)), "decoder"]


def reads_held(name: str, config: TransformerConfig) -> bool:
    """Whether held<m> reads its `held` input: which chunks a chunk sees reaches the keys and values only through the
    attention of the layers before the last, so held1 (one chunk, seeing itself) and a one-layer model's graphs do not."""
    return name != "held1" and config.depth > 1


def layer_inputs(config: TransformerConfig) -> list[str]:
    """The chunk graph's cache inputs: every layer's keys, then every layer's values."""
    return [f"cache_{kv}{i}" for kv in "kv" for i in range(config.depth)]


def graph_io(name: str, config: TransformerConfig) -> tuple[list[str], list[str]]:
    """A graph's input and output names for this model: a `prev_frame` model's chunk and held graphs also read `prev`."""
    inputs, outputs = GRAPHS["held" if name.startswith("held") else name]
    if name == "chunk":
        inputs = [n for n in inputs if n not in ("cache_k", "cache_v")]
        inputs = inputs[:-1] + layer_inputs(config) + inputs[-1:]
    if name.startswith("held") and not reads_held(name, config):
        inputs = [n for n in inputs if n != "held"]
    return (inputs + ["prev"] if config.prev_frame and name != "decoder" else inputs), outputs


_BATCH_AXES = {"prev": 0, "noise": 0, "latents": 0, "text": 0, "text_mask": 0, "actions": 0, "frame": 0, "held": 0, "frames": 0,
               "cache_k": 1, "cache_v": 1, "cache_valid": 0, "chunk_k": 1, "chunk_v": 1}

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """An ONNX export directory that cannot serve this checkpoint: incomplete, another format, or another model."""


# -- the graphs, as torch modules -------------------------------------------------------------
class WriteGraph(nn.Module):
    """The write pass of a clean chunk at `context_noise`: its keys and values [L, B, H, T, Dh], for the cache."""

    def __init__(self, model: VideoTransformer, context_noise: float):
        super().__init__()
        self.model, self.context_noise = model, context_noise

    def forward(self, latents, text, actions, frame, cache: AttendedCache, prev=None):
        return forward_at(self.model, latents, self.context_noise, text, None, actions, frame, cache, prev)[1]


class HeldGraph(nn.Module):
    """The keys and values of m clean chunks for the rows' (otherwise empty) cache, one pass at `context_noise`
    (`Rollout._write_held`)."""

    def __init__(self, model: VideoTransformer, context_noise: float, chunks: int):
        super().__init__()
        self.model, self.context_noise, self.chunks = model, context_noise, chunks

    def forward(self, latents, text, text_mask, actions, frames, *held_prev):
        if reads_held(f"held{self.chunks}", self.model.config):
            held, prev = held_prev[0], held_prev[1:]
        else:  # graph_io: the graph takes no `held`; any value gives the same keys and values
            held, prev = torch.ones_like(frames[:, :: self.model.config.chunk_frames], dtype=torch.bool), held_prev
        prev = prev[0] if prev else None
        sigma = torch.full(latents.shape[:2], self.context_noise)
        return held_chunks_kv(self.model, latents, sigma, self.model.condition_text(text, text_mask), actions, frames, held, prev)


class ChunkGraph(nn.Module):
    """The fused chunk step: the denoising levels of `dfworld.rollout.denoise`, then the clean chunk's write pass."""

    def __init__(self, model: VideoTransformer, sigmas: list[float], context_noise: float, solver: str = "renoise"):
        super().__init__()
        self.model, self.sigmas, self.solver = model, list(sigmas), solver
        self.write = WriteGraph(model, context_noise)

    def forward(self, noise, text, text_mask, actions, frame, *layers_valid_prev):
        L = self.model.config.depth
        cache_k, cache_v, (cache_valid, *prev) = layers_valid_prev[:L], layers_valid_prev[L : 2 * L], layers_valid_prev[2 * L :]
        prev = prev[0] if prev else None
        cache = KVCache.over(self.model.config, list(cache_k), list(cache_v), cache_valid)
        cache = attended_cache(cache, self.model._sink_key_shift(frame))  # the cache's rotated, masked keys: once for all passes
        text = self.model.condition_text(text, text_mask)  # once for every level and the write
        x0 = denoise(  # [B, K, C, h, w]
            lambda x, sigma: forward_at(self.model, x, sigma, text, None, actions, frame, cache, prev)[0],
            lambda i: noise[:, i],
            self.sigmas,
            solver=self.solver,
        )
        return (x0, *self.write(x0, text, actions, frame, cache, prev))


class DecoderGraph(nn.Module):
    """The codec's `decode`: normalised latents [N, C, h, w] -> uint8 frames [N, H, W, 3]."""

    def __init__(self, codec):
        super().__init__()
        self.codec = codec

    def forward(self, latents):
        return self.codec.decode(latents)


# -- checkpoint identity ----------------------------------------------------------------------
def checkpoint_identity(bundle: GeneratorBundle) -> dict:
    """What an export depends on: the weights digest, the checkpoint's configs (the sampler as overridden)."""
    cfg = {**bundle.checkpoint.config}
    cfg["sampler"] = {**cfg.get("sampler", {}), **bundle.sampler_overrides}  # the graph bakes the levels in
    return {"checkpoint_sha256": checkpoint_digest(bundle.checkpoint.path), **{k: cfg.get(k, {}) for k in CONFIG_SECTIONS},
            "decoder": bundle.codec.decoder}  # which of the codec's decoders the decoder graph is


def export_key(identity: dict) -> str:
    """The cache directory name of an export: a digest of the checkpoint identity and the export version."""
    text = json.dumps({"version": EXPORT_VERSION, **identity}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    """Where exports made on first use go: $DFWORLD_ONNX_CACHE, else ~/.cache/dfworld/onnx."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dfworld" / "onnx"


def cached_export_dir(bundle: GeneratorBundle) -> Path:
    """The cache directory of this checkpoint's export: cache_root() / <key>."""
    return cache_root() / export_key(checkpoint_identity(bundle))


def read_export(onnx_dir: str | Path) -> dict:
    """The export.json of an export directory, checked for format, version and graph files."""
    onnx_dir = Path(onnx_dir)
    path = onnx_dir / "export.json"
    if not path.is_file():
        raise ExportError(f"{str(onnx_dir)!r} is not a dfworld ONNX export (no export.json); make one with "
                          f"`dfworld export onnx --checkpoint CKPT --out {onnx_dir}`")
    record = json.loads(path.read_text())
    if record.get("format") != EXPORT_FORMAT or record.get("version") != EXPORT_VERSION:
        raise ExportError(f"{str(onnx_dir)!r} is a {record.get('format')!r} export version {record.get('version')!r}; "
                          f"this dfworld reads {EXPORT_FORMAT!r} version {EXPORT_VERSION}: export it again")
    names = record.get("graphs") or {}
    missing = [f"{name}.onnx" for name in ("chunk", "held1", "decoder", *names) if not (onnx_dir / f"{name}.onnx").is_file()]
    if missing:
        raise ExportError(f"{str(onnx_dir)!r} lacks {missing}: export it again")
    return record


def check_export(record: dict, bundle: GeneratorBundle, onnx_dir: str | Path) -> None:
    """Raise, naming every difference, unless the export was made from this checkpoint."""
    ident = checkpoint_identity(bundle)
    diffs = []
    for section in CONFIG_SECTIONS:
        mine, theirs = ident[section], record.get(section, {})
        diffs += [f"{section}.{k}: export {theirs.get(k)!r} vs checkpoint {mine.get(k)!r}"
                  for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    if record.get("decoder", "full") != ident["decoder"]:
        diffs.append(f"decoder: export of the {record.get('decoder', 'full')!r} decoder vs {ident['decoder']!r} asked for")
    if not diffs and record.get("checkpoint_sha256") != ident["checkpoint_sha256"]:
        diffs.append(f"weights: export of sha256 {str(record.get('checkpoint_sha256'))[:12]}... vs checkpoint "
                     f"{ident['checkpoint_sha256'][:12]}... (same configs, other weights or text cache)")
    if diffs:
        raise ExportError(
            f"ONNX export {str(onnx_dir)!r} was made from a different checkpoint than {str(bundle.checkpoint.path)!r}: "
            + "; ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
            + f". Export this checkpoint: dfworld export onnx --checkpoint {bundle.checkpoint.path} --out DIR"
        )


# -- export -----------------------------------------------------------------------------------
def _example_inputs(bundle: GeneratorBundle, levels: int, B: int = 2, L: int = 3) -> dict[str, torch.Tensor]:
    """Example inputs (B, L > 1, so the tracer keeps those axes dynamic)."""
    c = bundle.generator.config
    cache = KVCache(c, B)
    chunk = (B, c.chunk_frames, c.latent_channels, c.latent_size, c.latent_size)
    return {
        "noise": torch.randn((B, levels) + chunk[1:]),
        "latents": torch.randn(chunk),
        "prev": torch.randn(chunk),
        "text": torch.randn(B, L, c.text_dim),
        "text_mask": torch.ones(B, L, dtype=torch.bool),
        "actions": torch.zeros(B, c.chunk_frames, dtype=torch.long),
        "frame": torch.full((B,), c.sink_frames + c.chunk_frames, dtype=torch.long),
        "cache_k": cache.k, "cache_v": cache.v, "cache_valid": cache.valid,
        **{f"cache_{kv}{i}": t[i] for kv, t in (("k", cache.k), ("v", cache.v)) for i in range(c.depth)},
    }


def _held_inputs(c: TransformerConfig, m: int, B: int = 2) -> dict[str, torch.Tensor]:
    """Example inputs of held<m>: m chunks from frame 0."""
    K = c.chunk_frames
    frames = torch.arange(m * K).expand(B, -1).contiguous()
    return {
        "latents": torch.randn(B, m * K, c.latent_channels, c.latent_size, c.latent_size),
        "prev": torch.randn(B, m * K, c.latent_channels, c.latent_size, c.latent_size),
        "actions": torch.zeros(B, m * K, dtype=torch.long),
        "frames": frames,
        "held": torch.ones(B, m, dtype=torch.bool),
    }


def _rms_norm_symbolic(g, x, normalized_shape, weight, eps):
    """aten::rms_norm (which opset 17 lacks) as ONNX ops: x / sqrt(mean(x^2) + eps) * weight.

    Over the last dimension only, which is how `dfworld.model.layers.RMSNorm` calls it.
    """
    from torch.onnx import symbolic_helper as sh

    eps = sh._maybe_get_const(eps, "f")
    eps = torch.finfo(torch.float32).eps if sh._is_none(eps) or eps is None else float(eps)
    mean_sq = g.op("ReduceMean", g.op("Mul", x, x), axes_i=[-1], keepdims_i=1)
    y = g.op("Div", x, g.op("Sqrt", g.op("Add", mean_sq, g.op("Constant", value_t=torch.tensor(eps)))))
    return y if sh._is_none(weight) else g.op("Mul", y, weight)


def _gelu_symbolic(g, x, approximate="none"):
    """aten::gelu: the tanh form as ORT's fused `com.microsoft.FastGelu` (the spelled-out form was nine elementwise ops
    over the MLP's widest activations, 7% of the chunk graph's time at batch 64); the exact form as opset 17 spells it."""
    from torch.onnx import symbolic_helper as sh

    if sh._maybe_get_const(approximate, "s") == "tanh":
        return g.op(f"{ORT_DOMAIN}::FastGelu", x)
    from torch.onnx._internal.torchscript_exporter import symbolic_opset9

    return symbolic_opset9.gelu(g, x, approximate)


def _export_graph(module: nn.Module, name: str, example: dict[str, torch.Tensor], path: Path, config: TransformerConfig) -> None:
    import onnx

    inputs, outputs = graph_io(name, config)
    axes = {n: {_BATCH_AXES.get(n, 0): "batch"} for n in inputs + outputs}
    if name == "decoder":
        axes = {"latents": {0: "frames"}, "frames": {0: "frames"}}
    for n in ("text", "text_mask"):
        if n in axes:
            axes[n][1] = "text_tokens"
    args = tuple(example[n] for n in inputs)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's notes on shape-dependent Python branches (all static for these graphs) and the
        # legacy exporter's deprecation notice (it is chosen on purpose: fast, and no onnxscript needed)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        symbolics = {"aten::rms_norm": _rms_norm_symbolic, "dfworld::fused_attention": fused_attention_symbolic, "aten::gelu": _gelu_symbolic}
        for op, fn in symbolics.items():  # for this export only: a later export elsewhere in the process gets torch's own
            torch.onnx.register_custom_op_symbolic(op, fn, OPSET)
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, custom_opsets={} if name == "decoder" else {ORT_DOMAIN: 1})
        finally:
            for op in symbolics:
                torch.onnx.unregister_custom_op_symbolic(op, OPSET)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    control = sorted({n.op_type for n in graph.graph.node if n.op_type in ("If", "Loop", "Scan")})
    if control:
        raise ExportError(f"{name}.onnx holds {control} nodes: its shapes and control flow would not be static")


def export_onnx(bundle: GeneratorBundle, out: str | Path) -> Path:
    """Export a loaded generator checkpoint's chunk, held and decoder graphs, plus export.json, into `out`.

    The directory is written beside `out` and renamed into place. An existing `out` is replaced
    only if it is empty or an earlier export (it holds an export.json).
    """
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ImportError('ONNX export needs the onnx package: pip install -e ".[cpu]" (or ".[gpu]")') from e
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "export.json").is_file():
        raise FileExistsError(f"{str(out)!r} exists and is not a dfworld ONNX export; choose another --out")
    ckpt = bundle.checkpoint
    sampler = bundle.sampler
    sigmas = student_sigmas(sampler.timesteps, sampler.shift).tolist()
    model = copy.deepcopy(bundle.generator).cpu().eval()  # exported modules carry no training state
    codec = copy.deepcopy(bundle.codec).cpu().eval()
    example = _example_inputs(bundle, len(sigmas))
    graphs = {"chunk": (ChunkGraph(model, sigmas, sampler.context_noise, sampler.solver), example)}
    for m in range(1, held_chunks(model.config) + 1):
        graphs[f"held{m}"] = (HeldGraph(model, sampler.context_noise, m), {**example, **_held_inputs(model.config, m)})
    graphs["decoder"] = (DecoderGraph(codec), {"latents": example["latents"].flatten(0, 1)})
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("exporting %s to ONNX in %s", ckpt.path, out)
    for name, (module, inputs) in graphs.items():
        _export_graph(module, name, inputs, tmp / f"{name}.onnx", model.config)
    record = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "checkpoint": str(ckpt.path),
        "stage": ckpt.config.get("stage"),
        **checkpoint_identity(bundle),
        "sigmas": sigmas,
        "graphs": {name: dict(zip(("file", "inputs", "outputs"), (f"{name}.onnx", *graph_io(name, model.config)))) for name in graphs},
        "opset": OPSET,
        "exporter": f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
    }
    (tmp / "export.json").write_text(json.dumps(record, indent=1))
    if out.exists():
        shutil.rmtree(out)
    try:
        os.replace(tmp, out)
    except OSError:  # another process exported it meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_export(bundle: GeneratorBundle, onnx_dir: str | Path | None = None) -> Path:
    """An export directory for this checkpoint, made on first use (in the cache when `onnx_dir` is None).

    An existing directory is checked against the checkpoint (ExportError on a mismatch).
    """
    out = Path(onnx_dir) if onnx_dir is not None else cached_export_dir(bundle)
    if not (out / "export.json").is_file():
        export_onnx(bundle, out)
    check_export(read_export(out), bundle, out)
    return out
