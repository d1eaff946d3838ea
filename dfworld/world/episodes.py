"""Playing scripted episodes in the simulator, and what a played episode records.

Frame convention, shared by data sets, the world model and the benchmarks: frame f is the
result of action f (`frames[f] = step(actions[f])`), after the events scheduled at f have been
applied. The frame drawn at reset is the context before frame 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from dfworld.world.config import WorldConfig
from dfworld.world.events import initial_prompt
from dfworld.world.scripts import Episode
from dfworld.world.simulator import EventWorld
from dfworld.world.suite import plan_episode


@dataclass
class EventRecord:
    """An event as it was applied: when, its text, and whether the world could apply it."""

    t: int
    text: str
    applied: bool
    reason: str = ""


@dataclass
class EpisodeRecord:
    """A played episode: frames, actions, rewards, true state per frame, and its events."""

    frames: np.ndarray  # [F, H, W, 3] uint8
    actions: np.ndarray  # [F] int64
    rewards: np.ndarray  # [F] float32
    states: dict[str, np.ndarray]  # each [F, ...], see EventWorld.state_arrays
    initial_prompt: str
    context: np.ndarray  # [H, W, 3] the reset frame, before frame 0
    events: list[EventRecord] = field(default_factory=list)

    def prompts(self) -> list[str]:
        """The conditioning text of every frame: the latest applied event, else the initial prompt."""
        out, current, i = [], self.initial_prompt, 0
        applied = [e for e in self.events if e.applied]
        for f in range(len(self.frames)):
            while i < len(applied) and applied[i].t <= f:
                current = applied[i].text
                i += 1
            out.append(current)
        return out


def stack_states(states: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([s[k] for s in states]) for k in states[0]}


def play_episode(episode: Episode, world: EventWorld | None = None, progress: bool = False) -> EpisodeRecord:
    """Play a scripted episode in the simulator and record everything."""
    world = world or EventWorld()
    context = world.reset(episode.seed)
    prompt = initial_prompt(world.state.time)
    actions = episode.actions()
    events = episode.events()
    frames, rewards, states, log = [], [], [], []
    i = 0
    for f in tqdm(range(episode.frames), desc=episode.id, disable=not progress, leave=False):
        while i < len(events) and events[i].t == f:
            res = world.apply_event(events[i].event)
            log.append(EventRecord(f, events[i].event, res.applied, res.reason))
            i += 1
        frame, reward = world.step(int(actions[f]))
        frames.append(frame)
        rewards.append(reward)
        states.append(world.state_arrays())
    return EpisodeRecord(
        frames=np.stack(frames),
        actions=actions,
        rewards=np.asarray(rewards, np.float32),
        states=stack_states(states),
        initial_prompt=prompt,
        context=context,
        events=log,
    )



def sample_episodes(
    config: WorldConfig, n_episodes: int, frames: int = 96, event_every: int = 16, seed: int = 123
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames [N*F, H, W, 3] and stacked true states of randomly planned episodes.

    An event every `event_every` frames (offset by half a period) covers every time, weather and
    object change quickly: the sample used to measure the probes.
    """
    world = EventWorld(config)
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n_episodes):
        ep, _ = plan_episode(f"sample-{i}", seed * 1000 + i, frames, list(range(event_every // 2, frames, event_every)), rng, world)
        recs.append(play_episode(ep, world))
    states = {k: np.concatenate([r.states[k] for r in recs]) for k in recs[0].states}
    return np.concatenate([r.frames for r in recs]), states
