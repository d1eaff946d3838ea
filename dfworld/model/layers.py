"""Building blocks of the video transformer: rotary time positions, timestep embedding, adaLN."""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for rotary embedding of integer time positions [..., T] -> [..., T, head_dim/2]."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = positions.to(torch.float32)[..., None] * freqs
    return torch.cos(ang), torch.sin(ang)


def rope_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x [B, H, T, Dh] by angles cos/sin [B, 1, T, Dh/2] (RoFormer, arXiv 2104.09864).

    In an ONNX export the pairs' swap (x1, x2) -> (-x2, x1) is a matmul with a signed permutation, so the
    graph has no strided slices and no interleaving concat; each output channel is the same one product
    and one sum, so the result is the same to the bit.
    """
    if torch.onnx.is_in_onnx_export():
        D = x.shape[-1]
        swap = torch.zeros(D, D, dtype=x.dtype)
        idx = torch.arange(0, D, 2)
        swap[idx + 1, idx], swap[idx, idx + 1] = -1.0, 1.0  # out[2i] = -x[2i+1], out[2i+1] = x[2i]
        full = [torch.stack((a, a), dim=-1).flatten(-2) for a in (cos, sin)]  # each angle on both channels of its pair
        return (x * full[0] + (x @ swap.to(x.device)) * full[1]).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


def timestep_embedding(sigma: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of noise levels sigma in [0, 1] (as t = 1000 sigma): [...] -> [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
    args = (sigma.to(torch.float32) * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, F, N, D] with per-frame shift/scale [B, F, 1, D] (DiT, arXiv 2212.09748)."""
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    """RMS normalisation of the last dimension (used on queries and keys)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the weight in x's dtype: under bf16 autocast the fused kernel needs them to match
        return torch.nn.functional.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
