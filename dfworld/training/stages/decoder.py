"""Stage `decoder`: a fast decoder distilled from the codec's own (dfworld.model.fast_decoder).

The codec comes from any checkpoint that carries one and stays frozen; only the fast decoder
learns, to give the full decoder's pixels for the same latents. Its inputs are the latents of
real frames and, on a share of each batch, the same latents with Gaussian noise added (a
generator's latents are close to the codec's manifold, not on it); with `generator_checkpoint`,
a share of each batch is a generator's own latents, from rollouts made as the env makes them
(real start, its sampler, random-walk actions, events), which are what the envs decode. The
target is always the full decoder's output, so the probes read the fast decoder's frames as
they read the full one's.
The loss weights the pixels unlike their frame's median colour (the objects and the agent, a
small share of the frame), as the codec's own training does.

The checkpoint carries the whole codec, fast decoder included (stage "decoder"): `dfworld
pipeline`'s ship puts that fast decoder into the shipped generators whose codec it was trained
on, and the envs decode with it where a checkpoint carries one (`decoder="full"` asks for the VAE's).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dfworld.checkpoint import checkpoint_digest, load_checkpoint
from dfworld.configuration import to_dict
from dfworld.model.codec import LatentCodec
from dfworld.model.loading import codec_from
from dfworld.training.loop import Stage, TrainConfig, adamw, optimize, set_lr
from dfworld.training.stages.codec import foreground_weighted_error, psnr
from dfworld.training.stages.teacher import clip_latents, tensor_digest
from dfworld.world.config import WorldConfig
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
    # weight of the L1 between the sky's and the ground's per-channel medians (what the probes read time and weather
    # from: dfworld.world.probes.read_scene) of the fast and the full decoder's frames
    scene_weight: float = 2.0
    # a generator of the same codec whose own rollouts' latents the decoder also learns from ("": real frames only)
    generator_checkpoint: str = "runs/fidelity/checkpoint"
    generated_fraction: float = 0.5  # rows of each batch drawn from those rollouts (with a generator)
    generated_episodes: int = 32  # rollouts made once at the start (cached in train.out)
    generated_frames: int = 240  # generated frames per rollout after its real start (whole chunks; the bench's length)
    switch_gaps: tuple[int, ...] = (8, 12, 16, 20, 24)  # frames between a rollout's events (the fidelity stage's)
    # no EMA: the checkpoint's codec weights outside the fast decoder stay bit for bit the base codec's, which is how
    # ship knows which generators it belongs to. The defaults are one run standing for the two the shipped default's
    # decoder had (docs/experiments/rollout-speed.md, session 25: 3,000 steps at scene_weight 0, then 1,500 at 2 and
    # lr 1e-3 from it); this one run was not itself measured.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/decoder", steps=4000, batch_size=64, lr=2e-3, ema=0.0, warmup=20,
                                            decay="cosine", final_lr=0.05, checkpoint_every=250, max_minutes=35.0)
    )

    def __post_init__(self) -> None:
        if not 0 <= self.noised_fraction <= 1 or self.latent_noise < 0:
            raise ValueError(f"noised_fraction ({self.noised_fraction}) must be in [0, 1] and latent_noise "
                             f"({self.latent_noise}) >= 0")
        if self.scene_weight < 0:
            raise ValueError(f"scene_weight ({self.scene_weight}) must be >= 0")
        if not 0 <= self.generated_fraction <= 1 or self.generated_episodes < 1 or self.generated_frames < 1:
            raise ValueError(f"generated_fraction ({self.generated_fraction}) must be in [0, 1], generated_episodes "
                             f"({self.generated_episodes}) and generated_frames ({self.generated_frames}) positive")


def generated_latents(checkpoint: str, codec: LatentCodec, config: DecoderStageConfig, out: str | Path, device,
                      batch: int = 16) -> torch.Tensor:
    """The latents [episodes * frames, C, h, w] of a generator's own rollouts, made as the env makes them.

    Each rollout starts from an EventWorld episode's real start frames (the fidelity stage's plans:
    a random walk of actions, an event every few chunks) and runs the checkpoint's own sampler under
    inference, as `WorldModel-v0` does. The generator must carry `codec` (ValueError otherwise). Cached
    in `out` under the checkpoint's digest (weights and configs, its sampler included) and the plan's settings.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from dfworld.model.loading import load_bundle
    from dfworld.rollout import Rollout
    from dfworld.training.stages.stream import plan_sequence
    from dfworld.world.simulator import EventWorld

    bundle = load_bundle(checkpoint)
    if codec_digest(bundle.codec) != codec_digest(codec):
        raise ValueError(f"generator_checkpoint {checkpoint!r} carries another codec than codec_checkpoint: the fast decoder "
                         "would learn latents of a codec it is not trained for")
    K, E, F = bundle.generator.config.chunk_frames, config.generated_episodes, config.generated_frames
    if F % K or any(g % K for g in config.switch_gaps):
        raise ValueError(f"generated_frames ({F}) and switch_gaps {list(config.switch_gaps)} must be multiples of the chunk ({K})")
    key = tensor_digest(torch.tensor([E, F, config.train.seed, *config.switch_gaps]))
    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / f"generated-{checkpoint_digest(checkpoint)[:16]}-{key[:8]}-{E}x{F}.safetensors"
    if path.is_file():
        return load_file(str(path))["latents"]
    size = codec.config.image_size
    world = EventWorld(WorldConfig(height=size, width=size))
    generator, enc = bundle.generator.to(device).eval(), bundle.codec.to(device).eval()
    rollouts = []
    for b0 in tqdm(range(0, E, batch), desc="generator rollouts", leave=False):
        n = min(batch, E - b0)
        plans = [plan_sequence(config.train.seed * 1_000_003 + b0 + r, F, config.switch_gaps, K, world) for r in range(n)]
        roll = Rollout(generator, bundle.conditioner, n, bundle.sampler, device)
        with torch.no_grad():
            start = enc.encode(torch.from_numpy(np.stack([p.start_frames for p in plans])).to(device))
        roll.reset(list(range(n)), [p.prompt for p in plans], [b0 + r for r in range(n)], context=start)
        actions, chunks = torch.from_numpy(np.stack([p.actions for p in plans])), []
        for f in range(0, F, K):
            rows = [r for r, p in enumerate(plans) if f and f in p.events]
            if rows:
                roll.set_prompt(rows, [plans[r].events[f] for r in rows])
            chunks.append(roll.generate(actions[:, f : f + K].to(device)).cpu())
        rollouts.append(torch.cat(chunks, 1))  # [n, F, C, h, w]
    lat = torch.cat(rollouts).flatten(0, 1)
    save_file({"latents": lat.contiguous()}, str(path))
    return lat


