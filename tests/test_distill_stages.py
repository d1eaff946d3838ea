"""The distillation chain on tiny configs: ode, dmd, stream, delta, the pipeline command, resume, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import short_script
from safetensors.torch import load_file

from dfworld.checkpoint import load_checkpoint
from dfworld.cli import main
from dfworld.model.loading import load_bundle
from dfworld.training.pipeline import PipelineConfig, run_pipeline, wiring
from dfworld.training.stages.ode import euler_grid_indices

TINY_TEACHER = [
    "text.encoder=vocab", "text.dim=16", "text.max_tokens=16", "model.text_dim=16", "model.text_tokens=16",
    "model.dim=32", "model.depth=1", "model.heads=2", "train.batch_size=4", "train.steps=3",
    # the tiny teacher keeps the plain recipe the tests were written for (the shipped one is bf16, cosine over a
    # time budget, tubelets, entity weights, resampled wording: docs in TeacherStageConfig)
    "train.precision=fp32", "train.decay=constant", "train.max_minutes=0", "train.lr=3e-4", "train.warmup=50", "train.ema=0.999",
    "model.patch=4", "model.tubelet=1", "entity_weight=0.0", "resample_wording=false", "model.rope_space=1", "context_chunks=1",
]
TINY = ["train.batch_size=2", "train.log_every=1", "train.device=cpu"]
TINY_STREAM = [*TINY, "critic.batch_size=2", "horizon=32", "switch_gaps=[8,12]", "train.checkpoint_every=5"]


CHAIN = ("data", "codec", "teacher", "causal", "dmd", "stream", "delta", "fidelity", "decoder", "ship")
TINY_CAUSAL = [
    "text.encoder=vocab", "text.dim=16", "text.max_tokens=16", "model.text_dim=16", "model.text_tokens=16", "model.dim=32",
    "model.depth=1", "model.heads=2", "model.patch=4", "model.tubelet=1", "model.rope_space=1", "train.batch_size=2",
    "train.steps=3", "train.precision=fp32", "train.max_minutes=0", "train.device=cpu", "sampler.timesteps=[1000,500]",
]


def tiny_pipeline(runs: Path, stages=CHAIN, dmd_start="causal") -> PipelineConfig:
    return PipelineConfig(
        runs=str(runs), clips=str(runs / "clips"), causal_clips=str(runs / "clips_long"), stages=tuple(stages),
        ship_to=str(runs / "shipped"), dmd_start=dmd_start, default_sampler={"timesteps": [1000.0]},
        overrides={
            "data": ["n=12", "frames=8", "world.height=32", "world.width=32"],
            "codec": ["codec.image_size=32", "codec.block_out_channels=[8,8]", "codec.norm_num_groups=4", "train.steps=3",
                      "train.batch_size=4", "train.device=cpu"],
            "decoder": ["channels=[8,8]", "blocks=[1,0]", "train.steps=3", "train.batch_size=4", "train.device=cpu",
                        "generated_episodes=2", "generated_frames=16", "switch_gaps=[8]"],
            "teacher": [*TINY_TEACHER, "train.device=cpu"],
            "causal": TINY_CAUSAL,
            "ode": [*TINY, "pairs=4", "pair_batch=2", "train.steps=3"],
            "dmd": [*TINY, "critic.batch_size=2", "train.steps=4"],
            "stream": [*TINY_STREAM, "train.steps=12"],
            "delta": [*TINY_STREAM, "train.steps=12"],
            "fidelity": [*TINY, "frames=16", "long_frames=24", "switch_gaps=[8]", "train.steps=3", "train.max_minutes=0"],
        },
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The whole tiny chain, trained once by the pipeline."""
    runs = tmp_path_factory.mktemp("chain")
    report = run_pipeline(tiny_pipeline(runs))
    return runs, report


def history(run: Path) -> list[dict]:
    return [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines()]


