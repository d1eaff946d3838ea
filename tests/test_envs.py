import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dfworld  # noqa: F401  (registers the ids)
from dfworld.envs.spaces import EventText, parse_step_input
from dfworld.world.events import parse_event


@pytest.fixture
def env():
    e = gym.make("dfworld/EventWorld-v0", render_mode="rgb_array")
    yield e
    e.close()


def test_check_env_passes_with_warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("dfworld/EventWorld-v0", render_mode="rgb_array")
        check_env(env.unwrapped)
        check_env(gym.make("dfworld/EventWorld-v0").unwrapped)


def test_spaces_and_metadata(env):
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert set(env.action_space.spaces) == {"kind", "action", "prompt"}
    assert env.metadata["render_fps"] == 4 and "rgb_array" in env.metadata["render_modes"]
    assert env.action_space["prompt"].contains("a storm rolls in, doesn't it?")


def test_sampled_prompts_are_real_events():
    space = EventText(seed=0)
    for _ in range(50):
        parse_event(space.sample())


def test_int_str_and_dict_steps(env):
    obs, info = env.reset(seed=4)
    assert obs.dtype == np.uint8 and info["prompt"]
    obs, reward, terminated, truncated, info = env.step(4)
    assert info["frames"].shape == (4, 64, 64, 3) and np.array_equal(info["frames"][-1], obs)
    _, _, _, _, info = env.step("night falls")
    assert info["event_applied"] and info["prompt"] == "night falls"
    assert info["state"]["time"] == 2
    _, _, _, _, info = env.step({"kind": 1, "action": 0, "prompt": "it starts to snow"})
    assert info["state"]["weather"] == 2
    _, _, _, _, info = env.step({"kind": 0, "action": np.int64(2), "prompt": "ignored"})
    assert "event" not in info
    assert np.array_equal(env.render(), info["frames"][-1])


def test_same_seed_same_frames():
    def roll(seed):
        e = gym.make("dfworld/EventWorld-v0")
        obs = [e.reset(seed=seed)[0]]
        for a in [1, 4, "it starts to rain", 3, 3, "the sun sets", 2]:
            obs.append(e.step(a)[0])
        return np.stack(obs)

    assert np.array_equal(roll(11), roll(11))
    assert not np.array_equal(roll(11), roll(12))


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (5, ValueError, "out of range"),
        (-1, ValueError, "out of range"),
        (2.0, TypeError, "step\\(\\) takes"),
        (None, TypeError, "step\\(\\) takes"),
        ("", ValueError, "must not be empty"),
        ("x" * 200, ValueError, "limit is"),
        ("dance wildly", ValueError, "not an EventWorld event"),
        ({"kind": 3}, ValueError, "must be 0"),
        ({"action": 1}, ValueError, "needs the key 'kind'"),
        ({"kind": 1}, ValueError, "needs the key 'prompt'"),
    ],
)
def test_bad_input_is_rejected_and_the_env_stays_usable(env, bad, error, message):
    env.reset(seed=0)
    before = env.unwrapped.world.state.copy()
    with pytest.raises(error, match=message):
        env.step(bad)
    assert env.unwrapped.world.state == before
    env.step(1)


def test_inapplicable_event_is_reported_not_raised(env):
    env.reset(seed=0)
    used = env.unwrapped.world.state.used_colors()
    free = next(c for c in ("red", "yellow", "blue", "pink", "cyan", "purple") if c not in used)
    _, _, _, _, info = env.step(f"the {free} object vanishes")
    assert info["event_applied"] is False and free in info["event_reason"]


def test_lifecycle_errors():
    env = gym.make("dfworld/EventWorld-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(0)


def test_reset_options(env):
    obs, info = env.reset(seed=2, options={"prompt": "it starts to snow"})
    assert info["state"]["weather"] == 2 and info["prompt"] == "it starts to snow"
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"image": None})
    with pytest.raises(ValueError, match="not an EventWorld event"):
        env.reset(options={"prompt": "fly away"})


def test_termination_after_the_last_coin():
    env = gym.make("dfworld/EventWorld-v0", world={"coins_to_win": 1}).unwrapped
    env.reset(seed=5)
    total, terminated = 0.0, False
    for _ in range(400):
        s = env.world.state
        dx, dy = s.coin[0] - s.agent[0], s.coin[1] - s.agent[1]
        a = (4 if dx > 0 else 3) if abs(dx) > abs(dy) else (2 if dy > 0 else 1)
        _, r, terminated, _, _ = env.step(a if np.random.default_rng(len(str(total))).random() < 0.9 else 0)
        total += r
        if terminated:
            break
    assert terminated and total == 1.0
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(0)


def test_parse_step_input():
    assert parse_step_input(3) == (3, None)
    assert parse_step_input(np.array(2)) == (2, None)
    assert parse_step_input("night falls") == (0, "night falls")
    assert parse_step_input({"kind": np.int64(1), "action": 0, "prompt": "dusk falls"}) == (0, "dusk falls")


def test_frames_per_step_and_world_args():
    env = gym.make("dfworld/EventWorld-v0", frames_per_step=2, world={"height": 32, "width": 32})
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3)
    assert env.step(0)[4]["frames"].shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="frames_per_step"):
        gym.make("dfworld/EventWorld-v0", frames_per_step=0)
