"""A small decoder of the codec's latents, distilled from the codec's own decoder (as TAESD is for Stable Diffusion).

Decoding costs about as much as the transformer's passes (benchmarks/bench_roofline.py): the
codec's decoder is a diffusers VAE decoder, group norms, a mid-block with self-attention at 16x16
and two resnets per level. This one is plain convolutions and ReLUs: a convolution into the
first width, residual blocks, then per upsampling a nearest x2 and a convolution into the next
width, and a last convolution to RGB. No normalisation, so it fuses and exports simply.

It is trained (stage `decoder`) to give the full decoder's pixels for the same latents, real
frames' latents and noised ones (a generator's latents are not exactly on the codec's manifold),
so the probes read its frames as they read the full decoder's. The codec carries it
(`CodecConfig.fast_channels`) and decodes with it when told to (`LatentCodec.use_decoder`).
"""

from __future__ import annotations

import torch
from torch import nn


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class FastDecoder(nn.Module):
    """Denormalised latents [N, C, h, w] -> pixels [N, 3, h * 2**ups, w * 2**ups] in about [-1, 1].

    `channels` [ups + 1]: the width at each resolution, latent size first; `blocks` [ups + 1]:
    residual blocks at each.
    """

    def __init__(self, latent_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        if len(channels) < 1 or len(blocks) != len(channels) or min(channels) < 1 or min(blocks) < 0:
            raise ValueError(f"fast decoder: channels {channels} and blocks {blocks} must be as long as each other "
                             "(one per resolution), widths >= 1, blocks >= 0")
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, channels[0], 3, padding=1), nn.ReLU()]
        for i, (width, n) in enumerate(zip(channels, blocks)):
            if i:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels[i - 1], width, 3, padding=1), nn.ReLU()]
            layers += [_Residual(width) for _ in range(n)]
        layers.append(nn.Conv2d(channels[-1], 3, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.to(memory_format=torch.channels_last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.contiguous(memory_format=torch.channels_last))