def test_pipeline_trains_every_stage_and_the_generators_load(chain):
    runs, report = chain
    assert [s for s in report] == list(CHAIN)
    for stage in ("causal", "dmd", "stream", "delta", "fidelity"):
        assert report[stage]["status"] == "finished" and report[stage]["wall_seconds"] > 0
        bundle = load_bundle(runs / stage / "checkpoint")
        assert bundle.generator.config.attention == "block_causal"
        assert bundle.checkpoint.config["stage"] == stage
    # the critic travels from dmd to stream and delta; the trust-region log and plot exist
    assert "critic" in load_checkpoint(runs / "dmd" / "checkpoint").modules()
    for stage in ("stream", "delta"):
        assert (runs / stage / "trust_region.png").stat().st_size > 1000
        rows = [json.loads(r) for r in (runs / stage / "trust_region.jsonl").read_text().splitlines()]
        assert rows and {"w", "relative_step", "history", "direction", "since_switch"} <= set(rows[0])
        assert any(r["since_switch"] >= 0 for r in rows)  # switches happened inside the rollouts
    assert all(r["w"] == 1.0 for r in map(json.loads, (runs / "stream" / "trust_region.jsonl").read_text().splitlines()))
    # the fast decoder learned the fidelity generator's own rollouts (2 of 16 frames) beside the real frames
    assert load_file(str(next((runs / "decoder").glob("generated-*.safetensors"))))["latents"].shape[0] == 32
    assert all("psnr_generated" in r for r in history(runs / "decoder") if "loss_decoder" in r)


def test_ship_copies_the_generators_with_their_records(chain):
    runs, report = chain
    assert set(report["ship"]["sizes_mb"]) == {"default", "dmd", "stream"}
    for name, stage in (("default", "fidelity"), ("dmd", "dmd"), ("stream", "stream")):
        path = runs / "shipped" / name
        bundle = load_bundle(path)
        assert bundle.checkpoint.config["stage"] == stage and bundle.checkpoint.modules() == ["codec", "generator"]
        assert not (path / "train_state.safetensors").exists()
        record = bundle.checkpoint.config["record"]
        assert record["command"].startswith("dfworld pipeline") and "CPU cores" in record["machine"]
        assert record["pipeline"]["delta"]["status"] == "finished" and record["step"] > 0
        trained = load_checkpoint(runs / stage / "checkpoint").module_weights("generator")
        assert all(torch.equal(trained[k], v) for k, v in bundle.generator.state_dict().items())
        assert (path / "text_cache.safetensors").is_file() == (name == "default")  # the baselines encode on first use
        assert bundle.codec.fast is not None  # stage decoder's, trained on their codec
        assert record["fast_decoder"]["stage_config"]["generator_checkpoint"] == str(runs / "fidelity" / "checkpoint")
        trained_levels = load_checkpoint(runs / stage / "checkpoint").config["sampler"]["timesteps"]
        assert list(bundle.sampler.timesteps) == ([1000.0] if name == "default" else trained_levels)
        assert len(trained_levels) == 1 if name == "default" else len(trained_levels) > 1  # the default is tuned at the level it runs
        assert (record.get("trained_sampler", {}).get("timesteps") == trained_levels) == (name == "default")
    with pytest.raises(ValueError, match="default_sampler.*timestep"):
        PipelineConfig(default_sampler={"timestep": [1000.0]})


def test_a_ship_over_the_size_limit_leaves_the_shipped_checkpoints_as_they_were(chain, monkeypatch):
    import dfworld.training.pipeline as pipeline

    runs, report = chain
    before = {p: p.read_bytes() for p in sorted((runs / "shipped").rglob("*")) if p.is_file()}
    monkeypatch.setattr(pipeline, "SHIP_LIMIT_MB", 0.01)
    with pytest.raises(ValueError, match="nothing was shipped"):
        pipeline.ship(tiny_pipeline(runs), report)
    assert {p: p.read_bytes() for p in sorted((runs / "shipped").rglob("*")) if p.is_file()} == before


