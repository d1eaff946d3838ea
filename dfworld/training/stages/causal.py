"""Stage `causal`: the block-causal generator learns to continue real clips by teacher forcing.

Before any distillation, the generator is trained as a world model on the simulator's own
frames (DIAMOND- and GameNGen-style; Causal Forcing's first stage): every chunk of a clip is
noised to its own level and denoised given the clean frames before it, laid out exactly as a
cached rollout holds them (`VideoTransformer.forward(clean=...)`: one pass over a clean and a
noisy copy, each noisy chunk attending the clean chunks the cache would hold and itself). The
clean copy carries context-noise augmentation (GameNGen): on a fraction of the rows it is
noised to a small level drawn per row, and the model reads that level, so a rollout on its own,
imperfect frames stays close to what it was trained on. The first chunk has no context; its
loss (a from-noise start) is down-weighted.

The checkpoint is a generator checkpoint (`load_bundle`, WorldModel-v0) whose sampler is a
many-level Euler ODE sampler (`SamplerConfig(solver="euler")`): the model is measured as it is,
before DMD gives it a few-step sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tensordict import TensorDict

from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import to_dict
from dfworld.losses.flow_matching import FlowMatchingLoss
from dfworld.model.loading import TextConfig, load_widened, transformer_from
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.rollout import Rollout
from dfworld.schedule import SamplerConfig, add_noise, sample_sigma
from dfworld.training.loop import TrainConfig, adamw, optimize, set_lr
from dfworld.training.stages.base import CarriesCodecAndText
from dfworld.training.stages.teacher import CODEC_CARRIERS, clip_conditioner, clip_latents, entity_cells, stage_codec, wording_table
from dfworld.world.datasets import load_clips

EULER_LEVELS = tuple(1000.0 * (1 - i / 16) for i in range(16))  # 1000, 937.5, ..., 62.5


@dataclass(frozen=True)
class CausalStageConfig:
    """`dfworld train stage=causal`."""

    clips: str = "data/clips32"  # clips data set (dfworld data clips n=4096 frames=32); each clip is whole chunks
    codec_checkpoint: str = "runs/teacher/checkpoint"  # any checkpoint carrying the codec (codec, teacher, generator)
    init_checkpoint: str = "runs/teacher/checkpoint"  # start from this teacher's or generator's weights ("": random)
    # the generator: patch 2 x tubelet 4 as the teacher, axial space-time rotary positions, and each chunk's
    # reference frame in its tokens, so what did not change is a copy (docs/experiments/context-conditioning.md)
    model: TransformerConfig = field(
        default_factory=lambda: TransformerConfig(patch=2, tubelet=4, attention="block_causal", rope_space=4, prev_frame=True)
    )
    text: TextConfig = field(default_factory=TextConfig)  # the text encoder
    text_cache: str = ""  # optional safetensors of precomputed embeddings; texts found there skip the encoder
    resample_wording: bool = True  # train each clip under any wording of its event (as the teacher)
    shift: float = 3.0  # timestep shift of the training noise levels
    augment_fraction: float = 0.5  # rows whose clean frames are noised (context-noise augmentation)
    context_noise: float = 0.1  # the most noise on an augmented row's clean frames (uniform up to it)
    first_chunk_weight: float = 0.1  # loss weight of the first chunk, which has no context
    # weight 1 + entity_weight on the latent cells an entity (object, agent, coin) is drawn in, from the clips' true
    # states: the agent moved under the actions is a few cells of a mostly static frame, and the first thing to go
    entity_weight: float = 0.0
    # rows whose history is the model's own rollout from the clip's first real chunk, under the clip's actions, while
    # every later chunk is still trained towards the real frames: the model meets its own drift in training and learns
    # to pull back to the simulator's continuation, known here (scheduled sampling / DAgger; docs/experiments)
    own_history_fraction: float = 0.0
    own_history_levels: int = 4  # Euler levels of those rollouts (no gradient)
    own_history_after: float = 0.0  # fraction of the run (0-1) trained on real history only, before the model's own joins
    sampler: SamplerConfig = field(
        default_factory=lambda: SamplerConfig(timesteps=EULER_LEVELS, shift=3.0, solver="euler")
    )  # the checkpoint's sampler: the flow's ODE over 16 levels
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/causal", steps=100000, lr=1e-3, warmup=50, decay="cosine", final_lr=0.05,
                                            ema=0.995, max_minutes=25.0, precision="auto", checkpoint_every=100)
    )

    def __post_init__(self) -> None:
        if self.model.attention != "block_causal":
            raise ValueError(f"the causal stage trains a block_causal generator; got model.attention={self.model.attention!r}")
        if not 0 <= self.augment_fraction <= 1 or not 0 <= self.context_noise < 1:
            raise ValueError(f"augment_fraction ({self.augment_fraction}) must be in [0, 1] and context_noise "
                             f"({self.context_noise}) in [0, 1)")
        if not 0 <= self.own_history_after < 1:
            raise ValueError(f"own_history_after ({self.own_history_after}) must be in [0, 1)")
        if not 0 <= self.own_history_fraction <= 1 or self.own_history_levels < 1:
            raise ValueError(f"own_history_fraction ({self.own_history_fraction}) must be in [0, 1] and own_history_levels "
                             f"({self.own_history_levels}) at least 1")
        if self.first_chunk_weight < 0 or self.entity_weight < 0:
            raise ValueError(f"first_chunk_weight ({self.first_chunk_weight}) and entity_weight ({self.entity_weight}) must be >= 0")


class CausalStage(CarriesCodecAndText):
    name = "causal"

    def __init__(self, config: CausalStageConfig):
        self.setup(config)
        cfg = config.model
        self.codec = stage_codec(cfg, config.text, config.codec_checkpoint, self.device).requires_grad_(False)

        # 1. data: every clip's latents (cached per codec), its actions, and its wordings
        clips = load_clips(config.clips)
        if clips.frames.shape[1] % cfg.chunk_frames:
            raise ValueError(f"clips of {clips.frames.shape[1]} frames are not whole chunks of {cfg.chunk_frames}")
        self.latents = clip_latents(self.codec, clips.frames, self.train.out, self.device)
        self.actions = clips.actions.long()
        self.entity_cells = entity_cells(clips, self.latents.shape[-1]) if config.entity_weight > 0 else None
        self.conditioner = clip_conditioner(config.text, config.text_cache, clips.prompts)
        self.text, self.text_mask, self.wording = wording_table(self.conditioner, clips.prompts, config.resample_wording)

        # 2. the generator, from a teacher's or a generator's weights
        self.generator = VideoTransformer(cfg).to(self.device)
        if config.init_checkpoint:
            ckpt = load_checkpoint(config.init_checkpoint, stage=CODEC_CARRIERS)
            source = transformer_from(ckpt, "teacher" if ckpt.config.get("stage") == "teacher" else "generator")
            load_widened(self.generator, source, f"init_checkpoint {config.init_checkpoint!r}")
        self.loss = FlowMatchingLoss(self.generator)
        self.opt = adamw(self.generator.parameters(), config.train)

    def trained(self):
        return {"generator": self.generator}

    def optimizers(self):
        return {"generator": self.opt}

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        cfg, B = self.config, self.train.batch_size
        K = cfg.model.chunk_frames
        idx = torch.randint(len(self.latents), (B,), generator=rng)
        x0 = self.latents[idx]
        Fr = x0.shape[1]
        noise, clean_noise = torch.randn(x0.shape, generator=rng), torch.randn(x0.shape, generator=rng)
        sigma = sample_sigma((B, Fr // K), cfg.shift, rng).repeat_interleave(K, 1)  # [B, F]: a level per chunk
        augmented = torch.rand(B, generator=rng) < cfg.augment_fraction
        level = torch.rand(B, generator=rng) * cfg.context_noise * augmented  # [B]
        clean_sigma = level[:, None].expand(B, Fr).contiguous()
        weight = torch.ones(B, Fr)
        weight[:, :K] = cfg.first_chunk_weight
        W = self.wording.shape[1]
        words = self.wording[idx, torch.randint(W, (B,), generator=rng) if W > 1 else 0]
        history = x0
        if cfg.own_history_fraction > 0 and self.progress >= cfg.own_history_after:  # drawn only then (random stream)
            own = torch.rand(B, generator=rng) < cfg.own_history_fraction
            if bool(own.any()):
                history = x0.clone()
                history[own] = self.own_history(x0[own], self.actions[idx][own], words[own], rng)
        td = TensorDict(
            {"latents": x0, "noise": noise, "sigma": sigma, "text": self.text[words], "text_mask": self.text_mask[words],
             "actions": self.actions[idx], "clean": add_noise(history, clean_noise, clean_sigma), "clean_sigma": clean_sigma,
             "loss_mask": weight},
            batch_size=[B],
        ).to(self.device)
        if self.entity_cells is not None:
            td["loss_weight"] = (1 + cfg.entity_weight * self.entity_cells[idx].float()).to(self.device)
        loss = self.loss(td)["loss_flow"]
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = optimize(loss, self.opt, self.generator, self.train.grad_clip)
        return {"loss_flow": loss.item(), "grad_norm": norm, "lr": self.opt.param_groups[0]["lr"]}

    @torch.no_grad()
    def own_history(self, x0: torch.Tensor, actions: torch.Tensor, words: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Clips [n, F, ...] whose chunks after the first are the generator's own rollout from that real chunk."""
        n, K = x0.shape[0], self.config.model.chunk_frames
        L = self.config.own_history_levels
        sampler = SamplerConfig(timesteps=tuple(1000.0 * (1 - i / L) for i in range(L)), shift=self.config.sampler.shift, solver="euler")
        rollout = Rollout(self.generator, self.conditioner, n, sampler, self.device)
        seeds = torch.randint(2**31 - 1, (n,), generator=rng).tolist()
        rollout.reset(list(range(n)), ["(clip wording)"] * n, seeds, x0[:, :K].to(self.device), actions[:, :K],
                      encoded=(self.text[words].to(self.device), self.text_mask[words].to(self.device)))
        chunks = [rollout.generate(actions[:, j : j + K]).cpu() for j in range(K, x0.shape[1], K)]
        return torch.cat([x0[:, :K], *chunks], 1)

    def checkpoint_config(self):
        return {
            "model": to_dict(self.config.model),
            "codec": to_dict(self.codec.config),
            "text": to_dict(self.config.text),
            "sampler": to_dict(self.config.sampler),
            "clip_frames": int(self.latents.shape[1]),
            "stage_config": to_dict(self.config),
        }
