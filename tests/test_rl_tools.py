"""The envs in the RL tools people use: the action-only view, SB3's checker and a stock SB3 PPO."""

import gymnasium as gym
import numpy as np
import pytest

import dfworld  # noqa: F401
from dfworld.envs.wrappers import ActionOnly

sb3 = pytest.importorskip("stable_baselines3")  # the dev extra installs it


def world(ckpt, **kw):
    return ActionOnly(gym.make("dfworld/WorldModel-v0", checkpoint=ckpt), **kw)


def real(**kw):
    return ActionOnly(gym.make("dfworld/EventWorld-v0"), **kw)


@pytest.mark.parametrize("which", ["real", "tiny", "shipped"])
def test_sb3_env_checker_passes_on_the_action_only_view(which, tiny_generator):
    from stable_baselines3.common.env_checker import check_env

    env = {"real": lambda: real(events=[(2, "night falls")], frame_stack=2),
           "tiny": lambda: world(tiny_generator, events=[(2, "night falls")], frame_stack=2),
           "shipped": lambda: world(None, events="core")}[which]()
    check_env(env, warn=True)
    assert env.action_space == gym.spaces.Discrete(5)


def test_events_come_from_the_schedule_and_frames_stack_on_the_channel_axis(tiny_generator):
    env = world(tiny_generator, events=[(1, "night falls"), (3, "it starts to rain")], frame_stack=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 9) and np.array_equal(obs[..., :3], obs[..., 6:])
    infos = [env.step(2)[4] for _ in range(4)]
    assert [i.get("event") for i in infos] == [None, "night falls", None, "it starts to rain"]
    assert infos[1]["prompt"] == "night falls"
    last, _, _, _, _ = env.step(0)
    assert not np.array_equal(last[..., :3], last[..., 6:])


def test_an_event_script_gives_each_episode_its_events():
    env = real(events="core")
    env.reset(seed=0)
    first = env.schedules[0]
    assert first and all(isinstance(k, int) for k in first)
    step = min(first)
    infos = [env.step(0)[4] for _ in range(step + 1)]
    assert infos[step]["event"] == first[step]


@pytest.mark.parametrize("bad, match", [(5, "in \\[0, 5\\)"), (True, "in \\[0, 5\\)"), ("night falls", "in \\[0, 5\\)")])
def test_the_action_only_view_refuses_anything_but_a_move(bad, match):
    env = real()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(bad)


def test_bad_schedules_are_named():
    with pytest.raises(ValueError, match="expected a \\(step, text\\) pair"):
        real(events=[(1, "night falls", 2)])
    with pytest.raises(ValueError, match="frame_stack"):
        real(frame_stack=0)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["real", "world"])
def test_a_stock_sb3_ppo_trains_on_both_envs(which, tiny_generator):
    from stable_baselines3 import PPO

    env = real(frame_stack=2) if which == "real" else world(tiny_generator, events=[(4, "night falls")], frame_stack=2)
    policy = "CnnPolicy" if which == "real" else "MlpPolicy"  # NatureCNN needs frames of 36 px or more; the tiny ones are 32
    model = PPO(policy, env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
    assert env.action_space.contains(int(action))


def test_torchrl_gym_wrapper_samples_the_action_only_view():
    from torchrl.envs import GymWrapper
    from torchrl.envs.utils import check_env_specs

    env = GymWrapper(real(events=[(1, "night falls")]))
    check_env_specs(env)
    rollout = env.rollout(4)  # random actions from the Discrete(5) spec
    assert rollout["next", "pixels" if "pixels" in rollout["next"].keys() else "observation"].shape[0] == 4
