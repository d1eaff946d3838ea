"""The `dfworld` command.

    dfworld demo                      a scripted episode through WorldModel-v0: an mp4 and a report
    dfworld data clips [overrides]    write single-event clips (Hydra overrides: n=4096 out=...)
    dfworld data episodes [overrides] write long scripted episodes
    dfworld train stage=NAME [overrides]  run a training stage (codec, teacher, ode, dmd, stream, delta)
    dfworld pipeline [overrides]      every stage from data to the dmd, stream and delta checkpoints
    dfworld sweep [overrides]         the trust region over a grid: train each point, bench them side by side
    dfworld eval codec|teacher|generator  probe-measured quality of a checkpoint
    dfworld script validate FILE...   check event scripts
    dfworld script make-suite DIR     regenerate the shipped suites
    dfworld bench [--checkpoint NAME=PATH ...]  score checkpoints against EventWorld on an event suite
    dfworld export onnx [--checkpoint PATH] [--out DIR]  the generator's chunk step, context writes and decoder as ONNX
    dfworld agent train|eval|transfer  agents inside the world model or in EventWorld; the transfer test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dfworld.configuration import ConfigError


def _cmd_play(args: argparse.Namespace) -> int:
    from dfworld.play import PlayConfig, run_play

    run_play(PlayConfig(checkpoint=args.checkpoint, backend=args.backend, seed=args.seed, scale=args.scale, record=args.record,
                        real=not args.no_real, threads=args.threads or None, max_steps=args.max_steps))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dfworld.demo import run_demo

    rep = run_demo(args.checkpoint, args.script, args.episode, args.frames, args.out, args.scale, args.threads)
    print((Path(args.out) / "report.md").read_text(), end="")
    return 0 if rep else 1


def _cmd_data(args: argparse.Namespace) -> int:
    from dfworld.configuration import build, compose
    from dfworld.world.datasets import ClipsConfig, EpisodesConfig, write_clips, write_episodes

    if args.kind == "clips":
        cfg = build(ClipsConfig, compose("data/clips", args.overrides))
        manifest = write_clips(cfg)
    else:
        cfg = build(EpisodesConfig, compose("data/episodes", args.overrides))
        manifest = write_episodes(cfg)
    print(f"wrote {manifest}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from dfworld.training.loop import Loop
    from dfworld.training.stages import STAGES, stage_classes, stage_config

    stage_args = [o for o in args.overrides if o.startswith("stage=")]
    if len(stage_args) != 1:
        raise ValueError(f"dfworld train needs exactly one stage=<{'|'.join(STAGES)}>")
    name = stage_args[0].split("=", 1)[1]
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    cfg = stage_config(name, [o for o in args.overrides if not o.startswith("stage=")])
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = Loop(stage_classes(name)[1](cfg)).run()
    print(f"checkpoint: {ckpt}")
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    import torch

    from dfworld.configuration import load_config
    from dfworld.training.pipeline import PipelineConfig, run_pipeline

    cfg = load_config(PipelineConfig, "pipeline", args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_pipeline(cfg)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import torch

    from dfworld.bench.suite_runner import BenchConfig, run_bench
    from dfworld.configuration import build, compose
    from dfworld.training.sweep import SweepConfig, run_sweep

    cfg = build(SweepConfig, compose("sweep", args.overrides))
    if args.threads:
        torch.set_num_threads(args.threads)

    def bench(checkpoints: list[str], out: Path) -> dict:  # the sweep trains; the bench comes from here
        return run_bench(BenchConfig(script=cfg.script, checkpoints=tuple(checkpoints), episodes=cfg.episodes, frames=cfg.frames,
                                     batch=cfg.batch, out=str(out), video_episodes=0, device=cfg.device))

    run_sweep(cfg, bench)
    print((Path(cfg.out) / "sweep.md").read_text(), end="")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "codec":
        from dfworld.bench.codec_quality import evaluate_codec

        summary = evaluate_codec(args.checkpoint or "runs/codec/checkpoint", seed=args.seed or 777, decoder=args.decoder or None)
    else:
        from dfworld.bench.teacher_quality import evaluate_teacher

        default = "runs/teacher/checkpoint" if args.what == "teacher" else "runs/delta/checkpoint"
        summary = evaluate_teacher(
            args.checkpoint or default, args.clips, n=args.n, steps=args.steps, guidance=args.guidance,
            seed=args.seed, out=args.out, device=args.device, noise=args.noise, wording=args.wording, context=args.context,
            decoder=args.decoder, timesteps=args.timesteps,
        )
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from dfworld.bench.suite_runner import BenchConfig, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BenchConfig(
        script=args.script, checkpoints=tuple(args.checkpoint), episodes=args.episodes, frames=args.frames, batch=args.batch,
        out=args.out, video_episodes=args.video_episodes, seed=args.seed, device=args.device, restart=args.restart,
        decoder=args.decoder, timesteps=tuple(args.timesteps or ()),
    )
    run_bench(cfg)
    print((Path(args.out) / "bench.md").read_text(), end="")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dfworld.model.loading import load_bundle
    from dfworld.runtime.export import cached_export_dir, export_onnx
    from dfworld.shipped import resolve_checkpoint

    bundle = load_bundle(resolve_checkpoint(args.checkpoint))
    out = Path(args.out) if args.out else cached_export_dir(bundle)
    t0 = time.perf_counter()
    export_onnx(bundle, out)
    print(f"exported {bundle.checkpoint.path} to {out} in {time.perf_counter() - t0:.1f} s (chunk.onnx, held<m>.onnx, decoder.onnx, export.json)")
    return 0


def _cmd_script(args: argparse.Namespace) -> int:
    from dfworld.world.scripts import load_script
    from dfworld.world.suite import write_shipped_suites

    if args.action == "make-suite":
        write_shipped_suites(args.paths[0])
        print(f"wrote the shipped suites to {args.paths[0]}")
        return 0
    for path in args.paths:
        script = load_script(path)
        n_events = sum(len(ep.events()) for ep in script.episodes)
        print(f"{path}: ok, {script.name!r} version {script.version}, {len(script.episodes)} episodes, {n_events} events")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfworld", description="dfworld: an interactive video world model behind Gymnasium.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    demo = sub.add_parser("demo", help="play a scripted episode through WorldModel-v0, write an mp4 and a report (the main job)")
    demo.add_argument("--checkpoint", default=None, help="a generator checkpoint (default: the shipped one)")
    demo.add_argument("--script", default="core", help="a shipped suite (core, core-heldout) or a script file")
    demo.add_argument("--episode", default=None, help="episode id in the script (default: the first)")
    demo.add_argument("--frames", type=int, default=240, help="frames to generate (the episode is cut there)")
    demo.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    demo.add_argument("--out", default="outputs/demo", help="output directory")
    demo.add_argument("--scale", type=int, default=4, help="upscaling factor of the video")
    demo.set_defaults(func=_cmd_demo)

    play = sub.add_parser("play", help="play the world model from the keyboard in a pygame window (the `play` extra)")
    play.add_argument("--checkpoint", default=None, help="a generator checkpoint, or a shipped one by name (default: the shipped default)")
    play.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="torch, or onnx (ONNX Runtime, the cpu/gpu extra)")
    play.add_argument("--seed", type=int, default=0, help="EventWorld's episode seed: both worlds start from its first frame")
    play.add_argument("--scale", type=int, default=8, help="screen pixels per frame pixel")
    play.add_argument("--record", default=None, metavar="OUT.mp4", help="write every generated frame to this mp4")
    play.add_argument("--no-real", action="store_true", help="start without the real EventWorld beside (R toggles it)")
    play.add_argument("--threads", type=int, default=1, help="CPU threads of the world model (0: torch's setting)")
    play.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: until the window closes)")
    play.set_defaults(func=_cmd_play)

    data = sub.add_parser("data", help="write EventWorld data sets (clips or long episodes)")
    data.add_argument("kind", choices=("clips", "episodes"), help="clips: single-event clips; episodes: long scripted episodes")
    data.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. n=4096 out=data/clips world.height=128")
    data.set_defaults(func=_cmd_data)

    train = sub.add_parser("train", help="run a training stage: stage=codec|teacher|ode|dmd|stream|delta plus Hydra overrides")
    train.add_argument("overrides", nargs="+", help="stage=NAME, then overrides, e.g. train.steps=100 model=large")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    train.set_defaults(func=_cmd_train)

    pipe = sub.add_parser("pipeline", help="train every stage from data to the dmd, stream and delta checkpoints (resumable)")
    pipe.add_argument("overrides", nargs="*", help="Hydra overrides of configs/pipeline.yaml, e.g. runs=runs2 'stages=[ode,dmd]'")
    pipe.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    pipe.set_defaults(func=_cmd_pipeline)

    sweep = sub.add_parser("sweep", help="train Delta Forcing over a trust-region grid from the pipeline's dmd, bench every point (resumable)")
    sweep.add_argument("overrides", nargs="*", help="Hydra overrides of configs/sweep.yaml, e.g. 'grid.trust_region.rho=[0.25,0.5]'")
    sweep.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sweep.set_defaults(func=_cmd_sweep)

    ev = sub.add_parser("eval", help="evaluate a checkpoint with the probes (codec: reconstructions; teacher, generator: sampled clips)")
    ev.add_argument("what", choices=("codec", "teacher", "generator"),
                    help="codec: PSNR and probes on reconstructions; teacher or generator (ode/dmd/stream/delta): sampled clips")
    ev.add_argument("--checkpoint", default=None, help="checkpoint directory (default: runs/codec, runs/teacher or runs/delta)")
    ev.add_argument("--clips", default="data/clips_eval", help="evaluation clips (dfworld data clips split=heldout seed=...)")
    ev.add_argument("--n", type=int, default=64, help="clips to sample")
    ev.add_argument("--steps", type=int, default=24, help="sampler steps")
    ev.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed")
    ev.add_argument("--noise", choices=("fresh", "repeat"), default=None,
                    help="starting noise: fresh per chunk, or repeated (default: repeat for a teacher, the checkpoint's sampler for a generator)")
    ev.add_argument("--wording", choices=("clip", "canonical"), default="clip",
                    help="prompt each clip with its own wording, or with its event's first training wording (what the wording costs)")
    ev.add_argument("--context", type=int, default=0,
                    help="continue each clip's first N real frames (and score fidelity to the clip after them); 0: from noise")
    ev.add_argument("--out", default="outputs/eval", help="where the JSON and the mp4 go")
    ev.add_argument("--device", default="cpu", help="cpu or cuda")
    ev.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ev.add_argument("--decoder", default="", choices=("", "fast", "full"),
                    help="the codec decoder of the frames scored: fast or full (default: the envs', fast where the checkpoint carries one)")
    ev.add_argument("--timesteps", type=float, nargs="+", metavar="T",
                    help="a generator's sampler levels, e.g. 1000 500 (default: the checkpoint's own)")
    ev.set_defaults(func=_cmd_eval)

    bench = sub.add_parser("bench", help="score generator checkpoints against EventWorld on an event suite (resumable)")
    bench.add_argument("--script", default="core", help="a shipped suite (core, core-heldout) or a script file")
    bench.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                       help="a generator checkpoint to score, repeatable (none: the reference alone)")
    bench.add_argument("--episodes", type=int, default=0, help="the first N episodes of the script (0: all)")
    bench.add_argument("--frames", type=int, default=240, help="frames per episode (longer ones are cut, later events dropped)")
    bench.add_argument("--batch", type=int, default=8, help="episodes generated at once (generator rows)")
    bench.add_argument("--out", default="outputs/bench", help="output directory: bench.json, bench.md, plots, videos, parts/")
    bench.add_argument("--video-episodes", type=int, default=2, help="side-by-side mp4s of the first N episodes")
    bench.add_argument("--seed", type=int, default=0, help="added to each episode's seed for generation")
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    bench.add_argument("--restart", action="store_true", help="discard the finished parts in --out instead of resuming")
    bench.add_argument("--decoder", default="", choices=("", "fast", "full"),
                       help="the codec decoder: fast or full (default: the envs', fast where the checkpoint carries one)")
    bench.add_argument("--timesteps", type=float, nargs="+", metavar="T",
                       help="the sampler's levels for every checkpoint, e.g. 1000 500 (default: each checkpoint's own)")
    bench.set_defaults(func=_cmd_bench)

    export = sub.add_parser("export", help="export a generator checkpoint for another runtime (onnx: ONNX Runtime)")
    export.add_argument("kind", choices=("onnx",), help="onnx: chunk.onnx, held<m>.onnx, decoder.onnx and export.json")
    export.add_argument("--checkpoint", default=None, help="a generator checkpoint, or a shipped one by name (default: the shipped default)")
    export.add_argument("--out", default=None, help="output directory (default: the cache the onnx backend reads, ~/.cache/dfworld/onnx/<key>)")
    export.set_defaults(func=_cmd_export)

    script = sub.add_parser("script", help="validate event scripts or regenerate the shipped suites")
    script.add_argument("action", choices=("validate", "make-suite"), help="validate FILE...; make-suite DIR")
    script.add_argument("paths", nargs="+", help="script files to validate, or the directory for make-suite")
    script.set_defaults(func=_cmd_script)

    from dfworld.agents.cli import add_agent_parser

    add_agent_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"dfworld {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
