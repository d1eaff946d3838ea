"""Flow-matching noise schedule (teacher) and the few-step schedule of the student.

Forward process x_s = (1 - s) x0 + s eps with s in [0, 1] (t = 1000 s); the networks predict the
velocity v = eps - x0, so x0 = x_s - s v. Timesteps are shifted toward noise with
s' = k s / (1 + (k - 1) s) (SD3 / Wan; Self Forcing uses k = 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def shift_sigma(s: torch.Tensor | float, shift: float) -> torch.Tensor:
    """Shift noise levels toward 1: s' = k s / (1 + (k - 1) s)."""
    s = torch.as_tensor(s, dtype=torch.float32)
    return shift * s / (1 + (shift - 1) * s)


def sample_sigma(shape: tuple[int, ...], shift: float, rng: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Training noise levels: uniform, then shifted."""
    u = torch.rand(shape, generator=rng, device=device)
    return shift_sigma(u, shift)


def add_noise(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_s = (1 - s) x0 + s eps, with sigma broadcast from [B, F] over [B, F, C, h, w]."""
    s = sigma[..., None, None, None]
    return (1 - s) * x0 + s * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return eps - x0


def predict_x0(x_s: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x_s - sigma[..., None, None, None] * v


def student_sigmas(timesteps: tuple[float, ...], shift: float) -> torch.Tensor:
    """The student's few-step noise levels: warped timesteps (e.g. 1000, 750, 500, 250) through the shift.

    Self Forcing's [1000, 750, 500, 250] with shift 5 gives s = [1, .9375, .8333, .625].
    """
    return shift_sigma(torch.tensor(timesteps, dtype=torch.float32) / 1000.0, shift)


SOLVERS = ("renoise", "euler")


@dataclass(frozen=True)
class SamplerConfig:
    """Few-step sampling of the block-causal generator (every stage of the chain and the envs)."""

    timesteps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)  # warped student timesteps
    shift: float = 5.0  # timestep shift applied to them (Self Forcing: 5)
    context_noise: float = 0.0  # noise level of the cache-writing pass (0: clean)
    repeat_noise: bool = True  # every chunk of an episode starts from the same noise (its seed's), as FreeNoise
    # between levels: "renoise" (Self Forcing's few-step sampler: x0 re-noised with fresh noise) or
    # "euler" (the flow's ODE, deterministic after the first noise: the sampler of a model trained
    # by teacher forcing, with many levels, before distillation)
    solver: str = "renoise"

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"sampler.solver {self.solver!r} is not one of {SOLVERS}")
        t = self.timesteps
        if not t or not all(0 < x <= 1000 for x in t) or any(a <= b for a, b in zip(t, t[1:])):
            raise ValueError(f"sampler.timesteps {list(t)} must be one or more decreasing values in (0, 1000]")
        if not self.shift > 0:
            raise ValueError(f"sampler.shift must be positive, got {self.shift}")
        if not 0 <= self.context_noise < 1:
            raise ValueError(f"sampler.context_noise must be in [0, 1), got {self.context_noise}")
