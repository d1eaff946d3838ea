"""`dfworld pipeline`: the whole training chain, from data to the generator checkpoints.

Stages run in order (data, codec, teacher, causal, dmd, stream, delta, fidelity, decoder, ship; `ode`
is the other start for dmd: `dmd_start`), each wired to the outputs of the ones before it; `fidelity`
tunes the delta generator on its own rollouts against EventWorld's frames; `decoder` distils a fast
decoder for the codec, from real frames' latents and, after fidelity, from that generator's own
rollouts' (anywhere after codec without them); `ship` copies the fidelity, dmd and stream generators
(inference weights, codec, text cache, configs, and a training record) into the package's
checkpoints (`dfworld.shipped`), with the fast decoder of stage `decoder` where it was trained on
their codec. Every stage runs its config dataclass's defaults unless `overrides` says otherwise. A
stage whose checkpoint is finished (all its steps, or its time budget spent) is skipped; an
unfinished one resumes from its checkpoint; so a stopped pipeline is continued by running the same
command again. Wall times are recorded in <runs>/pipeline.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from dfworld.configuration import build, compose
from dfworld.shipped import SHIP_LIMIT_MB, SHIPPED
from dfworld.training.stages import stage_classes
from dfworld.training.stages import stage_config as compose_stage

STAGE_ORDER = ("data", "codec", "teacher", "causal", "ode", "dmd", "stream", "delta", "fidelity", "decoder", "ship")
DEFAULT_STAGES = ("data", "codec", "teacher", "causal", "dmd", "stream", "delta", "fidelity", "decoder", "ship")
DMD_STARTS = ("causal", "ode")
CAUSAL_CLIPS = ("n=4096", "frames=32")  # the causal stage's clips: twice the teacher's length, twice as many


@dataclass(frozen=True)
class PipelineConfig:
    """`dfworld pipeline` (configs/pipeline.yaml)."""

    runs: str = "runs"  # stage run directories: <runs>/<stage>
    clips: str = "data/clips"  # the clips data set (the teacher's, dmd's)
    causal_clips: str = "data/clips32"  # longer clips for stage causal (teacher forcing over a rolling window)
    stages: tuple[str, ...] = DEFAULT_STAGES  # which stages to run, in this order
    dmd_start: str = "causal"  # the generator dmd starts from: causal (teacher forcing on real clips) or ode
    overrides: dict[str, list[str]] = field(default_factory=dict)  # Hydra overrides per stage
    ship_to: str = "dfworld/checkpoints"  # stage ship: where the generator checkpoints go (the package's, in a clone)
    # stage ship: SamplerConfig fields the shipped default (the envs' generator) runs with instead of its training's,
    # e.g. {"timesteps": [1000.0]}: one level of the four it was distilled for (docs/experiments/sampler-levels.md)
    default_sampler: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if unknown := [s for s in self.stages if s not in STAGE_ORDER]:
            raise ValueError(f"unknown pipeline stage(s) {unknown}; stages: {', '.join(STAGE_ORDER)}")
        if self.dmd_start not in DMD_STARTS:
            raise ValueError(f"dmd_start {self.dmd_start!r} is not one of {DMD_STARTS}")
        if unknown := [s for s in self.overrides if s not in STAGE_ORDER]:
            raise ValueError(f"overrides for unknown stage(s) {unknown}; stages: {', '.join(STAGE_ORDER)}")
        if self.default_sampler:
            from dfworld.model.loading import sampler_with
            from dfworld.schedule import SamplerConfig

            sampler_with(SamplerConfig(), self.default_sampler, "default_sampler")  # a bad field fails before training


def wiring(cfg: PipelineConfig, stage: str) -> list[str]:
    """The overrides that connect a stage to the outputs of the stages before it."""
    runs = Path(cfg.runs)
    ck = {s: runs / s / "checkpoint" for s in STAGE_ORDER}
    out = [f"train.out={runs / stage}"]
    if stage in ("codec", "decoder", "teacher", "ode", "dmd"):
        out.append(f"clips={cfg.clips}")
    if stage in ("decoder", "teacher"):
        out.append(f"codec_checkpoint={ck['codec']}")
    if stage == "causal":
        out += [f"clips={cfg.causal_clips}", f"codec_checkpoint={ck['teacher']}", f"init_checkpoint={ck['teacher']}"]
    if stage in ("ode", "dmd", "stream", "delta"):
        out.append(f"teacher_checkpoint={ck['teacher']}")
    if stage == "dmd":
        out.append(f"generator_checkpoint={ck[cfg.dmd_start]}")
    if stage in ("stream", "delta"):
        out.append(f"generator_checkpoint={ck['dmd']}")
    if stage == "fidelity":
        out.append(f"generator_checkpoint={ck['delta']}")
    if stage == "decoder":  # the envs' generator, where it is trained first: its own latents are what they decode
        before = "fidelity" in cfg.stages[: cfg.stages.index("decoder")]
        out.append(f"generator_checkpoint={ck['fidelity'] if before else ''}")
    return out


def stage_config(cfg: PipelineConfig, stage: str):
    """A stage's config as the pipeline runs it: its YAML, the wiring, then the pipeline's overrides."""
    return compose_stage(stage, wiring(cfg, stage) + list(cfg.overrides.get(stage, [])))


def finished(run: Path, steps: int, max_minutes: float) -> dict | None:
    """The training record of a finished checkpoint in `run`, or None."""
    path = run / "checkpoint" / "config.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text()).get("record", {})
    done = record.get("step", 0) >= steps or (max_minutes > 0 and record.get("seconds", 0) >= max_minutes * 60)
    return record if done else None


def run_pipeline(cfg: PipelineConfig) -> dict:
    from dfworld.training.loop import Loop
    from dfworld.world.datasets import ClipsConfig, write_clips

    runs = Path(cfg.runs)
    runs.mkdir(parents=True, exist_ok=True)
    report_path = runs / "pipeline.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    for stage in cfg.stages:
        t0 = time.perf_counter()
        entry = report.get(stage, {"wall_seconds": 0.0})
        if stage == "ship":
            entry["status"] = "shipped"
            entry["sizes_mb"] = ship(cfg, report)
        elif stage == "data":
            entry["status"] = "present"
            for path, extra in ((cfg.clips, []), (cfg.causal_clips, list(CAUSAL_CLIPS))):
                if (Path(path) / "manifest.json").is_file():
                    print(f"[pipeline] data: {path} exists, skipped")
                else:
                    print(f"[pipeline] data: writing {path}")
                    write_clips(build(ClipsConfig, compose("data/clips", [f"out={path}", *extra, *cfg.overrides.get("data", [])])))
                    entry["status"] = "written"
        else:
            scfg = stage_config(cfg, stage)
            record = finished(runs / stage, scfg.train.steps, scfg.train.max_minutes)
            if record is not None:
                print(f"[pipeline] {stage}: finished at step {record.get('step')} ({record.get('seconds')} s of training), skipped")
                entry["status"] = "finished"
            else:
                print(f"[pipeline] {stage}: training (resumes if a checkpoint is there)")
                Loop(stage_classes(stage)[1](scfg)).run()
                record = finished(runs / stage, scfg.train.steps, scfg.train.max_minutes)
                entry["status"] = "finished" if record is not None else "stopped"
            ck = json.loads((runs / stage / "checkpoint" / "config.json").read_text()).get("record", {})
            entry.update(steps=ck.get("step"), train_seconds=ck.get("seconds"))
        entry["wall_seconds"] = round(entry.get("wall_seconds", 0.0) + time.perf_counter() - t0, 1)
        report[stage] = entry
        report_path.write_text(json.dumps(report, indent=1))
    total = sum(v.get("wall_seconds", 0.0) for v in report.values())
    print(f"[pipeline] done; wall time recorded in {report_path} (all invocations together: {total / 60:.1f} min)")
    return report


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine() -> str:
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


TEXT_CACHE_WITH = ("default",)  # the shipped generators that carry the text cache (every wording of every event, 4.3 MB)


def with_fast_decoder(decoder_checkpoint: Path, weights: dict, config: dict, name: str, note: str = "") -> bool:
    """Put stage decoder's fast decoder into a generator's weights and codec config, if it was trained on that codec.

    The config's record gains `fast_decoder`: its checkpoint, steps, seconds and stage config (and `note`, the
    commands that made it, where given).

    The decoder checkpoint carries its base codec bit for bit beside the fast decoder; a generator
    whose codec weights differ (another codec) keeps only its full decoder. Returns whether it was put in.
    """
    import torch

    from dfworld.checkpoint import load_checkpoint

    if not (decoder_checkpoint / "config.json").is_file():
        return False
    dec = load_checkpoint(decoder_checkpoint, stage="decoder")
    fast = {k: v for k, v in dec.weights.items() if k.startswith("codec.fast.")}
    base = {k: v for k, v in dec.weights.items() if k.startswith("codec.") and k not in fast}
    mine = {k: v for k, v in weights.items() if k.startswith("codec.") and not k.startswith("codec.fast.")}
    if base.keys() != mine.keys() or not all(torch.equal(base[k], mine[k]) for k in base):
        print(f"[pipeline] ship: {name} keeps its full decoder only ({decoder_checkpoint} was trained on another codec)")
        return False
    weights.update(fast)
    config["codec"] = dec.config["codec"]
    rec = dec.config.get("record", {})
    config["record"] = {**config.get("record", {}), "fast_decoder": {
        "checkpoint": str(decoder_checkpoint), "step": rec.get("step"), "seconds": rec.get("seconds"),
        "stage_config": dec.config.get("stage_config"), **({"command": note} if note else {})}}
    return True


def attach_fast_decoder(generator: str | Path, decoder_checkpoint: str | Path, out: str | Path, note: str = "") -> Path:
    """Write a copy of a generator checkpoint to `out` with stage decoder's fast decoder in its codec (`note`: the
    commands that trained it, kept in the record).

    Refuses (ValueError) a decoder trained on another codec; `out` must not exist yet.
    """
    from dfworld.checkpoint import load_checkpoint, save_checkpoint
    from dfworld.model.loading import GENERATOR_STAGES, TEXT_CACHE
    from dfworld.shipped import resolve_checkpoint

    src = resolve_checkpoint(generator)
    if Path(out).exists():
        raise FileExistsError(f"{str(out)!r} exists; give a new directory")
    ckpt = load_checkpoint(src, stage=GENERATOR_STAGES)
    weights = {k: v for k, v in ckpt.weights.items() if k.split(".", 1)[0] in ("generator", "codec")}
    config = {k: v for k, v in ckpt.config.items() if k not in ("format", "version")}
    if not with_fast_decoder(Path(decoder_checkpoint), weights, config, str(src), note):
        raise ValueError(f"{decoder_checkpoint} holds no fast decoder for the codec of {src}")
    extra = {TEXT_CACHE: src / TEXT_CACHE} if (src / TEXT_CACHE).is_file() else {}
    return save_checkpoint(out, config, weights, extra_files=extra)


def with_sampler(config: dict, fields: dict) -> dict:
    """A generator checkpoint's config sampling with `fields` replaced; the record keeps the schedule it was trained for."""
    from dfworld.configuration import to_dict
    from dfworld.model.loading import sampler_with
    from dfworld.schedule import SamplerConfig

    own = build(SamplerConfig, config.get("sampler", {}), "the checkpoint's sampler")
    record = {**config.get("record", {}), "trained_sampler": config.get("record", {}).get("trained_sampler", to_dict(own))}
    return {**config, "sampler": to_dict(sampler_with(own, fields, "default_sampler")), "record": record}


