"""The fast decoder: the codec carries it, stage decoder distils it, ship puts it in, the envs decode with it."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import dfworld  # noqa: F401  (registers the environments)
from dfworld.checkpoint import load_checkpoint
from dfworld.model.codec import CodecConfig, LatentCodec
from dfworld.model.loading import codec_from
from dfworld.runtime.backends import build_sampler
from dfworld.training.pipeline import PipelineConfig, run_pipeline, with_fast_decoder

TINY_CODEC = dict(image_size=32, latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4)


def test_the_codec_decodes_with_the_decoder_it_is_told_to():
    torch.manual_seed(0)
    codec = LatentCodec(CodecConfig(**TINY_CODEC, fast_channels=(8, 8), fast_blocks=(1, 0))).eval()
    z = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        full = codec.decode(z)
        fast = codec.use_decoder("fast").decode(z)
    assert full.shape == fast.shape == (2, 3, 32, 32, 3) and fast.dtype == torch.uint8
    assert not torch.equal(full, fast)  # an untrained fast decoder draws something else
    assert codec.use_decoder(None).decoder == "fast" and LatentCodec(CodecConfig(**TINY_CODEC)).use_decoder(None).decoder == "full"
    with pytest.raises(ValueError, match="unknown decoder 'tiny'"):
        codec.use_decoder("tiny")
    with pytest.raises(ValueError, match="carries no fast decoder"):
        LatentCodec(CodecConfig(**TINY_CODEC)).use_decoder("fast")
    with pytest.raises(ValueError, match="one width per resolution"):
        CodecConfig(**TINY_CODEC, fast_channels=(8, 8, 8))


def test_the_envs_decode_with_the_fast_decoder_where_the_checkpoint_carries_one(tiny_fast_generator, tiny_generator):
    assert build_sampler(tiny_fast_generator, 1).codec.decoder == "fast"  # the default where carried
    assert build_sampler(tiny_fast_generator, 1, decoder="full").codec.decoder == "full"
    assert build_sampler(tiny_generator, 1).codec.decoder == "full"  # none carried: the VAE's
    obs = {}
    for name in ("fast", "full"):
        env = gym.make("dfworld/WorldModel-v0", checkpoint=str(tiny_fast_generator), decoder=name)
        obs[name], _ = env.reset(seed=3, options={"image": np.zeros((32, 32, 3), np.uint8)})
        obs[name] = env.step(1)[0]
        env.close()
    assert obs["fast"].shape == obs["full"].shape and not np.array_equal(obs["fast"], obs["full"])
    with pytest.raises(ValueError, match="carries no fast decoder"):
        gym.make("dfworld/WorldModel-v0", checkpoint=str(tiny_generator), decoder="fast")


def test_the_onnx_decoder_graph_is_the_chosen_decoder(tiny_fast_generator, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("DFWORLD_ONNX_CACHE", str(tmp_path))
    z = torch.randn(3, 4, 16, 16)
    for name in ("fast", "full"):
        torch_s = build_sampler(tiny_fast_generator, 1, decoder=name)
        ort_s = build_sampler(tiny_fast_generator, 1, backend="onnx", decoder=name)
        with torch.no_grad():
            want = torch_s.decoder.decode(z).numpy().astype(int)
        got = np.asarray(ort_s.decoder.decode(z)).astype(int)
        assert np.abs(got - want).max() <= 1  # uint8 rounding
    assert len(list(tmp_path.iterdir())) == 2  # one export per decoder


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("fastdec")
    cfg = PipelineConfig(runs=str(runs), clips=str(runs / "clips"), causal_clips=str(runs / "clips_long"),
                         stages=("data", "codec", "decoder"), overrides={
                             "data": ["n=12", "frames=8", "world.height=32", "world.width=32"],
                             "codec": ["codec.image_size=32", "codec.block_out_channels=[8,8]", "codec.norm_num_groups=4",
                                       "train.steps=3", "train.batch_size=4", "train.device=cpu"],
                             "decoder": ["channels=[8,8]", "blocks=[1,0]", "train.steps=60", "train.batch_size=16", "train.log_every=1",
                                         "train.warmup=5", "train.max_minutes=0", "train.device=cpu"],
                         })
    run_pipeline(cfg)
    return runs


def test_stage_decoder_distils_the_full_decoder_and_keeps_the_codec_bit_for_bit(decoder_run):
    base, dec = load_checkpoint(decoder_run / "codec" / "checkpoint"), load_checkpoint(decoder_run / "decoder" / "checkpoint")
    assert dec.config["stage"] == "decoder" and dec.config["codec"]["fast_channels"] == [8, 8]
    for k, v in base.module_weights("codec").items():
        assert torch.equal(dec.module_weights("codec")[k], v)
    assert codec_from(dec).fast is not None
    rows = [json.loads(r) for r in (decoder_run / "decoder" / "history.jsonl").read_text().splitlines()]
    psnr = [r["psnr_vs_full"] for r in rows if "psnr_vs_full" in r]
    assert np.mean(psnr[-10:]) > np.mean(psnr[:10]) + 1.5  # it learns the full decoder's pixels


def test_ship_puts_the_fast_decoder_only_into_generators_of_its_codec(decoder_run):
    codec = load_checkpoint(decoder_run / "codec" / "checkpoint")
    weights = {f"codec.{k}": v for k, v in codec.module_weights("codec").items()} | {"generator.w": torch.ones(2)}
    config = {"codec": dict(codec.config["codec"])}
    assert with_fast_decoder(decoder_run / "decoder" / "checkpoint", weights, config, "default")
    assert any(k.startswith("codec.fast.") for k in weights) and config["codec"]["fast_channels"] == [8, 8]
    other = {k: (v + 1 if k.startswith("codec.vae.decoder.conv_out.weight") else v) for k, v in weights.items()
             if not k.startswith("codec.fast.")}
    before, config2 = dict(other), {"codec": dict(codec.config["codec"])}
    assert not with_fast_decoder(decoder_run / "decoder" / "checkpoint", other, config2, "dmd")
    assert other.keys() == before.keys() and config2["codec"] == codec.config["codec"]


def test_attach_refuses_a_decoder_of_another_codec_and_writes_nothing(decoder_run, tiny_generator, tmp_path):
    from dfworld.training.pipeline import attach_fast_decoder

    with pytest.raises(ValueError, match="no fast decoder for the codec"):
        attach_fast_decoder(tiny_generator, decoder_run / "decoder" / "checkpoint", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stage_decoder_learns_a_generators_own_rollouts_and_refuses_another_codec(decoder_run, tiny_generator, tmp_path):
    from dfworld.configuration import build
    from dfworld.training.loop import Loop
    from dfworld.training.stages.decoder import DecoderStage, DecoderStageConfig, generated_latents

    def config(codec, out):
        return build(DecoderStageConfig, {
            "codec_checkpoint": str(codec), "generator_checkpoint": str(tiny_generator), "clips": str(decoder_run / "clips"),
            "channels": [8, 8], "blocks": [1, 0], "generated_episodes": 3, "generated_frames": 8, "switch_gaps": [4],
            "train": {"out": str(out), "steps": 4, "batch_size": 8, "log_every": 1, "warmup": 1, "max_minutes": 0, "device": "cpu"}})

    with pytest.raises(ValueError, match="carries another codec"):
        DecoderStage(config(decoder_run / "codec" / "checkpoint", tmp_path / "other"))
    assert not list((tmp_path / "other").glob("generated-*"))
    cfg = config(tiny_generator, tmp_path / "own")
    Loop(DecoderStage(cfg)).run()
    rows = [json.loads(r) for r in (tmp_path / "own" / "history.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["psnr_generated"]) and np.isfinite(r["psnr_vs_full"]) for r in rows if "loss_decoder" in r)
    pool = generated_latents(str(tiny_generator), codec_from(load_checkpoint(tiny_generator)), cfg, tmp_path / "own", "cpu")
    assert pool.shape[0] == 3 * 8 and torch.isfinite(pool).all()
    assert len(list((tmp_path / "own").glob("generated-*"))) == 1  # made once, read back from the cache
