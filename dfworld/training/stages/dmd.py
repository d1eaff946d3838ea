"""Stage `dmd` (Self Forcing) and what it shares with stream and delta: the critic and its replay buffer.

The generator rolls out a teacher-length clip chunk by chunk with its KV cache and a few
denoising levels per chunk; one exit level, shared by every chunk (and every rank), carries the
gradient; the cache is written from the detached clean output. The DMD loss pulls the clip
toward the teacher (with CFG), away from the critic; the critic learns the generator's
distribution by flow matching on generator windows drawn from a TorchRL replay buffer,
`critic.per_generator` times per generator update.

Real context. With `context_chunks` > 0 a rollout continues the first chunks of a real clip
(written into the cache as the env writes a real start) and generates the rest. With
`scoring="context"` teacher and critic score the window with the context as clean frames (level
0) and the DMD noise on the new frames only, so they judge p(new frames | context); `"window"`
noises the whole window at one level (the trajectory-agnostic teacher). Either way only the new
frames carry the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from tensordict import TensorDict

from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import to_dict
from dfworld.losses.dmd import DMDLoss, dmd_sigma
from dfworld.losses.flow_matching import FlowMatchingLoss
from dfworld.model.loading import transformer_from
from dfworld.rollout import Rollout
from dfworld.schedule import SamplerConfig, sample_sigma
from dfworld.training.distributed import shared_rng
from dfworld.training.loop import TrainConfig, adamw, optimize, set_lr
from dfworld.training.replay import buffer_state, load_buffer_state, make_replay_buffer
from dfworld.training.stages.base import CriticConfig, DistillStage, pad_text
from dfworld.world.datasets import load_clips

SCORINGS = ("context", "window")  # how teacher and critic see a window's committed frames


@dataclass(frozen=True)
class DmdStageConfig:
    """`dfworld train stage=dmd` (Self Forcing)."""

    teacher_checkpoint: str = "runs/teacher/checkpoint"  # the frozen teacher, also the critic's start
    generator_checkpoint: str = "runs/causal/checkpoint"  # the generator to start from (stage causal, or ode)
    clips: str = "data/clips"  # prompts and actions of the rollouts
    guidance: float = 3.0  # teacher CFG in the DMD direction: v_uncond + g (v_cond - v_uncond)
    dmd_shift: float = 3.0  # shift of the DMD noise levels (uniform, shifted, clamped to [0.02, 0.98])
    context_chunks: int = 1  # real chunks a rollout continues (0: from noise)
    scoring: str = "context"  # context: committed frames clean, noise on the new ones; window: the whole window noised
    # beside DMD, the rollout's new frames regressed onto the real clip's (the simulator's continuation of the same
    # context under the same actions): the student keeps what it learned from real data where the teacher is worse
    real_weight: float = 0.0
    critic: CriticConfig = field(default_factory=CriticConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # the generator's levels
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/dmd", steps=600, batch_size=8, lr=5e-5, beta1=0.0, ema=0.99, warmup=20,
                                            checkpoint_every=50, max_minutes=18.0)
    )


class SelfForcingStage(DistillStage):
    """DMD with a critic and a replay buffer; subclasses say how generator windows are produced."""

    start_stages: tuple[str, ...] = ("ode", "causal")  # stages whose checkpoint the generator may start from

    def _setup_distillation(self, config) -> None:
        if config.scoring not in SCORINGS:
            raise ValueError(f"scoring {config.scoring!r} is not one of {SCORINGS}")
        self.setup(config)
        self._load_teacher(config.teacher_checkpoint)
        start = load_checkpoint(config.generator_checkpoint, stage=self.start_stages)
        self.generator = transformer_from(start, "generator").to(self.device)
        if self.generator.config.attention != "block_causal":
            raise ValueError(f"{config.generator_checkpoint}: the generator must be block_causal")
        if "critic" in start.modules():  # a later stage continues the critic
            self.critic = transformer_from(start, "critic", config_key="critic_model")
        else:  # the critic starts as the teacher (Self Forcing)
            self.critic = transformer_from(self.teacher_ckpt, "teacher")
        self.critic = self.critic.to(self.device).train()
        self.generator.train()
        self.levels = len(config.sampler.timesteps)
        self.rollout = Rollout(self.generator, self.conditioner, config.train.batch_size, config.sampler, self.device)
        self.dmd = DMDLoss(self.teacher, self.critic, config.guidance)
        self.critic_loss = FlowMatchingLoss(self.critic)
        self.opt = adamw(self.generator.parameters(), config.train)
        self.critic_train = replace(config.train, lr=config.critic.lr)
        self.critic_opt = adamw(self.critic.parameters(), self.critic_train)
        self.buffer = make_replay_buffer(config.critic.replay_capacity, config.critic.batch_size)

    def trained(self):
        return {"generator": self.generator, "critic": self.critic}

    def ema_modules(self):
        return ["generator"]

    def optimizers(self):
        return {"generator": self.opt, "critic": self.critic_opt}

    def _exit_step(self, step: int) -> int:
        """The denoising level whose output carries the gradient this step (the same on every rank)."""
        return int(torch.randint(self.levels, (1,), generator=shared_rng(self.train.seed, step)))

    def _generator_step(self, step: int) -> bool:
        return step % self.config.critic.per_generator == 0

    def _generator_update(self, step: int, loss: torch.Tensor) -> float:
        set_lr(self.opt, step, self.train, progress=self.progress)
        return optimize(loss, self.opt, self.generator, self.train.grad_clip)

    def _critic_update(self, step: int, windows: TensorDict, rng: torch.Generator) -> dict[str, float]:
        """Store detached generator windows, then flow matching on windows sampled from the replay buffer."""
        self.buffer.extend(windows.cpu())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=rng)))
            batch = self.buffer.sample().to(self.device)
        n = batch.batch_size[0]
        x0 = batch["latents"]
        batch["noise"] = torch.randn(x0.shape, generator=rng).to(self.device)
        sigma = sample_sigma((n, 1), self.shift, rng).expand(n, x0.shape[1]).to(self.device)
        context = torch.arange(x0.shape[1], device=self.device)[None] < batch["context"][:, None]  # [n, F]
        batch["sigma"] = torch.where(context, 0.0, sigma)  # the critic learns the new frames given the clean context
        batch["loss_mask"] = ~context
        loss = self.critic_loss(batch)["loss_flow"]
        set_lr(self.critic_opt, step, self.critic_train, progress=self.progress)
        norm = optimize(loss, self.critic_opt, self.critic, self.train.grad_clip)
        return {"loss_critic": loss.item(), "grad_norm_critic": norm}

    def _clean_frames(self, committed: int) -> int:
        """How many leading frames of a window teacher and critic see clean: the committed ones under context scoring."""
        return committed if self.config.scoring == "context" else 0

    def _windows(self, x, text, mask, actions, committed: int = 0) -> TensorDict:
        """Generator windows [B, F, C, h, w] with their condition, detached (what the critic learns from)."""
        B = x.shape[0]
        context = torch.full((B,), self._clean_frames(committed), dtype=torch.long)
        return TensorDict({"latents": x.detach(), "text": text, "text_mask": mask, "actions": actions, "context": context},
                          batch_size=[B])

    def _dmd_td(self, x, text, mask, actions, rng, loss_mask=None, committed: int = 0) -> TensorDict:
        B, Fr = x.shape[:2]
        level = dmd_sigma((B, 1), self.config.dmd_shift, rng).to(self.device)
        clean = self._clean_frames(committed)
        sigma = level if not clean else torch.where(torch.arange(Fr, device=self.device)[None] < clean, 0.0, level.expand(B, Fr))
        td = TensorDict(
            {"latents": x, "text": text, "text_mask": mask, "actions": actions,
             "noise": torch.randn(x.shape, generator=rng).to(self.device), "sigma": sigma},
            batch_size=[B],
        )
        if loss_mask is not None:
            td["loss_mask"] = loss_mask
        if clean:  # the context frames are given: normalise the direction over the new ones
            td["direction_mask"] = torch.arange(Fr, device=self.device)[None].expand(B, Fr) >= clean
        return td

    def checkpoint_config(self):
        return {**super().checkpoint_config(), "critic_model": to_dict(self.critic.config)}

    def state(self):
        return buffer_state(self.buffer)

    def load_state(self, tensors, meta):
        load_buffer_state(self.buffer, tensors, meta)


class DmdStage(SelfForcingStage):
    name = "dmd"

    def __init__(self, config: DmdStageConfig):
        self._setup_distillation(config)
        clips = load_clips(config.clips)
        self.clip_actions, self.clip_prompts = clips.actions.long(), clips.prompts
        if self.clip_actions.shape[1] < self.clip_frames:
            raise ValueError(f"clips of {self.clip_actions.shape[1]} frames are shorter than the teacher's {self.clip_frames}")
        K = self.generator.config.chunk_frames
        self.context = config.context_chunks * K  # real frames each rollout continues
        if config.context_chunks < 0 or self.context >= self.clip_frames:
            raise ValueError(f"context_chunks={config.context_chunks}: the context must leave new frames in a "
                             f"{self.clip_frames}-frame window")
        if config.real_weight < 0 or (config.real_weight and not self.context):
            raise ValueError(f"real_weight={config.real_weight}: it must be >= 0, and needs context_chunks > 0 (a real start "
                             "whose continuation is known)")
        self.latents = None
        if self.context:
            from dfworld.training.stages.teacher import clip_latents

            # the context frames, or the whole window where the real continuation is a target too
            frames = clips.frames[:, : self.clip_frames if config.real_weight else self.context]
            self.latents = clip_latents(self.codec, frames, self.train.out, self.device)

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        B, K, F, C = self.train.batch_size, self.generator.config.chunk_frames, self.clip_frames, self.context
        exit_step = self._exit_step(step)
        gen_step = self._generator_step(step)
        # 1. a Self Forcing rollout of one teacher-length window per row: the real context, then generated chunks
        idx = torch.randint(len(self.clip_prompts), (B,), generator=rng)
        prompts = [self.clip_prompts[i] for i in idx.tolist()]
        actions = self.clip_actions[idx, :F].to(self.device)
        seeds = torch.randint(2**62, (B,), generator=rng).tolist()
        context = self.latents[idx, :C].to(self.device) if C else None
        self.rollout.reset(list(range(B)), prompts, seeds, context, actions[:, :C] if C else None)
        with torch.set_grad_enabled(gen_step):
            fresh = [self.rollout.generate(actions[:, c : c + K], exit_step=exit_step) for c in range(C, F, K)]
        x = torch.cat(([context] if C else []) + fresh, 1)  # [B, F, C, h, w]
        text, mask = pad_text(self.rollout.text, self.rollout.text_mask, self.teacher.config.text_tokens)
        new = torch.arange(F, device=self.device)[None].expand(B, F) >= C  # the generated frames carry the loss
        out: dict[str, float] = {"exit_step": exit_step}
        # 2. the generator update (DMD)
        if gen_step:
            loss = self.dmd(self._dmd_td(x, text, mask, actions, rng, new if C else None, committed=C))["loss_dmd"]
            out["loss_dmd"] = loss.item()
            if self.config.real_weight:
                real = (x[:, C:].float() - self.latents[idx, C:F].to(self.device)).pow(2).mean()
                loss = loss + self.config.real_weight * real
                out["loss_real"] = real.item()
            out["grad_norm"] = self._generator_update(step, loss)
        # 3. the critic update, on generator clips through the replay buffer
        out.update(self._critic_update(step, self._windows(x, text, mask, actions, committed=C), rng))
        return out
