"""Stage `dmd` (Self Forcing) and what it shares with stream and delta: the critic and its replay buffer.

The generator rolls out a teacher-length clip chunk by chunk with its KV cache and a few
denoising levels per chunk; one exit level, shared by every chunk (and every rank), carries the
gradient; the cache is written from the detached clean output. The DMD loss pulls the clip
toward the teacher (with CFG), away from the critic; the critic learns the generator's
distribution by flow matching on generator windows drawn from a TorchRL replay buffer,
`critic.per_generator` times per generator update.
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
from dfworld.training.loop import TrainConfig, adamw, optimize, seed_everything, set_lr
from dfworld.training.replay import buffer_state, load_buffer_state, make_replay_buffer
from dfworld.training.stages.base import CriticConfig, DistillStage, pad_text
from dfworld.world.datasets import load_clip_conditions


@dataclass(frozen=True)
class DmdStageConfig:
    """`dfworld train stage=dmd` (Self Forcing)."""

    teacher_checkpoint: str = "runs/teacher/checkpoint"  # the frozen teacher, also the critic's start
    generator_checkpoint: str = "runs/ode/checkpoint"  # the generator to start from (stage ode)
    clips: str = "data/clips"  # prompts and actions of the rollouts
    guidance: float = 3.0  # teacher CFG in the DMD direction: v_uncond + g (v_cond - v_uncond)
    dmd_shift: float = 3.0  # shift of the DMD noise levels (uniform, shifted, clamped to [0.02, 0.98])
    critic: CriticConfig = field(default_factory=CriticConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # the generator's levels
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/dmd", steps=600, batch_size=8, lr=5e-5, beta1=0.0, ema=0.99, warmup=20,
                                            checkpoint_every=50, max_minutes=18.0)
    )


class SelfForcingStage(DistillStage):
    """DMD with a critic and a replay buffer; subclasses say how generator windows are produced."""

    start_stages: tuple[str, ...] = ("ode",)  # stages whose checkpoint the generator may start from

    def _setup_distillation(self, config) -> None:
        self.config, self.train = config, config.train
        seed_everything(config.train.seed)
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
        batch["sigma"] = sample_sigma((n, 1), self.shift, rng).expand(n, x0.shape[1]).to(self.device)
        loss = self.critic_loss(batch)["loss_flow"]
        set_lr(self.critic_opt, step, self.critic_train, progress=self.progress)
        norm = optimize(loss, self.critic_opt, self.critic, self.train.grad_clip)
        return {"loss_critic": loss.item(), "grad_norm_critic": norm}

    def _windows(self, x, text, mask, actions) -> TensorDict:
        """Generator windows [B, F, C, h, w] with their condition, detached (what the critic learns from)."""
        return TensorDict({"latents": x.detach(), "text": text, "text_mask": mask, "actions": actions}, batch_size=[x.shape[0]])

    def _dmd_td(self, x, text, mask, actions, rng, loss_mask=None) -> TensorDict:
        B = x.shape[0]
        td = TensorDict(
            {"latents": x, "text": text, "text_mask": mask, "actions": actions,
             "noise": torch.randn(x.shape, generator=rng).to(self.device),
             "sigma": dmd_sigma((B, 1), self.config.dmd_shift, rng).to(self.device)},
            batch_size=[B],
        )
        if loss_mask is not None:
            td["loss_mask"] = loss_mask
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
        self.clip_actions, self.clip_prompts = load_clip_conditions(config.clips)
        if self.clip_actions.shape[1] < self.clip_frames:
            raise ValueError(f"clips of {self.clip_actions.shape[1]} frames are shorter than the teacher's {self.clip_frames}")

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        B, K, F = self.train.batch_size, self.generator.config.chunk_frames, self.clip_frames
        exit_step = self._exit_step(step)
        gen_step = self._generator_step(step)
        # 1. a Self Forcing rollout of one teacher-length clip per row
        idx = torch.randint(len(self.clip_prompts), (B,), generator=rng)
        prompts = [self.clip_prompts[i] for i in idx.tolist()]
        actions = self.clip_actions[idx, :F].to(self.device)
        seeds = torch.randint(2**62, (B,), generator=rng).tolist()
        self.rollout.reset(list(range(B)), prompts, seeds)
        with torch.set_grad_enabled(gen_step):
            x = torch.cat([self.rollout.generate(actions[:, c : c + K], exit_step=exit_step) for c in range(0, F, K)], 1)
        text, mask = pad_text(self.rollout.text, self.rollout.text_mask, self.teacher.config.text_tokens)
        out: dict[str, float] = {"exit_step": exit_step}
        # 2. the generator update (DMD)
        if gen_step:
            loss = self.dmd(self._dmd_td(x, text, mask, actions, rng))["loss_dmd"]
            out.update(loss_dmd=loss.item(), grad_norm=self._generator_update(step, loss))
        # 3. the critic update, on generator clips through the replay buffer
        out.update(self._critic_update(step, self._windows(x, text, mask, actions), rng))
        return out
