"""The transfer test (DIAMOND's test): does an agent trained only inside the world model act well in the real world?

For each seed:

1. PPO trains in the world model for `frames` frames: it never sees a real frame;
2. PPO trains in the real EventWorld for the same number of frames (the model-free reference);
3. both are evaluated in the real EventWorld on one fixed list of episodes, next to a random
   agent and the scripted agent (which walks to the coin the probes find).

With `train_in` holding "dyna", a third PPO agent trains on batches whose rows are part
real, part generated (`MixedTorchRLEnv`, Dyna-style), for the same frames (real and generated
together), and is scored the same way.

The real env runs at the generator's frame size and chunk, so a step and a frame mean the same
in both. Scores are also given normalised as (return - random) / (scripted - random), in the
manner of DIAMOND's human-normalised score, with a 95% interval from a two-level bootstrap (the
training seeds, then the evaluation episodes of each). The PPO runs are scored in the real game
along the way (`PPOConfig.eval_every`), so the curve of the world-model agent says whether it
learns the game or the generator's quirks; the pick-ups the world model pays that agent are
checked against the simulator on the same seeds and moves (`agents.pickups`). `train_in` may
leave out one env (`("real",)`: the model-free reference alone). Writes transfer.json,
transfer.md and transfer_curves.png under `out`; the PPO runs live in `out`/ppo_<env>_seed<s>/ and resume.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfworld.agents.evaluate import load_agent
from dfworld.agents.policy import PolicyConfig
from dfworld.agents.ppo import PPOConfig, train
from dfworld.agents.scoring import evaluate
from dfworld.agents.worlds import EVAL_SEED, AgentEnvConfig, generator_shape, make_env

AGENTS = ("world", "real", "dyna", "random", "scripted")  # report keys: PPO by the env it trained in, then the baselines
TRAIN_ENVS = ("world", "real", "dyna")
DEFAULT_TRAIN = ("world", "real")  # dyna, the third agent, on request
BOOTSTRAP = 2000  # resamples of the normalised score's interval
LABELS = {
    "world": "PPO trained in the world model",
    "real": "PPO trained in the real env",
    "dyna": "PPO trained on real and generated rows (Dyna)",
    "random": "random",
    "scripted": "scripted (probes + shortest path)",
}


@dataclass(frozen=True)
class TransferConfig:
    """The transfer test's budget and evaluation."""

    frames: int = 200_000  # training frames of each PPO agent, the same in both envs
    seeds: tuple[int, ...] = (0, 1, 2)  # one PPO run per env per seed; also the baselines' seeds
    episodes: int = 64  # real-env evaluation episodes per agent and seed (episode seeds eval_seed + i)
    world_episodes: int = 16  # world-model evaluation episodes of the random and scripted agents (0: skip)
    eval_seed: int = EVAL_SEED  # seed of the first evaluation episode
    out: str = "outputs/transfer"  # output directory
    train_in: tuple[str, ...] = DEFAULT_TRAIN  # where PPO agents train: the world model, the real env, both rows (dyna)
    world_horizon: int = 0  # steps per world-model training episode (0: the env's horizon); real episodes keep it
    curve_every: int = 5  # batches between real-game scorings of each PPO run (0: none)

    def __post_init__(self) -> None:
        if not self.train_in or not set(self.train_in) <= set(TRAIN_ENVS) or len(set(self.train_in)) != len(self.train_in):
            raise ValueError(f"TransferConfig.train_in must be distinct envs out of {TRAIN_ENVS}, got {self.train_in}")
        if self.world_horizon < 0 or self.curve_every < 0:
            raise ValueError("TransferConfig: world_horizon and curve_every must be 0 or positive")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"TransferConfig.seeds must be distinct and non-empty, got {self.seeds}")
        if self.frames < 1 or self.episodes < 1 or self.world_episodes < 0:
            raise ValueError("TransferConfig: frames and episodes must be at least 1, world_episodes at least 0")


