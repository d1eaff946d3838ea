"""Shared fixtures: tiny, fast objects for unit tests on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from dfworld.world.config import WorldConfig
from dfworld.world.simulator import EventWorld


@pytest.fixture
def world() -> EventWorld:
    return EventWorld(WorldConfig())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_model(config, std: float = 0.1):
    """A VideoTransformer of `config` in eval mode, every weight drawn N(0, std) from seed 0 (outputs far from zero)."""
    import torch

    from dfworld.model.transformer import VideoTransformer

    torch.manual_seed(0)
    m = VideoTransformer(config).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m


def _tiny_generator_checkpoint(path, codec_kw=None, **model_kw):
    """A small randomly initialised block-causal generator checkpoint (32x32 frames, vocab text)."""
    import torch

    from dfworld.model.codec import CodecConfig, LatentCodec
    from dfworld.model.loading import TextConfig, write_generator_checkpoint
    from dfworld.model.transformer import TransformerConfig, VideoTransformer

    torch.manual_seed(0)
    codec = LatentCodec(CodecConfig(image_size=32, latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4, **(codec_kw or {})))
    config = dict(latent_channels=4, latent_size=16, patch=4, dim=32, depth=1, heads=2, text_dim=16, text_tokens=16,
                  attention="block_causal", chunk_frames=4, sink_frames=4, window_frames=8)
    model = VideoTransformer(TransformerConfig(**(config | model_kw)))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return write_generator_checkpoint(path, model, codec, TextConfig(encoder="vocab", max_tokens=16, dim=16))


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory):
    """A small randomly initialised block-causal generator checkpoint (32x32 frames, vocab text)."""
    return _tiny_generator_checkpoint(tmp_path_factory.mktemp("gen") / "checkpoint")


@pytest.fixture(scope="session")
def tiny_tubelet_generator(tmp_path_factory):
    """The same with tubelet tokens (2x2 latent patches over 4 frames: 16 tokens per frame on average),
    space-time rotary positions (2 pairs per spatial axis), a reference frame per chunk, read and skipped to the output,
    and two layers (so a held pass's attention reaches the keys and values it writes)."""
    return _tiny_generator_checkpoint(tmp_path_factory.mktemp("gen_tubelet") / "checkpoint", patch=2, tubelet=4, rope_space=2,
                                      prev_frame=True, prev_skip=True, depth=2)


@pytest.fixture(scope="session")
def tiny_fast_generator(tmp_path_factory):
    """The tiny generator with a (random) fast decoder in its codec."""
    return _tiny_generator_checkpoint(tmp_path_factory.mktemp("gen_fast") / "checkpoint",
                                      codec_kw={"fast_channels": (8, 8), "fast_blocks": (1, 0)})


def short_script(path, n: int = 3, frames: int = 48):
    """A script file of `n` episodes of `frames` frames with events at 16 and 32 (the shipped suites start events at 48)."""
    from dfworld.world.scripts import Script
    from dfworld.world.suite import plan_episode

    world, rng = EventWorld(), np.random.default_rng(0)
    episodes = [plan_episode(f"short-{i}", 50 + i, frames, [16, 32], rng, world)[0] for i in range(n)]
    Script("short", episodes).save(path)
    return path
