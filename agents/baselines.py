"""Two reference agents: uniformly random moves, and a scripted agent that walks to the coin.

Both are TensorDict modules like the PPO actor (`pixels` in, `action` out), so every agent runs
through the same evaluation code in either environment. The scripted agent sees only pixels: it
reads the agent and coin positions with the probes (`dfworld.world.probes`), which is what makes
it a fair upper reference for an agent that learns from frames.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from dfworld.world.config import ACTION_DELTAS, ACTIONS, WorldConfig
from dfworld.world.probes import read_frame

NOOP = ACTIONS.index("noop")


class RandomAgent(TensorDictModuleBase):
    """Uniformly random moves from its own seeded generator."""

    in_keys = ["pixels"]
    out_keys = ["action"]

    def __init__(self, seed: int = 0):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        batch = tensordict.batch_size
        moves = self.rng.integers(0, len(ACTIONS), size=tuple(batch))
        tensordict.set("action", torch.as_tensor(moves, dtype=torch.int64, device=tensordict.device))
        return tensordict


class ScriptedAgent(TensorDictModuleBase):
    """Walks the shortest path to the coin round the objects, all read from the frame by the probes.

    Each step it reads the agent, the coin and the objects (`read_frame`), computes the distance
    to the coin over the positions the agent may occupy (a breadth-first search on the pixel
    grid; objects block the agent, as in EventWorld) and takes the move that descends it. When
    the probes miss the agent or the coin, or no path is found, the move is random; a fraction
    `explore` of moves is random too.
    """

    in_keys = ["pixels"]
    out_keys = ["action"]

    def __init__(self, image_size: int = 64, seed: int = 0, explore: float = 0.0):
        super().__init__()
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {explore}")
        self.world = c = WorldConfig(height=image_size, width=image_size)
        self.rng = np.random.default_rng(seed)
        self.explore = explore
        r_agent, gap = c.px(c.agent_radius), c.px(2)
        self.block = r_agent + c.px(c.object_radius) + gap  # an object this close (per axis) blocks the agent
        self.touch = r_agent + c.px(c.coin_radius) + gap  # the coin this close (per axis) is collected
        ys, xs = np.mgrid[0 : c.height, 0 : c.width]
        self.ys, self.xs = ys, xs
        self.inside = (xs >= r_agent) & (xs <= c.width - 1 - r_agent) & (ys >= c.sky_rows + r_agent) & (ys <= c.height - 1 - r_agent)

    def distance_to_coin(self, reading) -> np.ndarray:
        """Steps from each agent position [H, W] to a position that collects the coin (-1: unreachable)."""
        free = self.inside.copy()
        for o in reading.objects.values():
            free &= np.maximum(np.abs(self.xs - o.x), np.abs(self.ys - o.y)) > self.block
        frontier = free & (np.maximum(np.abs(self.xs - reading.coin.x), np.abs(self.ys - reading.coin.y)) <= self.touch)
        dist = np.where(frontier, 0, -1)
        d = 0
        while frontier.any():  # breadth-first, one pixel per round, four-connected
            d += 1
            grown = np.zeros_like(frontier)
            grown[1:] |= frontier[:-1]
            grown[:-1] |= frontier[1:]
            grown[:, 1:] |= frontier[:, :-1]
            grown[:, :-1] |= frontier[:, 1:]
            frontier = grown & free & (dist < 0)
            dist[frontier] = d
        return dist

    def move(self, frame: np.ndarray) -> int:
        """The move for one uint8 HWC frame."""
        reading = read_frame(frame, self.world)
        if reading.agent is None or reading.coin is None or self.rng.random() < self.explore:
            return int(self.rng.integers(len(ACTIONS)))
        dist = self.distance_to_coin(reading)
        x, y = round(reading.agent.x), round(reading.agent.y)
        best, best_d = None, None
        for a, (dx, dy) in enumerate(ACTION_DELTAS):
            if a == NOOP:
                continue
            nx, ny = x + dx, y + dy
            inside = 0 <= nx < self.world.width and 0 <= ny < self.world.height
            if inside and dist[ny, nx] >= 0 and (best_d is None or dist[ny, nx] < best_d):
                best, best_d = a, dist[ny, nx]
        return int(self.rng.integers(1, len(ACTIONS))) if best is None else best

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        pixels = tensordict["pixels"]
        frames = pixels.reshape(-1, *pixels.shape[-3:]).cpu().numpy()  # [B, H, W, 3]
        moves = [self.move(f) for f in frames]
        tensordict.set("action", torch.as_tensor(moves, dtype=torch.int64, device=pixels.device).reshape(pixels.shape[:-3]))
        return tensordict
