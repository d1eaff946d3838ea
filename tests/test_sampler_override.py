"""Sampling a generator with other levels than its own: load_bundle, the envs, the ONNX export key, bench and eval."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import dfworld  # noqa: F401  (registers the environments)
from dfworld.bench.suite_runner import BenchConfig, BenchError, run_bench
from dfworld.configuration import ConfigError
from dfworld.model.loading import load_bundle
from dfworld.runtime.export import CACHE_ENV, cached_export_dir, checkpoint_identity, export_key

TWO = {"timesteps": [1000, 500]}


def test_load_bundle_replaces_the_named_sampler_fields_and_checks_them(tiny_generator):
    own = load_bundle(tiny_generator)
    two = load_bundle(tiny_generator, TWO)
    assert len(own.sampler.timesteps) == 4 and own.sampler_overrides == {}
    assert two.sampler.timesteps == (1000.0, 500.0) and two.sampler.shift == own.sampler.shift
    assert two.sampler_overrides == {"timesteps": [1000.0, 500.0]}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['levels'\]"):
        load_bundle(tiny_generator, {"levels": 2})
    with pytest.raises(ConfigError, match="decreasing values"):
        load_bundle(tiny_generator, {"timesteps": [500, 1000]})


def test_an_override_is_part_of_the_export_identity(tiny_generator):
    own, two = load_bundle(tiny_generator), load_bundle(tiny_generator, TWO)
    assert checkpoint_identity(two)["sampler"]["timesteps"] == [1000.0, 500.0]
    assert export_key(checkpoint_identity(own)) != export_key(checkpoint_identity(two))
    same = load_bundle(tiny_generator, {"timesteps": list(own.sampler.timesteps)})
    assert export_key(checkpoint_identity(own)) == export_key(checkpoint_identity(same))  # naming its own levels changes nothing


def test_the_env_samples_with_fewer_levels(tiny_generator):
    calls = {}
    frames = {}
    for name, sampler in (("own", None), ("two", TWO)):
        env = gym.make("dfworld/WorldModel-v0", checkpoint=str(tiny_generator), sampler=sampler)
        model = env.unwrapped.core.rollout.generator
        calls[name] = 0

        def count(*_, name=name):
            calls[name] += 1

        hook = model.register_forward_pre_hook(count)
        env.reset(seed=3, options={"image": np.zeros((32, 32, 3), np.uint8)})
        calls[name] = 0
        frames[name] = env.step(1)[0]
        hook.remove()
        env.close()
    assert calls["own"] - calls["two"] == 2  # two denoising passes fewer per chunk; the cache write stays
    assert frames["own"].shape == frames["two"].shape and not np.array_equal(frames["own"], frames["two"])
    with pytest.raises(ConfigError, match="timesteps"):
        gym.make("dfworld/WorldModel-v0", checkpoint=str(tiny_generator), sampler={"timesteps": []})


def test_onnx_exports_the_overridden_levels_and_matches_torch(tiny_generator, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    torch.set_num_threads(1)
    envs = [gym.make("dfworld/WorldModel-v0", checkpoint=str(tiny_generator), backend=b, sampler=TWO) for b in ("onnx", "torch")]
    assert (cached_export_dir(load_bundle(tiny_generator, TWO)) / "export.json").is_file()
    assert not cached_export_dir(load_bundle(tiny_generator)).exists()  # the export is of the two-level sampler
    for e in envs:
        e.reset(seed=5, options={"prompt": "night falls"})
    for a in [1, "it starts to snow", 3]:
        o1, o2 = (e.step(a)[0] for e in envs)
        assert np.abs(o1.astype(int) - o2.astype(int)).max() <= 2


def test_bench_names_bad_timesteps_before_running(tiny_generator, tmp_path):
    cfg = BenchConfig(checkpoints=(f"tiny={tiny_generator}",), timesteps=(250.0, 750.0), out=str(tmp_path / "b"))
    with pytest.raises(BenchError, match="--timesteps: .*decreasing"):
        run_bench(cfg, progress=False)
    assert not (tmp_path / "b").exists()