def ship(cfg: PipelineConfig, report: dict) -> dict[str, float]:
    """Copy the trained generators into `cfg.ship_to` (inference weights only), each with its record.

    The three are written to a staging directory first and land only when they fit the package's
    limit together, so a refused ship leaves the shipped checkpoints as they were. The text cache
    ships with `default` (the envs' generator); `dmd` and `stream`, the bench's baselines, encode
    their texts with the same encoder when first used (what their training did).
    """
    import shutil
    import tempfile

    from dfworld.checkpoint import load_checkpoint, save_checkpoint
    from dfworld.model.loading import TEXT_CACHE

    runs, dest = Path(cfg.runs), Path(cfg.ship_to)
    chain = {s: report.get(s, {}) for s in STAGE_ORDER if s not in ("ship",)}
    sizes = {}
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".ship-") as staging:
        for name, stage in SHIPPED.items():
            src = runs / stage / "checkpoint"
            ckpt = load_checkpoint(src, stage=stage)
            weights = {k: v for k, v in ckpt.weights.items() if k.split(".", 1)[0] in ("generator", "codec")}
            config = {k: v for k, v in ckpt.config.items() if k not in ("format", "version")}
            with_fast_decoder(runs / "decoder" / "checkpoint", weights, config, name)
            if name == "default" and cfg.default_sampler:
                config = with_sampler(config, cfg.default_sampler)
            config["record"] = {
                **config.get("record", {}),
                "command": "dfworld pipeline --threads 2 (configs/pipeline.yaml)",
                "commit": _git_commit(),
                "machine": machine(),
                "shipped": time.strftime("%Y-%m-%d"),
                "pipeline": chain,
            }
            extra = {TEXT_CACHE: src / TEXT_CACHE} if name in TEXT_CACHE_WITH and (src / TEXT_CACHE).is_file() else {}
            out = save_checkpoint(Path(staging) / name, config, weights, extra_files=extra)
            sizes[name] = round(sum(f.stat().st_size for f in out.iterdir()) / 2**20, 2)
            print(f"[pipeline] ship: {src} -> {dest / name} ({sizes[name]} MB)")
        total = sum(sizes.values())
        if total > SHIP_LIMIT_MB:
            raise ValueError(f"the shipped checkpoints would take {total:.1f} MB, over the {SHIP_LIMIT_MB} MB the package allows; "
                             f"nothing was shipped ({dest} is as it was)")
        for name in SHIPPED:
            if (dest / name).exists():
                shutil.rmtree(dest / name)
            shutil.move(str(Path(staging) / name), str(dest / name))
    return sizes
