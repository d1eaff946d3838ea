"""Agent training speed: frames/s of PPO through the world model (collect + update) at the batch used.

    python benchmarks/bench_agents.py                        # default model size, untrained weights
    python benchmarks/bench_agents.py --checkpoint PATH      # a trained generator checkpoint
    python benchmarks/bench_agents.py --env real             # the EventWorld simulator, for comparison
    python benchmarks/bench_agents.py --backend onnx         # the world model as ONNX Runtime graphs

A batch is rows x horizon steps of `chunk` frames (the training batch of `dfworld agent train`);
the first batch is a warm-up and is not counted. Collect time covers generation, decoding, the
probe reward and the policy's forward passes; update time covers GAE and the PPO epochs. Speed
does not depend on the weights, so without a checkpoint the script writes one with the default
configs and random weights (as benchmarks/bench_env.py does).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch
from bench_env import random_generator_checkpoint  # benchmarks/ is this script's directory

from dfworld.agents.ppo import PPOConfig, train
from dfworld.agents.worlds import AgentEnvConfig, frame_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="generator checkpoint (default: untrained default-size model)")
    parser.add_argument("--env", choices=("world", "real"), default="world", help="world: the generator; real: EventWorld")
    parser.add_argument("--num-envs", type=int, default=16, help="rows (the batch of `dfworld agent train`)")
    parser.add_argument("--horizon", type=int, default=64, help="steps per row per batch")
    parser.add_argument("--batches", type=int, default=2, help="timed batches (after one warm-up batch)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="where the generator runs")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="how the world model runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    ckpt = args.checkpoint or random_generator_checkpoint(os.path.join(tmp.name, "gen"))
    env_cfg = AgentEnvConfig(env=args.env, checkpoint=ckpt, num_envs=args.num_envs, horizon=args.horizon, device=args.device,
                             backend=args.backend)
    size, frames_per_step = frame_shape(env_cfg)
    frames_per_batch = args.num_envs * args.horizon * frames_per_step
    ppo = dataclasses.replace(PPOConfig(), frames=(args.batches + 1) * frames_per_batch, checkpoint_every=10**9)
    train(env_cfg, ppo, os.path.join(tmp.name, "run"), progress=False)
    rows = json.loads(Path(tmp.name, "run", "curve.json").read_text())[1:]
    collect = sum(r["collect_s"] for r in rows)
    update = sum(r["update_s"] for r in rows)
    frames = frames_per_batch * len(rows)
    print(f"generator: {args.checkpoint or 'untrained, default model and codec configs'}; env {args.env}; device {args.device}, "
          f"backend {args.backend}, threads {args.threads}; {size}x{size} frames, {frames_per_step} per step; "
          f"PPO {ppo.epochs} epochs, minibatch {ppo.minibatch}")
    print("\n| env | rows | frames/batch | collect frames/s | update s/batch | training frames/s |\n|---|---|---|---|---|---|")
    print(f"| {args.env} | {args.num_envs} | {frames_per_batch:,} | {frames / collect:,.1f} | {update / len(rows):.2f} | "
          f"{frames / (collect + update):,.1f} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()
