"""Scoring agents: returns over a fixed, seeded list of episodes, in either environment.

Episode i starts from seed `seed + i` in both environments, so every agent meets the same
episodes; an episode runs until it terminates (the coins are collected) or reaches the horizon.
"""

from __future__ import annotations

import numpy as np
import torch

from dfworld.agents.curves import first_episode_returns
from dfworld.agents.worlds import EVAL_SEED


@torch.inference_mode()
def evaluate(agent, env, episodes: int, seed: int = EVAL_SEED) -> np.ndarray:
    """Returns of `episodes` episodes with seeds seed, seed + 1, ... (rows of `env` run them in rounds).

    A learned policy samples its actions (the stochastic policy it was trained as), from torch's
    generator seeded with `seed`; the baselines draw from their own seeded generators.
    """
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    N, horizon = env.batch_size[0], env.max_episode_steps
    agent.to(env.device)
    torch.manual_seed(seed)
    out: list[float] = []
    for start in range(0, episodes, N):
        env.set_seed(seed + start)  # row r of this round plays episode start + r
        with set_exploration_type(ExplorationType.RANDOM):
            # rows whose episode ends early restart; only each row's first episode counts
            rollout = env.rollout(horizon, agent, break_when_any_done=False)
        out.extend(first_episode_returns(rollout)[: episodes - start].tolist())
    return np.array(out)
