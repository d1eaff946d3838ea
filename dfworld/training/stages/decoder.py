"""Stage `decoder`: a fast decoder distilled from the codec's own (dfworld.model.fast_decoder).

The codec comes from any checkpoint that carries one and stays frozen; only the fast decoder
learns, to give the full decoder's pixels for the same latents. Its inputs are the latents of
real frames and, on a share of each batch, the same latents with Gaussian noise added (a
generator's latents are close to the codec's manifold, not on it); the target is always the
full decoder's output, so the probes read the fast decoder's frames as they read the full one's.
The loss weights the pixels unlike their frame's median colour (the objects and the agent, a
small share of the frame), as the codec's own training does.

The checkpoint carries the whole codec, fast decoder included (stage "decoder"): `dfworld
pipeline`'s ship puts that fast decoder into the shipped generators whose codec it was trained
on, and the envs decode with it when asked (`decoder="fast"`; "full", the VAE's, is the default).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import to_dict
from dfworld.model.codec import LatentCodec
from dfworld.model.loading import codec_from
from dfworld.training.loop import Stage, TrainConfig, adamw, optimize, set_lr
from dfworld.training.stages.codec import foreground_weighted_error, psnr
from dfworld.training.stages.teacher import clip_latents
from dfworld.world.datasets import load_clips


@dataclass(frozen=True)
class DecoderStageConfig:
    """`dfworld train stage=decoder`."""

    codec_checkpoint: str = "runs/codec/checkpoint"  # any checkpoint carrying the codec (codec, teacher, generator)
    clips: str = "data/clips"  # frames whose latents the decoder learns from
    channels: tuple[int, ...] = (32, 24, 16)  # widths per resolution, latent size first
    blocks: tuple[int, ...] = (1, 1, 0)  # residual blocks per resolution
    noised_fraction: float = 0.5  # rows whose latents are noised (off the codec's manifold, as a generator's are)
    latent_noise: float = 0.2  # the most noise on a noised row's normalised latents (uniform up to it)
    foreground_weight: float = 4.0  # extra loss weight on pixels unlike their frame's median colour
    # no EMA: the checkpoint's codec weights outside the fast decoder stay bit for bit the base codec's, which is how
    # ship knows which generators it belongs to
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/decoder", steps=3000, batch_size=64, lr=2e-3, ema=0.0, warmup=20,
                                            decay="cosine", final_lr=0.05, checkpoint_every=250, max_minutes=10.0)
    )

    def __post_init__(self) -> None:
        if not 0 <= self.noised_fraction <= 1 or self.latent_noise < 0:
            raise ValueError(f"noised_fraction ({self.noised_fraction}) must be in [0, 1] and latent_noise "
                             f"({self.latent_noise}) >= 0")


class DecoderStage(Stage):
    name = "decoder"

    def __init__(self, config: DecoderStageConfig):
        self.setup(config)
        base = codec_from(load_checkpoint(config.codec_checkpoint))
        if len(config.channels) != len(base.config.block_out_channels):
            raise ValueError(f"channels {config.channels}: one width per resolution of the codec "
                             f"({len(base.config.block_out_channels)})")
        cfg = replace(base.config, fast_channels=tuple(config.channels), fast_blocks=tuple(config.blocks))
        self.codec = LatentCodec(cfg)
        missing, unexpected = self.codec.load_state_dict(base.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("fast.") for k in missing)
        self.codec = self.codec.to(self.device)
        self.codec.requires_grad_(False).eval()
        self.codec.fast.requires_grad_(True).train()
        clips = load_clips(config.clips)
        if clips.frames.shape[2] != cfg.image_size:
            raise ValueError(f"data frames are {clips.frames.shape[2]} px but the codec's image_size is {cfg.image_size}")
        # every frame's latents, encoded once (cached per codec, as the teacher's)
        self.latents = clip_latents(base, clips.frames, self.train.out, self.device).flatten(0, 1)
        self.opt = adamw(self.codec.fast.parameters(), config.train)

    def trained(self):
        return {"codec": self.codec}

    def optimizers(self):
        return {"codec": self.opt}

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        cfg, B = self.config, self.train.batch_size
        idx = torch.randint(len(self.latents), (B,), generator=rng)
        noised = (torch.rand(B, generator=rng) < cfg.noised_fraction).float()
        level = (torch.rand(B, generator=rng) * cfg.latent_noise * noised)[:, None, None, None]
        z = self.latents[idx]
        z = (z + level * torch.randn(z.shape, generator=rng)).to(self.device)
        with torch.no_grad():
            target = self.codec.decode_with(z, "full").clamp(-1, 1)
        out = self.codec.decode_with(z, "fast")
        loss = foreground_weighted_error(out, target, cfg.foreground_weight)
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = optimize(loss, self.opt, self.codec.fast, self.train.grad_clip)
        return {"loss_decoder": loss.item(), "psnr_vs_full": psnr(out.detach(), target).mean().item(), "grad_norm": norm}

    def checkpoint_config(self):
        return {"codec": to_dict(self.codec.config), "base_codec": str(self.config.codec_checkpoint), "stage_config": to_dict(self.config)}
