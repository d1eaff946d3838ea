"""Generating scripted episodes, and the suites shipped with dfworld.

An episode plan is drawn from a seed: a random walk of held actions, and events at times on
16-frame boundaries (so they fall on chunk boundaries for any chunk size dividing 16). Every
event is chosen to be applicable and to change something in the state it meets (night never
follows night; a recolour targets an object that exists and a colour that is free), which is
checked by simulating the episode while planning. The held-out variant of a suite has the same
seeds, times, actions and events, worded with held-out paraphrases.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from dfworld.world.config import ACTIONS, COLOR_NAMES
from dfworld.world.events import Event
from dfworld.world.scripts import Episode, Script, ScriptItem, load_script
from dfworld.world.simulator import EventWorld, WorldState

SHIPPED_SUITES = {"core": "core_v1.jsonl", "core-heldout": "core_v1_heldout.jsonl"}
_ACTION_P = np.array([0.2, 0.2, 0.2, 0.2, 0.2])


def applicable_events(state: WorldState) -> dict[str, list[Event]]:
    """Every event that would change `state`, grouped by kind."""
    used = sorted(state.used_colors())
    free = [c for c in COLOR_NAMES if c not in used]
    has_slot = None in state.objects
    return {
        "time_day": [Event("time_day")] if state.time != "day" else [],
        "time_dusk": [Event("time_dusk")] if state.time != "dusk" else [],
        "time_night": [Event("time_night")] if state.time != "night" else [],
        "weather_rain": [Event("weather_rain")] if state.weather != "rain" else [],
        "weather_snow": [Event("weather_snow")] if state.weather != "snow" else [],
        "weather_clear": [Event("weather_clear")] if state.weather != "clear" else [],
        "object_appear": [Event("object_appear", c) for c in free] if has_slot else [],
        "object_vanish": [Event("object_vanish", c) for c in used] if len(used) >= 2 else [],
        "object_recolor": [Event("object_recolor", a, b) for a in used for b in free],
    }


def sample_event(state: WorldState, rng: np.random.Generator) -> Event:
    """An applicable event: a kind uniformly among applicable kinds, then its arguments."""
    options = {k: v for k, v in applicable_events(state).items() if v}
    kind = list(options)[int(rng.integers(len(options)))]
    return options[kind][int(rng.integers(len(options[kind])))]


def toward_coin(state: WorldState, rng: np.random.Generator, greedy: float = 0.8) -> int:
    """A coin seeker's action: with probability `greedy` a step along the longer axis towards the coin, else a random one."""
    if rng.random() >= greedy:
        return int(rng.integers(len(ACTIONS)))
    dx, dy = state.coin[0] - state.agent[0], state.coin[1] - state.agent[1]
    if dx == dy == 0:
        return ACTIONS.index("noop")
    if abs(dx) >= abs(dy):
        return ACTIONS.index("right" if dx > 0 else "left")
    return ACTIONS.index("down" if dy > 0 else "up")


def plan_episode(
    eid: str, seed: int, frames: int, event_times: list[int], rng: np.random.Generator, world: EventWorld,
    seek_every: int = 0,
) -> tuple[Episode, list[Event]]:
    """Draw an episode's actions, and an applicable event at each of `event_times` (canonical text).

    The actions are a random walk, or with `seek_every` > 0 a coin seeker's (`toward_coin`, chosen every `seek_every`
    frames from the state it meets), whose episodes collect coins as an agent's do."""
    ep = Episode(eid, seed, frames)
    t = 0
    while t < frames and not seek_every:  # 1. the action random walk, changing every 8 or 16 frames
        ep.items.append(ScriptItem(t, action=int(rng.choice(len(ACTIONS), p=_ACTION_P))))
        t += int(rng.choice((8, 16)))
    actions = ep.actions() if not seek_every else None
    world.reset(seed)  # 2. simulate, choosing each event for the state it meets
    events: list[Event] = []
    pending = sorted(event_times)
    move = 0
    for f in range(frames):
        while pending and pending[0] == f:
            pending.pop(0)
            ev = sample_event(world.state, rng)
            if not (res := world.apply_event(ev)).applied:
                raise RuntimeError(f"planned event {ev} did not apply: {res.reason}")
            events.append(ev)
            ep.items.append(ScriptItem(f, event=ev.text()))
        if actions is not None:
            move = int(actions[f])
        elif f % seek_every == 0:
            move = toward_coin(world.state, rng)
            ep.items.append(ScriptItem(f, action=move))
        world.step(move)
    ep.items.sort(key=lambda it: (it.t, it.event is not None))
    return ep, events


def suite_event_times(frames: int, max_events: int, rng: np.random.Generator) -> list[int]:
    """Event times for a long episode: first at 48, then every 48 or 64 frames, 32 frames before the end."""
    times, t = [], 48
    while t <= frames - 32 and len(times) < max_events:
        times.append(t)
        t += int(rng.choice((48, 64)))
    return times


def make_suite(
    name: str = "core",
    n_episodes: int = 24,
    frames: int = 320,
    max_events: int = 5,
    seed: int = 0,
    first_world_seed: int = 1000,
) -> tuple[Script, Script]:
    """A suite and its held-out-paraphrase twin (same seeds, times, actions and events)."""
    rng = np.random.default_rng(seed)
    world = EventWorld()
    scripts = {}
    plans = [
        plan_episode(f"{name}-{i:02d}", first_world_seed + i, frames, suite_event_times(frames, max_events, rng), rng, world)
        for i in range(n_episodes)
    ]
    for split in ("train", "heldout"):
        word_rng = np.random.default_rng([seed, split == "heldout"])
        episodes = []
        for ep, events in plans:
            it_events = iter(events)
            items = [
                ScriptItem(it.t, event=next(it_events).sample_text(word_rng, split)) if it.event else it for it in ep.items
            ]
            episodes.append(Episode(ep.id, ep.seed, ep.frames, split, items))
        desc = (
            f"{n_episodes} EventWorld episodes of {frames} frames with up to {max_events} events each "
            f"({'held-out' if split == 'heldout' else 'training'} paraphrases); made by dfworld.world.suite.make_suite"
        )
        scripts[split] = Script(name if split == "train" else f"{name}-heldout", episodes, desc)
    return scripts["train"], scripts["heldout"]


def shipped_suite(name: str = "core") -> Script:
    """Load a suite shipped inside the package ('core' or 'core-heldout')."""
    if name not in SHIPPED_SUITES:
        raise ValueError(f"unknown shipped suite {name!r}; shipped: {sorted(SHIPPED_SUITES)}")
    path = resources.files("dfworld.world.suites") / SHIPPED_SUITES[name]
    with resources.as_file(path) as p:
        return load_script(p)


def resolve_script(name_or_path: str) -> Script:
    """A shipped suite by name ('core', 'core-heldout') or a script file by path."""
    if name_or_path in SHIPPED_SUITES:
        return shipped_suite(name_or_path)
    if not Path(name_or_path).is_file():
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a shipped suite ({', '.join(sorted(SHIPPED_SUITES))}) nor a script file"
        )
    return load_script(name_or_path)


def write_shipped_suites(directory: str | Path) -> None:
    """Regenerate the shipped suite files (`dfworld script make-suite` calls this)."""
    train, heldout = make_suite()
    train.save(Path(directory) / SHIPPED_SUITES["core"])
    heldout.save(Path(directory) / SHIPPED_SUITES["core-heldout"])

