"""The world-model envs' reward: coins collected, read by the probes from generated frames.

The probes read pixels only. A coin is counted as collected when the coin seen at the end of
the previous step has left its place (respawned elsewhere, or gone) while the agent was within
reach of it, which is what a collection looks like in EventWorld. The envs terminate an episode
after `coins_to_win` coins.
"""

from __future__ import annotations

import numpy as np

from dfworld.world.config import WorldConfig
from dfworld.world.probes import read_frame

READ = ("agent", "coin")  # what the reward reads of a frame (`read_frame`'s entities)


class CoinCounter:
    """Coins collected in one row's generated frames, read by the probes (module docstring)."""

    def __init__(self, world: WorldConfig, frames_per_read: int):
        self.world = world
        # touch distance, plus how far the agent can move between two reads, plus a pixel of slack
        touch = world.px(world.agent_radius + world.coin_radius + 2)
        self.reach = touch + frames_per_read * world.agent_speed * world.px(1) + 1
        self.jump = world.px(3)  # a coin never moves unless collected: a jump this large is a respawn
        self.reset()

    def reset(self) -> None:
        self.coins, self.last_coin, self.last_agent = 0, None, None

    def update(self, frame: np.ndarray) -> float:
        r = read_frame(frame, self.world, READ)
        coin = None if r.coin is None else np.array([r.coin.x, r.coin.y])
        agent = None if r.agent is None else np.array([r.agent.x, r.agent.y])
        reward = 0.0
        if self.last_coin is not None and self.last_agent is not None:
            was_near = np.abs(self.last_agent - self.last_coin).max() <= self.reach
            moved = coin is None or np.abs(coin - self.last_coin).max() > self.jump
            if was_near and moved:
                reward = 1.0
                self.coins += 1
        self.last_coin, self.last_agent = coin, agent
        return reward
