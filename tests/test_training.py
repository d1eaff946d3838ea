"""The training infrastructure on tiny configs: stages, checkpoints, exact resume after a kill, DDP."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dfworld.checkpoint import CheckpointError, load_checkpoint, load_into
from dfworld.cli import main
from dfworld.model.loading import codec_from, conditioner_from, transformer_from
from dfworld.model.transformer import TransformerConfig, VideoTransformer
from dfworld.world.datasets import load_clips

TINY_TEACHER = [
    "text.encoder=vocab", "text.dim=16", "text.max_tokens=16", "model.text_dim=16", "model.text_tokens=16",
    "model.dim=32", "model.depth=1", "model.heads=2", "train.batch_size=4", "train.log_every=1", "train.device=cpu",
    # the tiny teacher keeps the plain recipe the tests were written for (the shipped one is bf16, cosine over a
    # time budget, tubelets, entity weights, resampled wording: docs in TeacherStageConfig)
    "train.precision=fp32", "train.decay=constant", "train.max_minutes=0", "train.lr=3e-4", "train.warmup=50", "train.ema=0.999",
    "model.patch=4", "model.tubelet=1", "entity_weight=0.0", "resample_wording=false", "model.rope_space=1", "context_chunks=1",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny clips at 32x32 and a codec trained for 3 steps on them."""
    root = tmp_path_factory.mktemp("tiny")
    assert main(["data", "clips", f"out={root / 'clips'}", "n=12", "frames=8", "world.height=32", "world.width=32"]) == 0
    assert main([
        "train", "stage=codec", f"clips={root / 'clips'}", "codec.image_size=32", "codec.block_out_channels=[8,8]",
        "codec.norm_num_groups=4", "train.steps=3", "train.batch_size=4", f"train.out={root / 'codec'}", "train.device=cpu",
    ]) == 0
    return root


def teacher_args(tiny, out, *extra):
    return ["train", "stage=teacher", f"clips={tiny / 'clips'}", f"codec_checkpoint={tiny / 'codec' / 'checkpoint'}",
            f"train.out={out}", *TINY_TEACHER, *extra]


def history(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines()]


def test_teacher_stage_writes_a_complete_checkpoint(tiny, tmp_path):
    assert main(teacher_args(tiny, tmp_path / "t", "train.steps=4", "train.loggers=[csv,tensorboard]")) == 0
    ckpt = load_checkpoint(tmp_path / "t" / "checkpoint", stage="teacher", train_state=True)
    assert ckpt.config["record"]["step"] == 4 and ckpt.modules() == ["codec", "teacher"]
    model = transformer_from(ckpt, "teacher")
    assert model.config.attention == "full" and model.config.dim == 32
    codec = codec_from(ckpt)
    assert codec.config.image_size == 32
    cond = conditioner_from(ckpt)
    assert "night falls" in cond.cache and "the stars come out" in cond.cache  # the whole grammar, held-out too
    assert [r["step"] for r in history(tmp_path / "t")] == [1, 2, 3, 4]
    logs = tmp_path / "t" / "logs"
    assert any(logs.rglob("*.csv")) and any(logs.rglob("events.out.tfevents*"))


