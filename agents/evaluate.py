"""Agents by name: the baselines ('random', 'scripted') or a saved PPO agent, checked against the env's frames.

Scoring them (returns over a fixed, seeded list of episodes) is `dfworld.agents.scoring.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

BASELINES = ("random", "scripted")


def load_agent(spec: str | Path, image_size: int, seed: int = 0):
    """An agent module: 'random', 'scripted', or a saved PPO agent checkpoint directory."""
    from dfworld.agents.baselines import RandomAgent, ScriptedAgent

    if str(spec) == "random":
        return RandomAgent(seed)
    if str(spec) == "scripted":
        return ScriptedAgent(image_size, seed)
    if not Path(spec).exists():
        raise FileNotFoundError(f"agent {str(spec)!r} is neither {' nor '.join(BASELINES)} nor an existing agent checkpoint")
    from dfworld.agents.ppo import load_ppo

    actor, config = load_ppo(spec)
    size = config["policy"]["image_size"]
    if size != image_size:
        raise ValueError(
            f"agent {str(spec)!r} reads {size}x{size} frames but this env makes {image_size}x{image_size} frames; "
            "evaluate it with the generator it was trained with (--checkpoint), or a real env of its size"
        )
    return actor
