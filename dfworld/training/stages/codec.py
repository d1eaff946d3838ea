"""Stage `codec`: train the latent autoencoder on EventWorld frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dfworld.configuration import to_dict
from dfworld.model.codec import CodecConfig, LatentCodec
from dfworld.training.loop import Stage, TrainConfig, adamw, optimize, set_lr
from dfworld.world.datasets import load_clips


@dataclass(frozen=True)
class CodecStageConfig:
    """`dfworld train stage=codec`."""

    clips: str = "data/clips"  # clips data set (dfworld data clips)
    codec: CodecConfig = field(default_factory=CodecConfig)  # the autoencoder
    kl_weight: float = 1e-6  # weight of the KL term of the posterior
    sample_posterior: bool = False  # decode a posterior sample (VAE) instead of its mean (plain autoencoder)
    foreground_weight: float = 4.0  # extra loss weight on pixels unlike their frame's median colour (objects, agent)
    stats_frames: int = 2048  # frames used to measure the latent mean and std
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/codec", steps=3000, batch_size=24, lr=2e-3, ema=0.0, warmup=20, checkpoint_every=150,
                                            max_minutes=20.0)
    )


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of pixels in [-1, 1], per image."""
    mse = (a.clamp(-1, 1) - b).pow(2).flatten(1).mean(1) / 4.0  # scaled to [0, 1] range
    return -10 * torch.log10(mse.clamp(min=1e-10))


def foreground_weighted_error(recon: torch.Tensor, target: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """L1 + L2 of pixels [B, 3, H, W], weighted 1 + foreground_weight where the target is unlike its median colour.

    Small entities on flat ground: without the weight the background dominates the loss and the
    objects are learned last.
    """
    median = target.flatten(2).median(dim=2).values[:, :, None, None]  # [B, 3, 1, 1]
    fg = ((target - median).abs().amax(dim=1, keepdim=True) > 0.1).float()  # [B, 1, H, W]
    w = 1.0 + foreground_weight * fg
    err = (recon - target).abs() + (recon - target).pow(2)
    return (w * err).mean() / w.mean()


class CodecStage(Stage):
    name = "codec"

    def __init__(self, config: CodecStageConfig):
        self.setup(config)
        clips = load_clips(config.clips)
        self.frames = clips.frames.flatten(0, 1)  # [N*F, H, W, 3]
        if self.frames.shape[1] != config.codec.image_size:
            raise ValueError(f"data frames are {self.frames.shape[1]} px but codec.image_size is {config.codec.image_size}")
        self.codec = LatentCodec(config.codec).to(self.device)
        self.opt = adamw(self.codec.parameters(), config.train)

    def trained(self):
        return {"codec": self.codec}

    def optimizers(self):
        return {"codec": self.opt}

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        idx = torch.randint(len(self.frames), (self.train.batch_size,), generator=rng)
        x = LatentCodec.to_pixels(self.frames[idx]).to(self.device)
        post = self.codec.posterior(x)
        z = post.mean
        if self.config.sample_posterior:
            z = z + post.std * torch.randn(post.mean.shape, generator=rng).to(self.device)
        recon = self.codec.vae.decode(z).sample
        rec = foreground_weighted_error(recon, x, self.config.foreground_weight)
        kl = post.kl().mean() / x[0].numel()
        loss = rec + self.config.kl_weight * kl
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = optimize(loss, self.opt, self.codec, self.train.grad_clip)
        return {"loss_recon": rec.item(), "loss_kl": kl.item(), "psnr": psnr(recon.detach(), x).mean().item(), "grad_norm": norm}

    @torch.no_grad()
    def on_checkpoint(self) -> None:
        # Latent statistics from a fixed, evenly spaced subset of frames (deterministic).
        n = min(self.config.stats_frames, len(self.frames))
        idx = torch.linspace(0, len(self.frames) - 1, n).long()
        zs = []
        for chunk in idx.split(256):
            x = LatentCodec.to_pixels(self.frames[chunk]).to(self.device)
            zs.append(self.codec.posterior(x).mode())
        z = torch.cat(zs)  # [n, C, h, w]
        self.codec.latent_mean.copy_(z.mean(dim=(0, 2, 3)))
        self.codec.latent_std.copy_(z.std(dim=(0, 2, 3)).clamp(min=1e-3))

    def checkpoint_config(self):
        return {"codec": to_dict(self.config.codec), "stage_config": to_dict(self.config)}