def cli(*args) -> list[str]:
    """The dfworld command in a fresh process with two threads (same numerics for every run)."""
    return [sys.executable, "-m", "dfworld.cli", "train", "--threads", "2", *args[1:]]


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_loss_curve(tiny, tmp_path):
    steps = 16
    # 1. the uninterrupted run
    subprocess.run(cli(*teacher_args(tiny, tmp_path / "a", f"train.steps={steps}")), check=True, capture_output=True)
    # 2. a run killed with SIGKILL after a few checkpoints, then resumed
    run = tmp_path / "b"
    cmd = cli(*teacher_args(tiny, run, "train.steps=100000", "train.checkpoint_every=3"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        ckpt = run / "checkpoint" / "train_state.json"
        if ckpt.is_file() and json.loads(ckpt.read_text())["step"] >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((run / "checkpoint" / "train_state.json").read_text())["step"]
    assert 6 <= killed_at < steps, killed_at
    subprocess.run(cli(*teacher_args(tiny, run, f"train.steps={steps}")), check=True, capture_output=True)
    a, b = history(tmp_path / "a"), history(run)
    assert [r["step"] for r in b] == list(range(1, steps + 1))
    assert [r["loss_flow"] for r in a] == [r["loss_flow"] for r in b]
    wa = load_checkpoint(tmp_path / "a" / "checkpoint").weights
    wb = load_checkpoint(run / "checkpoint").weights
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_bf16_autocast_trains_a_tubelet_teacher_and_resumes_exactly(tiny, tmp_path):
    tubelet = ["model.patch=2", "model.tubelet=4", "train.warmup=1", "train.lr=3e-3"]  # a fast start: outputs move off zero
    assert main(teacher_args(tiny, tmp_path / "fp32", "train.steps=6", *tubelet)) == 0
    assert main(teacher_args(tiny, tmp_path / "bf16", "train.steps=6", "train.precision=bf16", *tubelet)) == 0
    assert main(teacher_args(tiny, tmp_path / "resumed", "train.steps=3", "train.precision=bf16", *tubelet)) == 0
    assert main(teacher_args(tiny, tmp_path / "resumed", "train.steps=6", "train.precision=bf16", *tubelet)) == 0
    fp32, bf16, resumed = (history(tmp_path / r) for r in ("fp32", "bf16", "resumed"))
    assert [r["loss_flow"] for r in bf16] == [r["loss_flow"] for r in resumed]  # exact resume under autocast too
    late = [(a["loss_flow"], b["loss_flow"]) for a, b in zip(fp32[3:], bf16[3:])]
    assert all(a != b and abs(a - b) < 0.05 * a for a, b in late), late  # bf16 really runs, and close to fp32
    model = transformer_from(load_checkpoint(tmp_path / "bf16" / "checkpoint"), "teacher")
    assert (model.config.patch, model.config.tubelet, model.config.tokens_per_frame) == (2, 4, 16)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the checkpoint stays fp32
    with pytest.raises(ValueError, match="precision 'fp16' is not one of"):
        from dfworld.training.loop import TrainConfig

        TrainConfig(precision="fp16")


def test_auto_precision_is_bf16_only_where_the_device_runs_it_natively(monkeypatch):
    from dfworld.training import loop

    cfg = loop.TrainConfig(precision="auto")
    for native in (True, False):
        monkeypatch.setattr(loop, "native_bf16", lambda device, n=native: n)
        assert loop.step_precision(cfg, "cpu") == ("bf16" if native else "fp32")
        with loop.autocast(cfg, "cpu"):
            assert torch.is_autocast_enabled("cpu") == native
    assert loop.step_precision(loop.TrainConfig(precision="bf16"), "cpu") == "bf16"  # asked for, kept (the Loop warns)


def test_cosine_decay_follows_the_steps_or_the_time_budget(tiny, tmp_path):
    from dfworld.training.loop import TrainConfig, run_progress

    # a tiny teacher with cosine decay: the logged lr falls from the peak to final_lr x lr over the steps
    args = ["train.steps=8", "train.warmup=0", "train.lr=1e-3", "train.decay=cosine", "train.final_lr=0.2"]
    assert main(teacher_args(tiny, tmp_path / "cos", *args)) == 0
    lrs = [r["lr"] for r in history(tmp_path / "cos")]
    want = [1e-3 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * s / 8))) for s in range(8)]
    assert lrs == pytest.approx(want, rel=1e-6) and lrs[0] == pytest.approx(1e-3)
    # with a time budget, progress is whichever of steps and minutes runs out first
    cfg = TrainConfig(steps=100, max_minutes=1.0)
    assert run_progress(10, 30.0, cfg) == pytest.approx(0.5) and run_progress(80, 30.0, cfg) == pytest.approx(0.8)
    assert run_progress(10, 600.0, cfg) == 1.0
    with pytest.raises(ValueError, match="decay 'step' is not one of"):
        TrainConfig(decay="step")
    with pytest.raises(ValueError, match="final_lr=2.0 must be a fraction"):
        TrainConfig(final_lr=2.0)


def test_resample_wording_draws_every_paraphrase_of_the_clip_event(tiny, tmp_path):
    from dfworld.training.stages import stage_config
    from dfworld.training.stages.teacher import TeacherStage
    from dfworld.world.datasets import load_clips
    from dfworld.world.events import parse_event, templates, training_wordings

    def stage(out, *extra):
        return TeacherStage(stage_config("teacher", teacher_args(tiny, out, *extra)[2:]))

    prompts = load_clips(tiny / "clips").prompts
    plain, varied = stage(tmp_path / "a", "resample_wording=false"), stage(tmp_path / "b", "resample_wording=true")
    assert plain.wording.tolist() == [[i] for i in range(len(prompts))]  # each clip its stored prompt
    K = len(templates("time_day", "train"))
    assert varied.wording.shape == (len(prompts), K)
    # the table rows of a clip are the embeddings of its event's K training wordings, its stored prompt among them
    texts = [t for t in varied.conditioner.cache if parse_event(t)]
    emb = {t: varied.conditioner([t])[0][0] for t in texts}
    for prompt, row in zip(prompts, varied.wording.tolist()):
        found = set()
        for i in row:
            n = int(varied.text_mask[i].sum())
            found |= {t for t, e in emb.items() if e.shape[0] == n and torch.equal(e, varied.text[i, :n])}
        assert prompt in found and len(found) == K and {parse_event(t) for t in found} == {parse_event(prompt)}
    # the extra training wordings widen every row; they need resampling
    extra = stage(tmp_path / "d", "resample_wording=true", "extra_wordings=true")
    assert extra.wording.shape == (len(prompts), len(training_wordings("time_day")))
    assert len(training_wordings("time_day")) > K
    with pytest.raises(ValueError, match="extra_wordings .* needs resample_wording=true"):
        stage(tmp_path / "e", "resample_wording=false", "extra_wordings=true")
    # training with it runs
    assert main(teacher_args(tiny, tmp_path / "c", "train.steps=2", "resample_wording=true", "extra_wordings=true", "entity_weight=2.0")) == 0


