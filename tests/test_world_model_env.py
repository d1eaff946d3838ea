"""WorldModel-v0: single and batched Gymnasium envs, TorchRL interop, video, bad input."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import dfworld  # noqa: F401
from dfworld.envs.reward import CoinCounter
from dfworld.envs.world_model import WorldModelVectorEnv
from dfworld.world.config import WorldConfig
from dfworld.world.simulator import EventWorld


@pytest.fixture
def env(tiny_generator):
    e = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, render_mode="rgb_array")
    yield e
    e.close()


def test_check_env_with_warnings_as_errors(tiny_generator):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, render_mode="rgb_array").unwrapped)


def test_steps_frames_and_events(env):
    obs, info = env.reset(seed=3, options={"prompt": "night falls"})
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and info["prompt"] == "night falls"
    obs, reward, terminated, truncated, info = env.step(2)
    assert info["frames"].shape == (4, 32, 32, 3) and np.array_equal(info["frames"][-1], obs)
    _, _, _, _, info = env.step("a storm of purple sparks")  # free text is fine for a world model
    assert info["event"] == info["prompt"] == "a storm of purple sparks"
    _, _, _, _, info = env.step({"kind": 1, "action": 0, "prompt": "dusk falls"})
    assert info["prompt"] == "dusk falls"
    assert np.array_equal(env.render(), info["frames"][-1])


def test_same_seed_and_events_give_identical_frames(tiny_generator):
    def roll():
        e = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator)
        out = [e.reset(seed=7)[0]]
        for a in [1, "it starts to rain", 3, 4]:
            out.append(e.step(a)[0])
        return np.stack(out)

    assert np.array_equal(roll(), roll())


def test_reset_with_an_image_and_an_event_schedule(env):
    frame = EventWorld(WorldConfig(height=32, width=32)).reset(0)
    obs, _ = env.reset(seed=0, options={"image": frame, "events": [(1, "night falls"), {"step": 3, "event": "it starts to snow"}]})
    assert np.array_equal(obs, frame)
    infos = [env.step(0)[4] for _ in range(4)]
    assert [i.get("event") for i in infos] == [None, "night falls", None, "it starts to snow"]


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (9, ValueError, "out of range"),
        (1.5, TypeError, "step\\(\\) takes"),
        ("", ValueError, "must not be empty"),
        ("y" * 300, ValueError, "limit is"),
        ({"kind": 2}, ValueError, "must be 0"),
    ],
)
def test_bad_steps_are_rejected_and_the_env_stays_usable(env, bad, error, message):
    env.reset(seed=0)
    frame = env.unwrapped.core.rollout.frame.clone()
    with pytest.raises(error, match=message):
        env.step(bad)
    assert torch.equal(env.unwrapped.core.rollout.frame, frame)
    env.step(1)


def test_bad_resets_and_lifecycle(tiny_generator, tmp_path):
    e = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        e.step(0)
    with pytest.raises(ValueError, match="unknown reset option"):
        e.reset(options={"colour": 1})
    with pytest.raises(ValueError, match="uint8 frame"):
        e.reset(options={"image": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        e.reset(options={"events": [(-1, "night falls")]})
    e.reset(seed=0)
    e.close()
    with pytest.raises(RuntimeError, match="closed"):
        e.step(0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gym.make("dfworld/WorldModel-v0", checkpoint=tmp_path / "missing")


def test_vector_env_from_make_vec(tiny_generator):
    v = gym.make_vec("dfworld/WorldModel-v0", num_envs=3, checkpoint=tiny_generator)
    assert isinstance(v, WorldModelVectorEnv) and v.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, _ = v.reset(seed=0)
    assert obs.shape == (3, 32, 32, 3)
    obs, rewards, term, trunc, info = v.step([0, "it starts to rain", {"kind": 1, "action": 0, "prompt": "dusk falls"}])
    assert list(info["event"]) == [None, "it starts to rain", "dusk falls"] and rewards.shape == (3,)
    v.step(v.action_space.sample())
    v.step(np.array([1, 2, 3]))


def test_vector_rows_match_single_envs_and_partial_reset(tiny_generator):
    v = WorldModelVectorEnv(2, tiny_generator)
    single = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator)
    obs, _ = v.reset(seed=[11, 12])
    assert np.array_equal(obs[1], single.reset(seed=12)[0])
    for a in [1, 2]:
        o, *_ = v.step(np.array([3, a]))
        assert np.abs(o[1].astype(int) - single.step(a)[0].astype(int)).max() <= 1
    before = v.core.rollout.frame.clone()
    obs, _ = v.reset(seed=[0, 99], options={"reset_mask": np.array([False, True])})
    assert v.core.rollout.frame[0] == before[0] and v.core.rollout.frame[1] == 4


def test_same_step_autoreset_on_truncation(tiny_generator):
    v = WorldModelVectorEnv(2, tiny_generator, max_episode_steps=2)
    v.reset(seed=0)
    v.step(np.array([0, 0]))
    obs, _, term, trunc, info = v.step(np.array([0, 0]))
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all() and info["final_obs"][0].shape == (32, 32, 3)
    assert (v.core.steps == 0).all()  # both rows started new episodes in the same step


def test_coin_counter_reads_collections_from_pixels():
    world = EventWorld(WorldConfig(coins_to_win=5))
    world.reset(5)
    counter = CoinCounter(world.config, frames_per_read=4)
    counter.update(world.render())
    rng = np.random.default_rng(0)
    truth = 0.0
    for _ in range(1500):  # greedy walk to the coin, with some noise; read every 4th frame like the env
        s = world.state
        dx, dy = s.coin[0] - s.agent[0], s.coin[1] - s.agent[1]
        a = ((4 if dx > 0 else 3) if abs(dx) > abs(dy) else (2 if dy > 0 else 1)) if rng.random() < 0.8 else int(rng.integers(5))
        for _ in range(4):
            frame, r = world.step(a)
            truth += r
        counter.update(frame)
    assert truth >= 3 and counter.coins == truth


def test_torchrl_env_specs_and_collector(tiny_generator):
    from torchrl.collectors import Collector
    from torchrl.envs.utils import check_env_specs

    from dfworld.envs.torchrl_env import WorldModelTorchRLEnv

    env = WorldModelTorchRLEnv(num_envs=2, checkpoint=tiny_generator, max_episode_steps=3)
    check_env_specs(env)
    td = env.rollout(4, break_when_any_done=False)
    assert td["pixels"].shape == (2, 4, 32, 32, 3) and td["next", "truncated"][:, 2].all()
    collector = Collector(lambda: WorldModelTorchRLEnv(num_envs=2, checkpoint=tiny_generator), policy=None, frames_per_batch=8, total_frames=16)
    batches = [b for b in collector]
    collector.shutdown()
    assert len(batches) == 2 and batches[0]["pixels"].dtype == torch.uint8


def test_record_video(tiny_generator, tmp_path):
    pytest.importorskip("moviepy", reason="the `video` extra is not installed")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(
        gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator, render_mode="rgb_array"),
        video_folder=str(tmp_path), episode_trigger=lambda e: True, disable_logger=True,
    )
    env.reset(seed=0)
    for a in [1, "night falls", 2] * 4:
        env.step(a)
    env.close()
    import cv2

    video = cv2.VideoCapture(str(next(tmp_path.glob("*.mp4"))))
    frames, fps = video.get(cv2.CAP_PROP_FRAME_COUNT), video.get(cv2.CAP_PROP_FPS)
    assert fps == 4 and frames == 13  # the reset frame and one per step: 12 steps of 4 frames play in 3 s, as generated
    assert abs(frames / fps - 13 * 4 / 16) < 1e-6


def test_vector_reset_options_are_per_row(tiny_generator):
    v = WorldModelVectorEnv(2, tiny_generator)
    v.reset(seed=0, options={"prompt": ["night falls", None], "events": [None, [(1, "it starts to rain")]]})
    assert v.core.rollout.prompts[0] == "night falls" and v.core.schedules[1] == {1: "it starts to rain"}
    with pytest.raises(ValueError, match="sequence of 2 per-row values"):
        v.reset(options={"prompt": "night falls"})


def test_single_env_refuses_the_vector_only_option(env):
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"reset_mask": [True]})


def test_the_seed_starts_both_envs_in_one_scene(tiny_generator):
    wm = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator).unwrapped
    world = WorldConfig(height=32, width=32)
    ew = gym.make("dfworld/EventWorld-v0", world=world).unwrapped
    for seed in (0, 7):
        obs, info = wm.reset(seed=seed)
        real, real_info = ew.reset(seed=seed)
        assert np.array_equal(obs, real) and info["prompt"] == real_info["prompt"]
        assert real_info["frames"].shape == (4, 32, 32, 3)
    # a start event is applied in the world, as EventWorld-v0 applies it
    obs, info = wm.reset(seed=3, options={"prompt": "it starts to rain"})
    real, real_info = ew.reset(seed=3, options={"prompt": "it starts to rain"})
    assert np.array_equal(obs, real) and info["prompt"] == real_info["prompt"] == "it starts to rain"
    # the cache holds the start as its first chunk: the generator continues it
    assert int(wm.core.rollout.frame[0]) == 4


def test_several_context_frames_and_a_start_from_noise(tiny_generator):
    wm = gym.make("dfworld/WorldModel-v0", checkpoint=tiny_generator).unwrapped
    frames = EventWorld(WorldConfig(height=32, width=32))
    frames.reset(1)
    clip = np.stack([frames.step(4)[0] for _ in range(8)])
    obs, _ = wm.reset(seed=1, options={"image": clip})
    assert np.array_equal(obs, clip[-1]) and int(wm.core.rollout.frame[0]) == 8
    obs, info = wm.reset(seed=1, options={"start": "noise", "prompt": "anything goes here"})
    assert int(wm.core.rollout.frame[0]) == 4 and info["prompt"] == "anything goes here"
    v = WorldModelVectorEnv(2, tiny_generator)  # rows may start differently in one reset
    obs, _ = v.reset(seed=[5, 6], options={"start": ["real", "noise"]})
    real, _ = gym.make("dfworld/EventWorld-v0", world=WorldConfig(height=32, width=32)).unwrapped.reset(seed=5)
    assert np.array_equal(obs[0], real) and v.core.rollout.frame.tolist() == [4, 4]
