"""Where an agent acts: inside the world model, or in EventWorld, the real world it imitates.

Both are TorchRL environments with the same keys (`dfworld.envs.torchrl_env`): uint8 `pixels`,
a Categorical `action` over the five moves, `reward`, `done`. Agents move only: no text events.
A step is one chunk of frames in both, so "frames" means the same in both: steps times frames
per step, summed over rows.

- `world`: the generator; reward +1 per coin read from the generated frames by the probes.
- `real`: EventWorld-v0 (the simulator) at the generator's frame size and chunk; its own reward.
- `dyna`: both in one batch (`MixedTorchRLEnv`): `real_rows` of the rows are the simulator's, the
  others the generator's, each with its own reward (Dyna-style mixing of real and generated frames).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

ENVS = ("world", "real", "dyna")
EVAL_SEED = 1_000_000  # first evaluation episode seed; training episodes draw theirs above 2**32 (ppo.batch_seed)
NO_GENERATOR_SHAPE = (64, 4)  # (frame size, frames per step) of the real env when there is no generator to match


@dataclass(frozen=True)
class AgentEnvConfig:
    """The environment an agent trains or is evaluated in."""

    env: str = "world"  # world: the generator (reward from the probes); real: the EventWorld simulator
    checkpoint: str | None = None  # generator checkpoint directory or shipped name (None: the shipped default)
    num_envs: int = 16  # rows stepped together (the world model's batch)
    horizon: int = 64  # steps per episode before truncation (a step is one chunk of frames)
    size: int = 0  # real env: frame size in pixels (0: the generator's, or 64 without a generator)
    frames_per_step: int = 0  # real env: frames per step (0: the generator's chunk, or 4 without a generator)
    device: str = "cpu"  # where the generator, the frames and the agent live: cpu or cuda
    backend: str = "torch"  # world env: the generator as eager torch or as ONNX Runtime graphs (the `cpu`/`gpu` extra)
    real_rows: int = 0  # dyna env: rows of the real env among num_envs (0: half, rounded down)

    def __post_init__(self) -> None:
        from dfworld.runtime.backends import BACKENDS

        if self.env not in ENVS:
            raise ValueError(f"unknown env {self.env!r}; expected one of {', '.join(ENVS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        for name in ("num_envs", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"AgentEnvConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("size", "frames_per_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"AgentEnvConfig.{name} must be 0 (from the generator) or positive, got {getattr(self, name)}")
        if self.env in ("world", "dyna") and (self.size or self.frames_per_step):
            raise ValueError(f"size and frames_per_step are the generator's in the {self.env} env; set them only with env='real'")
        if self.real_rows < 0 or (self.env == "dyna" and not 0 < self.dyna_rows[1] < self.num_envs):
            raise ValueError(f"the dyna env needs real and world rows: real_rows={self.real_rows} of num_envs={self.num_envs}")

    @property
    def dyna_rows(self) -> tuple[int, int]:
        """(world rows, real rows) of the dyna env."""
        real = self.real_rows or self.num_envs // 2
        return self.num_envs - real, real


def generator_shape(checkpoint: str | Path | None) -> tuple[int, int]:
    """(frame size, frames per step) of a generator checkpoint, read from its config."""
    from dfworld.checkpoint import load_checkpoint
    from dfworld.model.loading import GENERATOR_STAGES
    from dfworld.shipped import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    if not path.exists():
        what = "the shipped default generator" if checkpoint is None else "generator checkpoint"
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; pass --checkpoint <a generator checkpoint directory>")
    config = load_checkpoint(path, stage=GENERATOR_STAGES).config
    return int(config["codec"]["image_size"]), int(config["model"]["chunk_frames"])


def frame_shape(cfg: AgentEnvConfig) -> tuple[int, int]:
    """(frame size, frames per step) of the environment `cfg` describes."""
    from dfworld.shipped import shipped_checkpoint

    if cfg.env in ("world", "dyna"):
        return generator_shape(cfg.checkpoint)
    if cfg.size and cfg.frames_per_step:
        return cfg.size, cfg.frames_per_step
    no_generator = cfg.checkpoint is None and not (shipped_checkpoint("default") / "config.json").is_file()
    gen = NO_GENERATOR_SHAPE if no_generator else generator_shape(cfg.checkpoint)
    return cfg.size or gen[0], cfg.frames_per_step or gen[1]


def make_env(cfg: AgentEnvConfig):
    """A TorchRL env (batch [num_envs]) for `cfg`; `env.frames_per_step` frames per step."""
    if cfg.env == "dyna":
        from dfworld.envs.torchrl_env import MixedTorchRLEnv

        world, real = cfg.dyna_rows
        size, frames = generator_shape(cfg.checkpoint)
        parts = [make_env(replace(cfg, env=e, num_envs=n, real_rows=0, **({"size": size, "frames_per_step": frames} if e == "real" else {})))
                 for e, n in (("world", world), ("real", real))]
        return MixedTorchRLEnv(*parts, device=cfg.device, max_episode_steps=cfg.horizon)
    if cfg.env == "world":
        from dfworld.envs.torchrl_env import WorldModelTorchRLEnv

        return WorldModelTorchRLEnv(cfg.num_envs, cfg.checkpoint, cfg.device, event_bank=[], max_episode_steps=cfg.horizon,
                                    backend=cfg.backend)
    from dfworld.envs.torchrl_env import EventWorldTorchRLEnv
    from dfworld.world.config import WorldConfig

    size, frames = frame_shape(cfg)
    return EventWorldTorchRLEnv(cfg.num_envs, frames, WorldConfig(height=size, width=size), cfg.device, max_episode_steps=cfg.horizon)