def test_entity_weight_marks_the_latent_cells_of_drawn_entities(tiny, tmp_path):
    from dfworld.training.stages import stage_config
    from dfworld.training.stages.teacher import TeacherStage
    from dfworld.world.datasets import load_clips

    def stage(out, *extra):
        return TeacherStage(stage_config("teacher", teacher_args(tiny, out, *extra)[2:]))

    st = stage(tmp_path / "a", "entity_weight=4.0")
    lat, cells = st.latents, st.entity_cells
    assert cells.dtype == torch.bool and cells.shape == lat.shape[:2] + lat.shape[-2:]
    states = load_clips(tiny / "clips").states
    entities = states["obj_present"].sum(-1) + 2  # objects, the coin and the agent, per frame
    assert (cells.sum((-1, -2)) >= entities).all()  # each touches at least one cell
    assert 0.0 < cells.float().mean() < 0.6
    assert stage(tmp_path / "b", "entity_weight=0.0").entity_cells is None
    with pytest.raises(ValueError, match="entity_weight must be >= 0"):
        stage(tmp_path / "c", "entity_weight=-1.0")
    # event_weight: the cells of the object the event names as present, a subset of the entity cells
    from dfworld.world.events import parse_event

    named = stage(tmp_path / "d", "entity_weight=1.0", "event_weight=8.0").event_cells
    assert named.shape == cells.shape and named.any() and not (named & ~cells).any()
    for prompt, c in zip(load_clips(tiny / "clips").prompts, named):
        kind = parse_event(prompt).kind
        assert bool(c.any()) == (kind in ("object_appear", "object_recolor")), prompt  # appear and recolour only
    with pytest.raises(ValueError, match="event_weight must be >= 0"):
        stage(tmp_path / "e", "event_weight=-1.0")


@pytest.mark.slow
def test_ddp_under_torchrun_with_gloo(tiny, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dfworld.cli", *teacher_args(tiny, run, "train.steps=3")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoint", stage="teacher")
    assert ckpt.config["record"]["world_size"] == 2 and ckpt.config["record"]["step"] == 3


