"""Playing scripted episodes in the simulator, and what a played episode records.

Frame convention, shared by data sets, the world model and the benchmarks: frame f is the
result of action f (`frames[f] = step(actions[f])`), after the events scheduled at f have been
applied. The start frames come before frame 0: the frame drawn at reset, then `n - 1` frames in
which the agent stands still (`real_start`). Every world-model episode starts from them, as its
context, and EventWorld-v0's reset plays them too, so the same seed gives both the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from dfworld.world.config import START_FRAMES, WorldConfig
from dfworld.world.events import initial_prompt, parse_event
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
    context: np.ndarray  # [n, H, W, 3] the start frames, before frame 0 (real_start)
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


@dataclass
class Start:
    """The start of an episode (`real_start`): its frames, the text they were made under, and its event's result."""

    frames: np.ndarray  # [n, H, W, 3]
    prompt: str
    event: dict = field(default_factory=dict)  # with a start event: event, event_applied, event_reason


def real_start(world: EventWorld, seed: int, frames: int = START_FRAMES, event: str | None = None) -> Start:
    """Reset `world` to `seed` and play the start frames: the reset frame, then `frames - 1` still frames.

    `event` (an EventWorld event text) is applied to the reset scene first, as EventWorld-v0's
    reset option "prompt" does; the start's prompt is then that text if the world could apply it,
    else the initial time-of-day sentence. A text that is no event raises before the world changes.
    """
    if frames < 1:
        raise ValueError(f"an episode starts from at least one frame, got {frames}")
    parsed = parse_event(event) if event is not None else None
    out = [world.reset(seed)]
    prompt, info = initial_prompt(world.state.time), {}
    if parsed is not None:
        res = world.apply_event(parsed)
        info = {"event": event, "event_applied": res.applied, "event_reason": res.reason}
        prompt = event if res.applied else prompt
        out = [world.render()]
    out += [world.step(0)[0] for _ in range(frames - 1)]
    return Start(np.stack(out), prompt, info)


def play_episode(episode: Episode, world: EventWorld | None = None, progress: bool = False, start_frames: int = START_FRAMES) -> EpisodeRecord:
    """Play a scripted episode in the simulator, after its `start_frames` start frames, and record everything."""
    world = world or EventWorld()
    start = real_start(world, episode.seed, start_frames)
    context, prompt = start.frames, start.prompt
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


PICKUP_STEPS = 1  # a generated pick-up may be this many steps from the real one


def match_pickups(generated: list[int], real: list[int], tolerance: int = PICKUP_STEPS) -> int:
    """How many generated pick-up steps match a real one (each real one used once)."""
    free = sorted(real)
    matched = 0
    for k in sorted(generated):
        hit = next((r for r in free if abs(r - k) <= tolerance), None)
        if hit is not None:
            free.remove(hit)
            matched += 1
    return matched
