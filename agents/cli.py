"""`dfworld agent ...`: train, evaluate and transfer-test agents (the parser; heavy imports wait for the command).

    dfworld agent train --env world|real [--checkpoint GEN] [--frames N] [--seed S] [--out DIR]
    dfworld agent eval AGENT --env world|real [--episodes N] [--seed S]   AGENT: random, scripted or a run directory
    dfworld agent transfer [--checkpoint GEN] --frames N --seeds 0 1 2 [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dfworld.agents.worlds import EVAL_SEED

PPO_FLAGS = ("epochs", "minibatch", "lr", "gamma", "lmbda", "clip_epsilon", "entropy_coeff", "checkpoint_every",
             "eval_every", "eval_episodes", "eval_horizon", "augment", "shift_pad")  # PPOConfig fields


def _add_env_args(p: argparse.ArgumentParser, choose_env: bool = True) -> None:
    if choose_env:
        p.add_argument("--env", choices=("world", "real", "dyna"), default="world",
                       help="world: inside the generator (reward read by the probes); real: the EventWorld simulator; "
                            "dyna: rows of both in one batch")
    p.add_argument("--checkpoint", default=None,
                   help="generator checkpoint directory or shipped name (default: the shipped default generator); "
                        "the real env takes its frame size and chunk from it")
    p.add_argument("--num-envs", type=int, default=16, help="rows stepped together (the world model's batch)")
    p.add_argument("--horizon", type=int, default=64, help="steps per episode before truncation (a step is one chunk of frames)")
    if choose_env:
        p.add_argument("--size", type=int, default=0, help="real env frame size (0: the generator's, or 64 without one)")
        p.add_argument("--frames-per-step", type=int, default=0, help="real env frames per step (0: the generator's chunk, or 4)")
    p.add_argument("--device", default="cpu", help="where the generator, the frames and the agent live: cpu or cuda")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="how the world model runs: eager torch, or ONNX Runtime graphs (needs the cpu or gpu extra)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--real-rows", type=int, default=0, help="dyna: rows of the real env among --num-envs (0: half)")


def _add_ppo_args(p: argparse.ArgumentParser) -> None:
    # defaults live in PPOConfig (None: keep its value), so building the parser imports no torch
    p.add_argument("--epochs", type=int, help="PPO passes over each batch (default 4)")
    p.add_argument("--minibatch", type=int, help="steps per gradient step (default 64)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 2e-3)")
    p.add_argument("--lr-decay", choices=("constant", "linear"), help="learning rate schedule: constant, or linear to 0 over "
                                                                         "the budget (default constant)")
    p.add_argument("--gamma", type=float, help="discount per step (default 0.99)")
    p.add_argument("--lmbda", type=float, help="GAE lambda (default 0.95)")
    p.add_argument("--clip-epsilon", type=float, help="PPO ratio clip (default 0.2)")
    p.add_argument("--entropy-coeff", type=float, help="entropy bonus weight (default 0.003)")
    p.add_argument("--checkpoint-every", type=int, help="batches between checkpoints (default 1)")
    p.add_argument("--eval-every", type=int, help="batches between scorings of the policy in the real EventWorld, "
                                                  "a learning curve in the real game; 0: none (default 0)")
    p.add_argument("--eval-episodes", type=int, help="real episodes per scoring (default 32)")
    p.add_argument("--eval-horizon", type=int, help="steps per real episode when scoring (default 64)")
    p.add_argument("--augment", choices=("none", "shift"), help="augment the update's frames: shift, random translations "
                                                                  "as RAD/DrQ; none: the frames as collected (default shift)")
    p.add_argument("--shift-pad", type=int, help="largest shift in pixels of --augment shift (default 4)")
    p.add_argument("--head", choices=("keypoints", "flatten"), help="the network's head (default keypoints: spatial softmax)")
    p.add_argument("--obs-size", type=int, default=0, help="downsample frames to this size for the network (0: the frame size)")
    p.add_argument("--separate-encoders", action="store_true",
                   help="the policy and the value each get their own encoder (default: one shared encoder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _env_config(args: argparse.Namespace, **fixed):
    from dfworld.agents.worlds import AgentEnvConfig

    fields = dict(env=getattr(args, "env", "world"), checkpoint=args.checkpoint, num_envs=args.num_envs, horizon=args.horizon,
                  size=getattr(args, "size", 0), frames_per_step=getattr(args, "frames_per_step", 0), device=args.device,
                  backend=args.backend, real_rows=args.real_rows)
    return AgentEnvConfig(**(fields | fixed))


def _ppo_config(args: argparse.Namespace, frames: int, seed: int):
    from dfworld.agents.ppo import PPOConfig

    fields = {k: getattr(args, k) for k in (*PPO_FLAGS, "lr_decay") if getattr(args, k) is not None}
    return PPOConfig(frames=frames, seed=seed, **fields)


def _policy_config(args: argparse.Namespace):
    from dfworld.agents.policy import PolicyConfig

    fields = {"head": args.head} if args.head else {}
    if args.obs_size:
        fields["obs_size"] = args.obs_size
    if args.separate_encoders:
        fields["shared"] = False
    return PolicyConfig(**fields) if fields else None


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _cmd_train(args: argparse.Namespace) -> int:
    from dfworld.agents.ppo import train

    _threads(args)
    ckpt = train(_env_config(args), _ppo_config(args, args.frames, args.seed), args.out, _policy_config(args),
                 restart=args.restart, progress=not args.no_progress)
    curve = json.loads((ckpt.parent / "curve.json").read_text())
    last = curve[-1] if curve else {}
    print(f"agent: {ckpt}; {last.get('frames', 0):,} frames, last batch return {last.get('return_mean', float('nan')):.2f}; "
          f"curve: {ckpt.parent / 'curve.png'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from dfworld.agents.evaluate import BASELINES, load_agent
    from dfworld.agents.scoring import evaluate
    from dfworld.agents.worlds import frame_shape, make_env

    _threads(args)
    fixed = {}
    if args.agent not in BASELINES and Path(args.agent).exists():
        # a saved agent: by default, its own generator (world) or its own frame size and chunk (real)
        from dfworld.agents.ppo import run_checkpoint
        from dfworld.checkpoint import load_checkpoint

        trained = load_checkpoint(run_checkpoint(args.agent), stage="agent").config
        if args.checkpoint is None:
            fixed["checkpoint"] = trained["env"]["checkpoint"]
        if args.env == "real":
            fixed["size"] = args.size or trained["policy"]["image_size"]
            fixed["frames_per_step"] = args.frames_per_step or trained["frames_per_step"]
    env_cfg = _env_config(args, num_envs=min(args.num_envs, args.episodes), **fixed)
    size, frames_per_step = frame_shape(env_cfg)
    agent = load_agent(args.agent, size, args.agent_seed)
    env = make_env(env_cfg)
    returns = evaluate(agent, env, args.episodes, args.seed)
    env.close()
    summary = {
        "agent": args.agent, "env": env_cfg.env, "generator": env_cfg.checkpoint, "frame_size": size,
        "frames_per_step": frames_per_step, "horizon": env_cfg.horizon, "episodes": len(returns),
        "episode_seeds": [args.seed, args.seed + args.episodes - 1], "agent_seed": args.agent_seed,
        "return_mean": float(returns.mean()), "return_std": float(returns.std()), "returns": returns.tolist(),
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "returns"}, indent=1))
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    from dfworld.agents.transfer import TransferConfig, run_transfer

    _threads(args)
    cfg = TransferConfig(frames=args.frames, seeds=tuple(args.seeds), episodes=args.episodes, world_episodes=args.world_episodes,
                         eval_seed=args.eval_seed, out=args.out, train_in=tuple(args.train_in), world_horizon=args.world_horizon,
                         curve_every=args.curve_every)
    run_transfer(_env_config(args), _ppo_config(args, args.frames, 0), cfg, _policy_config(args), progress=not args.no_progress)
    print((Path(args.out) / "transfer.md").read_text(), end="")
    return 0


def add_agent_parser(sub) -> None:
    """Add `agent train|eval|transfer` to the `dfworld` subcommands."""
    agent = sub.add_parser("agent", help="train and evaluate agents inside the world model or in the real EventWorld; the transfer test")
    actions = agent.add_subparsers(dest="agent_command", required=True, metavar="action")

    train = actions.add_parser("train", help="train a PPO agent (resumes the run in --out)")
    _add_env_args(train)
    train.add_argument("--frames", type=int, default=200_000, help="training budget in frames (steps x frames per step x rows)")
    train.add_argument("--seed", type=int, default=0, help="seeds the weights, the sampling and the training episodes")
    train.add_argument("--out", default="runs/agent", help="run directory: checkpoint/, curve.json, curve.png")
    train.add_argument("--restart", action="store_true", help="discard the checkpoint in --out instead of resuming")
    _add_ppo_args(train)
    train.set_defaults(func=_cmd_train)

    ev = actions.add_parser("eval", help="evaluate an agent on a fixed, seeded list of episodes")
    ev.add_argument("agent", help="random, scripted, or a PPO run directory (or its checkpoint/)")
    _add_env_args(ev)
    ev.add_argument("--episodes", type=int, default=64, help="episodes (seeds --seed, --seed + 1, ...)")
    ev.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the first episode (default: apart from training seeds)")
    ev.add_argument("--agent-seed", type=int, default=0, help="seed of the agent's own sampling")
    ev.add_argument("--out", default=None, help="also write the returns to this JSON file")
    ev.set_defaults(func=_cmd_eval)

    tr = actions.add_parser("transfer", help="train PPO in the world model and in the real env, evaluate both in the real env")
    _add_env_args(tr, choose_env=False)
    tr.add_argument("--frames", type=int, default=200_000, help="training frames of each PPO run (the same in both envs)")
    tr.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (one run per env per seed)")
    tr.add_argument("--episodes", type=int, default=64, help="real-env evaluation episodes per agent and seed")
    tr.add_argument("--world-episodes", type=int, default=16, help="world-model episodes of the random and scripted agents (0: skip)")
    tr.add_argument("--eval-seed", type=int, default=EVAL_SEED, help="seed of the first evaluation episode")
    tr.add_argument("--out", default="outputs/transfer", help="output directory: transfer.json, transfer.md, runs")
    tr.add_argument("--train-in", nargs="+", choices=("world", "real", "dyna"), default=["world", "real"],
                    help="where PPO agents train (default world and real; 'real' alone: the model-free reference and the "
                         "baselines; dyna: a third agent on rows of both, --real-rows of them real)")
    tr.add_argument("--world-horizon", type=int, default=0,
                    help="steps per world-model training episode, shorter where the model is faithful (0: --horizon)")
    tr.add_argument("--curve-every", type=int, default=5, help="batches between real-game scorings of each PPO run (0: none)")
    _add_ppo_args(tr)
    tr.set_defaults(func=_cmd_transfer)
