"""dfworld environments (installed as dfworld.envs) and their Gymnasium registration.

`import dfworld` registers the ids below; `gymnasium.make("dfworld/EventWorld-v0")` and
`gymnasium.make("dfworld/WorldModel-v0", checkpoint=...)` then work, and
`gymnasium.make_vec("dfworld/WorldModel-v0", num_envs=N, checkpoint=...)` gives the batched env.
"""

from __future__ import annotations

import gymnasium as gym

EVENT_WORLD_ID = "dfworld/EventWorld-v0"
WORLD_MODEL_ID = "dfworld/WorldModel-v0"


def register_envs() -> None:
    """Register the dfworld environment ids with Gymnasium (idempotent)."""
    if EVENT_WORLD_ID not in gym.registry:
        gym.register(
            id=EVENT_WORLD_ID,
            entry_point="dfworld.envs.event_world:EventWorldEnv",
            max_episode_steps=250,
        )
    if WORLD_MODEL_ID not in gym.registry:
        gym.register(
            id=WORLD_MODEL_ID,
            entry_point="dfworld.envs.world_model:WorldModelEnv",
            vector_entry_point="dfworld.envs.world_model:WorldModelVectorEnv",
            max_episode_steps=250,
        )


__all__ = ["EVENT_WORLD_ID", "WORLD_MODEL_ID", "register_envs"]
