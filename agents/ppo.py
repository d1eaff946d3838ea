"""PPO from frames with TorchRL, in the world model or in the real EventWorld.

Proximal Policy Optimization (Schulman et al. 2017, arXiv 1707.06347) with generalised
advantage estimation (Schulman et al. 2016, arXiv 1506.02438), built from TorchRL pieces: a
`Collector` over the batched environment, `GAE`, and `ClipPPOLoss` (a LossModule returning
`loss_objective`, `loss_critic` and `loss_entropy`).

A batch is `num_envs` rows times `horizon` steps, and every row starts a fresh episode at the
batch's start (the collector resets at each batch, from seeds drawn from (seed, batch)), so a
batch holds one full episode per row and the learning curve is the mean return of those
episodes. Because no environment state crosses a batch boundary, a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.

Run directory: checkpoint/ (safetensors weights, optimizer and RNG state, JSON config; never a
pickle), curve.json and curve.png.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfworld.agents.policy import PolicyConfig, make_actor_critic
from dfworld.agents.worlds import EVAL_SEED, AgentEnvConfig, frame_shape, make_env

STAGE = "agent"
LR_DECAYS = ("constant", "linear")
AUGMENTS = ("none", "shift")
RESUMABLE_CHANGES = ("frames", "checkpoint_every", "eval_every", "eval_episodes", "eval_horizon")  # PPOConfig fields a resumed run may change


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings."""

    frames: int = 200_000  # training budget in frames: steps x frames per step, summed over rows (whole batches)
    epochs: int = 4  # passes over each batch
    minibatch: int = 64  # steps per gradient step
    lr: float = 2e-3  # Adam learning rate (docs/experiments/ppo-reference.md: 5e-4 learned too slowly, 3e-3 not at all)
    lr_decay: str = "constant"  # constant, or linear: to 0 at the end of the budget (as PPO's Atari settings anneal it)
    gamma: float = 0.99  # discount per step
    lmbda: float = 0.95  # GAE lambda
    clip_epsilon: float = 0.2  # clip of the probability ratio (PPO paper, eq. 7)
    entropy_coeff: float = 0.003  # weight of the entropy bonus
    critic_coeff: float = 0.5  # weight of the value loss
    max_grad_norm: float = 0.5  # gradient norm clip
    seed: int = 0  # seeds the initial weights, action sampling, minibatches and training episodes
    checkpoint_every: int = 1  # batches between checkpoints
    # the learning curve in the real game: every `eval_every` batches (and after the last) the policy plays
    # `eval_episodes` EventWorld episodes of `eval_horizon` steps, seeds worlds.EVAL_SEED..., the same each time
    eval_every: int = 0  # batches between evaluations in the real EventWorld (0: none)
    eval_episodes: int = 32
    eval_horizon: int = 64
    # data augmentation of the update's frames (not of what the policy sees when it acts): shift, a random
    # translation by up to `shift_pad` pixels with edge replication (RAD/DrQ, Laskin et al. 2020, arXiv 2004.14990)
    augment: str = "shift"  # the default since 2026-12-03: 0.61 -> 0.82 normalised in EventWorld (docs/experiments/ppo-reference.md)
    shift_pad: int = 4

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"unknown PPOConfig.augment {self.augment!r}; expected one of {', '.join(AUGMENTS)}")
        if self.shift_pad < 1:
            raise ValueError(f"PPOConfig.shift_pad must be at least 1, got {self.shift_pad}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"unknown PPOConfig.lr_decay {self.lr_decay!r}; expected one of {', '.join(LR_DECAYS)}")
        if self.eval_every < 0:
            raise ValueError(f"PPOConfig.eval_every must be 0 (no evaluation) or positive, got {self.eval_every}")
        for name in ("frames", "epochs", "minibatch", "checkpoint_every", "eval_episodes", "eval_horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be at least 1, got {getattr(self, name)}")


def random_shift(pixels: torch.Tensor, pad: int) -> torch.Tensor:
    """uint8 frames [*B, H, W, 3], each translated by its own offset in [-pad, pad]^2 (edges replicated).

    A stack of frames in one row ([..., T, H, W, 3] with the leading dims the rows) is shifted per frame.
    """
    H, W = pixels.shape[-3:-1]
    x = pixels.reshape(-1, H, W, 3).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    n = x.shape[0]
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n))
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(n, 3, H, W + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(n, 3, H, W)
    out = out.gather(3, cols)
    return out.round().to(torch.uint8).permute(0, 2, 3, 1).reshape(pixels.shape)


def batch_seed(seed: int, batch: int) -> int:
    """First episode seed of training batch `batch` (its rows take the next ones).

    Each batch gets a block of 2**16 seeds above 2**32, so training never plays an evaluation
    episode (those start at worlds.EVAL_SEED).
    """
    h = int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])  # 32 bits
    return 2**32 + h * 2**16