def test_the_chain_distils_a_tubelet_teacher(tmp_path):
    """A teacher with tubelet tokens (2x2 patches over 4 frames) is distilled into a tubelet generator."""
    cfg = tiny_pipeline(tmp_path, stages=("data", "codec", "teacher", "ode", "dmd", "delta"), dmd_start="ode")
    tubelet = ["model.patch=2", "model.tubelet=4"]
    cfg.overrides["teacher"] = [*cfg.overrides["teacher"], *tubelet]
    report = run_pipeline(cfg)
    assert all(report[s]["status"] == "finished" for s in ("teacher", "ode", "dmd", "delta"))
    for stage in ("ode", "dmd", "delta"):
        model = load_bundle(tmp_path / stage / "checkpoint").generator
        assert (model.config.patch, model.config.tubelet, model.config.attention) == (2, 4, "block_causal")
    rows = [json.loads(r) for r in (tmp_path / "delta" / "trust_region.jsonl").read_text().splitlines()]
    assert rows and all(0.0 <= r["w"] <= 1.0 for r in rows)


def test_pipeline_skips_finished_stages(chain, capsys):
    runs, _ = chain
    before = {s: (runs / s / "checkpoint" / "weights.safetensors").stat().st_mtime for s in ("causal", "dmd", "delta")}
    report = run_pipeline(tiny_pipeline(runs, stages=("data", "causal", "dmd", "delta")))
    assert "causal: finished at step 3" in capsys.readouterr().out
    assert all(report[s]["status"] in ("present", "finished") for s in ("data", "causal", "dmd", "delta"))
    assert before == {s: (runs / s / "checkpoint" / "weights.safetensors").stat().st_mtime for s in ("causal", "dmd", "delta")}


@pytest.mark.parametrize("overrides", [["overrides={teacher:['train.max_minutes=28']}"],
                                       ["overrides.teacher=['train.max_minutes=28']"]])
def test_pipeline_takes_per_stage_overrides_as_its_yaml_says(overrides):
    from dfworld.configuration import load_config

    cfg = load_config(PipelineConfig, "pipeline", overrides + ["runs=r2"])
    assert cfg.overrides == {"teacher": ["train.max_minutes=28"]} and cfg.runs == "r2"


def test_the_causal_stage_can_train_on_its_own_history_towards_the_real_frames(chain):
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    cfg = compose_stage("causal", [*wiring(tiny_pipeline(runs), "causal"), *TINY_CAUSAL, f"train.out={runs / 'causal-own'}",
                                   "own_history_fraction=1.0", "own_history_levels=2"])
    stage = stage_classes("causal")[1](cfg)
    x0 = stage.latents[:2]
    rng = torch.Generator().manual_seed(0)
    own = stage.own_history(x0, stage.actions[:2], stage.wording[:2, 0], rng)
    K = cfg.model.chunk_frames
    assert own.shape == x0.shape and torch.equal(own[:, :K], x0[:, :K])  # the real first chunk, then the model's own
    assert torch.isfinite(own).all() and not torch.allclose(own[:, K:], x0[:, K:])
    assert np.isfinite(stage.train_step(0, rng)["loss_flow"])


def test_the_causal_stage_starts_a_skip_model_from_weights_without_it_and_learns_the_gate(chain):
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    cfg = compose_stage("causal", [*wiring(tiny_pipeline(runs), "causal"), *TINY_CAUSAL, f"train.out={runs / 'causal-skip'}",
                                   "model.prev_skip=true"])
    stage = stage_classes("causal")[1](cfg)  # init_checkpoint: the chain's teacher, which has no reference frame or skip
    assert stage.generator.skip_gate.item() == 0
    assert np.isfinite(stage.train_step(0, torch.Generator().manual_seed(0))["loss_flow"])
    assert stage.generator.skip_gate.item() != 0


def test_the_causal_stage_weights_its_loss_towards_the_entities(chain):
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    losses = []
    for w in (0.0, 3.0):
        cfg = compose_stage("causal", [*wiring(tiny_pipeline(runs), "causal"), *TINY_CAUSAL, f"train.out={runs / 'causal-ent'}",
                                       f"entity_weight={w}"])
        stage = stage_classes("causal")[1](cfg)
        if w:  # the entities' cells, laid out as the latents, a small share of each frame
            cells = stage.entity_cells
            assert cells.shape == stage.latents.shape[:2] + stage.latents.shape[-2:] and 0 < cells.float().mean() < 0.5
        losses.append(stage.train_step(0, torch.Generator().manual_seed(0))["loss_flow"])
    assert np.isfinite(losses).all() and losses[0] != losses[1]  # same batch, same noise: only the weighting differs
    with pytest.raises(ValueError, match="entity_weight"):
        compose_stage("causal", ["entity_weight=-1"])