def run_transfer(env_cfg: AgentEnvConfig, ppo: PPOConfig, cfg: TransferConfig, policy: PolicyConfig | None = None,
                 progress: bool = True) -> dict:
    """Run the test; returns the report written to `cfg.out`/transfer.json."""
    from dfworld.agents.curves import plot_curves

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    size, frames_per_step = generator_shape(env_cfg.checkpoint)
    envs = {
        "world": dataclasses.replace(env_cfg, env="world", size=0, frames_per_step=0, horizon=cfg.world_horizon or env_cfg.horizon),
        "real": dataclasses.replace(env_cfg, env="real", size=size, frames_per_step=frames_per_step),
        "dyna": dataclasses.replace(env_cfg, env="dyna", size=0, frames_per_step=0, horizon=cfg.world_horizon or env_cfg.horizon),
    }
    eval_rows = min(env_cfg.num_envs, cfg.episodes)
    real_env = make_env(dataclasses.replace(envs["real"], num_envs=eval_rows))
    report: dict = {
        "generator": str(env_cfg.checkpoint or "shipped default"),
        "frames": cfg.frames, "seeds": list(cfg.seeds), "frame_size": size, "frames_per_step": frames_per_step,
        "horizon": env_cfg.horizon, "num_envs": env_cfg.num_envs,
        "eval_episodes": cfg.episodes, "eval_episode_seeds": [cfg.eval_seed, cfg.eval_seed + cfg.episodes - 1],
        "world_horizon": envs["world"].horizon, "generator_digest": _digest(env_cfg.checkpoint),
        "ppo": dataclasses.asdict(ppo) | {"frames": cfg.frames, "seed": "per run"},
        "agents": {a: {"label": LABELS[a], "real_return": {}, "real_returns": {}}
                   for a in AGENTS if a not in TRAIN_ENVS or a in cfg.train_in},
    }
    ppo = dataclasses.replace(ppo, eval_every=cfg.curve_every or ppo.eval_every, eval_episodes=cfg.episodes,
                              eval_horizon=env_cfg.horizon)
    curves: dict[str, list[dict]] = {}
    for seed in cfg.seeds:
        # 1-2. PPO in each env, the same frames; the real env sees the generator's frame size and chunk.
        for where in cfg.train_in:
            name = where
            t0 = time.perf_counter()
            ckpt = train(envs[where], dataclasses.replace(ppo, frames=cfg.frames, seed=seed), out / f"ppo_{where}_seed{seed}",
                         policy, progress=progress)
            curve = json.loads((ckpt.parent / "curve.json").read_text())
            curves[f"PPO in {where}, seed {seed}"] = curve
            entry = report["agents"][name]
            entry.setdefault("train_seconds", {})[seed] = round(time.perf_counter() - t0, 1)
            entry.setdefault(f"{where}_return_last_batch", {})[seed] = curve[-1]["return_mean"] if curve else None
            entry.setdefault("checkpoint", {})[seed] = str(ckpt)
            entry["frames_trained"] = curve[-1]["frames"] if curve else 0
            _score(entry, seed, evaluate(load_agent(ckpt, size, seed), real_env, cfg.episodes, cfg.eval_seed))
        # 3. The baselines on the same episodes.
        for name in ("random", "scripted"):
            _score(report["agents"][name], seed, evaluate(load_agent(name, size, seed), real_env, cfg.episodes, cfg.eval_seed))
    real_env.close()
    if cfg.world_episodes:  # is the task solvable from generated frames? and are the world model's coins real?
        from dfworld.agents.pickups import check_pickups

        # one set of world-model episodes per agent gives both its return there and its pick-ups' precision
        world_env = make_env(dataclasses.replace(envs["world"], num_envs=min(env_cfg.num_envs, cfg.world_episodes)))
        agents = {name: load_agent(name, size, cfg.seeds[0]) for name in ("random", "scripted")}
        if "world" in report["agents"]:
            agents["world"] = load_agent(report["agents"]["world"]["checkpoint"][cfg.seeds[0]], size, cfg.seeds[0])
        for name, agent in agents.items():
            checked = check_pickups(agent, world_env, cfg.world_episodes, cfg.eval_seed)
            if name != "world":  # its world-model return is its training curve's
                report["agents"][name]["world_return"] = {"seed": cfg.seeds[0], "mean": checked["return_mean"],
                                                          "episodes": len(checked["episodes"])}
            report["agents"][name]["world_pickups"] = {k: v for k, v in checked.items() if k != "episodes"} | {"seed": cfg.seeds[0]}
        world_env.close()
    _summarise(report, cfg.seeds)
    (out / "transfer.json").write_text(json.dumps(report, indent=1))
    (out / "transfer.md").write_text(markdown(report))
    references = {report["agents"][b]["label"]: report["agents"][b]["mean"] for b in ("random", "scripted")}
    plot_curves(curves, out / "transfer_curves.png", f"PPO learning curves, {cfg.frames:,} frames per run", references)
    return report