def test_checkpoint_errors(tiny, tmp_path):
    src = tiny / "codec" / "checkpoint"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="expected teacher"):
        load_checkpoint(src, stage="teacher")
    # truncated weights
    bad = tmp_path / "truncated"
    bad.mkdir()
    (bad / "config.json").write_text((src / "config.json").read_text())
    data = (src / "weights.safetensors").read_bytes()
    (bad / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad)
    # another format version
    cfg = json.loads((src / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no training state"):
        load_checkpoint(src.parent.parent / "codec" / "checkpoint", train_state=False) and load_checkpoint(
            _without_state(src, tmp_path), train_state=True
        )


def _without_state(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "nostate"
    dst.mkdir()
    for name in ("config.json", "weights.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_a_checkpoint_of_another_model_is_refused(tiny, tmp_path):
    assert main(teacher_args(tiny, tmp_path / "t", "train.steps=1")) == 0
    ckpt = load_checkpoint(tmp_path / "t" / "checkpoint")
    other = VideoTransformer(TransformerConfig(latent_size=16, dim=64, depth=1, heads=2, text_dim=16, text_tokens=16))
    with pytest.raises(CheckpointError, match="shape mismatch action.weight: checkpoint \\(6, 32\\) vs model \\(6, 64\\)"):
        load_into(other, ckpt.module_weights("teacher"), "teacher weights")
    cfg_path = tmp_path / "t" / "checkpoint" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["depth"] = 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing \\['blocks.1"):
        transformer_from(load_checkpoint(tmp_path / "t" / "checkpoint"), "teacher")
    cfg["model"]["attention"] = "sideways"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="attention 'sideways'"):
        transformer_from(load_checkpoint(tmp_path / "t" / "checkpoint"), "teacher")


def test_train_command_errors(tiny, capsys):
    assert main(["train", "train.steps=1"]) == 2
    assert "exactly one stage=" in capsys.readouterr().err
    assert main(["train", "stage=nonsense"]) == 2
    assert "unknown stage 'nonsense'" in capsys.readouterr().err
    assert main(["train", "stage=teacher", "clips=/nonexistent", f"codec_checkpoint={tiny / 'codec' / 'checkpoint'}", *TINY_TEACHER]) == 2
    assert "dfworld data clips out=/nonexistent" in capsys.readouterr().err
    assert main(["train", "stage=teacher", f"clips={tiny / 'clips'}", f"codec_checkpoint={tiny / 'codec' / 'checkpoint'}",
                 "text.encoder=vocab", "model.text_dim=16", "model.text_tokens=16"]) == 2
    assert "must equal text.dim" in capsys.readouterr().err


def test_a_teacher_trains_on_the_codec_a_generator_checkpoint_carries(tiny, tiny_generator, tmp_path):
    args = teacher_args(tiny, tmp_path / "t", "train.steps=1", "model.latent_channels=4")
    args[3] = f"codec_checkpoint={tiny_generator}"
    assert main(args) == 0
    ours = codec_from(load_checkpoint(tmp_path / "t" / "checkpoint")).state_dict()
    theirs = codec_from(load_checkpoint(tiny_generator)).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_teacher_evaluation_runs_end_to_end(tiny, tmp_path):
    from dfworld.bench.teacher_quality import evaluate_teacher

    assert main(teacher_args(tiny, tmp_path / "t", "train.steps=2")) == 0
    summary = evaluate_teacher(tmp_path / "t" / "checkpoint", tiny / "clips", n=3, steps=2, out=tmp_path / "eval")
    assert summary["clips"] == 3 and summary["real_prompt_ok"] == 1.0 and summary["real_objects"] == 1.0
    assert (tmp_path / "eval" / "teacher_samples.mp4").is_file()
    from dfworld.world.events import parse_event

    canon = evaluate_teacher(tmp_path / "t" / "checkpoint", tiny / "clips", n=3, steps=2, out=tmp_path / "canon", wording="canonical")
    rows = json.loads((tmp_path / "canon" / "teacher_eval.json").read_text())["clips"]
    assert canon["wording"] == "canonical" and all(r["prompt"] == parse_event(r["prompt"]).text(0, "train") for r in rows)
    with pytest.raises(ValueError, match="wording must be clip or canonical"):
        evaluate_teacher(tmp_path / "t" / "checkpoint", tiny / "clips", n=3, steps=2, wording="other")
    ctx = evaluate_teacher(tmp_path / "t" / "checkpoint", tiny / "clips", n=3, steps=2, context=4)
    F = load_clips(tiny / "clips").frames.shape[1]
    assert len(ctx["faithful_curve"]) == F - 4 and np.mean(ctx["faithful_curve"]) == pytest.approx(ctx["faithful"], abs=1e-3)
    assert set(ctx["checks_curve"]) == {"scene", "objects", "agent", "coin"}  # which part of the test each frame passes
    for curve in ctx["checks_curve"].values():  # a faithful frame passes every part
        assert all(c >= f for c, f in zip(curve, ctx["faithful_curve"]))


def test_codec_evaluation(tiny):
    from dfworld.bench.codec_quality import evaluate_codec

    s = evaluate_codec(str(tiny / "codec" / "checkpoint"), episodes=2)
    assert s["frames"] == 192 and 0 < s["psnr_mean"] < 100
    assert 0 <= s["probe_time_acc"] <= 1 and 0 <= s["probe_presence_acc"] <= 1


def test_clip_latents_are_cached_by_codec_weights_and_clip_pixels(tmp_path):
    from dfworld.model.codec import CodecConfig, LatentCodec
    from dfworld.training.stages.teacher import clip_latents

    torch.manual_seed(0)
    codec = LatentCodec(CodecConfig(image_size=32, latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4)).eval()
    frames = torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8)
    first = clip_latents(codec, frames, tmp_path, "cpu")
    (cached,) = tmp_path.glob("latents-*-2x4.safetensors")
    assert torch.equal(clip_latents(codec, frames, tmp_path, "cpu"), first)  # a hit: the same codec and clips
    other = frames.clone()
    other[0, 0, 0, 0, 0] ^= 1  # one pixel of another data set of the same shape
    clip_latents(codec, other, tmp_path, "cpu")
    with torch.no_grad():
        next(codec.parameters()).add_(1.0)  # another codec
    clip_latents(codec, frames, tmp_path, "cpu")
    assert len(list(tmp_path.glob("latents-*-2x4.safetensors"))) == 3 and cached.is_file()
