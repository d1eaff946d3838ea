"""Stage fidelity on the tiny chain: trains to the simulator's frames, resumes exactly, weights the entities, refuses bad episodes."""

from pathlib import Path

import numpy as np
import pytest
import test_distill_stages
import torch
from test_distill_stages import TINY, history

from dfworld.checkpoint import load_checkpoint
from dfworld.cli import main
from dfworld.model.loading import load_bundle

chain = test_distill_stages.chain  # the tiny pipeline's runs (a module fixture: trained once for this file)


def fidelity_args(runs: Path, out: Path, *extra) -> list[str]:
    return ["train", "stage=fidelity", f"generator_checkpoint={runs / 'delta' / 'checkpoint'}", f"train.out={out}", *TINY,
            "frames=16", "long_frames=24", "long_from=0.75", "switch_gaps=[8]", "train.max_minutes=0", "train.decay=constant",
            "train.checkpoint_every=2", *extra]


def test_the_fidelity_stage_trains_to_the_simulators_frames_and_resumes_exactly(chain, tmp_path):
    runs, _ = chain
    assert main(fidelity_args(runs, tmp_path / "a", "train.steps=4")) == 0
    assert main(fidelity_args(runs, tmp_path / "b", "train.steps=2")) == 0
    assert main(fidelity_args(runs, tmp_path / "b", "train.steps=4")) == 0
    a, b = history(tmp_path / "a"), history(tmp_path / "b")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert [r["step"] for r in b] == [1, 2, 3, 4] and strip(a) == strip(b)
    assert [r["frames"] for r in a] == [16, 16, 16, 24]  # the curriculum: longer episodes from 3/4 of the run on
    assert all(np.isfinite(r["loss_fidelity"]) and r["loss_fidelity"] > 0 for r in a)
    bundle = load_bundle(tmp_path / "a" / "checkpoint")  # a generator WorldModel-v0 loads, with the one level it was tuned at
    assert bundle.checkpoint.config["stage"] == "fidelity" and list(bundle.sampler.timesteps) == [1000.0]
    start = load_checkpoint(runs / "delta" / "checkpoint").weights
    tuned = load_checkpoint(tmp_path / "a" / "checkpoint").weights
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.startswith("generator."))


def test_the_fidelity_stage_refuses_episodes_that_are_not_whole_chunks(chain, tmp_path, capsys):
    runs, _ = chain
    assert main(fidelity_args(runs, tmp_path / "x", "frames=18")) == 2
    assert "multiples of the chunk" in capsys.readouterr().err
    assert main(fidelity_args(runs, tmp_path / "y", "switch_gaps=[]")) == 2
    assert "switch gap" in capsys.readouterr().err
    assert main(fidelity_args(runs, tmp_path / "y", "long_from=1.5")) == 2
    assert "long_from" in capsys.readouterr().err
    assert main(fidelity_args(runs, tmp_path / "y", "seek_fraction=2")) == 2
    assert "seek_fraction" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoint").exists() and not (tmp_path / "y" / "checkpoint").exists()


def test_the_fidelity_stage_weights_its_loss_towards_the_entities(chain, tmp_path):
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    base = [f"generator_checkpoint={runs / 'delta' / 'checkpoint'}", *TINY, "frames=16", "switch_gaps=[8]"]
    stages = {w: stage_classes("fidelity")[1](compose_stage("fidelity", [*base, f"train.out={tmp_path / str(w)}", f"entity_weight={w}"]))
              for w in (0.0, 3.0)}
    _, target, plain, *_ = stages[0.0].episodes(0)
    _, same, weight, *_ = stages[3.0].episodes(0)
    assert torch.equal(target, same) and bool((plain == 1).all())
    assert set(weight.unique().tolist()) == {1.0, 4.0} and 0 < float((weight > 1).float().mean()) < 0.5  # a few cells of each frame
    with pytest.raises(ValueError, match="entity_weight"):
        compose_stage("fidelity", [*base, "entity_weight=-1"])


def test_add_skip_opens_the_reference_frame_skip_from_zero_and_trains_it(chain, tmp_path):
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    start = runs / "delta" / "checkpoint"
    assert load_checkpoint(start).config["model"]["prev_skip"] is False
    base = [f"generator_checkpoint={start}", *TINY, "frames=8", "switch_gaps=[8]"]
    plain, skip = (stage_classes("fidelity")[1](compose_stage("fidelity", [*base, f"train.out={tmp_path / n}", f"add_skip={a}"]))
                   for n, a in (("p", "false"), ("s", "true")))
    assert skip.generator.config.prev_skip and skip.generator.skip_gate.item() == 0.0
    rng = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert plain.train_step(0, rng())["loss_fidelity"] == pytest.approx(skip.train_step(0, rng())["loss_fidelity"], rel=1e-6)
    assert skip.generator.skip_gate.item() != 0.0  # the gate is trained with the rest, at skip_lr_scale times the rate
    assert skip.opt.param_groups[1]["lr"] == pytest.approx(10 * skip.opt.param_groups[0]["lr"]) and len(plain.opt.param_groups) == 1
    assert main(fidelity_args(runs, tmp_path / "run", "train.steps=3", "add_skip=true")) == 0
    assert main(fidelity_args(runs, tmp_path / "resumed", "train.steps=2", "add_skip=true")) == 0
    assert main(fidelity_args(runs, tmp_path / "resumed", "train.steps=3", "add_skip=true")) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(history(tmp_path / "run")) == strip(history(tmp_path / "resumed"))
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert ckpt.config["model"]["prev_skip"] is True and "generator.skip_gate" in ckpt.weights
    assert all("skip_gate" in r for r in history(tmp_path / "run"))
    assert load_bundle(tmp_path / "run" / "checkpoint").checkpoint.config["stage"] == "fidelity"


def test_prev_chunk_switches_the_reference_to_the_last_chunk_with_the_same_weights(chain, tmp_path):
    """The switch itself; that a prev_chunk model reads its previous chunk is tests/test_unroll.py's and test_teacher_forcing.py's."""
    from dfworld.training.stages import stage_classes
    from dfworld.training.stages import stage_config as compose_stage

    runs, _ = chain
    start = runs / "delta" / "checkpoint"
    base = [f"generator_checkpoint={start}", *TINY, "frames=8", "switch_gaps=[8]"]
    plain, whole = (stage_classes("fidelity")[1](compose_stage("fidelity", [*base, f"train.out={tmp_path / n}", f"prev_chunk={a}"]))
                    for n, a in (("p", "false"), ("c", "true")))
    assert whole.generator.config.prev_chunk and not plain.generator.config.prev_chunk
    a, b = plain.generator.state_dict(), whole.generator.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(fidelity_args(runs, tmp_path / "run", "train.steps=2", "prev_chunk=true")) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert ckpt.config["model"]["prev_chunk"] is True
    assert load_bundle(tmp_path / "run" / "checkpoint").generator.config.prev_chunk
