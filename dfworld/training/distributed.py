"""Torchrun plumbing: the process group, this process's rank, and gradients averaged over ranks.

Every stage steps its optimizers through `dfworld.training.loop.optimize`, which averages the
gradients here after each backward. One hand all-reduce serves every stage: a DDP wrapper
cannot serve a module called several times per step with gradient on one call (the Self
Forcing rollout), and one mechanism is easier to trust than two. Random choices the ranks must
share (the exit level of a rollout) come from `shared_rng`, a rank-independent seed.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(device: str) -> None:
    """Start a process group under torchrun (gloo on CPU, NCCL on CUDA); nothing in one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")


def rank() -> int:
    """This process's rank (0 in one process; read from the environment before the group starts)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """The number of processes of the job (1 in one process)."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def average_gradients(params) -> None:
    """Average the gradients of `params` over the ranks of a torchrun job (nothing in one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def barrier() -> None:
    """Wait for every rank (nothing in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one step on one rank: a resumed run redraws exactly what it would have drawn."""
    return ((seed * 1_000_003 + step) * 1024 + rank) % 2**63


def shared_rng(seed: int, step: int) -> torch.Generator:
    """Random draws every rank must agree on at `step` (the exit level): a rank-independent seed."""
    return torch.Generator().manual_seed(step_seed(seed, step, 0) ^ 0x5EED)
