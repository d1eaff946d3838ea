"""Agents: random, scripted and PPO (TorchRL) in the tiny world model and in EventWorld; the CLI; bad input."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from dfworld.agents.curves import first_episode_returns
from dfworld.agents.evaluate import load_agent
from dfworld.agents.policy import PolicyConfig
from dfworld.agents.ppo import PPOConfig, train
from dfworld.agents.scoring import evaluate
from dfworld.agents.worlds import AgentEnvConfig, make_env
from dfworld.checkpoint import CheckpointError, load_checkpoint
from dfworld.cli import main

TINY_PPO = PPOConfig(frames=64, epochs=1, minibatch=4)  # 2 batches of 2 rows x 4 steps x 4 frames


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a busy CI machine makes thread hand-offs slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_env(generator, env="world", **kw) -> AgentEnvConfig:
    return AgentEnvConfig(env=env, checkpoint=str(generator), num_envs=2, horizon=4, **kw)


def test_both_envs_have_the_same_keys_and_seeded_episodes(tiny_generator):
    from torchrl.envs.utils import check_env_specs

    from dfworld.envs.event_world import EventWorldEnv
    from dfworld.world.config import WorldConfig

    world, real = make_env(tiny_env(tiny_generator)), make_env(tiny_env(tiny_generator, "real"))
    check_env_specs(real)
    assert real.frames_per_step == world.frames_per_step == 4
    assert real.observation_spec == world.observation_spec and real.full_action_spec["action"] == world.full_action_spec["action"]
    real.set_seed(7)
    td = real.reset()
    ref = EventWorldEnv(world=WorldConfig(height=32, width=32)).reset(seed=8)[0]  # row 1 plays seed 7 + 1
    assert np.array_equal(td["pixels"][1].numpy(), ref)


def test_the_dyna_env_steps_generated_and_real_rows_in_one_batch(tiny_generator):
    from torchrl.envs.utils import check_env_specs

    mixed = make_env(AgentEnvConfig(env="dyna", checkpoint=str(tiny_generator), num_envs=3, real_rows=1, horizon=4))
    world, real = make_env(tiny_env(tiny_generator)), make_env(dataclasses.replace(tiny_env(tiny_generator, "real"), num_envs=1))
    check_env_specs(mixed)
    mixed.set_seed(5), world.set_seed(5), real.set_seed(7)  # the mixed rows 0, 1 play seeds 5, 6 in the generator, row 2 seed 7
    got, want = mixed.reset(), torch.cat([world.reset()["pixels"], real.reset()["pixels"]])
    assert torch.equal(got["pixels"], want)
    moves = torch.tensor([1, 2, 3])
    step = mixed.step(got.set("action", moves))["next"]
    ref_w = world.step(TensorDict({"action": moves[:2]}, batch_size=[2]))["next"]
    ref_r = real.step(TensorDict({"action": moves[2:]}, batch_size=[1]))["next"]
    assert torch.equal(step["pixels"], torch.cat([ref_w["pixels"], ref_r["pixels"]]))
    assert torch.equal(step["reward"], torch.cat([ref_w["reward"], ref_r["reward"]]))
    with pytest.raises(ValueError, match="needs real and world rows"):
        AgentEnvConfig(env="dyna", checkpoint=str(tiny_generator), num_envs=3, real_rows=3)


def test_first_episode_returns_stop_at_the_first_done():
    reward = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])[..., None]
    done = torch.tensor([[False, True, False, False], [False, False, False, True]])[..., None]
    td = TensorDict({"next": {"reward": reward, "done": done}}, batch_size=[2, 4])
    assert first_episode_returns(td).tolist() == [2.0, 2.0]


@pytest.mark.slow
def test_ppo_in_the_world_model_trains_saves_resumes_exactly_and_evaluates(tiny_generator, tmp_path):
    env_cfg = tiny_env(tiny_generator)
    ckpt = train(env_cfg, TINY_PPO, tmp_path / "a", progress=False)
    assert {p.name for p in ckpt.iterdir()} >= {"config.json", "weights.safetensors", "train_state.safetensors", "train_state.json"}
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))  # never pickle
    curve = json.loads((tmp_path / "a" / "curve.json").read_text())
    assert [r["frames"] for r in curve] == [32, 64] and (tmp_path / "a" / "curve.png").is_file()
    # half the budget, then resume to the full budget: the same weights as one uninterrupted run
    train(env_cfg, PPOConfig(frames=32, epochs=1, minibatch=4), tmp_path / "b", progress=False)
    train(env_cfg, TINY_PPO, tmp_path / "b", progress=False)
    a, b = load_checkpoint(ckpt).weights, load_checkpoint(tmp_path / "b" / "checkpoint").weights
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming with other settings is refused, naming the field
    with pytest.raises(CheckpointError, match="lr"):
        train(env_cfg, PPOConfig(frames=96, epochs=1, minibatch=4, lr=1e-3), tmp_path / "b", progress=False)
    returns = evaluate(load_agent(tmp_path / "a", 32), make_env(env_cfg), episodes=3, seed=5)
    assert returns.shape == (3,) and (returns >= 0).all()


def test_scoring_in_the_real_game_is_the_eval_of_that_batch_and_leaves_training_as_it_was(tiny_generator, tmp_path):
    env_cfg = tiny_env(tiny_generator)  # trained in the world model, scored in EventWorld
    scored = PPOConfig(frames=96, epochs=1, minibatch=4, eval_every=2, eval_episodes=3, eval_horizon=5)
    train(env_cfg, scored, tmp_path / "scored", progress=False)
    train(env_cfg, dataclasses.replace(scored, eval_every=0), tmp_path / "plain", progress=False)
    a, b = (load_checkpoint(tmp_path / r / "checkpoint").weights for r in ("scored", "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # scoring draws from its own RNG
    curve = json.loads((tmp_path / "scored" / "curve.json").read_text())
    assert ["real_return" in r for r in curve] == [False, True, True]  # every 2nd batch and the last
    real = make_env(AgentEnvConfig(env="real", checkpoint=str(tiny_generator), num_envs=2, horizon=5, size=32, frames_per_step=4))
    with torch.random.fork_rng(devices=[]):
        returns = evaluate(load_agent(tmp_path / "scored", 32), real, episodes=3)
    assert curve[-1]["real_return"] == pytest.approx(float(returns.mean()))
    with pytest.raises(ValueError, match="eval_every"):
        PPOConfig(eval_every=-1)
    assert [r["lr"] for r in curve] == [scored.lr] * 3


def test_a_linear_learning_rate_falls_to_zero_over_the_budget(tiny_generator, tmp_path):
    cfg = PPOConfig(frames=96, epochs=1, minibatch=4, lr=3e-3, lr_decay="linear")
    train(tiny_env(tiny_generator, "real"), cfg, tmp_path, progress=False)
    lrs = [r["lr"] for r in json.loads((tmp_path / "curve.json").read_text())]
    assert lrs == pytest.approx([3e-3, 2e-3, 1e-3])
    with pytest.raises(ValueError, match="lr_decay"):
        PPOConfig(lr_decay="cosine")


@pytest.mark.slow
def test_random_shift_moves_each_frame_by_at_most_its_pad_and_ppo_trains_with_it(tiny_generator, tmp_path):
    from dfworld.agents.ppo import random_shift

    frames = torch.zeros(2, 6, 16, 16, 3, dtype=torch.uint8)
    frames[..., 8, 8, :] = 255  # one bright pixel, far from the edges
    torch.manual_seed(0)
    out = random_shift(frames, 2)
    assert out.shape == frames.shape and out.dtype == torch.uint8
    spots = [tuple(torch.nonzero(f[..., 0] == 255)[0].tolist()) for f in out.reshape(-1, 16, 16, 3)]
    assert all(abs(y - 8) <= 2 and abs(x - 8) <= 2 for y, x in spots)
    assert len(set(spots)) > 1  # each frame draws its own offset
    assert all(int(f.sum()) == 255 * 3 for f in out.reshape(-1, 16, 16, 3))  # a translation: nothing is blurred
    cfg = PPOConfig(frames=64, epochs=1, minibatch=4, augment="shift")
    ckpt = train(tiny_env(tiny_generator, "real"), cfg, tmp_path, progress=False)
    assert load_checkpoint(ckpt, stage="agent").config["ppo"]["augment"] == "shift"
    with pytest.raises(ValueError, match="augment"):
        PPOConfig(augment="crop")


def test_ppo_in_the_real_env_and_agent_eval_through_the_cli(tiny_generator, tmp_path, capsys):
    run = tmp_path / "real"
    common = ["--checkpoint", str(tiny_generator), "--num-envs", "2", "--horizon", "4"]
    assert main(["agent", "train", "--env", "real", *common, "--frames", "64", "--epochs", "1", "--minibatch", "4",
                 "--out", str(run), "--no-progress"]) == 0
    config = load_checkpoint(run / "checkpoint").config
    assert config["env"]["env"] == "real" and config["policy"]["image_size"] == 32 and config["frames_per_step"] == 4
    capsys.readouterr()
    # a saved agent evaluates in the real env at its own frame size without being told
    assert main(["agent", "eval", str(run), "--env", "real", "--episodes", "3", "--num-envs", "2", "--horizon", "4",
                 "--out", str(tmp_path / "eval.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert printed["frame_size"] == 32 and len(saved["returns"]) == 3 and saved["episode_seeds"] == [1_000_000, 1_000_002]


def test_random_and_scripted_agents_run_in_the_world_model(tiny_generator):
    env = make_env(tiny_env(tiny_generator))
    for name in ("random", "scripted"):
        returns = evaluate(load_agent(name, 32, seed=0), env, episodes=2, seed=3)
        assert returns.shape == (2,) and (returns >= 0).all()


def test_scripted_agent_beats_random_in_the_real_env():
    env = make_env(AgentEnvConfig(env="real", num_envs=8, horizon=40, size=64, frames_per_step=4))
    random = evaluate(load_agent("random", 64, seed=0), env, episodes=16, seed=1_000_000)
    scripted = evaluate(load_agent("scripted", 64, seed=0), env, episodes=16, seed=1_000_000)
    assert scripted.mean() >= random.mean() + 1.0, (scripted.mean(), random.mean())
    assert (scripted > 0).mean() >= 0.75  # it reaches a coin in most episodes


@pytest.mark.slow
def test_transfer_writes_a_json_and_a_markdown_table(tiny_generator, tmp_path, capsys):
    out = tmp_path / "transfer"
    assert main(["agent", "transfer", "--checkpoint", str(tiny_generator), "--frames", "32", "--seeds", "3",
                 "--num-envs", "2", "--horizon", "4", "--episodes", "2", "--world-episodes", "2", "--epochs", "1",
                 "--minibatch", "4", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "transfer.json").read_text())
    assert set(report["agents"]) == {"world", "real", "random", "scripted"} and report["seeds"] == [3]
    assert all(len(a["real_returns"]["3"]) == 2 for a in report["agents"].values())
    table = (out / "transfer.md").read_text()
    assert "PPO trained in the world model" in table and "| scripted" in table and "1000000..1000001" in table
    assert (out / "transfer_curves.png").is_file() and (out / "ppo_world_seed3" / "checkpoint" / "config.json").is_file()
    world, scripted = report["agents"]["world"], report["agents"]["scripted"]
    assert world["frames_trained"] == 32 and len(report["generator_digest"]) == 12
    lo, hi = world["ci"] if world["ci"] else (world["normalised"], world["normalised"])
    assert world["normalised"] is None or lo <= world["normalised"] <= hi
    assert set(scripted["world_pickups"]) >= {"precision", "recall", "generated", "real"} and "world_pickups" in world
    curve = json.loads((out / "ppo_world_seed3" / "curve.json").read_text())
    assert "real_return" in curve[-1]  # the world-model agent scored in the real game along the way
    # the model-free reference alone, with the baselines
    assert main(["agent", "transfer", "--checkpoint", str(tiny_generator), "--frames", "32", "--seeds", "3", "--train-in", "real",
                 "--num-envs", "2", "--horizon", "4", "--episodes", "2", "--world-episodes", "0", "--epochs", "1",
                 "--minibatch", "4", "--out", str(tmp_path / "ref"), "--no-progress"]) == 0
    assert set(json.loads((tmp_path / "ref" / "transfer.json").read_text())["agents"]) == {"real", "random", "scripted"}
    assert main(["agent", "transfer", "--checkpoint", str(tiny_generator), "--frames", "32", "--seeds", "3", "--train-in", "dyna",
                 "--num-envs", "2", "--horizon", "4", "--episodes", "2", "--world-episodes", "0", "--epochs", "1",
                 "--minibatch", "4", "--out", str(tmp_path / "dyna"), "--no-progress"]) == 0
    dyna = json.loads((tmp_path / "dyna" / "transfer.json").read_text())["agents"]
    assert set(dyna) == {"dyna", "random", "scripted"} and dyna["dyna"]["frames_trained"] == 32


def test_the_world_env_on_onnx_runtime_makes_the_torch_frames(tiny_generator):
    """The agent's world env on the ONNX Runtime backend: the same seeded episode, the same pixels and rewards."""
    pytest.importorskip("onnxruntime")
    runs = {}
    for backend in ("torch", "onnx"):
        env = make_env(tiny_env(tiny_generator, backend=backend))
        env.set_seed(11)
        td = env.reset()
        frames = [td["pixels"]]
        for move in ([1, 4], [2, 3], [0, 1]):
            td["action"] = torch.tensor(move)
            td = env.step(td)["next"]
            frames.append(td["pixels"])
        runs[backend] = torch.stack(frames).int()
        env.close()
    diff = (runs["torch"] - runs["onnx"]).abs()
    assert diff.float().mean() < 0.05 and diff.max() <= 2, (diff.float().mean(), diff.max())  # uint8 rounding only


