"""Fidelity: the faithful-frame test and the pick-up matching, on hand-made probe readings and on the simulator."""

import numpy as np

from dfworld.bench.fidelity import CHECKS, by_check, episode_fidelity, faithful_frames, fidelity_headline, frame_checks
from dfworld.world.config import WorldConfig
from dfworld.world.episodes import match_pickups, play_episode
from dfworld.world.events import parse_event
from dfworld.world.probes import Blob, FrameReading, read_frames
from dfworld.world.scripts import Episode, ScriptItem
from dfworld.world.simulator import EventWorld


def reading(agent=(10, 10), red=(30, 30), coin=(50, 50), time="day", weather="clear", **objects):
    objs = {"red": Blob(*red, 20)} if red else {}
    objs.update({c: Blob(*p, 20) for c, p in objects.items()})
    return FrameReading(time, weather, objs, Blob(*agent, 10) if agent else None, Blob(*coin, 5) if coin else None)


def test_each_part_of_the_test():
    real = reading()
    assert all(frame_checks(reading(agent=(11.9, 10)), real, frozenset(), True).values())  # agent within 2 px
    assert not frame_checks(reading(agent=(12.5, 10)), real, frozenset(), True)["agent"]
    assert not frame_checks(reading(agent=None), real, frozenset(), True)["agent"]
    assert not frame_checks(reading(red=(34, 30)), real, frozenset(), True)["objects"]  # 4 px off
    assert frame_checks(reading(red=(34, 30)), real, frozenset({"red"}), True)["objects"]  # placed by chance: presence only
    assert not frame_checks(reading(blue=(5, 5)), real, frozenset(), True)["objects"]  # an extra object
    assert not frame_checks(reading(red=None), real, frozenset({"red"}), True)["objects"]  # a missing one, even by chance
    assert not frame_checks(reading(time="night"), real, frozenset(), True)["scene"]
    assert not frame_checks(reading(weather="rain"), real, frozenset(), True)["scene"]
    assert not frame_checks(reading(coin=(40, 50)), real, frozenset(), True)["coin"]
    assert frame_checks(reading(coin=(40, 50)), real, frozenset(), False)["coin"]  # respawned: presence only
    assert not frame_checks(reading(coin=None), real, frozenset(), False)["coin"]


def test_an_appeared_object_and_its_recolour_count_by_presence():
    events = [(2, parse_event("a blue object appears")), (4, parse_event("the blue object turns pink"))]
    real = [reading()] * 2 + [reading(blue=(5, 5))] * 2 + [reading(pink=(5, 5))] * 2
    gen = [reading()] * 2 + [reading(blue=(40, 40))] * 2 + [reading(pink=(40, 40))] * 2
    assert faithful_frames(gen, real, events, None).all()
    assert not faithful_frames(gen, real, [], None)[2:].any()


def test_pickups_match_within_a_step_once_each():
    assert match_pickups([3, 4], [4]) == 1
    assert match_pickups([2, 9], [3, 7]) == 1
    assert match_pickups([], [1]) == 0


def test_the_simulator_is_faithful_to_itself_and_a_shifted_copy_is_not():
    world = WorldConfig()
    ep = Episode("e", 5, 48, "train", [ScriptItem(t, action=3) for t in range(0, 48, 8)] + [ScriptItem(16, event="night falls")])
    rec = play_episode(ep, EventWorld(world))
    real = read_frames(rec.frames, world)
    events = [(e.t, parse_event(e.text)) for e in rec.events if e.applied]
    pickups = np.nonzero(rec.rewards > 0)[0].tolist()
    same = episode_fidelity(real, real, events, pickups, [f // 4 for f in pickups], 4)
    assert fidelity_headline([same])["faithful"] == 1.0
    late = read_frames(np.concatenate([rec.frames[:1].repeat(8, 0), rec.frames[:-8]]), world)  # eight frames behind
    behind = fidelity_headline([episode_fidelity(late, real, events, pickups, [], 4)])
    assert behind["faithful"] < 0.9 and behind["pickup_recall"] in (None, 0.0)


def test_each_check_is_scored_alone_by_horizon():
    world = WorldConfig()
    ep = Episode("e", 5, 48, "train", [ScriptItem(t, action=3) for t in range(0, 48, 8)])
    rec = play_episode(ep, EventWorld(world))
    real = read_frames(rec.frames, world)
    late = read_frames(np.concatenate([rec.frames[:1].repeat(8, 0), rec.frames[:-8]]), world)  # eight frames behind
    stats = episode_fidelity(late, real, [], [], [], 4)
    checks = by_check([stats])
    assert set(checks) == set(CHECKS) and checks["scene"]["all"] == 1.0  # the scene never changes: only positions lag
    assert checks["agent"]["faithful_0_15"] < 1.0 and checks["agent"]["faithful_240+"] is None  # a 48-frame episode
    assert np.array_equal(stats.per_frame, np.logical_and.reduce([stats.checks[k] for k in CHECKS]))
