"""The latent codec: a small diffusers AutoencoderKL between uint8 frames and latent frames.

64x64x3 frames become 16x16x8 latents (downsampling 2 ** (blocks - 1)). Latents are the
posterior mean, normalised per channel with statistics measured on training frames, so the
diffusion models see roughly unit-variance inputs.

A codec may also carry a fast decoder (`fast_channels`; dfworld.model.fast_decoder, trained by
stage `decoder`); `use_decoder("fast")` makes `decode` use it, "full" (the default) the VAE's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DECODERS = ("full", "fast")


@dataclass(frozen=True)
class CodecConfig:
    """Autoencoder hyperparameters."""

    image_size: int = 64  # frame height and width in pixels
    latent_channels: int = 8  # channels of a latent frame
    block_out_channels: tuple[int, ...] = (16, 32, 32)  # encoder/decoder widths; len - 1 downsamplings
    layers_per_block: int = 1  # resnet layers per block
    norm_num_groups: int = 8  # group-norm groups (must divide every width)
    # the fast decoder's widths, one per resolution from the latent's up (empty: the codec has none), and its
    # residual blocks at each
    fast_channels: tuple[int, ...] = ()
    fast_blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.fast_channels and len(self.fast_channels) != len(self.block_out_channels):
            raise ValueError(f"fast_channels {self.fast_channels}: one width per resolution, {len(self.block_out_channels)} here")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every width {self.block_out_channels}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} is not divisible by the downsampling {self.downsample}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample


class LatentCodec(nn.Module):
    """uint8 frames [..., H, W, 3] <-> normalised latents [..., C, h, w]."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        from diffusers import AutoencoderKL

        self.config = config
        n = len(config.block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            latent_channels=config.latent_channels,
            norm_num_groups=config.norm_num_groups,
            sample_size=config.image_size,
        )
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))
        self.vae.decoder.to(memory_format=torch.channels_last)  # faster convolutions on CPU
        self.fast = None
        if config.fast_channels:
            from dfworld.model.fast_decoder import FastDecoder

            self.fast = FastDecoder(config.latent_channels, config.fast_channels, config.fast_blocks or (1,) * len(config.fast_channels))
        self.decoder = "full"  # which decoder `decode` uses (use_decoder)

    def use_decoder(self, name: str | None) -> LatentCodec:
        """Decode with the "full" (VAE) decoder or the "fast" one this codec carries (None: the fast one where it
        carries one, the envs' default); returns the codec."""
        if name is None:
            name = "full" if self.fast is None else "fast"
        if name not in DECODERS:
            raise ValueError(f"unknown decoder {name!r}; use one of {DECODERS}")
        if name == "fast" and self.fast is None:
            raise ValueError("this codec carries no fast decoder (train one: dfworld train stage=decoder)")
        self.decoder = name
        return self

    @staticmethod
    def to_pixels(frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
        return frames.movedim(-1, -3).to(torch.float32) / 127.5 - 1.0

    @staticmethod
    def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
        """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]."""
        x = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        n = x.ndim  # a permute with non-negative dims (movedim(-3, -1) exports as an invalid ONNX Transpose)
        return x.permute(*range(n - 3), n - 2, n - 1, n - 3)

    def _flat(self, x: torch.Tensor, tail: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        lead = x.shape[:-tail]
        return x.reshape((-1,) + x.shape[-tail:]), lead

    def posterior(self, pixels: torch.Tensor):
        """The encoder's diagonal Gaussian for pixels [B, 3, H, W]."""
        return self.vae.encode(pixels).latent_dist

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.latent_std[:, None, None] + self.latent_mean[:, None, None]

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames [..., H, W, 3] -> normalised latents [..., C, h, w] (posterior mean)."""
        if frames.dtype != torch.uint8 or frames.shape[-1] != 3:
            raise ValueError(f"encode takes uint8 [..., H, W, 3] frames, got {frames.dtype} {tuple(frames.shape)}")
        flat, lead = self._flat(self.to_pixels(frames), 3)
        z = self.normalize(self.posterior(flat).mode())
        return z.reshape(lead + z.shape[1:])

    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [..., C, h, w] -> pixels [..., 3, H, W] in about [-1, 1]."""
        return self.decode_with(latents, self.decoder)

    def decode_with(self, latents: torch.Tensor, decoder: str) -> torch.Tensor:
        """`decode_pixels` through the named decoder ("full" or "fast")."""
        flat, lead = self._flat(latents, 3)
        z = self.denormalize(flat).contiguous(memory_format=torch.channels_last)
        if decoder == "fast":
            if self.fast is None:
                raise ValueError("this codec carries no fast decoder")
            x = self.fast(z)
        else:
            x = self.vae.decode(z).sample
        return x.reshape(lead + x.shape[1:])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [..., C, h, w] -> uint8 frames [..., H, W, 3]."""
        return self.to_uint8(self.decode_pixels(latents))
