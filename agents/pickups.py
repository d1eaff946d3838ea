"""Are the world model's rewards the real game's? Coin pick-ups checked against the simulator.

An agent plays episodes inside the world model; each episode's moves are then replayed in
EventWorld from the same seed (the world model's episode starts from that seed's real frames,
`dfworld.world.episodes.real_start`, so both begin in the same scene). A pick-up the probes read
in the generated frames counts as true when the simulator collected a coin within
`episodes.PICKUP_STEPS` steps of it (each real pick-up matched once): precision is the share of
generated pick-ups that are real, recall the share of real ones the world model paid out. A reward
an agent is trained on is only worth its precision.
"""

from __future__ import annotations

import numpy as np
import torch

from dfworld.world.episodes import PICKUP_STEPS, match_pickups


def replay_in_real_game(seed: int, moves: list[int], frames_per_step: int, size: int) -> list[int]:
    """Steps at which EventWorld, reset with `seed`, pays a coin under `moves` (until it terminates)."""
    from dfworld.envs.event_world import EventWorldEnv
    from dfworld.world.config import WorldConfig

    env = EventWorldEnv(frames_per_step=frames_per_step, world=WorldConfig(height=size, width=size))
    env.reset(seed=seed)
    steps = []
    for t, move in enumerate(moves):
        _, reward, terminated, _, _ = env.step(int(move))
        if reward > 0:
            steps.append(t)
        if terminated:
            break
    env.close()
    return steps


@torch.inference_mode()
def check_pickups(agent, env, episodes: int, seed: int) -> dict:
    """Play `episodes` world-model episodes (seeds seed, seed + 1, ...) and score their pick-ups against EventWorld.

    `env` is the world model's TorchRL env (`worlds.make_env`, env="world"; the real one scores 1). Returns
    `precision`, `recall` (None without generated, or without real, pick-ups), the counts, the
    mean world-model return, and per episode its return and the generated and the real pick-up steps.
    """
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    N, horizon = env.batch_size[0], env.max_episode_steps
    size, chunk = env.observation_spec["pixels"].shape[-3], env.frames_per_step
    agent.to(env.device)
    torch.manual_seed(seed)
    per_episode = []
    for start in range(0, episodes, N):
        env.set_seed(seed + start)  # row r plays episode seed + start + r
        with set_exploration_type(ExplorationType.RANDOM):
            rollout = env.rollout(horizon, agent, break_when_any_done=False)
        moves = rollout["action"].cpu().numpy()  # [N, T]
        reward = rollout["next", "reward"].squeeze(-1).cpu().numpy()
        done = rollout["next", "done"].squeeze(-1).cpu().numpy()
        for r in range(min(N, episodes - start)):
            end = int(np.argmax(done[r])) + 1 if done[r].any() else done.shape[1]  # the row's first episode
            generated = [int(t) for t in np.flatnonzero(reward[r, :end] > 0)]
            real = replay_in_real_game(seed + start + r, moves[r, :end].tolist(), chunk, size)
            per_episode.append({"seed": seed + start + r, "return": float(reward[r, :end].sum()), "generated": generated, "real": real})
    matched = sum(match_pickups(e["generated"], e["real"]) for e in per_episode)
    n_gen = sum(len(e["generated"]) for e in per_episode)
    n_real = sum(len(e["real"]) for e in per_episode)
    return {
        "precision": matched / n_gen if n_gen else None, "recall": matched / n_real if n_real else None,
        "matched": matched, "generated": n_gen, "real": n_real, "tolerance_steps": PICKUP_STEPS,
        "return_mean": float(np.mean([e["return"] for e in per_episode])),
        "episodes": per_episode,
    }
