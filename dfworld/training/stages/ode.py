"""Stage `ode`: the block-causal generator starts from the teacher and regresses its ODE trajectories.

The generator is the teacher's module with block-causal attention (same weights). The teacher
samples `pairs` clips once with the Euler sampler of `dfworld.sampling` on a uniform grid that
holds the generator's few-step levels; the states at those levels and the clean end are the
regression pairs (dfworld.losses.ode), written in shards under the run directory so a stopped
run (or another rank) picks them up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from dfworld.losses.ode import OdeRegressionLoss
from dfworld.model.transformer import VideoTransformer
from dfworld.sampling import euler_sample, initial_noise, teacher_scheduler
from dfworld.schedule import SamplerConfig, student_sigmas
from dfworld.training.distributed import rank, step_seed, world_size
from dfworld.training.loop import TrainConfig, adamw, optimize, set_lr
from dfworld.training.stages.base import DistillStage, StudentConfig
from dfworld.world.datasets import load_clip_conditions


@dataclass(frozen=True)
class OdeStageConfig:
    """`dfworld train stage=ode`."""

    teacher_checkpoint: str = "runs/teacher/checkpoint"  # the frozen teacher (dfworld train stage=teacher)
    clips: str = "data/clips"  # prompts and actions of the trajectories (dfworld data clips)
    pairs: int = 384  # teacher trajectories
    pair_batch: int = 16  # trajectories sampled at once
    euler_steps: int = 16  # teacher Euler steps; their grid must hold the generator's levels
    guidance: float = 3.0  # teacher CFG: v_uncond + g (v_cond - v_uncond)
    student: StudentConfig = field(default_factory=StudentConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # the generator's levels
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/ode", steps=600, lr=1e-4, warmup=20, ema=0.99, checkpoint_every=100,
                                            max_minutes=9.0)
    )


def euler_grid_indices(euler_steps: int, timesteps: tuple[float, ...]) -> list[int]:
    """Where the generator's warped timesteps sit on the teacher's uniform Euler grid (same shift on both)."""
    out = []
    for t in timesteps:
        pos = (1 - t / 1000.0) * euler_steps
        if abs(pos - round(pos)) > 1e-6:
            raise ValueError(
                f"the generator's timestep {t} is not on a {euler_steps}-step Euler grid; pick euler_steps so that "
                f"every (1 - t/1000) * euler_steps is an integer (e.g. a multiple of 4 for 1000/750/500/250)"
            )
        out.append(int(round(pos)))
    return out


@torch.no_grad()
def teacher_trajectories(teacher, text, mask, actions, frames, euler_steps, shift, guidance, keep, rng, repeat_noise) -> torch.Tensor:
    """Euler ODE states [B, len(keep) + 1, F, C, h, w]: the states at grid indices `keep`, then the clean end.

    `repeat_noise`: start every chunk from the same noise, as the generator samples with it.
    """
    x = initial_noise(text.shape[0], frames, teacher.config, repeat_noise, rng).to(text.device)
    end, states = euler_sample(teacher, x, text, mask, actions, guidance, teacher_scheduler(euler_steps, shift, "uniform"), keep)
    return torch.stack(states + [end], dim=1)


class OdeStage(DistillStage):
    name = "ode"

    def __init__(self, config: OdeStageConfig):
        self.setup(config)
        self._load_teacher(config.teacher_checkpoint)
        self.generator = VideoTransformer(self._student_config(config.student)).to(self.device)
        self.generator.load_state_dict(self.teacher.state_dict())  # same module, block-causal attention
        self.keep = euler_grid_indices(config.euler_steps, config.sampler.timesteps)
        self.sigmas = student_sigmas(config.sampler.timesteps, config.sampler.shift).to(self.device)
        grid = teacher_scheduler(config.euler_steps, config.sampler.shift, "uniform").sigmas[self.keep].to(self.device)
        if not torch.allclose(grid, self.sigmas, atol=1e-5):
            raise ValueError(f"Euler grid levels {grid.tolist()} differ from the generator's {self.sigmas.tolist()}")
        self.states, self.text, self.text_mask, self.actions = self._pairs()
        self.loss = OdeRegressionLoss(self.generator)
        self.opt = adamw(self.generator.parameters(), config.train)

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
        mine = [i for n, i in enumerate(shards) if n % world_size() == rank()]
        for i in tqdm(mine, desc="ode pairs", disable=rank() != 0):
            path = folder / pairs_name(i)
            if path.is_file():
                continue
            text, mask = self._text(prompts[i : i + cfg.pair_batch])
            rng = torch.Generator().manual_seed(step_seed(cfg.train.seed, i, 7))
            states = teacher_trajectories(
                self.teacher, text, mask, actions[i : i + cfg.pair_batch].to(self.device), self.clip_frames,
                cfg.euler_steps, cfg.sampler.shift, cfg.guidance, self.keep, rng, cfg.sampler.repeat_noise,
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
        return {"generator": self.generator}

    def optimizers(self):
        return {"generator": self.opt}

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        B, L, K = self.train.batch_size, len(self.keep), self.generator.config.chunk_frames
        idx = torch.randint(len(self.states), (B,), generator=rng)
        level = torch.randint(L + 1, (B, self.clip_frames // K), generator=rng).repeat_interleave(K, 1)  # [B, F]
        td = TensorDict(
            {"states": self.states[idx].float(), "level": level, "text": self.text[idx], "text_mask": self.text_mask[idx],
             "actions": self.actions[idx]},
            batch_size=[B],
        ).to(self.device)
        td["sigmas"] = self.sigmas.expand(B, -1)
        loss = self.loss(td)["loss_ode"]
        set_lr(self.opt, step, self.train, progress=self.progress)
        norm = optimize(loss, self.opt, self.generator, self.train.grad_clip)
        return {"loss_ode": loss.item(), "grad_norm": norm, "lr": self.opt.param_groups[0]["lr"]}
