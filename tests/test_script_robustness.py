"""Event scripts that are not text, not JSON or not runnable: a ScriptError naming the file and line, never a crash."""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfworld.world.scripts import ScriptError, load_script, loads_script

HEADER = '{"format": "dfworld-events", "version": 1, "name": "x"}'
EPISODE = '{"episode": "e0", "seed": 7, "frames": 64}'


def write(tmp_path, data: bytes):
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("line, match", [
    ("[" * 100_000, "s.jsonl:2: not valid JSON"),
    ('{"episode": "e0", "seed": ' + "9" * 5001 + ', "frames": 64}', "s.jsonl:2: not valid JSON"),
    ('{"episode": "e0", "seed": ' + "9" * 30 + ', "frames": 64}', "s.jsonl:2: 'seed' is out of range"),
    ('{"episode": "e0", "seed": -3, "frames": 64}', "s.jsonl:2: 'seed' must be a non-negative"),
])
def test_hostile_lines_name_the_file_and_line(tmp_path, line, match):
    with pytest.raises(ScriptError, match=match):
        load_script(write(tmp_path, f"{HEADER}\n{line}\n".encode()))


def test_binary_files_directories_and_a_bom(tmp_path):
    with pytest.raises(ScriptError, match="s.jsonl:1: not UTF-8 text"):
        load_script(write(tmp_path, bytes(range(128, 256)) * 4))
    with pytest.raises(ScriptError, match="s.jsonl:2: holds a NUL byte"):
        load_script(write(tmp_path, f"{HEADER}\n\x00\x01\x02\n".encode()))
    with pytest.raises(ScriptError, match="is a directory"):
        load_script(tmp_path)
    bom = write(tmp_path, ("\ufeff" + f"{HEADER}\n{EPISODE}\n").encode("utf-8"))
    assert load_script(bom).episodes[0].seed == 7  # a UTF-8 byte-order mark is fine


@pytest.mark.parametrize("world, match", [
    ({"object_speeds": []}, "object_speeds"),
    ({"object_radius": 40}, "object_radius=40"),
    ({"object_speeds": [float("inf")]}, "object_speeds"),
    ({"object_speeds": [-0.5]}, "object_speeds"),
    ({"agent_speed": 0}, "agent_speed"),
    ({"static_fraction": 1.5}, "static_fraction"),
])
def test_worlds_the_simulator_cannot_run_are_refused_at_validation(world, match):
    header = json.dumps({"format": "dfworld-events", "version": 1, "name": "x", "world": world})
    with pytest.raises(ScriptError, match=f"<script>:1: .*{match}"):
        loads_script(f"{header}\n{EPISODE}\n")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["t", "event", "action", "episode", "seed",
                                                                                 "frames", "x"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values.map(json.dumps) | st.text(alphabet=string.printable, max_size=40), max_size=6))
def test_fuzzed_scripts_parse_or_raise_a_script_error(lines):
    text = "\n".join([HEADER, EPISODE, *lines])
    try:
        script = loads_script(text)
    except ScriptError as e:
        assert str(e).startswith("<script>:")
    else:
        assert script.episodes


def test_an_episode_too_long_to_play_is_refused():
    with pytest.raises(ScriptError, match="<script>:2: 'frames' must be in \\[1, 1,000,000\\]"):
        loads_script(f'{HEADER}\n{{"episode": "e0", "seed": 7, "frames": 1000000000000000}}\n')


def test_two_events_in_one_step_are_refused_by_action_only(tmp_path):
    import gymnasium as gym

    import dfworld  # noqa: F401
    from dfworld.envs.wrappers import ActionOnly

    path = write(tmp_path, f'{HEADER}\n{EPISODE}\n{{"t": 12, "event": "night falls"}}\n{{"t": 13, "event": "dusk falls"}}\n'.encode())
    with pytest.raises(ValueError, match="two events in step 3"):
        ActionOnly(gym.make("dfworld/EventWorld-v0"), events=path)


def test_a_line_separator_inside_a_string_is_text_and_crlf_lines_parse():
    text = f'{HEADER}\r\n{EPISODE}\r\n{{"t": 0, "event": "night\u2028falls"}}\r\n'
    with pytest.raises(ScriptError, match="<script>:3: "):  # one line; the separator is not in the event charset
        loads_script(text)
    assert loads_script(f"{HEADER}\r\n{EPISODE}\r\n").episodes[0].frames == 64
