"""Stage `stream`: streaming long tuning (LongLive) of the Self Forcing generator.

A persistent rollout per row starts from its episode's real start frames, as the env does (or, for a `noise_starts` fraction
of rollouts, from noise as the env's reset without an image does: its first window is a Self
Forcing clip of teacher length, with no history to measure) and advances one chunk per
iteration over `horizon` frames. Event switches from EventWorld event scripts fall on chunk
boundaries, where the row's condition changes and its KV cache is re-cached under the new text.
The DMD window is the last committed frames (the overlap) plus the new chunk, scored by teacher
and critic under the current text; only the new frames carry the loss.

`generator_loss` is the one thing stage delta (dfworld.training.stages.delta) changes. Both
stages log the trust-region weight and the consistency measures per chunk against the chunks
since the last switch (dfworld.training.trust_region_log), so their runs compare chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from dfworld.losses.delta import consistency_measures
from dfworld.schedule import SamplerConfig
from dfworld.training.distributed import rank, step_seed
from dfworld.training.loop import TrainConfig
from dfworld.training.stages.base import CriticConfig, pad_text
from dfworld.training.stages.dmd import SelfForcingStage
from dfworld.training.trust_region_log import TrustRegionLog


@dataclass(frozen=True)
class StreamStageConfig:
    """`dfworld train stage=stream` (streaming long tuning)."""

    teacher_checkpoint: str = "runs/teacher/checkpoint"  # the frozen teacher
    generator_checkpoint: str = "runs/dmd/checkpoint"  # generator and critic to start from (stage dmd)
    horizon: int = 128  # frames per persistent rollout (8 teacher clips)
    switch_gaps: tuple[int, ...] = (32, 48)  # frames between event switches (multiples of the chunk)
    # fraction of persistent rollouts that start from noise, as the env's reset without an image does,
    # instead of from a real first frame; their first window is a Self Forcing clip of teacher length
    noise_starts: float = 0.0
    guidance: float = 3.0  # teacher CFG in the DMD direction, as stage dmd
    dmd_shift: float = 3.0  # shift of the DMD noise levels, as stage dmd
    # how teacher and critic see a window's committed frames: window (one level over the whole window, the
    # trajectory-agnostic teacher, and what the trust-region measures were calibrated on) or context (as stage dmd)
    scoring: str = "window"
    critic: CriticConfig = field(default_factory=CriticConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(out="runs/stream", steps=400, batch_size=8, lr=3e-5, beta1=0.0, ema=0.99, warmup=20,
                                            checkpoint_every=50, max_minutes=12.0)
    )


@dataclass
class SequencePlan:
    """One row's persistent rollout: actions per frame, events at chunk starts, its first frame."""

    actions: np.ndarray  # [horizon] int64
    events: dict[int, str]  # frame -> event text
    prompt: str  # the condition at frame 0
    start_frames: np.ndarray  # [n, H, W, 3] uint8: the episode's real start (dfworld.world.episodes.real_start)
    frames: np.ndarray  # [horizon, H, W, 3] uint8: the simulator's frames after it, under the actions and events
    states: dict[str, np.ndarray]  # their true states, each [horizon, ...] (EventWorld.state_arrays)


def plan_sequence(seed: int, horizon: int, gaps: tuple[int, ...], chunk: int, world, seek: bool = False) -> SequencePlan:
    """An EventWorld event script of `horizon` frames, switches every `gaps` frames (at least a chunk before the end), played;
    `seek`: the actions a coin seeker's, chosen every chunk (`plan_episode`'s `seek_every`), else a random walk."""
    from dfworld.world.episodes import play_episode
    from dfworld.world.suite import plan_episode

    rng = np.random.default_rng(seed)
    times, t = [], int(rng.choice(gaps))
    while t <= horizon - chunk:
        times.append(t)
        t += int(rng.choice(gaps))
    ep, _ = plan_episode(f"stream-{seed}", int(rng.integers(2**31)), horizon, times, rng, world, seek_every=chunk if seek else 0)
    rec = play_episode(ep, world)
    events = {e.t: e.text for e in rec.events if e.applied}
    return SequencePlan(rec.actions.astype(np.int64), events, rec.initial_prompt, rec.context, rec.frames, rec.states)


