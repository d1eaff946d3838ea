"""The training loop every stage runs on: seeds, DDP, EMA, logging, checkpoints, exact resume.

A stage (codec, teacher, ODE init, DMD, streaming, Delta Forcing) supplies its modules, its
optimizers and one `train_step`; this loop does the rest:

1. seeds every step from (seed, step, rank), so a resumed run draws exactly the batches and
   noise an uninterrupted run would have drawn;
2. under torchrun, starts a process group (gloo on CPU, NCCL on CUDA); every stage steps its
   optimizers through `optimize`, which averages gradients over the ranks
   (dfworld.training.distributed), so the stages run the same code in one process or many;
3. keeps an EMA of the modules the stage names;
4. logs `loss_*` and other scalars to TorchRL loggers (CSV, TensorBoard) and to
   `history.jsonl`, which resume truncates to the checkpoint so the curve has no duplicates;
5. writes a checkpoint (inference weights plus full training state) every `checkpoint_every`
   steps, at the end, and when `max_minutes` runs out; resumes from it when asked.

TorchRL's Trainer drives a collector-and-replay-buffer loop for RL; the stages here draw their
own batches from tensors or from the generator itself, so the loop uses TorchRL's LossModules
and loggers and keeps the iteration itself here.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from dfworld.checkpoint import load_checkpoint, load_optimizer_tensors, optimizer_tensors, save_checkpoint
from dfworld.configuration import to_dict
from dfworld.training import distributed
from dfworld.training.distributed import step_seed

LOGGERS = ("csv", "tensorboard")
PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the device runs it natively, else fp32
DECAYS = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop shared by every stage."""

    out: str = "runs/run"  # run directory: checkpoint/, logs/, history.jsonl
    steps: int = 1000  # optimisation steps
    batch_size: int = 16  # items per step (per process under torchrun)
    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.999  # AdamW beta2
    warmup: int = 50  # linear learning-rate warm-up steps
    decay: str = "constant"  # learning rate after warm-up: constant, or cosine down to final_lr x lr
    final_lr: float = 0.1  # cosine: the last learning rate as a fraction of lr
    grad_clip: float = 1.0  # gradient norm clip (0 disables)
    ema: float = 0.999  # EMA decay of the inference weights (0 disables)
    seed: int = 0  # base seed; step s on rank r draws from seed (seed, s, r)
    checkpoint_every: int = 250  # steps between checkpoints
    log_every: int = 10  # steps between logged rows
    loggers: tuple[str, ...] = ("csv",)  # any of: csv, tensorboard
    resume: bool = True  # continue from out/checkpoint if it holds a training state
    device: str = "auto"  # auto (cuda if available), cpu or cuda
    max_minutes: float = 0.0  # stop with a checkpoint after this much wall time (0: no limit)
    precision: str = "fp32"  # fp32, bf16 (autocast the step; weights, optimizer and EMA stay fp32), or auto (native_bf16)

    def __post_init__(self) -> None:
        if unknown := set(self.loggers) - set(LOGGERS):
            raise ValueError(f"unknown logger(s) {sorted(unknown)}; expected any of {LOGGERS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay {self.decay!r} is not one of {DECAYS}")
        if not 0.0 <= self.final_lr <= 1.0:
            raise ValueError(f"final_lr={self.final_lr} must be a fraction of lr in [0, 1]")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device {self.device!r} is not auto, cpu or cuda")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch sees no CUDA device")
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def native_bf16(device: torch.device | str) -> bool:
    """Whether bf16 matmuls run natively on `device`: a CUDA GPU that has them, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 autocast is emulated: on an AVX2-only CPU (2026-12-02) a teacher step took 6.6 s
    under bf16 against about 0.8 s in fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return False


def step_precision(cfg: TrainConfig, device: torch.device | str) -> str:
    """The precision a step runs at: `cfg.precision`, with auto resolved by `native_bf16`."""
    if cfg.precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return cfg.precision


def autocast(cfg: TrainConfig, device: torch.device | str):
    """The mixed-precision context of a training step: bf16 matmuls and convolutions under `precision=bf16` (or auto).

    Parameters, gradients, optimizer moments and EMA stay fp32 (autocast casts per op), so a
    checkpoint is the same format either way. On CPUs with AVX512-BF16 or AMX this runs the
    matmuls at about twice the fp32 rate (benchmarks/bench_precision.py measures it).
    """
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=step_precision(cfg, device) == "bf16")


class EMA:
    """Exponential moving average of a module's parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v.detach(), 1 - self.decay)
            else:
                self.shadow[k].copy_(v)


