import json

import numpy as np
import pytest

from dfworld.world.episodes import play_episode
from dfworld.world.events import paraphrase_split, parse_event
from dfworld.world.scripts import ScriptError, load_script, loads_script
from dfworld.world.suite import SHIPPED_SUITES, make_suite, resolve_script, shipped_suite

HEADER = '{"format": "dfworld-events", "version": 1, "name": "t"}'
EPISODE = '{"episode": "e0", "seed": 1, "frames": 64}'


def script(*lines):
    return "\n".join(lines) + "\n"


def test_shipped_suite_size_and_shape():
    suite = shipped_suite("core")
    assert len(suite.episodes) >= 20
    for ep in suite.episodes:
        assert ep.frames >= 240
        assert len(ep.events()) >= 4
        assert all(e.t % 16 == 0 for e in ep.events())


@pytest.mark.parametrize("name", sorted(SHIPPED_SUITES))
def test_every_shipped_event_applies_in_the_simulator(name):
    suite = shipped_suite(name)
    for ep in suite.episodes:
        rec = play_episode(ep)
        assert all(e.applied for e in rec.events), [(e.t, e.text, e.reason) for e in rec.events if not e.applied]


def test_heldout_twin_has_the_same_events_in_heldout_words():
    train, heldout = shipped_suite("core"), shipped_suite("core-heldout")
    for a, b in zip(train.episodes, heldout.episodes):
        assert (a.id, a.seed, a.frames) == (b.id, b.seed, b.frames)
        assert (a.actions() == b.actions()).all()
        for ea, eb in zip(a.events(), b.events()):
            assert ea.t == eb.t and parse_event(ea.event) == parse_event(eb.event)
            assert paraphrase_split(ea.event) == "train" and paraphrase_split(eb.event) == "heldout"


def test_shipped_files_are_what_make_suite_produces():
    train, heldout = make_suite()
    assert train.dumps() == shipped_suite("core").dumps()
    assert heldout.dumps() == shipped_suite("core-heldout").dumps()


def test_round_trip():
    text = shipped_suite("core").dumps()
    assert loads_script(text).dumps() == text


def test_actions_hold_until_changed():
    s = loads_script(script(HEADER, EPISODE, '{"t": 0, "action": "left"}', '{"t": 10, "action": 1}', '{"t": 10, "event": "night falls"}'))
    acts = s.episodes[0].actions()
    assert (acts[:10] == 3).all() and (acts[10:] == 1).all()


@pytest.mark.parametrize(
    "lines, line, message",
    [
        ((HEADER, EPISODE, '{"t": 5, "event": "make it purple"}'), 3, "unknown event"),
        ((HEADER, EPISODE, '{"t": 9, "action": 1}', '{"t": 5, "event": "night falls"}'), 4, "times out of order"),
        (('{"format": "dfworld-events", "version": 2}',), 1, "unsupported script version 2"),
        (('{"format": "other", "version": 1}',), 1, "unknown format"),
        (('{"episode": "e0", "seed": 1, "frames": 64}',), 1, "first line must be the header"),
        ((HEADER, EPISODE, '{"t": "5", "action": 1}'), 3, "'t' must be an integer"),
        ((HEADER, EPISODE, '{"t": 5, "action": 9}'), 3, "out of range"),
        ((HEADER, EPISODE, '{"t": 5, "action": "jump"}'), 3, "unknown action name"),
        ((HEADER, EPISODE, '{"t": 5, "event": 3}'), 3, "must be a str"),
        ((HEADER, EPISODE, '{"t": 5, "event": ""}'), 3, "must not be empty"),
        ((HEADER, EPISODE, '{"t": 64, "event": "night falls"}'), 3, "outside the episode's frames"),
        ((HEADER, EPISODE, '{"t": 5, "action": 1, "event": "night falls"}'), 3, "exactly one of"),
        ((HEADER, EPISODE, '{"t": 5, "actoin": 1}'), 3, "unknown key"),
        ((HEADER, '{"t": 5, "action": 1}'), 2, "must follow an episode line"),
        ((HEADER, '{"episode": "e0", "seed": "x", "frames": 64}'), 2, "'seed' must be an integer"),
        ((HEADER, '{"episode": "e0", "seed": 1}'), 2, "needs 'frames'"),
        ((HEADER, EPISODE, EPISODE), 3, "duplicate episode id"),
        ((HEADER, EPISODE, "{not json"), 3, "not valid JSON"),
        ((HEADER, EPISODE, "[1, 2]"), 3, "must be a JSON object"),
        (('{"format": "dfworld-events", "version": 1, "world": {"height": 50}}',), 1, "multiple of 16"),
        (('{"format": "dfworld-events", "version": 1, "world": {"hieght": 64}}',), 1, "unknown key"),
    ],
)
def test_malformed_scripts_name_the_line_and_the_problem(lines, line, message):
    with pytest.raises(ScriptError) as err:
        loads_script(script(*lines), source="bad.jsonl")
    assert f"bad.jsonl:{line}:" in str(err.value)
    assert message in str(err.value)


def test_empty_script_and_no_episodes():
    with pytest.raises(ScriptError, match="empty script"):
        loads_script("\n")
    with pytest.raises(ScriptError, match="no episode lines"):
        loads_script(script(HEADER))


def test_files_and_names(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(script(HEADER, EPISODE, '{"t": 0, "event": "the sun sets"}'))
    assert load_script(path).episodes[0].events()[0].event == "the sun sets"
    assert resolve_script(str(path)).name == "t"
    assert resolve_script("core").name == "core"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_script(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="neither a shipped suite"):
        resolve_script("nonsense")
    assert json.loads(path.read_text().splitlines()[0])["version"] == 1


def test_a_coin_seekers_episodes_collect_coins_and_replay_the_same():
    from dfworld.training.stages.stream import plan_sequence
    from dfworld.world.config import ACTIONS, WorldConfig
    from dfworld.world.simulator import EventWorld
    from dfworld.world.suite import toward_coin

    world = EventWorld(WorldConfig(height=64, width=64))
    world.reset(3)
    state = world.state
    always = np.random.default_rng(0)
    dx, dy = state.coin[0] - state.agent[0], state.coin[1] - state.agent[1]
    move = ACTIONS[toward_coin(state, always, greedy=1.0)]
    assert move == ({True: "right", False: "left"}[dx > 0] if abs(dx) >= abs(dy) else {True: "down", False: "up"}[dy > 0])
    coins = {seek: [int(plan_sequence(s, 48, (8, 16), 4, world, seek).states["coins"][-1]) for s in range(16)] for seek in (False, True)}
    assert sum(coins[True]) >= 3 * max(1, sum(coins[False]))  # an agent's pick-ups, which a random walk rarely meets
    a, b = plan_sequence(5, 48, (8, 16), 4, world, True), plan_sequence(5, 48, (8, 16), 4, world, True)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert all(len(set(a.actions[k : k + 4].tolist())) == 1 for k in range(0, 48, 4))  # chosen once a chunk