def run_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory of a run directory, or `path` itself if it is one."""
    path = Path(path)
    return path / "checkpoint" if (path / "checkpoint" / "config.json").is_file() else path


def load_ppo(path: str | Path):
    """(actor, config) of a saved agent (a run directory or its checkpoint/); the actor is in eval mode."""
    from dfworld.checkpoint import load_checkpoint, load_into
    from dfworld.configuration import build

    ckpt = load_checkpoint(run_checkpoint(path), stage=STAGE)
    policy = build(PolicyConfig, ckpt.config.get("policy"), f"{ckpt.path}: policy")
    actor, _, module = make_actor_critic(policy)
    load_into(module, ckpt.module_weights(STAGE), f"agent weights of {str(ckpt.path)!r}")
    return actor.eval(), ckpt.config


def _run_config(env_cfg: AgentEnvConfig, ppo: PPOConfig, policy: PolicyConfig, frames_per_step: int) -> dict:
    from dfworld.configuration import to_dict

    return {"algorithm": "ppo", "env": to_dict(env_cfg), "ppo": to_dict(ppo), "policy": to_dict(policy),
            "frames_per_step": frames_per_step}


def _check_resumable(found: dict, asked: dict, where: Path) -> None:
    from dfworld.checkpoint import CheckpointError, check_config

    def strip(c: dict) -> dict:
        return {**c, "ppo": {k: v for k, v in c["ppo"].items() if k not in RESUMABLE_CHANGES}}

    try:
        check_config(strip(asked), strip({k: found.get(k) for k in asked}), str(where))
    except CheckpointError as e:
        raise CheckpointError(f"{e}. Resume with the same settings, or pass --restart or another --out") from e


def real_eval_env(env_cfg: AgentEnvConfig, ppo: PPOConfig):
    """The EventWorld env the learning curve is scored in: the frame size and chunk of `env_cfg`'s env."""
    size, frames_per_step = frame_shape(env_cfg)
    return make_env(dataclasses.replace(env_cfg, env="real", num_envs=min(env_cfg.num_envs, ppo.eval_episodes),
                                        horizon=ppo.eval_horizon, size=size, frames_per_step=frames_per_step))


def score_in_real_game(actor, env, ppo: PPOConfig) -> dict:
    """Mean and standard deviation of the actor's real returns; training's RNG state is left as it was."""
    from dfworld.agents.scoring import evaluate

    with torch.random.fork_rng(devices=[]):
        returns = evaluate(actor, env, ppo.eval_episodes, EVAL_SEED)
    return {"real_return": float(returns.mean()), "real_return_std": float(returns.std())}