class StreamStage(SelfForcingStage):
    name = "stream"
    start_stages = ("dmd", "stream", "delta")

    def __init__(self, config: StreamStageConfig):
        from dfworld.world.config import WorldConfig
        from dfworld.world.simulator import EventWorld

        self._setup_distillation(config)
        K = self.generator.config.chunk_frames
        if any(g % K for g in config.switch_gaps) or config.horizon % K:
            raise ValueError(f"switch_gaps {config.switch_gaps} and horizon {config.horizon} must be multiples of the chunk ({K})")
        self.overlap = self.clip_frames - K  # committed frames in a teacher-length window
        if not 0.0 <= config.noise_starts <= 1.0:
            raise ValueError(f"noise_starts={config.noise_starts} must be a fraction in [0, 1]")
        if self.overlap > self.generator.config.window_frames:
            raise ValueError(f"the window ({self.generator.config.window_frames} frames) cannot hold {self.overlap} overlap frames")
        size = self.codec.config.image_size
        self.world = EventWorld(WorldConfig(height=size, width=size))
        self.sequence = -1  # index of the current persistent rollout
        self.plans: list[SequencePlan] = []
        self.last_switch = [-1] * config.train.batch_size
        self.log = TrustRegionLog(Path(config.train.out) / "trust_region.jsonl")
        self.next_step = 0

    # -- the generator loss: what stage delta overrides --------------------------------------------
    def generator_loss(self, td: TensorDict, overlap: int, since: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
        """DMD on the new frames of a window with history: (loss, w [B], consistency measures, scalars to log).

        The stream stage trusts the teacher everywhere (w = 1) and only measures.
        """
        res = self.dmd(td)
        measures = consistency_measures(td["latents"].detach(), res["x0_teacher"], overlap)
        return res["loss_dmd"], torch.ones(td.batch_size[0]), measures, {"loss_dmd": res["loss_dmd"].item()}

    # -- persistent rollouts -----------------------------------------------------------------------
    def _plans(self, sequence: int) -> list[SequencePlan]:
        B, K = self.train.batch_size, self.generator.config.chunk_frames
        return [
            plan_sequence(step_seed(self.train.seed, sequence, rank() * B + r), self.config.horizon, self.config.switch_gaps, K,
                          self.world)
            for r in range(B)
        ]

    def _start_sequence(self, rng: torch.Generator) -> None:
        self.sequence += 1
        self.plans = self._plans(self.sequence)
        B = self.train.batch_size
        # the same choice on every rank and after a resume: a draw from (seed, sequence)
        from_noise = np.random.default_rng([self.train.seed, self.sequence, 0x5EED]).random() < self.config.noise_starts
        context = None
        if not from_noise:
            with torch.no_grad():
                frames = torch.from_numpy(np.stack([p.start_frames for p in self.plans])).to(self.device)  # [B, n, H, W, 3]
                context = self.codec.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        seeds = torch.randint(2**62, (B,), generator=rng).tolist()
        self.rollout.reset(list(range(B)), [p.prompt for p in self.plans], seeds, context)
        self.last_switch = [-1] * B

    def _actions(self, start: int, frames: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([p.actions[start : start + frames] for p in self.plans])).to(self.device)

    def train_step(self, step: int, rng: torch.Generator) -> dict[str, float]:
        B, K = self.train.batch_size, self.generator.config.chunk_frames
        self.next_step = step + 1
        exit_step = self._exit_step(step)
        gen_step = self._generator_step(step)
        pos = int(self.rollout.frame[0]) if self.sequence >= 0 else self.config.horizon
        if pos + K > self.config.horizon:  # 1. a new persistent rollout from real first frames
            self._start_sequence(rng)
            pos = int(self.rollout.frame[0])
            new = self.clip_frames - pos  # the first window: the context, then new frames up to a teacher clip
        else:
            new = K
            switch = [r for r, p in enumerate(self.plans) if pos in p.events]
            if switch:  # 2. event switches: the condition changes, the cache is re-cached under it
                self.rollout.set_prompt(switch, [self.plans[r].events[pos] for r in switch])
                for r in switch:
                    self.last_switch[r] = pos
        seeds = torch.randint(2**62, (B,), generator=rng).tolist()
        if not self.rollout.sampler.repeat_noise:  # fresh noise each step; repeated noise keeps the sequence's seeds
            self.rollout.reseed(seeds)
        overlap = pos if pos < self.overlap else self.overlap
        past, past_actions = self.rollout.recent(overlap)
        actions = self._actions(pos, new)
        with torch.set_grad_enabled(gen_step):
            fresh = [self.rollout.generate(actions[:, c : c + K], exit_step=exit_step) for c in range(0, new, K)]
        x = torch.cat([past] + fresh, 1)  # [B, F, C, h, w]: the committed overlap, then the new frames
        window_actions = torch.cat([past_actions, actions], 1)
        text, mask = pad_text(self.rollout.text, self.rollout.text_mask, self.teacher.config.text_tokens)
        loss_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=self.device)
        loss_mask[:, overlap:] = True
        since = [(pos - s) // K if s >= 0 else -1 for s in self.last_switch]
        out: dict[str, float] = {"exit_step": exit_step, "frame": pos}
        # 3. the generator update on the new frames of the window
        if gen_step:
            td = self._dmd_td(x, text, mask, window_actions, rng, loss_mask, committed=overlap)
            if overlap == 0:  # a rollout's first window from noise: a Self Forcing clip, no history to measure
                loss = self.dmd(td)["loss_dmd"]
                out.update(loss_dmd=loss.item())
            else:
                loss, w, measures, scalars = self.generator_loss(td, overlap, since)
                out.update(scalars)
            out.update(loss_generator=loss.item(), grad_norm=self._generator_update(step, loss))
            if overlap > 0:
                out.update(w_mean=float(w.mean()), **{f"{k}_mean": float(v.mean()) for k, v in measures.items()})
                self.log.write(step, since, w, measures)
        # 4. the critic update on detached windows
        out.update(self._critic_update(step, self._windows(x, text, mask, window_actions, committed=overlap), rng))
        return out

    def on_start(self, resumed: bool) -> None:
        if not resumed:
            self.log.clear()

    def on_checkpoint(self) -> None:
        self.log.plot(title=f"stage {self.name}")

    # -- exact resume: the persistent rollout and the replay buffer --------------------------------
    def state(self):
        tensors, meta = super().state()
        if self.sequence >= 0:
            tensors.update({f"rollout.{k}": v for k, v in self.rollout.state().items()})
        meta.update(sequence=self.sequence, last_switch=self.last_switch, prompts=self.rollout.prompts, next_step=self.next_step)
        return tensors, meta

    def load_state(self, tensors, meta):
        super().load_state(tensors, meta)
        self.sequence = int(meta.get("sequence", -1))
        if self.sequence >= 0:
            self.plans = self._plans(self.sequence)
            self.rollout.load_state({k[8:]: v for k, v in tensors.items() if k.startswith("rollout.")}, meta["prompts"])
            self.last_switch = list(meta["last_switch"])
        self.log.trim(int(meta.get("next_step", 0)))  # a log written past the checkpoint is replayed by the resumed run
