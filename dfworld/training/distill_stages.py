"""Stages ode, dmd, stream and delta: the distillation chain (DESIGN.md section 3).

Every stage distils from one frozen teacher checkpoint and writes a generator checkpoint that
`dfworld.model.loading.load_generator` (and so `WorldModel-v0`) reads:

- `ode`: the block-causal student starts from the teacher's weights (same module, other
  attention mode) and regresses the teacher's ODE trajectories (dfworld.distill.ode).
- `dmd`: Self Forcing. The student rolls out a teacher-length clip chunk by chunk with its KV
  cache and a few denoising levels per chunk; one exit level, shared by every chunk (and every
  rank), carries the gradient; the cache is written from the detached clean output. The DMD
  loss pulls the clip toward the teacher (with CFG), away from the critic; the critic learns
  the generator's distribution by flow matching on generator clips drawn from a TorchRL replay
  buffer, `critic_per_generator` times per generator update.
- `stream`: streaming long tuning (LongLive). A persistent rollout per row starts from a real
  first frame (or, for a `noise_starts` fraction of rollouts, from noise as the env's reset
  without an image does: its first window is a Self Forcing clip of teacher length, with no
  trust region since there is no history) and advances one chunk per iteration over `horizon` frames; event switches from
  EventWorld event scripts fall on chunk boundaries, where the row's condition changes and its
  KV cache is re-cached under the new text. The DMD window is the last `window_frames` committed
  frames (the overlap) plus the new chunk, scored by teacher and critic under the current text;
  only the new frames carry the loss.
- `delta`: the stream loop with Delta Forcing's trust region (dfworld.distill.delta). Per-chunk
  weights and consistency measures are logged against the chunk index since the last switch
  (`trust_region.jsonl`) and plotted (`trust_region.png`); the stream stage logs the same
  measures, so both runs can be compared.

TorchRL: the losses are LossModules returning loss_* entries; rollouts, windows and batches are
TensorDicts; generator samples reach the critic through a `torchrl.data.ReplayBuffer`. The loop
is `dfworld.training.loop` (TorchRL's loggers; its Trainer assumes an env collector feeding a
replay buffer, while these stages generate their own data with a generator under training).
Under torchrun, gradients are averaged across ranks after each backward (a DDP wrapper cannot
serve a module called several times per step with gradient on one call), and every random
choice the ranks must share (exit level) comes from a rank-independent seed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tensordict import TensorDict
from tqdm.auto import tqdm

from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import build, to_dict
from dfworld.distill.delta import DeltaForcingLoss, TrustRegionConfig, consistency_measures
from dfworld.distill.dmd import DMDLoss, dmd_sigma
from dfworld.distill.flow_matching import FlowMatchingLoss
from dfworld.distill.ode import OdeRegressionLoss
from dfworld.model.loading import TEXT_CACHE, TextConfig, codec_from, conditioner_from, transformer_from
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.rollout import Rollout, SamplerConfig
from dfworld.sampling import guided_velocity, initial_noise
from dfworld.schedule import euler_sigmas, sample_sigma, student_sigmas
from dfworld.training.loop import Stage, TrainConfig, adamw, resolve_device, seed_everything, set_lr, step_seed
from dfworld.world.datasets import load_clip_conditions


@dataclass(frozen=True)
class StudentConfig:
    """Attention of the block-causal student (the rest of its shape is the teacher's)."""

    chunk_frames: int = 4  # frames generated per step
    sink_frames: int = 4  # first frames kept in attention forever
    window_frames: int = 12  # most recent frames in attention besides the sink


@dataclass(frozen=True)
class CriticConfig:
    """The critic (fake score) of DMD: a full-attention copy of the teacher, trained by flow matching."""

    lr: float = 2e-5  # critic learning rate (the generator's is train.lr)
    per_generator: int = 2  # critic updates per generator update (Self Forcing: 5)
    batch_size: int = 8  # generator windows per critic update
    replay_capacity: int = 256  # generator windows kept in the replay buffer


# -- shared pieces -----------------------------------------------------------------------------


def average_gradients(params) -> None:
    """Average gradients over the ranks of a torchrun job (no-op in one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def step_update(loss: torch.Tensor, opt: torch.optim.Optimizer, module: torch.nn.Module, clip: float) -> float:
    """Backward, average over ranks, clip, step; returns the gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in module.parameters() if p.grad is not None]
    average_gradients(params)
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    opt.step()
    return float(norm)


