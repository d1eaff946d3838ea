"""The video transformer's hyperparameters (`dfworld.model.transformer` documents the model)."""

from __future__ import annotations

import typing
from dataclasses import dataclass

ATTENTION_MODES = ("full", "block_causal")


@dataclass(frozen=True)
class TransformerConfig:
    """Video transformer hyperparameters."""

    latent_channels: int = 8  # channels of a latent frame (the codec's latent_channels)
    latent_size: int = 16  # latent height and width
    patch: int = 4  # patch side in latent pixels
    tubelet: int = 1  # frames per token; tokens per frame = (latent_size / patch)^2 / tubelet
    dim: int = 128  # model width
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    text_dim: int = 384  # width of the text encoder's token embeddings
    text_tokens: int = 32  # most text tokens the model reads
    n_actions: int = 5  # discrete actions; index n_actions is the null action
    attention: str = "full"  # full (teacher, critic) or block_causal (generator)
    chunk_frames: int = 4  # frames per chunk (block_causal)
    sink_frames: int = 4  # first frames kept in attention forever (block_causal; multiple of chunk_frames)
    window_frames: int = 12  # most recent frames in attention besides the sink (multiple of chunk_frames)
    rope_theta: float = 10000.0  # rotary base (time)
    rope_space: int = 0  # rotary pairs per head for each spatial axis (row, column); 0: time only
    rope_space_theta: float = 16.0  # rotary base in space (frequencies 1 down to 1/theta rad per patch)
    # each token also reads the same patch of a reference frame, the last clean frame before its chunk
    # (DIAMOND's and GameNGen's frame stacking): what did not change is a copy (`forward(prev=...)`)
    prev_frame: bool = False
    # the output velocity adds g (x - prev) (prev_frame models; g learned, from 0): at the first level the velocity of
    # a frame equal to its reference frame, so a copy of what did not change costs the network nothing
    # (docs/experiments/drift-own-history-and-skip.md)
    prev_skip: bool = False
    # the reference is the previous chunk's frames, frame by frame, instead of its last frame repeated (prev_frame models):
    # each token then reads the local motion of what moves, as DIAMOND's stack of past frames gives it; the skip still
    # copies the last frame (docs/experiments/fidelity-stage.md, run 6)
    prev_chunk: bool = False

    # fields a checkpoint written before them lacks (their defaults are what those models do): see configuration.build
    ADDED_LATER: typing.ClassVar[tuple[str, ...]] = ("prev_chunk",)

    def __post_init__(self) -> None:
        if self.prev_skip and not self.prev_frame:
            raise ValueError("prev_skip adds the reference frame to the output: it needs prev_frame")
        if self.prev_chunk and not self.prev_frame:
            raise ValueError("prev_chunk chooses the reference frames: it needs prev_frame")
        for name in ("latent_channels", "latent_size", "patch", "dim", "depth", "heads", "text_dim", "text_tokens", "n_actions",
                     "chunk_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention {self.attention!r} is not one of {ATTENTION_MODES}")
        if self.latent_size % self.patch:
            raise ValueError(f"latent_size {self.latent_size} is not divisible by patch {self.patch}")
        if self.tubelet < 1 or self.chunk_frames % self.tubelet or self.spatial_tokens % self.tubelet:
            raise ValueError(
                f"tubelet {self.tubelet} must be at least 1 and divide chunk_frames ({self.chunk_frames}) and the "
                f"{self.spatial_tokens} patches of a frame"
            )
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.heads} heads of even width")
        if self.rope_space < 0 or 2 * self.rope_space >= self.head_dim // 2:
            raise ValueError(
                f"rope_space={self.rope_space}: the two spatial axes must leave time at least one of the "
                f"{self.head_dim // 2} rotary pairs of a head"
            )
        for name in ("sink_frames", "window_frames"):
            if getattr(self, name) % self.chunk_frames:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of chunk_frames={self.chunk_frames}")

    @property
    def spatial_tokens(self) -> int:
        """Tokens of one group of `tubelet` frames (S): one per p x p patch."""
        return (self.latent_size // self.patch) ** 2

    @property
    def tokens_per_frame(self) -> int:
        """Tokens per frame on average (N = S / tubelet): the KV cache's unit."""
        return self.spatial_tokens // self.tubelet

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def patch_dim(self) -> int:
        return self.tubelet * self.latent_channels * self.patch * self.patch