def scene_error(out: torch.Tensor, target: torch.Tensor, sky_rows: int) -> torch.Tensor:
    """Per row [B], the mean L1 between the per-channel medians of the sky rows and of the ground rows of pixels
    [B, 3, H, W]: the features the probes read a frame's time and weather from."""
    def medians(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., :sky_rows, :].flatten(2).median(2).values, x[..., sky_rows:, :].flatten(2).median(2).values], 1)

    return (medians(out) - medians(target)).abs().mean(1)


def codec_digest(codec: LatentCodec) -> str:
    """The digest of a codec's weights outside its fast decoder (which codec it is)."""
    state = {k: v for k, v in codec.state_dict().items() if not k.startswith("fast.")}
    return tensor_digest(*(state[k] for k in sorted(state)))


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
        self.sky_rows = WorldConfig(height=cfg.image_size, width=cfg.image_size).sky_rows
        self.generated = (generated_latents(config.generator_checkpoint, base, config, self.train.out, self.device)
                          if config.generator_checkpoint else None)
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
        z = z + level * torch.randn(z.shape, generator=rng)
        G = round(cfg.generated_fraction * B) if self.generated is not None else 0
        if G:  # the first G rows: the generator's own latents, as they are
            z[:G] = self.generated[torch.randint(len(self.generated), (G,), generator=rng)]
        z = z.to(self.device)
        with torch.no_grad():
            target = self.codec.decode_with(z, "full").clamp(-1, 1)
        out = self.codec.decode_with(z, "fast")
        scene = scene_error(out, target, self.sky_rows)
        loss = foreground_weighted_error(out, target, cfg.foreground_weight) + cfg.scene_weight * scene.mean()
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = optimize(loss, self.opt, self.codec.fast, self.train.grad_clip)
        quality = psnr(out.detach(), target)
        parts = {"psnr_generated": quality[:G], "psnr_vs_full": quality[G:], "scene_error_generated": scene.detach()[:G],
                 "scene_error": scene.detach()[G:]}
        return {"loss_decoder": loss.item(), **{k: v.mean().item() for k, v in parts.items() if len(v)}, "grad_norm": norm}

    def checkpoint_config(self):
        return {"codec": to_dict(self.codec.config), "base_codec": str(self.config.codec_checkpoint), "stage_config": to_dict(self.config)}