def test_dmd_can_regress_its_rollouts_onto_the_real_continuation(chain):
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    base = [*wiring(tiny_pipeline(runs), "dmd"), *TINY, "critic.batch_size=2", "train.steps=4", "context_chunks=1"]
    outs = {}
    for w in (0.0, 1.0):
        stage = stage_classes("dmd")[1](compose_stage("dmd", [*base, f"train.out={runs / f'dmd-real{w}'}", f"real_weight={w}"]))
        F = stage.clip_frames
        assert stage.latents.shape[1] == (F if w else stage.context)  # the whole real window only where it is a target
        outs[w] = stage.train_step(0, torch.Generator().manual_seed(0))
    assert "loss_real" not in outs[0.0] and np.isfinite(outs[1.0]["loss_real"]) and outs[1.0]["loss_real"] > 0
    assert outs[0.0]["loss_dmd"] == pytest.approx(outs[1.0]["loss_dmd"])  # same rollout and direction; only the sum differs
    assert outs[0.0]["grad_norm"] != pytest.approx(outs[1.0]["grad_norm"])
    with pytest.raises(ValueError, match="real_weight"):
        stage_classes("dmd")[1](compose_stage("dmd", [*base, f"train.out={runs / 'dmd-real-x'}", "real_weight=1", "context_chunks=0"]))


def test_own_history_joins_only_after_its_share_of_the_run(chain):
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    cfg = compose_stage("causal", [*wiring(tiny_pipeline(runs), "causal"), *TINY_CAUSAL, f"train.out={runs / 'causal-after'}",
                                   "own_history_fraction=1.0", "own_history_levels=1", "own_history_after=0.5"])
    stage = stage_classes("causal")[1](cfg)
    rollouts, own_history = [], stage.own_history
    stage.own_history = lambda *a: rollouts.append(1) or own_history(*a)
    rng = torch.Generator().manual_seed(0)
    stage.progress = 0.4
    stage.train_step(0, rng)
    assert rollouts == []  # real history only in the first half
    stage.progress = 0.5
    stage.train_step(1, rng)
    assert rollouts == [1]
    with pytest.raises(ValueError, match="own_history_after"):
        compose_stage("causal", ["own_history_after=1.0"])


def test_delta_under_context_scoring_refuses_the_history_measure():
    from dfworld.losses.delta import TrustRegionConfig
    from dfworld.training.stages.delta import DeltaStageConfig

    with pytest.raises(ValueError, match="history needs scoring=window"):
        DeltaStageConfig(scoring="context")
    assert DeltaStageConfig(scoring="context", trust_region=TrustRegionConfig(measure="relative_step")).scoring == "context"


def test_pipeline_rejects_unknown_stages():
    with pytest.raises(ValueError, match="unknown pipeline stage"):
        PipelineConfig(stages=("data", "distill"))


def stream_args(runs: Path, stage: str, out: Path, *extra) -> list[str]:
    return ["train", f"stage={stage}", f"teacher_checkpoint={runs / 'teacher' / 'checkpoint'}",
            f"generator_checkpoint={runs / 'dmd' / 'checkpoint'}", f"train.out={out}", *TINY_STREAM, *extra]


