"""Checkpoints that are damaged or do not describe their model are refused, naming the file and the problem."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dfworld.checkpoint import CheckpointError, load_checkpoint
from dfworld.model.loading import load_bundle


@pytest.fixture
def ckpt(tiny_generator, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_generator, dst)
    return dst


def config(path):
    return json.loads((path / "config.json").read_text())


def write_config(path, cfg):
    (path / "config.json").write_text(json.dumps(cfg))


def test_a_checkpoint_records_the_digest_of_every_file(ckpt):
    files = config(ckpt)["files"]
    assert set(files) == {p.name for p in ckpt.iterdir()} - {"config.json"} and all(len(d) == 64 for d in files.values())
    load_bundle(ckpt)  # and loads


def test_flipped_bytes_in_the_weights_are_refused(ckpt):
    data = bytearray((ckpt / "weights.safetensors").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = bytes(b ^ 0xFF for b in data[mid : mid + 4096])
    (ckpt / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="weights.safetensors' is corrupt or truncated"):
        load_bundle(ckpt)


def test_non_finite_weights_are_refused_naming_the_tensor(ckpt):
    weights = load_file(str(ckpt / "weights.safetensors"))
    name = next(k for k in weights if k.startswith("generator."))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(ckpt / "weights.safetensors"))
    cfg = config(ckpt)
    del cfg["files"]  # a checkpoint without digests still gets the finiteness check
    write_config(ckpt, cfg)
    with pytest.raises(CheckpointError, match=f"non-finite.*{name}"):
        load_bundle(ckpt)


def test_a_truncated_text_cache_is_refused(tmp_path):
    from dfworld.shipped import shipped_checkpoint

    ckpt = tmp_path / "shipped"
    shutil.copytree(shipped_checkpoint("default"), ckpt)
    data = (ckpt / "text_cache.safetensors").read_bytes()
    (ckpt / "text_cache.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="text_cache.safetensors' is corrupt or truncated"):
        load_bundle(ckpt)
    cfg = config(ckpt)
    del cfg["files"]
    write_config(ckpt, cfg)
    with pytest.raises(CheckpointError, match="text_cache.safetensors' is not a readable"):
        load_bundle(ckpt)


@pytest.mark.parametrize("mutate, match", [
    (lambda c: [c], "holds a JSON list, not an object"),
    (lambda c: None, "holds a JSON NoneType, not an object"),
    (lambda c: {**c, "model": {**c["model"], "chunk_frames": 0}}, "chunk_frames must be at least 1"),
    (lambda c: {**c, "sampler": {**c["sampler"], "timesteps": []}}, "sampler.timesteps"),
    (lambda c: {**c, "sampler": {**c["sampler"], "steps": 4}}, "unknown key.*steps"),
    (lambda c: {**c, "model": {k: v for k, v in c["model"].items() if k != "depth"}}, "missing key.*depth"),
    (lambda c: {**c, "files": ["weights.safetensors"]}, "'files' must map"),
])
def test_a_config_that_does_not_describe_the_model_is_refused(ckpt, mutate, match):
    write_config(ckpt, mutate(config(ckpt)))
    with pytest.raises(CheckpointError, match=match):
        load_bundle(ckpt)


def test_a_checkpoint_written_before_a_later_model_field_loads_with_what_it_did(ckpt):
    from dfworld.model.config import TransformerConfig

    cfg = config(ckpt)
    write_config(ckpt, {**cfg, "model": {k: v for k, v in cfg["model"].items() if k not in TransformerConfig.ADDED_LATER}})
    assert load_bundle(ckpt).generator.config.prev_chunk is False  # before prev_chunk, the last frame was the reference


def test_a_binary_config_is_refused(ckpt):
    (ckpt / "config.json").write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)


def test_the_shipped_checkpoints_pass_their_own_digests():
    from dfworld.shipped import SHIPPED, shipped_checkpoint

    for name in SHIPPED:
        assert "files" in config(shipped_checkpoint(name))
        load_bundle(shipped_checkpoint(name))