class Stage:
    """What a training stage provides to the loop."""

    name = "stage"
    train: TrainConfig
    progress: float = 0.0  # fraction of the run done before the current step (set by the Loop; see run_progress)

    def setup(self, config: Any) -> None:
        """The start every stage's __init__ shares: its config and `config.train` kept, the seed set, the device chosen."""
        self.config, self.train = config, config.train
        seed_everything(config.train.seed)
        self.device = resolve_device(config.train.device)

    def trained(self) -> dict[str, nn.Module]:
        """Modules the stage optimises (saved and EMA'd)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        """One optimisation step drawing from `rng`; returns scalars to log (losses named loss_*)."""
        raise NotImplementedError

    def checkpoint_config(self) -> dict[str, Any]:
        """Everything needed to rebuild the modules (configs of the stage and its inputs)."""
        raise NotImplementedError

    def ema_modules(self) -> list[str]:
        """Trained modules whose EMA is the inference weights (default: all of them)."""
        return list(self.trained())

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Training state beyond modules and optimizers (replay buffer, persistent rollouts): tensors, JSON."""
        return {}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what `state` returned."""

    def on_start(self, resumed: bool) -> None:
        """Called once before the first step (e.g. to clear logs of an earlier, unrelated run)."""

    def extra_weights(self) -> dict[str, torch.Tensor]:
        """Weights of modules the checkpoint carries but the stage does not train (e.g. the codec)."""
        return {}

    def extra_files(self) -> dict[str, Path]:
        return {}

    def on_checkpoint(self) -> None:
        """Called before a checkpoint is written (e.g. to refresh statistics)."""


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (module initialisation); every rank builds the same initial weights."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_progress(step: int, seconds: float, cfg: TrainConfig) -> float:
    """Fraction of a run done: of its steps, or of its time budget when that runs out first.

    With `max_minutes` the decay follows the wall clock, so a run stopped by its budget ends at
    the final learning rate; such a run's steps then depend on the machine's speed (a run bounded
    by steps alone stays exactly reproducible across resumes).
    """
    done = step / cfg.steps
    if cfg.max_minutes > 0:
        done = max(done, seconds / (cfg.max_minutes * 60))
    return min(1.0, done)


def set_lr(opt: torch.optim.Optimizer, step: int, cfg: TrainConfig, lr: float | None = None, progress: float = 0.0) -> None:
    """Linear warm-up over `cfg.warmup` steps, then `cfg.decay` over the run's `progress` (0 to 1); a param group's
    `lr_scale` (1 if absent) multiplies its rate."""
    peak = cfg.lr if lr is None else lr
    scale = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    if cfg.decay == "cosine":
        scale *= cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    for g in opt.param_groups:
        g["lr"] = peak * scale * g.get("lr_scale", 1.0)


def optimize(loss: torch.Tensor, opt: torch.optim.Optimizer, module: nn.Module, clip: float) -> float:
    """The optimizer step of every stage: backward, average over ranks, clip, step; returns the norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in module.parameters() if p.grad is not None]
    distributed.average_gradients(params)
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    opt.step()
    return float(norm)