@pytest.mark.slow
def test_delta_resumes_exactly(chain, tmp_path):
    runs, _ = chain
    assert main(stream_args(runs, "delta", tmp_path / "a", "train.steps=12")) == 0
    assert main(stream_args(runs, "delta", tmp_path / "b", "train.steps=7")) == 0
    assert main(stream_args(runs, "delta", tmp_path / "b", "train.steps=12")) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    a, b = history(tmp_path / "a"), history(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert strip(a) == strip(b)  # a rollout restart (horizon 32) and switches happen on both sides of the stop
    assert (tmp_path / "a" / "trust_region.jsonl").read_text() == (tmp_path / "b" / "trust_region.jsonl").read_text()
    wa, wb = load_checkpoint(tmp_path / "a" / "checkpoint").weights, load_checkpoint(tmp_path / "b" / "checkpoint").weights
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_delta_with_full_trust_and_no_continuity_is_the_stream_stage(chain, tmp_path):
    runs, _ = chain
    assert main(stream_args(runs, "stream", tmp_path / "s", "train.steps=6")) == 0
    assert main(stream_args(runs, "delta", tmp_path / "d", "train.steps=6", "trust_region.shape=constant",
                            "trust_region.w_const=1.0", "trust_region.lam=0.0")) == 0
    s, d = history(tmp_path / "s"), history(tmp_path / "d")
    bundle = [r for r in s if "loss_generator" in r]
    assert bundle and [r["loss_generator"] for r in bundle] == [r["loss_generator"] for r in d if "loss_generator" in r]
    assert [r["loss_critic"] for r in s] == [r["loss_critic"] for r in d]
    # and the default trust region does change the loss
    assert main(stream_args(runs, "delta", tmp_path / "t", "train.steps=6", "trust_region.rho=0.01", "trust_region.lam=1.0")) == 0
    t = history(tmp_path / "t")
    assert [r["loss_generator"] for r in bundle] != [r["loss_generator"] for r in t if "loss_generator" in r]


def test_stream_rollouts_may_start_from_noise(chain, tmp_path):
    runs, _ = chain
    # horizon 32: a rollout starts at steps 1 and 8 (from a real frame: 4 context frames, then one 4-frame chunk a step)
    assert main(stream_args(runs, "stream", tmp_path / "real", "train.steps=9")) == 0
    assert main(stream_args(runs, "delta", tmp_path / "noise", "train.steps=9", "noise_starts=1.0")) == 0
    real, noise = history(tmp_path / "real"), history(tmp_path / "noise")
    assert [r["frame"] for r in real][:3] == [4, 8, 12] and real[7]["frame"] == 4
    # from noise the first window is a whole clip (frames 0-7 of this tiny teacher), generated with no history
    assert [r["frame"] for r in noise][:3] == [0, 8, 12] and noise[7]["frame"] == 0
    first = [r for r in noise if r["frame"] == 0 and "loss_generator" in r]
    assert first and all("w_mean" not in r and r["loss_generator"] == r["loss_dmd"] for r in first)
    logged = {json.loads(r)["step"] for r in (tmp_path / "noise" / "trust_region.jsonl").read_text().splitlines()}
    assert logged and not logged & {r["step"] for r in first}  # no trust region without history
    assert all("w_mean" in r for r in noise if r["frame"] > 0 and "loss_generator" in r)
    # a fraction draws per rollout; a value outside [0, 1] is refused
    assert main(stream_args(runs, "stream", tmp_path / "bad", "noise_starts=1.5")) == 2


@pytest.mark.slow
def test_sweep_trains_each_point_from_dmd_benches_them_and_resumes(chain, tmp_path, capsys):
    runs, _ = chain
    script = short_script(tmp_path / "short.jsonl", n=2, frames=32)
    overrides = [f"runs={runs}", f"clips={runs / 'clips'}", f"out={tmp_path / 'sweep'}", f"script={script}",
                 "grid.trust_region.rho=[0.5,2.0]", "grid.trust_region.lam=[1.0]",
                 "overrides=[" + ",".join(f"'{o}'" for o in [*TINY_STREAM, "train.steps=4"]) + "]", "episodes=2", "frames=32", "batch=2"]
    assert main(["sweep", *overrides]) == 0
    out = tmp_path / "sweep"
    report = json.loads((out / "sweep.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["stream", "delta", "rho0.5-lam1.0", "rho2.0-lam1.0"]
    for name in names[2:]:  # each point is a delta run from the pipeline's dmd, with its own trust region
        ckpt = load_checkpoint(out / name / "checkpoint")
        assert ckpt.config["stage"] == "delta" and ckpt.config["record"]["step"] == 4
        assert ckpt.config["stage_config"]["generator_checkpoint"] == str(runs / "dmd" / "checkpoint")
        assert ckpt.config["stage_config"]["trust_region"]["rho"] == float(name[3:6])
    row = report["rows"][2]
    assert 0 <= row["consistency"]["value"] <= 1 and 0 <= row["reactivity@16"]["value"] <= 1
    assert all(0.2 <= r[k] <= 1 for r in report["rows"][1:] for k in ("w_no_switch", "w_at_switch"))  # w_min 0.2
    assert "| rho2.0-lam1.0 | trust_region.rho=2.0 trust_region.lam=1.0 |" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").stat().st_size > 1000 and (out / "bench" / "bench.json").is_file()
    # again: every point is finished and the bench is complete, so nothing is retrained
    stamp = (out / "rho0.5-lam1.0" / "checkpoint" / "config.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["sweep", *overrides]) == 0
    assert "rho0.5-lam1.0: finished, skipped" in capsys.readouterr().out
    assert (out / "rho0.5-lam1.0" / "checkpoint" / "config.json").stat().st_mtime_ns == stamp
    # a sweep without the pipeline's runs says which run is missing
    assert main(["sweep", f"runs={tmp_path / 'nowhere'}", f"out={tmp_path / 'x'}"]) == 2
    assert "nowhere/teacher/checkpoint" in capsys.readouterr().err


def test_stage_errors(chain, capsys):
    runs, _ = chain
    # stream needs a dmd (or later) generator, not the teacher
    assert main(["train", "stage=stream", f"teacher_checkpoint={runs / 'teacher' / 'checkpoint'}",
                 f"generator_checkpoint={runs / 'teacher' / 'checkpoint'}", *TINY_STREAM]) == 2
    assert "is a 'teacher' checkpoint; expected dmd or stream or delta" in capsys.readouterr().err
    assert main(["train", "stage=ode", "teacher_checkpoint=/nonexistent", *TINY]) == 2
    assert main(stream_args(runs, "stream", runs / "x", "switch_gaps=[6]")) == 2
    assert "multiples of the chunk" in capsys.readouterr().err


def test_the_euler_grid_must_hold_the_student_levels():
    assert euler_grid_indices(16, (1000.0, 750.0, 500.0, 250.0)) == [0, 4, 8, 12]
    with pytest.raises(ValueError, match="not on a 10-step Euler grid"):
        euler_grid_indices(10, (1000.0, 750.0, 500.0, 250.0))


@pytest.mark.slow
def test_dmd_under_torchrun_with_gloo(chain, tmp_path):
    runs, _ = chain
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dfworld.cli",
           "train", "stage=dmd", f"teacher_checkpoint={runs / 'teacher' / 'checkpoint'}", f"clips={runs / 'clips'}",
           f"generator_checkpoint={runs / 'causal' / 'checkpoint'}", f"train.out={run}", *TINY, "critic.batch_size=2",
           "train.steps=3"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoint", stage="dmd")
    assert ckpt.config["record"]["world_size"] == 2 and ckpt.config["record"]["step"] == 3


def test_context_scoring_changes_what_teacher_and_critic_see(chain, tmp_path):
    """Scoring the committed frames clean (context) instead of noising the whole window gives another loss."""
    runs, _ = chain
    assert main(stream_args(runs, "stream", tmp_path / "w", "train.steps=4")) == 0
    assert main(stream_args(runs, "stream", tmp_path / "c", "train.steps=4", "scoring=context")) == 0
    w, c = history(tmp_path / "w"), history(tmp_path / "c")
    assert [r["frame"] for r in w] == [r["frame"] for r in c]  # the same rollouts
    assert [r["loss_critic"] for r in w] != [r["loss_critic"] for r in c]
    assert main(stream_args(runs, "stream", tmp_path / "x", "train.steps=1", "scoring=nope")) == 2