def _digest(checkpoint: str | None) -> str:
    from dfworld.checkpoint import checkpoint_digest
    from dfworld.shipped import resolve_checkpoint

    return checkpoint_digest(resolve_checkpoint(checkpoint))[:12]


def _score(entry: dict, seed: int, returns: np.ndarray) -> None:
    entry["real_returns"][seed] = returns.tolist()
    entry["real_return"][seed] = float(returns.mean())


def _summarise(report: dict, seeds: tuple[int, ...]) -> None:
    """Mean and standard deviation over seeds, the normalised score and its 95% bootstrap interval.

    Each resample draws the training seeds with replacement, then each drawn seed's evaluation
    episodes, for every agent (the baselines' too), and normalises the resampled means.
    """
    agents = report["agents"]
    for entry in agents.values():
        per_seed = list(entry["real_return"].values())
        entry["mean"], entry["std"] = float(np.mean(per_seed)), float(np.std(per_seed))
    lo, hi = agents["random"]["mean"], agents["scripted"]["mean"]
    rng = np.random.default_rng(0)
    draws = {}
    for name, entry in agents.items():
        per_seed = [np.asarray(entry["real_returns"][s]) for s in seeds]
        picks = rng.integers(len(seeds), size=(BOOTSTRAP, len(seeds)))
        draws[name] = np.array([np.mean([rng.choice(per_seed[i], len(per_seed[i])).mean() for i in row]) for row in picks])
    span = draws["scripted"] - draws["random"]
    for name, entry in agents.items():
        entry["normalised"] = (entry["mean"] - lo) / (hi - lo) if hi != lo else None
        resampled = (draws[name] - draws["random"])[span != 0] / span[span != 0]
        entry["ci"] = [float(q) for q in np.percentile(resampled, [2.5, 97.5])] if entry["normalised"] is not None and len(resampled) else None


def markdown(report: dict) -> str:
    """The report as a Markdown table."""
    r = report
    lines = [
        f"# Transfer test: world model -> real EventWorld ({r['frames']:,} training frames per PPO run)",
        "",
        (f"- generator: `{r['generator']}`; frames {r['frame_size']}x{r['frame_size']}, {r['frames_per_step']} frames per step, "
         f"episodes of at most {r['horizon']} steps, {r['num_envs']} rows"),
        (f"- training seeds: {', '.join(map(str, r['seeds']))}; evaluation: {r['eval_episodes']} real episodes per agent and seed, "
         f"episode seeds {r['eval_episode_seeds'][0]}..{r['eval_episode_seeds'][1]} (the same for every agent)"),
        "- return: coins collected per episode; normalised: (return - random) / (scripted - random)",
        "",
        "| agent | real return (mean ± sd over seeds) | normalised [95% interval] | per seed | world-model return | "
        "world-model pick-ups: precision / recall |",
        "|---|---|---|---|---|---|",
    ]
    for name in (a for a in AGENTS if a in r["agents"]):
        e = r["agents"][name]
        per_seed = ", ".join(f"{s}: {v:.2f}" for s, v in e["real_return"].items())
        world = "-"
        if "world_return_last_batch" in e:
            world = f"{np.mean(list(e['world_return_last_batch'].values())):.2f} (last training batch)"
        elif "world_return" in e:
            world = f"{e['world_return']['mean']:.2f} ({e['world_return']['episodes']} episodes, seed {e['world_return']['seed']})"
        norm = "-" if e["normalised"] is None else f"{e['normalised']:.2f}" + (f" [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]" if e["ci"] else "")
        pk = e.get("world_pickups")
        picks = "-" if pk is None else " / ".join("-" if v is None else f"{v:.2f}" for v in (pk["precision"], pk["recall"]))
        if pk is not None:
            picks += f" ({pk['generated']} paid, {pk['real']} real)"
        lines.append(f"| {e['label']} | {e['mean']:.2f} ± {e['std']:.2f} | {norm} | {per_seed} | {world} | {picks} |")
    return "\n".join(lines) + "\n"
