"""Sampling clips from a full-attention model (the teacher) with classifier-free guidance.

The Euler steps are diffusers' FlowMatchEulerDiscreteScheduler with the model's shift; the
guided velocity is v_uncond + g (v_cond - v_uncond).
"""

from __future__ import annotations

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


def initial_noise(batch: int, frames: int, cfg, repeat: bool, generator=None, device="cpu") -> torch.Tensor:
    """Starting noise [B, F, C, h, w]; with `repeat`, the first `cfg.chunk_frames` frames' noise repeats over the clip.

    Repeated noise (FreeNoise's noise rescheduling, arXiv 2310.15169) lets every chunk start from
    the same draw, so content that the condition leaves open is drawn alike in every chunk; with
    fresh noise a small teacher draws each tubelet group's objects anew (BENCHMARKS.md).
    """
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    if not repeat:
        return torch.randn((batch, frames) + shape, generator=generator, device=device)
    period = cfg.chunk_frames
    base = torch.randn((batch, period) + shape, generator=generator, device=device)
    return base.repeat(1, -(-frames // period), 1, 1, 1)[:, :frames]


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
    generator: torch.Generator | None = None,
    repeat_noise: bool = False,
) -> torch.Tensor:
    """Clean latents [B, F, C, h, w] from noise (see `initial_noise`), conditioned on text and per-frame actions [B, F]."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = model.config
    B = text.shape[0]
    device = text.device
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(steps, device=device)
    x = initial_noise(B, frames, cfg, repeat_noise, generator, device)
    for i, t in enumerate(sched.timesteps):
        sigma = torch.full((B, frames), float(sched.sigmas[i]), device=device)
        v = guided_velocity(model, x, sigma, text, text_mask, actions, guidance)
        x = sched.step(v, t, x).prev_sample
    return x
