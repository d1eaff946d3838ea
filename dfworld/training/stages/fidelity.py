"""Stage `fidelity`: the generator trained on its own rollouts against the simulator's frames.

Every distillation stage scores a rollout against a teacher, and the teacher does not know an
episode's future: DMD, streaming long tuning and Delta Forcing match the generator to what the
teacher finds plausible, and drift from the simulator's continuation is not what they measure. A
world model of a known simulator has that continuation: each step plays `batch_size` fresh
EventWorld episodes (the stream stage's plans: a random walk of actions, an event every
`switch_gaps` frames at a chunk start), starts each from its real start frames as the env and the
bench do, rolls the generator out over `frames` frames under the episode's actions and events with
its own sampler, and trains it to the simulator's frames (their codec latents) with gradient through
its own history (`dfworld.training.unroll`): a chunk's loss reaches the chunks that drew its context,
so the generator learns what its errors do to the frames after them. This is the autoregressive
fine-tuning of learned simulators (several steps unrolled against the truth), not a part of Delta
Forcing's recipe; docs/experiments/fidelity-stage.md measures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import build
from dfworld.model.loading import GENERATOR_STAGES, TextConfig, codec_from, conditioner_from, load_widened, transformer_from
from dfworld.model.transformer import SKIP_SCALE, VideoTransformer
from dfworld.schedule import SamplerConfig
from dfworld.training.distributed import rank, step_seed
from dfworld.training.loop import TrainConfig, adamw, optimize, set_lr
from dfworld.training.stages.base import CarriesCodecAndText, pad_text
from dfworld.training.stages.stream import plan_sequence
from dfworld.training.unroll import Event, unroll
from dfworld.world.render import entity_boxes_mask


@dataclass(frozen=True)
class FidelityStageConfig:
    """`dfworld train stage=fidelity`.

    The defaults are one run standing for the three the shipped default had (docs/experiments/fidelity-stage.md: 25
    minutes of 32-frame episodes, 25 of 48, 25 of 48 with entity_weight 3, each its own cosine); this one run was not
    itself measured.
    """

    generator_checkpoint: str = "runs/delta/checkpoint"  # the generator to tune (any generator stage)
    frames: int = 32  # generated frames per episode after its real start (whole chunks; the window rolls over at 12)
    # a curriculum: from `long_from` of the run on (0-1), episodes of `long_frames` frames (0: `frames` throughout)
    long_frames: int = 48
    long_from: float = 1 / 3
    switch_gaps: tuple[int, ...] = (8, 12, 16, 20, 24)  # frames between an episode's events (multiples of the chunk)
    # the share of each batch's episodes whose actions seek the coin (chosen each chunk from the state), so that
    # pick-ups (the coin gone, a new one elsewhere: the env's reward) are trained as often as an agent meets them
    seek_fraction: float = 0.0
    # weight 1 + entity_weight on the latent cells an object, the agent or the coin covers in the simulator's frame:
    # what the faithful test reads is a few cells of a mostly static frame
    entity_weight: float = 3.0
    # give a generator without `model.prev_skip` the output skip from its reference frame (the gate from 0, so the run
    # starts from the generator as it was): a copy of what did not change then costs the network nothing
    add_skip: bool = False
    # switch a generator's reference from its last committed frame to its last committed chunk, frame by frame
    # (`model.prev_chunk`; the same weights): each token then reads how what moves near it moved
    prev_chunk: bool = False
    skip_lr_scale: float = 10.0  # the skip gate's learning rate over train.lr (the causal stage's 1e-3 by default)
    # the sampler trained through and written with the checkpoint: one level, what the shipped default runs (issue 25)
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(timesteps=(1000.0,)))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/fidelity", steps=100000, batch_size=8, lr=1e-4, warmup=20, decay="cosine",
                                            final_lr=0.1, ema=0.99, max_minutes=75.0, checkpoint_every=50)
    )

    def __post_init__(self) -> None:
        if self.frames < 1 or self.long_frames < 0 or not self.switch_gaps or min(self.switch_gaps) < 1:
            raise ValueError(f"frames ({self.frames}) and every switch gap ({list(self.switch_gaps)}) must be positive, "
                             f"long_frames ({self.long_frames}) at least 0")
        if not 0 <= self.seek_fraction <= 1:
            raise ValueError(f"seek_fraction ({self.seek_fraction}) must be a fraction in [0, 1]")
        if not 0 <= self.long_from <= 1:
            raise ValueError(f"long_from ({self.long_from}) must be a fraction of the run in [0, 1]")
        if self.entity_weight < 0 or self.skip_lr_scale <= 0:
            raise ValueError(f"entity_weight ({self.entity_weight}) must be >= 0 and skip_lr_scale ({self.skip_lr_scale}) positive")


class FidelityStage(CarriesCodecAndText):
    name = "fidelity"

    def __init__(self, config: FidelityStageConfig):
        from dfworld.world.config import WorldConfig
        from dfworld.world.simulator import EventWorld

        self.setup(config)
        start = load_checkpoint(config.generator_checkpoint, stage=GENERATOR_STAGES)
        self.source = start.config
        self.generator = transformer_from(start, "generator")
        if config.add_skip and not self.generator.config.prev_skip:
            if not self.generator.config.prev_frame:
                raise ValueError(f"add_skip: {config.generator_checkpoint} reads no reference frame (model.prev_frame false)")
            source, self.generator = self.generator, VideoTransformer(replace(self.generator.config, prev_skip=True))
            load_widened(self.generator, source, f"generator_checkpoint {config.generator_checkpoint!r}")
        if config.prev_chunk and not self.generator.config.prev_chunk:
            if not self.generator.config.prev_frame:
                raise ValueError(f"prev_chunk: {config.generator_checkpoint} reads no reference frame (model.prev_frame false)")
            source, self.generator = self.generator, VideoTransformer(replace(self.generator.config, prev_chunk=True))
            self.generator.load_state_dict(source.state_dict())
        self.generator.to(self.device).train()
        cfg, K = self.generator.config, self.generator.config.chunk_frames
        if cfg.attention != "block_causal":
            raise ValueError(f"{config.generator_checkpoint}: the generator must be block_causal")
        if config.frames % K or config.long_frames % K or any(g % K for g in config.switch_gaps):
            raise ValueError(f"frames ({config.frames}), long_frames ({config.long_frames}) and switch_gaps {list(config.switch_gaps)} "
                             f"must be multiples of the chunk ({K})")
        self.codec = codec_from(start).to(self.device).requires_grad_(False)
        self.conditioner = conditioner_from(start)
        self.text_config = build(TextConfig, start.config.get("text", {}), f"{config.generator_checkpoint}: text")
        size = self.codec.config.image_size
        self.world = EventWorld(WorldConfig(height=size, width=size))
        gate = [p for n, p in self.generator.named_parameters() if n == "skip_gate"]
        rest = [p for n, p in self.generator.named_parameters() if n != "skip_gate"]
        self.opt = adamw([{"params": rest}, *([{"params": gate, "lr_scale": config.skip_lr_scale}] if gate else [])], config.train)

    def trained(self):
        return {"generator": self.generator}

    def optimizers(self):
        return {"generator": self.opt}

    @property
    def episode_frames(self) -> int:
        """Generated frames per episode at this point of the run (the curriculum)."""
        c = self.config
        return c.long_frames if c.long_frames and self.progress >= c.long_from else c.frames

    def _text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        text, mask = self.conditioner(prompts, self.device)
        return pad_text(text, mask, self.generator.config.text_tokens)

    def episodes(self, step: int):
        """This step's episodes (the same on a resume): real start latents [B, n, ...], the simulator's latents [B, F, ...],
        the loss weight of their cells [B, F, h, w], actions [B, F], prompts, and the events before each chunk."""
        B, K, F = self.train.batch_size, self.generator.config.chunk_frames, self.episode_frames
        seekers = round(self.config.seek_fraction * B)  # the first rows seek the coin
        plans = [plan_sequence(step_seed(self.train.seed, step, rank() * B + r), F, self.config.switch_gaps, K, self.world, r < seekers)
                 for r in range(B)]
        with torch.no_grad():
            pixels = torch.from_numpy(np.stack([np.concatenate([p.start_frames, p.frames]) for p in plans])).to(self.device)
            z = self.codec.encode(pixels.flatten(0, 1)).unflatten(0, pixels.shape[:2])
        n, h = plans[0].start_frames.shape[0], z.shape[-1]
        weight = torch.ones(z.shape[:1] + (F,) + z.shape[-2:], device=self.device)
        if self.config.entity_weight > 0:
            boxes = torch.from_numpy(np.stack([entity_boxes_mask(p.states, self.world.config) for p in plans])).float()
            weight = weight + self.config.entity_weight * (torch.nn.functional.adaptive_max_pool2d(boxes, h) > 0).to(self.device)
        events = []
        for j in range(1, F // K):
            texts = [p.events.get(j * K) for p in plans]
            if any(texts):
                rows = torch.tensor([t is not None for t in texts], device=self.device)
                text, mask = self._text([t or p.prompt for t, p in zip(texts, plans)])
                events.append(Event(j, rows, text, mask))
        actions = torch.from_numpy(np.stack([p.actions for p in plans])).to(self.device)
        return z[:, :n], z[:, n:], weight, actions, [p.prompt for p in plans], events

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        B, cfg = self.train.batch_size, self.generator.config
        context, target, weight, actions, prompts, events = self.episodes(step)
        text, mask = self._text(prompts)
        chunks, levels = target.shape[1] // cfg.chunk_frames, len(self.config.sampler.timesteps)
        per = 1 if self.config.sampler.repeat_noise else chunks  # repeat_noise: every chunk of a row draws its noise alike
        noise = torch.randn((B, per, levels, cfg.chunk_frames) + target.shape[2:], generator=rng).to(self.device)
        out = unroll(self.generator, self.config.sampler, text, mask, context, torch.zeros(context.shape[:2], dtype=torch.long,
                     device=self.device), actions, noise, events)
        err = ((out - target).square().mean(2) * weight).sum((2, 3)) / weight.sum((2, 3))  # [B, F], entity cells weighted
        loss = err.mean()
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = optimize(loss, self.opt, self.generator, self.train.grad_clip)
        per_chunk = err.detach().unflatten(1, (chunks, cfg.chunk_frames)).mean((0, 2))
        skip = {"skip_gate": SKIP_SCALE * self.generator.skip_gate.item()} if cfg.prev_skip else {}  # g of the skip, as applied
        return {"frames": target.shape[1], "loss_fidelity": loss.item(), "loss_first_chunk": float(per_chunk[0]),
                "loss_last_chunk": float(per_chunk[-1]), "grad_norm": norm, "lr": self.opt.param_groups[0]["lr"], **skip}

    def checkpoint_config(self):
        return self.generator_checkpoint_config(self.source.get("teacher"))