def train(env_cfg: AgentEnvConfig, ppo: PPOConfig, out: str | Path, policy: PolicyConfig | None = None,
          restart: bool = False, progress: bool = True) -> Path:
    """Train (or resume) a PPO agent; returns the run's checkpoint directory."""
    from torchrl.collectors import Collector
    from torchrl.objectives import ClipPPOLoss
    from torchrl.objectives.value import GAE
    from tqdm.auto import tqdm

    from dfworld.agents.curves import first_episode_returns, write_curve
    from dfworld.checkpoint import load_checkpoint, load_into, load_optimizer_tensors, optimizer_tensors, save_checkpoint

    # 1. The environment, the network (seeded), the loss and the optimiser.
    out = Path(out)
    ckpt_dir = out / "checkpoint"
    size, frames_per_step = frame_shape(env_cfg)
    policy = dataclasses.replace(policy or PolicyConfig(), image_size=size)
    config = _run_config(env_cfg, ppo, policy, frames_per_step)
    torch.manual_seed(ppo.seed)
    actor, critic, module = make_actor_critic(policy)
    module.to(env_cfg.device)
    loss_module = ClipPPOLoss(actor, critic, clip_epsilon=ppo.clip_epsilon, entropy_coeff=ppo.entropy_coeff,
                              critic_coeff=ppo.critic_coeff, loss_critic_type="l2", normalize_advantage=True)
    gae = GAE(gamma=ppo.gamma, lmbda=ppo.lmbda, value_network=critic, average_gae=False)
    optim = torch.optim.Adam(loss_module.parameters(), lr=ppo.lr)
    env = make_env(env_cfg)
    steps_per_batch = env_cfg.num_envs * env_cfg.horizon
    frames_per_batch = steps_per_batch * frames_per_step
    n_batches = math.ceil(ppo.frames / frames_per_batch)

    # 2. Resume from the run's checkpoint if there is one (same settings; the budget may grow).
    batch, seconds, curve, rng_state = 0, 0.0, [], None
    if restart:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if (ckpt_dir / "train_state.json").is_file():
        ckpt = load_checkpoint(ckpt_dir, stage=STAGE, train_state=True)
        _check_resumable(ckpt.config, config, ckpt_dir)
        load_into(module, ckpt.module_weights(STAGE), f"agent weights of {str(ckpt_dir)!r}")
        load_optimizer_tensors(optim, ckpt.train_state, "opt.", ckpt.train_meta["param_groups"])
        rng_state = ckpt.train_state["rng.torch"], ckpt.train_state.get("rng.cuda")
        batch, seconds, curve = ckpt.train_meta["batch"], ckpt.train_meta["seconds"], ckpt.train_meta["curve"]
        print(f"[agent] resumed {ckpt_dir} at batch {batch} ({batch * frames_per_batch:,} frames)")

    def save() -> None:
        tensors, groups = optimizer_tensors(optim, "opt.")
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.device(env_cfg.device).type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        last = curve[-1] if curve else {}
        record = {"batches": batch, "frames": batch * frames_per_batch, "seconds": round(seconds, 1),
                  "return_last": last.get("return_mean")}
        weights = {f"{STAGE}.{k}": v for k, v in module.state_dict().items()}
        meta = {"batch": batch, "seconds": seconds, "curve": curve, "param_groups": groups}
        save_checkpoint(ckpt_dir, {**config, "stage": STAGE, "record": record}, weights, tensors, meta)
        write_curve(curve, out, f"PPO in the {env_cfg.env} env ({size}x{size}, {frames_per_step} frames/step, seed {ppo.seed})")

    if batch >= n_batches:
        env.close()
        return ckpt_dir

    # 3. The collector: each batch resets every row to a fresh episode seeded from (seed, batch).
    collector = Collector(
        env, actor, frames_per_batch=steps_per_batch, total_frames=(n_batches - batch) * steps_per_batch,
        reset_at_each_iter=True, pre_collect_hook=lambda: env.set_seed(batch_seed(ppo.seed, batch)),
        auto_register_policy_transforms=False,  # a feed-forward policy: no recurrent state to prime
    )
    if rng_state is not None:  # after the collector, whose set-up may draw from it
        torch.set_rng_state(rng_state[0])
        if rng_state[1] is not None:
            torch.cuda.set_rng_state(rng_state[1])
    bar = tqdm(total=n_batches * frames_per_batch, initial=batch * frames_per_batch, unit="frame",
               desc=f"ppo/{env_cfg.env}", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter() - seconds
    tick = time.perf_counter()
    eval_env = None
    for data in collector:  # [N, T]
        collected = time.perf_counter()
        # 4. Advantages and value targets with the current critic (GAE, Schulman et al. 2016, eq. 16).
        if ppo.lr_decay == "linear":  # the learning rate of this batch's update, from the batch index alone
            for group in optim.param_groups:
                group["lr"] = ppo.lr * (1 - batch / n_batches)
        with torch.no_grad():
            gae(data)
        flat = data.reshape(-1)  # [N * T]
        # 5. Clipped-surrogate epochs over shuffled minibatches (PPO paper, eq. 7 and 9).
        logs: dict[str, list[float]] = {}
        for _ in range(ppo.epochs):
            for idx in torch.randperm(len(flat)).split(ppo.minibatch):
                mb = flat[idx]
                if ppo.augment == "shift":  # the ratio and the value read augmented frames; the advantages were not
                    mb.set("pixels", random_shift(mb.get("pixels"), ppo.shift_pad))
                losses = loss_module(mb)
                loss = sum(v for k, v in losses.items() if k.startswith("loss_"))
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(loss_module.parameters(), ppo.max_grad_norm)
                optim.step()
                for k in ("loss_objective", "loss_critic", "loss_entropy", "entropy"):
                    logs.setdefault(k, []).append(losses[k].item())
        # 6. The learning curve: the return of each row's episode in this batch.
        returns = first_episode_returns(data)
        batch += 1
        seconds = time.perf_counter() - start
        curve.append({"batch": batch, "frames": batch * frames_per_batch, "return_mean": float(returns.mean()),
                      "return_std": float(returns.std(unbiased=False)), "episodes": len(returns),
                      "seconds": round(seconds, 2), "collect_s": round(collected - tick, 3), "lr": optim.param_groups[0]["lr"],
                      "update_s": round(time.perf_counter() - collected, 3), **{k: float(np.mean(v)) for k, v in logs.items()}})
        if ppo.eval_every and (batch % ppo.eval_every == 0 or batch == n_batches):
            t_eval = time.perf_counter()
            eval_env = eval_env or real_eval_env(env_cfg, ppo)
            curve[-1].update(score_in_real_game(actor, eval_env, ppo), eval_s=round(time.perf_counter() - t_eval, 2))
        bar.update(frames_per_batch)
        bar.set_postfix(ret=f"{curve[-1]['return_mean']:.2f}", ent=f"{curve[-1]['entropy']:.2f}",
                        **({"real": f"{curve[-1]['real_return']:.2f}"} if "real_return" in curve[-1] else {}))
        # 7. Checkpoint (weights, optimizer, RNG, curve) and the plot.
        if batch % ppo.checkpoint_every == 0 or batch == n_batches:
            save()
        tick = time.perf_counter()
    bar.close()
    collector.shutdown()
    if eval_env is not None:
        eval_env.close()
    return ckpt_dir
