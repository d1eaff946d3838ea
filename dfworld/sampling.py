"""Sampling clips from a full-attention model (the teacher) with classifier-free guidance.

One sampler for the teacher: diffusers' FlowMatchEulerDiscreteScheduler steps the guided
velocity v_uncond + g (v_cond - v_uncond). Clip sampling (`sample_clips`, the evals) and the
ODE pairs of the student's initialisation (`dfworld.training.stages.ode`) both run
`euler_sample`; they differ only in the grid of levels (`teacher_scheduler`).
"""

from __future__ import annotations

import numpy as np
import torch

from dfworld.model.transformer import VideoTransformer


def guided_velocity(model: VideoTransformer, x, sigma, text, text_mask, actions, guidance: float) -> torch.Tensor:
    """v_uncond + g (v_cond - v_uncond); the unconditional branch has null text and null actions."""
    if guidance == 1.0:
        return model(x, sigma, text, text_mask, actions)[0]
    B = x.shape[0]
    ones = torch.ones(B, dtype=torch.bool, device=x.device)
    u_text, u_mask, u_actions = model.drop_condition(text, text_mask, actions, ones, ones)
    v = model(
        torch.cat([x, x]),
        torch.cat([sigma, sigma]),
        torch.cat([text, u_text]),
        torch.cat([text_mask, u_mask]),
        torch.cat([actions, u_actions]),
    )[0]
    v_cond, v_uncond = v.chunk(2)
    return v_uncond + guidance * (v_cond - v_uncond)


def initial_noise(batch: int, frames: int, cfg, repeat: bool, rng=None, device="cpu") -> torch.Tensor:
    """Starting noise [B, F, C, h, w]; with `repeat`, the first `cfg.chunk_frames` frames' noise repeats over the clip.

    Repeated noise (FreeNoise's noise rescheduling, arXiv 2310.15169) lets every chunk start from
    the same draw, so content that the condition leaves open is drawn alike in every chunk; with
    fresh noise a small teacher draws each tubelet group's objects anew (docs/experiments/repeated-noise.md).
    """
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    if not repeat:
        return torch.randn((batch, frames) + shape, generator=rng, device=device)
    period = cfg.chunk_frames
    base = torch.randn((batch, period) + shape, generator=rng, device=device)
    return base.repeat(1, -(-frames // period), 1, 1, 1)[:, :frames]


GRIDS = ("diffusers", "uniform")


def teacher_scheduler(steps: int, shift: float, grid: str = "diffusers"):
    """diffusers' FlowMatchEulerDiscreteScheduler with `steps` Euler steps at timestep shift `shift`.

    grid `diffusers`: the scheduler's own spacing (its last level near 0.001), what clip sampling
    uses; `uniform`: levels shift(1 - i / steps) for i = 0..steps-1, so that a student's warped
    timesteps (1000, 750, 500, 250 for 16 steps) lie on the grid, what the ODE pairs use.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if grid not in GRIDS:
        raise ValueError(f"unknown Euler grid {grid!r}; grids: {', '.join(GRIDS)}")
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    if grid == "uniform":
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1].astype(np.float32))
    else:
        sched.set_timesteps(steps)
    return sched


def euler_sample(model: VideoTransformer, x, text, text_mask, actions, guidance: float, sched, keep=(),
                 context: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
    """Integrate the teacher's guided ODE from noise x [B, F, C, h, w] with `sched`'s Euler steps.

    `context`: clean latents [B, n, C, h, w] of the first n frames, held fixed at level 0 (the
    teacher continues them). Returns the clean end and the states before the steps in `keep`.
    """
    B, F = x.shape[:2]
    n = 0 if context is None else context.shape[1]
    states = []
    for i, t in enumerate(sched.timesteps):
        if n:
            x = torch.cat([context, x[:, n:]], 1)
        if i in keep:
            states.append(x)
        sigma = torch.full((B, F), float(sched.sigmas[i]), device=x.device)  # [B, F]
        sigma[:, :n] = 0.0
        v = guided_velocity(model, x, sigma, text, text_mask, actions, guidance)
        x = sched.step(v, t, x).prev_sample
    return (torch.cat([context, x[:, n:]], 1) if n else x), states


@torch.inference_mode()
def sample_clips(
    model: VideoTransformer,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    actions: torch.Tensor,
    frames: int,
    steps: int = 24,
    guidance: float = 3.0,
    shift: float = 3.0,
    rng: torch.Generator | None = None,
    repeat_noise: bool = True,
    grid: str = "diffusers",
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clean latents [B, F, C, h, w] from noise (see `initial_noise`), conditioned on text and per-frame actions [B, F].

    `context`: clean latents of the first frames, which the teacher continues (see `euler_sample`).
    """
    x = initial_noise(text.shape[0], frames, model.config, repeat_noise, rng, text.device)
    return euler_sample(model, x, text, text_mask, actions, guidance, teacher_scheduler(steps, shift, grid), context=context)[0]