def test_bad_inputs_give_clear_errors(tiny_generator, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown env 'moon'; expected one of world, real"):
        AgentEnvConfig(env="moon")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; expected one of torch, onnx"):
        AgentEnvConfig(backend="tensorrt")
    with pytest.raises(SystemExit):  # argparse names the accepted choices
        main(["agent", "train", "--env", "moon"])
    capsys.readouterr()
    missing = tmp_path / "no_such_generator"
    assert main(["agent", "train", "--checkpoint", str(missing), "--frames", "8", "--out", str(tmp_path / "x")]) == 2
    assert "no_such_generator" in capsys.readouterr().err
    garbage = tmp_path / "agent.bin"
    garbage.write_bytes(b"\x00not an agent")
    bad_json = tmp_path / "bad_agent"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    for agent, message in [
        (garbage, "not a dfworld checkpoint"),
        (bad_json, "not valid JSON"),
        (tiny_generator, "expected agent"),
        ("clever", "neither random nor scripted"),
    ]:
        assert main(["agent", "eval", str(agent), "--env", "real", "--size", "32", "--frames-per-step", "4", "--episodes", "1"]) == 2
        assert message in capsys.readouterr().err, agent
    with pytest.raises(ValueError, match="size and frames_per_step are the generator's"):
        AgentEnvConfig(env="world", size=64)


def test_an_agent_refuses_frames_of_another_size(tiny_generator, tmp_path):
    ckpt = train(tiny_env(tiny_generator, "real"), PPOConfig(frames=32, epochs=1, minibatch=4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="reads 32x32 frames but this env makes 64x64"):
        load_agent(ckpt, 64)


def test_cli_help_states_the_ppo_defaults():
    from dfworld.agents.cli import PPO_FLAGS
    from dfworld.cli import build_parser

    agent = build_parser()._subparsers._group_actions[0].choices["agent"]
    train_parser = agent._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help for a in train_parser._actions}
    for name in PPO_FLAGS:
        stated, default = re.search(r"\(default ([^)]+)\)", helps[name]), getattr(PPOConfig(), name)
        assert stated and (stated.group(1) == default if isinstance(default, str) else float(stated.group(1)) == default), \
            (name, helps[name])


def test_pickups_of_the_real_game_checked_against_itself_match_step_for_step(tiny_generator):
    from dfworld.agents.pickups import check_pickups

    real = make_env(AgentEnvConfig(env="real", checkpoint=str(tiny_generator), num_envs=2, horizon=40, size=32, frames_per_step=4))
    report = check_pickups(load_agent("scripted", 32), real, episodes=3, seed=11)
    assert report["real"] > 0 and [e["seed"] for e in report["episodes"]] == [11, 12, 13]
    assert all(e["generated"] == e["real"] for e in report["episodes"])  # the same seed and moves: the same coins
    assert report["precision"] == report["recall"] == 1.0
    # inside the (tiny, untrained) world model: the moves it played are replayed in EventWorld from each seed
    from dfworld.agents.pickups import replay_in_real_game

    world_env = make_env(tiny_env(tiny_generator))
    world = check_pickups(load_agent("random", 32), world_env, episodes=2, seed=5)
    assert world["return_mean"] == pytest.approx(float(evaluate(load_agent("random", 32), world_env, 2, 5).mean()))
    assert [e["seed"] for e in world["episodes"]] == [5, 6] and world["generated"] == sum(len(e["generated"]) for e in world["episodes"])
    assert world["precision"] is None or 0 <= world["precision"] <= 1
    assert replay_in_real_game(11, [0] * 8, 4, 32) == []  # standing still collects nothing


@pytest.mark.parametrize("policy", [PolicyConfig(shared=False), PolicyConfig(obs_size=16)], ids=["separate", "obs16"])
def test_policy_variants_train_save_and_load(policy, tiny_generator, tmp_path):
    ckpt = train(tiny_env(tiny_generator, "real"), PPOConfig(frames=32, epochs=1, minibatch=4), tmp_path, policy, progress=False)
    saved = load_checkpoint(ckpt).config["policy"]
    assert saved["shared"] == policy.shared and saved["obs_size"] == policy.obs_size
    returns = evaluate(load_agent(ckpt, 32), make_env(tiny_env(tiny_generator, "real")), episodes=2, seed=3)
    assert returns.shape == (2,)
    with pytest.raises(ValueError, match="obs_size"):
        PolicyConfig(obs_size=24)
