"""Rebuilding models from checkpoints: codec, transformers, the text conditioner, and the bundle of all three."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dfworld.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_into
from dfworld.configuration import ConfigError, build, to_dict
from dfworld.model.codec import CodecConfig, LatentCodec
from dfworld.model.conditioning import TextConditioner
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.schedule import SamplerConfig

TEXT_CACHE = "text_cache.safetensors"


@dataclass(frozen=True)
class TextConfig:
    """The text encoder behind the conditioning."""

    encoder: str = "minilm"  # minilm (all-MiniLM-L6-v2, a default dependency) or vocab (tests)
    max_tokens: int = 32  # longest prompt in encoder tokens; longer prompts are refused
    dim: int = 384  # width of the encoder's token embeddings


def _build(cls, data, where: str):
    """A config section of a checkpoint: every field given, checked; errors as CheckpointError."""
    try:
        return build(cls, data, where, complete=True)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e


def codec_from(ckpt: Checkpoint) -> LatentCodec:
    """The codec stored in a checkpoint (a codec checkpoint, or any stage that carries one)."""
    if "codec" not in ckpt.config:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r} carries no codec")
    # codecs written before the fast decoder existed (2026-12-02) have none
    data = {"fast_channels": [], "fast_blocks": [], **ckpt.config["codec"]}
    codec = LatentCodec(_build(CodecConfig, data, f"{ckpt.path}: codec"))
    load_into(codec, ckpt.module_weights("codec"), f"codec weights of {str(ckpt.path)!r}")
    return codec.eval()


def transformer_from(ckpt: Checkpoint, name: str, config_key: str = "model") -> VideoTransformer:
    """The transformer `name` (teacher, generator, critic) with config `config_key` in a checkpoint."""
    if config_key not in ckpt.config:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r} has no {config_key!r} config")
    model = VideoTransformer(_build(TransformerConfig, ckpt.config[config_key], f"{ckpt.path}: {config_key}"))
    load_into(model, ckpt.module_weights(name), f"{name} weights of {str(ckpt.path)!r}")
    return model.eval()


# the parts a model may have beyond the weights it starts from: zero-initialised, so it starts as its source was
ADDED_AT_ZERO = frozenset({"prev_in.weight", "prev_in.bias", "skip_gate"})


def load_widened(model: VideoTransformer, source: VideoTransformer, where: str) -> None:
    """Load `source`'s weights into `model`, which may also have the zero-initialised parts `ADDED_AT_ZERO`."""
    try:
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    except RuntimeError as e:
        raise ValueError(f"{where} has another shape than model: {e}") from e
    if unexpected or set(missing) - ADDED_AT_ZERO:
        raise ValueError(f"{where} does not fit model: missing {missing}, unexpected {unexpected}")


def conditioner_from(ckpt: Checkpoint) -> TextConditioner:
    """The text conditioner of a checkpoint, with its cached embeddings."""
    text = _build(TextConfig, ckpt.config.get("text", {}), f"{ckpt.path}: text")
    cond = TextConditioner(text.encoder, text.max_tokens, text.dim)
    cache = Path(ckpt.path) / TEXT_CACHE
    if cache.is_file():
        try:
            cond.load(cache)
        except CheckpointError:
            raise
        except Exception as e:  # a truncated or foreign file
            raise CheckpointError(f"{str(cache)!r} is not a readable text cache: {e}") from e
    return cond


def load_codec(path: str | Path) -> LatentCodec:
    return codec_from(load_checkpoint(path))


GENERATOR_STAGES = ("causal", "ode", "dmd", "stream", "delta", "fidelity", "generator")


@dataclass
class GeneratorBundle:
    """Everything a rollout needs from a generator checkpoint: the generator, its codec, conditioner and sampler."""

    generator: VideoTransformer  # the block-causal generator (the paper's role)
    codec: LatentCodec
    conditioner: TextConditioner
    sampler: SamplerConfig  # the few-step levels it was distilled for, with any overrides applied
    checkpoint: Checkpoint
    sampler_overrides: dict = field(default_factory=dict)  # the sampler fields replaced at load (plain data)


def sampler_with(sampler: SamplerConfig, overrides: Mapping | None, where: str = "sampler") -> SamplerConfig:
    """`sampler` with the fields in `overrides` replaced, checked as a config (ConfigError names a bad field)."""
    if not overrides:
        return sampler
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}: expected a mapping of SamplerConfig fields, got {overrides!r:.80}")
    return build(SamplerConfig, {**to_dict(sampler), **dict(overrides)}, where)


def load_bundle(path: str | Path, sampler: Mapping | None = None) -> GeneratorBundle:
    """A block-causal generator with its codec, text conditioner and sampler (stages ode, dmd, stream, delta).

    `sampler`: SamplerConfig fields to replace the checkpoint's (e.g. {"timesteps": [1000, 500]}:
    fewer levels than it was distilled for); None keeps the checkpoint's own.
    """
    ckpt = load_checkpoint(path, stage=GENERATOR_STAGES)
    generator = transformer_from(ckpt, "generator")
    if generator.config.attention != "block_causal":
        raise CheckpointError(f"{str(path)!r}: the generator must be block_causal, got {generator.config.attention!r}")
    own = _build(SamplerConfig, ckpt.config.get("sampler", {}), f"{path}: sampler")
    used = sampler_with(own, sampler, "sampler override")
    overrides = {k: to_dict(getattr(used, k)) for k in (sampler or {})}
    return GeneratorBundle(generator, codec_from(ckpt), conditioner_from(ckpt), used, ckpt, overrides)


def write_generator_checkpoint(
    path: str | Path,
    model: VideoTransformer,
    codec: LatentCodec,
    text: TextConfig,
    sampler: SamplerConfig = SamplerConfig(),
    stage: str = "generator",
    record: dict | None = None,
    conditioner: TextConditioner | None = None,
) -> Path:
    """Write a generator checkpoint that `load_bundle` reads (stages write theirs through the loop)."""
    import tempfile

    from dfworld.checkpoint import save_checkpoint

    if stage not in GENERATOR_STAGES:
        raise ValueError(f"generator checkpoints are stages {GENERATOR_STAGES}, got {stage!r}")
    weights = {f"generator.{k}": v for k, v in model.state_dict().items()}
    weights.update({f"codec.{k}": v for k, v in codec.state_dict().items()})
    config = {
        "stage": stage,
        "model": to_dict(model.config),
        "codec": to_dict(codec.config),
        "text": to_dict(text),
        "sampler": to_dict(sampler),
        "record": dict(record or {}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        extra = {}
        if conditioner is not None and conditioner.cache:
            conditioner.save(Path(tmp) / TEXT_CACHE)
            extra[TEXT_CACHE] = Path(tmp) / TEXT_CACHE
        return save_checkpoint(path, config, weights, extra_files=extra)