def shared_generator(seed: int, step: int) -> torch.Generator:
    """Random draws every rank must agree on (the exit level)."""
    return torch.Generator().manual_seed(step_seed(seed, step, 0) ^ 0x5EED)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def pad_text(text: torch.Tensor, mask: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad text tokens [B, L, D] and mask [B, L] to `tokens` (fixed shapes for the replay buffer)."""
    pad = tokens - text.shape[1]
    if pad < 0:
        raise ValueError(f"text of {text.shape[1]} tokens exceeds the model's {tokens}")
    return torch.nn.functional.pad(text, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad))


def make_replay_buffer(capacity: int, batch_size: int):
    from torchrl.data import LazyTensorStorage, ReplayBuffer

    return ReplayBuffer(storage=LazyTensorStorage(capacity), batch_size=batch_size)


def buffer_state(rb) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The replay buffer's contents and write position (for exact resume)."""
    sd = rb.state_dict()
    store = sd["_storage"]
    tensors = {}
    if store.get("initialized") and store.get("_storage") is not None:
        data = store["_storage"]
        data = data.to_dict() if hasattr(data, "to_dict") else data
        tensors = {f"rb.{k}": v for k, v in data.items()}
    meta = {"len": int(store.get("_len", 0)), "initialized": bool(store.get("initialized", False)),
            "cursor": int(sd["_writer"]["_cursor"]), "write_count": int(sd["_writer"].get("_write_count", 0))}
    return tensors, meta


def load_buffer_state(rb, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Refill an empty replay buffer with what `buffer_state` saved, in the same slots."""
    if not meta.get("initialized") or meta["len"] == 0:
        return
    n = meta["len"]
    rb.extend(TensorDict({k[3:]: v[:n] for k, v in tensors.items() if k.startswith("rb.")}, batch_size=[n]))
    rb._writer._cursor = meta["cursor"]  # the next slot to overwrite, as before the stop
    rb._writer._write_count = meta["write_count"]


class DistillStage(Stage):
    """What the four stages share: the frozen teacher, its codec and text cache, the student's shape."""

    teacher_checkpoint: str

    def _load_teacher(self, path: str) -> None:
        self.device = resolve_device(self.train.device)
        ckpt = load_checkpoint(path, stage="teacher")
        self.teacher_ckpt = ckpt
        self.teacher = transformer_from(ckpt, "teacher").to(self.device).requires_grad_(False)
        self.codec = codec_from(ckpt).to(self.device).requires_grad_(False)
        self.conditioner = conditioner_from(ckpt)
        self.text_config = build(TextConfig, ckpt.config.get("text", {}), f"{path}: text")
        self.shift = float(ckpt.config.get("shift", 3.0))
        self.clip_frames = int(ckpt.config.get("clip_frames", 16))

    def _student_config(self, student: StudentConfig) -> TransformerConfig:
        cfg = replace(self.teacher.config, attention="block_causal", **to_dict(student))
        if self.clip_frames % cfg.chunk_frames:
            raise ValueError(f"the teacher's clips ({self.clip_frames} frames) are not whole chunks of {cfg.chunk_frames}")
        return cfg

    def _text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        text, mask = self.conditioner(prompts, self.device)
        return pad_text(text, mask, self.teacher.config.text_tokens)

    def extra_weights(self):
        return {f"codec.{k}": v for k, v in self.codec.state_dict().items()}

    def extra_files(self):
        path = Path(self.train.out) / TEXT_CACHE
        Path(self.train.out).mkdir(parents=True, exist_ok=True)
        self.conditioner.save(path)
        return {TEXT_CACHE: path}

    def checkpoint_config(self):
        return {
            "model": to_dict(self.student.config),
            "codec": to_dict(self.codec.config),
            "text": to_dict(self.text_config),
            "sampler": to_dict(self.config.sampler),
            "teacher": {"checkpoint": self.config.teacher_checkpoint, "shift": self.shift, "clip_frames": self.clip_frames},
            "stage_config": to_dict(self.config),
        }


# -- ode -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OdeStageConfig:
    """`dfworld train stage=ode`."""

    teacher_checkpoint: str = "runs/teacher/checkpoint"  # the frozen teacher (dfworld train stage=teacher)
    clips: str = "data/clips"  # prompts and actions of the trajectories (dfworld data clips)
    pairs: int = 384  # teacher trajectories
    pair_batch: int = 16  # trajectories sampled at once
    euler_steps: int = 16  # teacher Euler steps; their grid must hold the student's levels
    guidance: float = 3.0  # teacher CFG: v_uncond + g (v_cond - v_uncond)
    student: StudentConfig = field(default_factory=StudentConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # the student's levels
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out="runs/ode", steps=600, lr=1e-4))


def euler_grid_indices(euler_steps: int, timesteps: tuple[float, ...]) -> list[int]:
    """Where the student's warped timesteps sit on the teacher's Euler grid (same shift on both)."""
    out = []
    for t in timesteps:
        pos = (1 - t / 1000.0) * euler_steps
        if abs(pos - round(pos)) > 1e-6:
            raise ValueError(
                f"the student's timestep {t} is not on a {euler_steps}-step Euler grid; pick euler_steps so that "
                f"every (1 - t/1000) * euler_steps is an integer (e.g. a multiple of 4 for 1000/750/500/250)"
            )
        out.append(int(round(pos)))
    return out


@torch.no_grad()
def teacher_trajectories(teacher, text, mask, actions, frames, euler_steps, shift, guidance, keep, generator, repeat_noise=False) -> torch.Tensor:
    """Euler ODE states [B, len(keep) + 1, F, C, h, w]: the states at grid indices `keep`, then the clean end.

    `repeat_noise`: start every chunk from the same noise, as the student samples with it.
    """
    B = text.shape[0]
    sig = euler_sigmas(euler_steps, shift).tolist()
    x = initial_noise(B, frames, teacher.config, repeat_noise, generator).to(text.device)
    states = []
    for i in range(euler_steps):
        if i in keep:
            states.append(x)
        s = torch.full((B, frames), sig[i], device=x.device)
        v = guided_velocity(teacher, x, s, text, mask, actions, guidance)
        x = x + (sig[i + 1] - sig[i]) * v
    return torch.stack(states + [x], dim=1)


class OdeStage(DistillStage):
    name = "ode"

    def __init__(self, config: OdeStageConfig):
        self.config, self.train = config, config.train
        seed_everything(config.train.seed)
        self._load_teacher(config.teacher_checkpoint)
        self.student = VideoTransformer(self._student_config(config.student)).to(self.device)
        self.student.load_state_dict(self.teacher.state_dict())  # same module, block-causal attention
        self.keep = euler_grid_indices(config.euler_steps, config.sampler.timesteps)
        self.sigmas = student_sigmas(config.sampler.timesteps, config.sampler.shift).to(self.device)
        grid = euler_sigmas(config.euler_steps, config.sampler.shift)[self.keep].to(self.device)
        if not torch.allclose(grid, self.sigmas, atol=1e-5):
            raise ValueError(f"Euler grid levels {grid.tolist()} differ from the student's {self.sigmas.tolist()}")
        self.states, self.text, self.text_mask, self.actions = self._pairs()
        self.loss = OdeRegressionLoss(self.student)
        self.opt = adamw(self.student.parameters(), config.train)

    def _pairs(self):
        """Teacher trajectories, generated once in shards under the run directory (resumable)."""
        from safetensors.torch import load_file, save_file

        cfg = self.config
        actions, prompts = load_clip_conditions(cfg.clips)
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(cfg.train.seed))[: cfg.pairs]
        actions, prompts = actions[order], [prompts[i] for i in order.tolist()]
        if actions.shape[1] < self.clip_frames:
            raise ValueError(f"clips of {actions.shape[1]} frames are shorter than the teacher's {self.clip_frames}")
        actions = actions[:, : self.clip_frames]
        folder = Path(cfg.train.out) / "ode_pairs"
        noise = "-repeat" if cfg.sampler.repeat_noise else ""

        def pairs_name(i: int) -> str:
            return f"pairs-{i:06d}-{cfg.euler_steps}-{cfg.guidance:g}{noise}.safetensors"

        folder.mkdir(parents=True, exist_ok=True)
        shards = list(range(0, len(prompts), cfg.pair_batch))
        world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))
        mine = [i for n, i in enumerate(shards) if n % world == rank()]
        for i in tqdm(mine, desc="ode pairs", disable=rank() != 0):
            path = folder / pairs_name(i)
            if path.is_file():
                continue
            text, mask = self._text(prompts[i : i + cfg.pair_batch])
            gen = torch.Generator().manual_seed(step_seed(cfg.train.seed, i, 7))
            states = teacher_trajectories(
                self.teacher, text, mask, actions[i : i + cfg.pair_batch].to(self.device), self.clip_frames,
                cfg.euler_steps, cfg.sampler.shift, cfg.guidance, self.keep, gen, cfg.sampler.repeat_noise,
            )
            tmp = path.with_suffix(".tmp")
            save_file({"states": states.half().cpu().contiguous()}, str(tmp))
            os.replace(tmp, path)
        deadline = time.time() + 3600
        files = [folder / pairs_name(i) for i in shards]
        while not all(f.is_file() for f in files):  # other ranks' shards
            if time.time() > deadline:
                raise TimeoutError(f"ODE pairs missing in {folder} after an hour")
            time.sleep(0.5)
        states = torch.cat([load_file(str(f))["states"] for f in files])
        text, mask = self._text(prompts)
        return states, text.cpu(), mask.cpu(), actions

    def trained(self):
        return {"generator": self.student}

    def optimizers(self):
        return {"generator": self.opt}

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        B, K = self.train.batch_size, len(self.keep)
        C = self.student.config.chunk_frames
        idx = torch.randint(len(self.states), (B,), generator=generator)
        level = torch.randint(K + 1, (B, self.clip_frames // C), generator=generator).repeat_interleave(C, 1)
        td = TensorDict(
            {"states": self.states[idx].float(), "level": level, "text": self.text[idx], "text_mask": self.text_mask[idx],
             "actions": self.actions[idx]},
            batch_size=[B],
        ).to(self.device)
        td["sigmas"] = self.sigmas.expand(B, -1)
        loss = self.loss(td)["loss_ode"]
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = step_update(loss, self.opt, self.student, self.train.grad_clip)
        return {"loss_ode": loss.item(), "grad_norm": norm, "lr": self.opt.param_groups[0]["lr"]}


# -- dmd -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmdStageConfig:
    """`dfworld train stage=dmd` (Self Forcing)."""

    teacher_checkpoint: str = "runs/teacher/checkpoint"  # the frozen teacher, also the critic's start
    generator_checkpoint: str = "runs/ode/checkpoint"  # the student to start from (stage ode)
    clips: str = "data/clips"  # prompts and actions of the rollouts
    guidance: float = 3.0  # teacher CFG in the DMD direction: v_uncond + g (v_cond - v_uncond)
    dmd_shift: float = 3.0  # shift of the DMD noise levels (uniform, shifted, clamped to [0.02, 0.98])
    critic: CriticConfig = field(default_factory=CriticConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # the student's levels
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/dmd", steps=400, batch_size=8, lr=5e-5, beta1=0.0, ema=0.99, warmup=20)
    )


class SelfForcingStage(DistillStage):
    """DMD with a critic and a replay buffer; subclasses say how generator windows are produced."""

    def _setup_distillation(self, config) -> None:
        self.config, self.train = config, config.train
        seed_everything(config.train.seed)
        self._load_teacher(config.teacher_checkpoint)
        start = load_checkpoint(config.generator_checkpoint, stage=self.start_stages)
        self.student = transformer_from(start, "generator").to(self.device)
        if self.student.config.attention != "block_causal":
            raise ValueError(f"{config.generator_checkpoint}: the generator must be block_causal")
        if "critic" in start.modules():  # a later stage continues the critic
            self.critic = transformer_from(start, "critic", config_key="critic_model")
        else:  # the critic starts as the teacher (Self Forcing)
            self.critic = transformer_from(self.teacher_ckpt, "teacher")
        self.critic = self.critic.to(self.device).train()
        self.student.train()
        self.levels = len(config.sampler.timesteps)
        self.rollout = Rollout(self.student, self.conditioner, config.train.batch_size, config.sampler, self.device)
        self.dmd = DMDLoss(self.teacher, self.critic, config.guidance)
        self.critic_loss = FlowMatchingLoss(self.critic)
        self.opt = adamw(self.student.parameters(), config.train)
        self.critic_train = replace(config.train, lr=config.critic.lr)
        self.critic_opt = adamw(self.critic.parameters(), self.critic_train)
        self.buffer = make_replay_buffer(config.critic.replay_capacity, config.critic.batch_size)

    start_stages: tuple[str, ...] = ("ode",)

    def trained(self):
        return {"generator": self.student, "critic": self.critic}

    def ema_modules(self):
        return ["generator"]

    def optimizers(self):
        return {"generator": self.opt, "critic": self.critic_opt}

    def _generator_step(self, step: int) -> bool:
        return step % self.config.critic.per_generator == 0

    def _critic_update(self, step: int, generator: torch.Generator) -> dict[str, float]:
        """Flow matching on generator windows sampled from the replay buffer."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            batch = self.buffer.sample().to(self.device)
        n = batch.batch_size[0]
        x0 = batch["latents"]
        batch["noise"] = torch.randn(x0.shape, generator=generator).to(self.device)
        batch["sigma"] = sample_sigma((n, 1), self.shift, generator).expand(n, x0.shape[1]).to(self.device)
        loss = self.critic_loss(batch)["loss_flow"]
        set_lr(self.critic_opt, step, self.critic_train, progress=self.progress)
        norm = step_update(loss, self.critic_opt, self.critic, self.train.grad_clip)
        return {"loss_critic": loss.item(), "grad_norm_critic": norm}

    def _dmd_td(self, x, text, mask, actions, generator, loss_mask=None) -> TensorDict:
        B = x.shape[0]
        td = TensorDict(
            {"latents": x, "text": text, "text_mask": mask, "actions": actions,
             "noise": torch.randn(x.shape, generator=generator).to(self.device),
             "sigma": dmd_sigma((B, 1), self.config.dmd_shift, generator).to(self.device)},
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

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        B, C, F = self.train.batch_size, self.student.config.chunk_frames, self.clip_frames
        exit_step = int(torch.randint(self.levels, (1,), generator=shared_generator(self.train.seed, step)))
        gen_step = self._generator_step(step)
        # 1. a Self Forcing rollout of one teacher-length clip per row
        idx = torch.randint(len(self.clip_prompts), (B,), generator=generator)
        prompts = [self.clip_prompts[i] for i in idx.tolist()]
        actions = self.clip_actions[idx, :F].to(self.device)
        seeds = torch.randint(2**62, (B,), generator=generator).tolist()
        self.rollout.reset(list(range(B)), prompts, seeds)
        with torch.set_grad_enabled(gen_step):
            x = torch.cat([self.rollout.generate(actions[:, c : c + C], exit_step=exit_step) for c in range(0, F, C)], 1)
        text, mask = pad_text(self.rollout.text, self.rollout.text_mask, self.teacher.config.text_tokens)
        out: dict[str, float] = {"exit_step": exit_step}
        # 2. the generator update (DMD)
        if gen_step:
            loss = self.dmd(self._dmd_td(x, text, mask, actions, generator))["loss_dmd"]
            set_lr(self.opt, step, self.train, progress=self.progress)
            out.update(loss_dmd=loss.item(), grad_norm=step_update(loss, self.opt, self.student, self.train.grad_clip))
        # 3. the critic update, on generator clips through the replay buffer
        self.buffer.extend(TensorDict({"latents": x.detach(), "text": text, "text_mask": mask, "actions": actions}, batch_size=[B]).cpu())
        out.update(self._critic_update(step, generator))
        return out


# -- stream and delta ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamStageConfig:
    """`dfworld train stage=stream` (streaming long tuning) and `stage=delta` (with the trust region)."""

    teacher_checkpoint: str = "runs/teacher/checkpoint"  # the frozen teacher
    generator_checkpoint: str = "runs/dmd/checkpoint"  # generator and critic to start from (stage dmd)
    horizon: int = 128  # frames per persistent rollout (8 teacher clips)
    switch_gaps: tuple[int, ...] = (32, 48)  # frames between event switches (multiples of the chunk)
    # fraction of persistent rollouts that start from noise, as the env's reset without an image does,
    # instead of from a real first frame; their first window is a Self Forcing clip of teacher length
    noise_starts: float = 0.0
    guidance: float = 3.0
    dmd_shift: float = 3.0
    critic: CriticConfig = field(default_factory=CriticConfig)
    trust_region: TrustRegionConfig = field(default_factory=TrustRegionConfig)  # used by stage delta only
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/stream", steps=400, batch_size=8, lr=3e-5, beta1=0.0, ema=0.99, warmup=20)
    )


@dataclass
class SequencePlan:
    """One row's persistent rollout: actions per frame, events at chunk starts, its first frame."""

    actions: np.ndarray  # [horizon] int64
    events: dict[int, str]  # frame -> event text
    prompt: str  # the condition at frame 0
    first_frame: np.ndarray  # [H, W, 3] uint8


def plan_sequence(seed: int, horizon: int, gaps: tuple[int, ...], world) -> SequencePlan:
    """An EventWorld event script of `horizon` frames with switches every `gaps` frames, played for its first frame."""
    from dfworld.world.episodes import play_episode
    from dfworld.world.suite import plan_episode

    rng = np.random.default_rng(seed)
    times, t = [], int(rng.choice(gaps))
    while t <= horizon - 4:
        times.append(t)
        t += int(rng.choice(gaps))
    ep, _ = plan_episode(f"stream-{seed}", int(rng.integers(2**31)), horizon, times, rng, world)
    rec = play_episode(ep, world)
    events = {e.t: e.text for e in rec.events if e.applied}
    return SequencePlan(rec.actions.astype(np.int64), events, rec.initial_prompt, rec.frames[0])


class StreamStage(SelfForcingStage):
    name = "stream"
    start_stages = ("dmd", "stream", "delta")

    def __init__(self, config: StreamStageConfig):
        from dfworld.world.config import WorldConfig
        from dfworld.world.simulator import EventWorld

        self._setup_distillation(config)
        C = self.student.config.chunk_frames
        if any(g % C for g in config.switch_gaps) or config.horizon % C:
            raise ValueError(f"switch_gaps {config.switch_gaps} and horizon {config.horizon} must be multiples of the chunk ({C})")
        self.overlap = self.clip_frames - C  # committed frames in a teacher-length window
        if not 0.0 <= config.noise_starts <= 1.0:
            raise ValueError(f"noise_starts={config.noise_starts} must be a fraction in [0, 1]")
        if self.overlap > self.student.config.window_frames:
            raise ValueError(f"the window ({self.student.config.window_frames} frames) cannot hold {self.overlap} overlap frames")
        size = self.codec.config.image_size
        self.world = EventWorld(WorldConfig(height=size, width=size))
        self.sequence = -1  # index of the current persistent rollout
        self.plans: list[SequencePlan] = []
        self.last_switch = [-1] * config.train.batch_size
        self.delta = DeltaForcingLoss(self.dmd, config.trust_region) if self.name == "delta" else None
        self.log_path = Path(config.train.out) / "trust_region.jsonl"
        self.next_step = 0

    def _plans(self, sequence: int) -> list[SequencePlan]:
        B = self.train.batch_size
        return [
            plan_sequence(step_seed(self.train.seed, sequence, rank() * B + r), self.config.horizon, self.config.switch_gaps, self.world)
            for r in range(B)
        ]

    def _start_sequence(self, generator: torch.Generator) -> None:
        self.sequence += 1
        self.plans = self._plans(self.sequence)
        B = self.train.batch_size
        # the same choice on every rank and after a resume: a draw from (seed, sequence)
        from_noise = np.random.default_rng([self.train.seed, self.sequence, 0x5EED]).random() < self.config.noise_starts
        context = None
        if not from_noise:
            with torch.no_grad():
                context = self.codec.encode(torch.from_numpy(np.stack([p.first_frame for p in self.plans])).to(self.device))
        seeds = torch.randint(2**62, (B,), generator=generator).tolist()
        self.rollout.reset(list(range(B)), [p.prompt for p in self.plans], seeds, context)
        self.last_switch = [-1] * B

    def _actions(self, start: int, frames: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([p.actions[start : start + frames] for p in self.plans])).to(self.device)

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]:
        B, C = self.train.batch_size, self.student.config.chunk_frames
        self.next_step = step + 1
        exit_step = int(torch.randint(self.levels, (1,), generator=shared_generator(self.train.seed, step)))
        gen_step = self._generator_step(step)
        pos = int(self.rollout.frame[0]) if self.sequence >= 0 else self.config.horizon
        if pos + C > self.config.horizon:  # 1. a new persistent rollout from real first frames
            self._start_sequence(generator)
            pos = int(self.rollout.frame[0])
            new = self.clip_frames - pos  # the first window: the context, then new frames up to a teacher clip
        else:
            new = C
            switch = [r for r, p in enumerate(self.plans) if pos in p.events]
            if switch:  # 2. event switches: the condition changes, the cache is re-cached under it
                self.rollout.set_prompt(switch, [self.plans[r].events[pos] for r in switch])
                for r in switch:
                    self.last_switch[r] = pos
        seeds = torch.randint(2**62, (B,), generator=generator).tolist()
        if not self.rollout.sampler.repeat_noise:  # fresh noise each step; repeated noise keeps the sequence's seeds
            self.rollout.reseed(seeds)
        overlap = pos if pos < self.overlap else self.overlap
        past, past_actions = self.rollout.recent(overlap)
        actions = self._actions(pos, new)
        with torch.set_grad_enabled(gen_step):
            fresh = [self.rollout.generate(actions[:, c : c + C], exit_step=exit_step) for c in range(0, new, C)]
        x = torch.cat([past] + fresh, 1)
        window_actions = torch.cat([past_actions, actions], 1)
        text, mask = pad_text(self.rollout.text, self.rollout.text_mask, self.teacher.config.text_tokens)
        loss_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=self.device)
        loss_mask[:, overlap:] = True
        since = [(pos - s) // C if s >= 0 else -1 for s in self.last_switch]
        out: dict[str, float] = {"exit_step": exit_step, "frame": pos}
        # 3. the generator update on the new frames of the window
        if gen_step:
            td = self._dmd_td(x, text, mask, window_actions, generator, loss_mask)
            if overlap == 0:  # a rollout's first window from noise: a Self Forcing clip, no history to measure
                loss = self.dmd(td)["loss_dmd"]
                out.update(loss_dmd=loss.item())
            elif self.delta is not None:
                td["overlap"] = torch.full((B,), overlap, device=self.device)
                td["switch_free"] = torch.tensor([s < 0 or s * C >= self.clip_frames for s in since], device=self.device)
                res = self.delta(td)
                loss = res["loss_generator"]
                w = res["w"]
                measures = {k: res[f"measure_{k}"] for k in ("relative_step", "history", "direction")}
                out.update(loss_dmd=float(res["loss_dmd"]), loss_continuity=float(res["loss_continuity"]))
            else:
                res = self.dmd(td)
                loss = res["loss_dmd"]
                w = torch.ones(B)
                measures = consistency_measures(x.detach(), res["x0_teacher"], overlap)
                out.update(loss_dmd=loss.item())
            set_lr(self.opt, step, self.train, progress=self.progress)
            out.update(loss_generator=loss.item(), grad_norm=step_update(loss, self.opt, self.student, self.train.grad_clip))
            if overlap > 0:
                out.update(w_mean=float(w.mean()), **{f"{k}_mean": float(v.mean()) for k, v in measures.items()})
                self._log_chunks(step, since, w, measures)
        # 4. the critic update on detached windows
        self.buffer.extend(
            TensorDict({"latents": x.detach(), "text": text, "text_mask": mask, "actions": window_actions}, batch_size=[B]).cpu()
        )
        out.update(self._critic_update(step, generator))
        return out

    def _log_chunks(self, step: int, since: list[int], w: torch.Tensor, measures: dict[str, torch.Tensor]) -> None:
        if rank() != 0:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as f:
            for r in range(len(since)):
                row = {"step": step, "row": r, "since_switch": since[r], "w": float(w[r])}
                row.update({k: float(v[r]) for k, v in measures.items()})
                f.write(json.dumps(row) + "\n")

    def on_start(self, resumed: bool) -> None:
        if not resumed and rank() == 0:
            self.log_path.unlink(missing_ok=True)

    def on_checkpoint(self) -> None:
        if rank() == 0 and self.log_path.is_file():
            from dfworld.bench.plots import plot_trust_region

            plot_trust_region(self.log_path, self.log_path.with_suffix(".png"), title=f"stage {self.name}")

    # -- exact resume: the persistent rollout and the replay buffer --------------------------------
    def state(self):
        tensors, meta = buffer_state(self.buffer)
        if self.sequence >= 0:
            tensors.update({f"rollout.{k}": v for k, v in self.rollout.state().items()})
        meta.update(sequence=self.sequence, last_switch=self.last_switch, prompts=self.rollout.prompts, next_step=self.next_step)
        if self.delta is not None:
            tensors.update({f"delta.{k}": v for k, v in self.delta.named_buffers(recurse=False)})
        return tensors, meta

    def load_state(self, tensors, meta):
        load_buffer_state(self.buffer, tensors, meta)
        self.sequence = int(meta.get("sequence", -1))
        if self.sequence >= 0:
            self.plans = self._plans(self.sequence)
            self.rollout.load_state({k[8:]: v for k, v in tensors.items() if k.startswith("rollout.")}, meta["prompts"])
            self.last_switch = list(meta["last_switch"])
        if self.delta is not None:
            for k, v in self.delta.named_buffers(recurse=False):
                v.copy_(tensors[f"delta.{k}"])
        # a log written past the checkpoint is replayed by the resumed run: drop those rows
        if rank() == 0 and self.log_path.is_file():
            step = int(meta.get("next_step", 0))
            rows = [r for r in self.log_path.read_text().splitlines() if r and json.loads(r)["step"] < step]
            self.log_path.write_text("".join(r + "\n" for r in rows))


class DeltaStage(StreamStage):
    name = "delta"
