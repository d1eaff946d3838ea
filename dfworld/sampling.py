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
) -> torch.Tensor:
    """Clean latents [B, F, C, h, w] from noise, conditioned on text and per-frame actions [B, F]."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = model.config
    B = text.shape[0]
    device = text.device
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(steps, device=device)
    x = torch.randn(B, frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=generator, device=device)
    for i, t in enumerate(sched.timesteps):
        sigma = torch.full((B, frames), float(sched.sigmas[i]), device=device)
        v = guided_velocity(model, x, sigma, text, text_mask, actions, guidance)
        x = sched.step(v, t, x).prev_sample
    return x