def adamw(params, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


class Loop:
    """Runs a Stage (see the module docstring)."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.cfg = stage.train
        self.out = Path(self.cfg.out)
        distributed.init_from_env(self.cfg.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        ema_names = set(stage.ema_modules()) if self.cfg.ema > 0 else set()
        self.emas = {n: EMA(m, self.cfg.ema) for n, m in stage.trained().items() if n in ema_names}
        self.step = 0
        self.seconds = 0.0  # wall time spent training, across resumes
        self.loggers: list = []
        if self.cfg.precision == "bf16" and not native_bf16(resolve_device(self.cfg.device)):
            warnings.warn("train.precision=bf16 on a device without native bf16: autocast is emulated and many times slower "
                          "than fp32 here (precision=auto picks fp32 on such a device)", stacklevel=2)

    # -- state ---------------------------------------------------------------------------------
    def _weights(self) -> dict[str, torch.Tensor]:
        out = dict(self.stage.extra_weights())
        for name, module in self.stage.trained().items():
            src = self.emas[name].shadow if name in self.emas else module.state_dict()
            out.update({f"{name}.{k}": v for k, v in src.items()})
        return out

    def _train_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        meta: dict[str, Any] = {"step": self.step, "seconds": self.seconds, "optimizers": {}}
        for name, module in self.stage.trained().items():
            tensors.update({f"param.{name}.{k}": v for k, v in module.state_dict().items()})
        for name, ema in self.emas.items():
            tensors.update({f"ema.{name}.{k}": v for k, v in ema.shadow.items()})
        for name, opt in self.stage.optimizers().items():
            opt_tensors, meta["optimizers"][name] = optimizer_tensors(opt, f"opt.{name}.")
            tensors.update(opt_tensors)
        stage_tensors, meta["stage"] = self.stage.state()
        tensors.update({f"stage.{k}": v for k, v in stage_tensors.items()})
        return tensors, meta

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        torch.set_rng_state(tensors["rng.torch"])
        for name, module in self.stage.trained().items():
            pre = f"param.{name}."
            module.load_state_dict({k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)})
        for name, ema in self.emas.items():
            pre = f"ema.{name}."
            ema.shadow = {k[len(pre) :]: v.clone() for k, v in tensors.items() if k.startswith(pre)}
        for name, opt in self.stage.optimizers().items():
            load_optimizer_tensors(opt, tensors, f"opt.{name}.", meta["optimizers"][name])
        self.stage.load_state({k[6:]: v for k, v in tensors.items() if k.startswith("stage.")}, meta.get("stage", {}))
        self.step = int(meta["step"])
        self.seconds = float(meta.get("seconds", 0.0))

    def save(self) -> Path:
        self.stage.on_checkpoint()
        tensors, meta = self._train_state()
        config = {
            **self.stage.checkpoint_config(),
            "stage": self.stage.name,
            "record": {"step": self.step, "seconds": round(self.seconds, 1), "train": to_dict(self.cfg), "world_size": self.world,
                       "precision": step_precision(self.cfg, resolve_device(self.cfg.device))},
        }
        return save_checkpoint(self.out / "checkpoint", config, self._weights(), tensors, meta, self.stage.extra_files())

    # -- logging -------------------------------------------------------------------------------
    def _open_loggers(self) -> None:
        if self.rank != 0:
            return
        from torchrl.record.loggers import CSVLogger, TensorboardLogger

        logs = str(self.out / "logs")
        for kind in self.cfg.loggers:
            self.loggers.append(CSVLogger(self.stage.name, log_dir=logs) if kind == "csv" else TensorboardLogger(self.stage.name, log_dir=logs))

    def _history(self, truncate_after: int | None = None) -> Path:
        path = self.out / "history.jsonl"
        if truncate_after is not None and path.exists():
            rows = [r for r in path.read_text().splitlines() if r and json.loads(r)["step"] <= truncate_after]
            path.write_text("".join(r + "\n" for r in rows))
        return path

    def _log(self, scalars: dict[str, float], seconds: float) -> None:
        if self.rank != 0:
            return
        row = {"step": self.step, **{k: float(v) for k, v in scalars.items()}, "seconds": round(seconds, 3)}
        with self._history().open("a") as f:
            f.write(json.dumps(row) + "\n")
        for logger in self.loggers:
            for k, v in scalars.items():
                logger.log_scalar(f"{self.stage.name}/{k}", float(v), step=self.step)

    # -- run -----------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt_dir = self.out / "checkpoint"
        resumed = cfg.resume and (ckpt_dir / "train_state.json").is_file()
        if resumed:
            ckpt = load_checkpoint(ckpt_dir, stage=self.stage.name, train_state=True)
            self._restore(ckpt.train_state, ckpt.train_meta)
            if self.rank == 0:
                self._history(truncate_after=self.step)
                print(f"[{self.stage.name}] resumed from {ckpt_dir} at step {self.step}")
        elif self.rank == 0:
            self._history(truncate_after=-1)
        self.stage.on_start(resumed)
        self._open_loggers()
        start = time.perf_counter() - self.seconds
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.stage.name, disable=self.rank != 0, dynamic_ncols=True)
        while self.step < cfg.steps:
            rng = torch.Generator().manual_seed(step_seed(cfg.seed, self.step, self.rank))
            self.stage.progress = run_progress(self.step, time.perf_counter() - start, cfg)
            with autocast(cfg, resolve_device(cfg.device)):
                scalars = self.stage.train_step(self.step, rng)
            for name, module in self.stage.trained().items():
                if name in self.emas:
                    self.emas[name].update(module)
            self.step += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._log(scalars, time.perf_counter() - start)
                bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items() if k.startswith("loss")})
            out_of_time = cfg.max_minutes > 0 and time.perf_counter() - start > cfg.max_minutes * 60
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or out_of_time:
                self.seconds = time.perf_counter() - start
                self._checkpoint()
            if out_of_time:
                if self.rank == 0:
                    print(f"[{self.stage.name}] stopped at step {self.step} after {cfg.max_minutes} minutes; run again to resume")
                break
        bar.close()
        return ckpt_dir

    def _checkpoint(self) -> None:
        if self.rank == 0:
            self.save()
        distributed.barrier()
