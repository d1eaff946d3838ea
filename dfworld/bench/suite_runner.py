"""`dfworld bench`: a scripted suite played by EventWorld and by generator checkpoints, read by the probes.

For every episode of an event script (the first N, truncated to F frames; later events dropped)
the simulator plays it as the reference, and each checkpoint generates it: started from the
episode's start frames (the reset frame and still frames after it, `real_start`: the context
before frame 0, reset option "image") and its initial prompt, then stepped chunk by chunk under
the script's actions (the action of the chunk's first frame, held for the chunk) and its text
events at their frames (applied before their chunk). Generation seeds are the episode seed plus
`seed`. The probes read every frame of every source.

Definitions. Events are the script's events that the simulator applied. For an event e at frame
t, its window is frames t..t+L-1 (up to the next event or the end), d = 0..L-1 counts frames since
the event, and r_f is the probe reading of frame f of the source being scored.

- consistency: U_e, the content e did not target, is read from r_{t-8..t-1}: the persistent
  objects (found in more than half of those frames) except the event's colours, the agent (if
  found in more than half), their most common time unless e targets time, and their most common
  weather unless e targets weather. c_e(d) = |{u in U_e read the same in r_{t+d}}| / |U_e| (an
  object counts while its colour is found; time and weather must equal the reading before).
  Curve C(d) = mean over events of c_e(d). consistency = mean over events of (mean over d of
  c_e(d)). drift = 100 x the least-squares slope of c_e(d) on d over all (event, d) pairs, i.e.
  the count-weighted slope of C(d), per 100 frames. Events at t = 0 or with empty U_e have no c_e.
  untouched objects = mean number of objects in U_e per scored event: consistency is measured on
  a source's own frames before the event, so read it beside this count (a source that draws no
  objects is scored on the agent, time and weather alone).
- reactivity: h_e(d) = event_holds(e, r_{t+d}). The delay d0_e is the first d with h_e(d), if h_e
  then holds in more than half of d0_e..L-1 (otherwise e never took effect). reactivity@16 =
  fraction of events with d0_e < 16; median delay = median of d0_e over those events; curve
  R(d) = fraction of events with d0_e <= d.
- validity = fraction of frames whose time and weather read unambiguously (`scene_fit` <= 0.5:
  the nearest (time, weather) prototype at most half as far as the next one) and where the agent
  is found.
- agent error = mean, over frames where the probes find the agent in both the real and the
  generated frame, of the distance between the two agent centroids in pixels (the actions, not
  the text, decide where the agent is).
- fidelity (dfworld.bench.fidelity): the fraction of generated frames faithful to the real frame
  of the same index (time, weather, object colours and places, agent within 2 px, coin), overall,
  by frames since reset (0-15, 16-63, 64-239, 240+), as a curve, and per event kind; agent error
  median; coin pick-up precision and recall (the env's reward against the simulator's).
- fps = generated frames / wall time of `WorldModelCore.step` (decoding included; resets and
  probes excluded; padding rows of a last, partial batch not counted). Event / action step
  latency = mean wall time of a batched step with at least one text event (re-encode and
  re-cache included) / with none. For the reference, fps is the simulator's (`play_episode`).

95% confidence intervals: percentile bootstrap over episodes (1000 resamples; each metric is
recomputed on the resampled set of episodes).

Runs resume: each finished (source, episode) writes `out/parts/<source>--<index>.json` (probe
readings, not frames; frames too, as .npz, for the video episodes), and a rerun with the same
config skips it. `out/parts/config.json` records the config; another config is an error unless
`restart` (a new checkpoint name may join an existing run).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dfworld.bench.suite_report import REFERENCE, probe, write_report
from dfworld.checkpoint import checkpoint_digest, load_checkpoint
from dfworld.configuration import build, to_dict
from dfworld.model.codec import CodecConfig
from dfworld.model.conditioning import TextConditioner
from dfworld.model.loading import GENERATOR_STAGES, conditioner_from, sampler_with
from dfworld.model.transformer import TransformerConfig
from dfworld.schedule import SamplerConfig
from dfworld.world.config import WorldConfig
from dfworld.world.episodes import play_episode, real_start
from dfworld.world.scripts import Episode, Script
from dfworld.world.simulator import EventWorld
from dfworld.world.suite import resolve_script

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class BenchError(ValueError):
    """A bench run that cannot start: bad arguments, checkpoints or scripts, or an --out made with another config."""


@dataclass(frozen=True)
class BenchConfig:
    """One `dfworld bench` run."""

    script: str = "core"  # a shipped suite (core, core-heldout) or a script file
    checkpoints: tuple[str, ...] = ()  # NAME=PATH of each generator checkpoint to compare
    episodes: int = 0  # the first N episodes of the script (0: all)
    frames: int = 240  # frames per episode; longer episodes are truncated and their later events dropped
    batch: int = 8  # episodes generated at once (rows of one WorldModelCore)
    out: str = "outputs/bench"  # output directory (bench.json, bench.md, plots, videos, parts/)
    video_episodes: int = 2  # side-by-side mp4s of the first this many episodes
    seed: int = 0  # added to each episode's seed to seed the generator's rows
    device: str = "cpu"  # cpu or cuda
    restart: bool = False  # discard the finished parts in out/parts instead of resuming
    decoder: str = ""  # the codec decoder of every checkpoint: fast or full ("": the envs' default, fast where carried)
    timesteps: tuple[float, ...] = ()  # the sampler's levels for every checkpoint (empty: each checkpoint's own)


@dataclass
class Candidate:
    """A checkpoint under test, inspected before anything runs."""

    name: str
    path: Path
    digest: str  # dfworld.checkpoint.checkpoint_digest: a changed checkpoint is another run
    image_size: int
    chunk: int  # frames per generator step
    conditioner: TextConditioner


def parse_checkpoint_specs(specs: tuple[str, ...] | list[str]) -> list[tuple[str, Path]]:
    """NAME=PATH strings as (name, path), checking names and that the paths exist."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise BenchError(f"--checkpoint {spec!r}: expected NAME=PATH, e.g. delta=runs/delta/checkpoint")
        if not _NAME.match(name) or name == REFERENCE:
            raise BenchError(f"--checkpoint {spec!r}: NAME takes letters, digits, '_', '.' and '-', and is not {REFERENCE!r}")
        if name in dict(out):
            raise BenchError(f"--checkpoint: the name {name!r} is given twice")
        if not Path(path).exists():
            raise FileNotFoundError(f"--checkpoint {name}={path}: no such checkpoint directory")
        out.append((name, Path(path)))
    return out


def inspect_checkpoint(name: str, path: Path) -> Candidate:
    ckpt = load_checkpoint(path, stage=GENERATOR_STAGES)
    model = build(TransformerConfig, ckpt.config["model"], f"{path}: model")
    codec = build(CodecConfig, ckpt.config["codec"], f"{path}: codec")
    return Candidate(name, path, checkpoint_digest(path), codec.image_size, model.chunk_frames, conditioner_from(ckpt))


def select_episodes(script: Script, n: int, frames: int) -> list[Episode]:
    """The first `n` episodes (0: all), each cut to at most `frames` frames with its later items dropped."""
    if n < 0 or n > len(script.episodes):
        raise BenchError(f"--episodes {n}: {script.source} has {len(script.episodes)} episodes (0 runs them all)")
    if frames < 1:
        raise BenchError(f"--frames {frames}: must be at least 1")
    out = []
    for ep in script.episodes[: n or None]:
        f = min(frames, ep.frames)
        out.append(Episode(ep.id, ep.seed, f, ep.split, [it for it in ep.items if it.t < f]))
    return out


def event_schedule(episode: Episode, chunk: int, source: str) -> dict[int, str]:
    """{frame: event text} of an episode, checking that the generator can take each event."""
    out: dict[int, str] = {}
    for it in episode.events():
        where = f"{source}:{it.line}: episode {episode.id!r}, t={it.t}"
        if it.t % chunk:
            raise BenchError(
                f"{where}: event {it.event!r} is not on a chunk boundary; the generator steps {chunk} frames "
                f"at a time, so event times must be multiples of {chunk}"
            )
        if it.t in out:
            raise BenchError(f"{where}: two events at one frame ({out[it.t]!r}, {it.event!r}); the world model takes one text per step")
        out[it.t] = it.event  # type: ignore[assignment]
    return out


def episode_start(episode: Episode, world: EventWorld) -> tuple[np.ndarray, str]:
    """The episode's start frames [n, H, W, 3] (the context before frame 0) and its initial prompt, as play_episode has them."""
    start = real_start(world, episode.seed)
    return start.frames, start.prompt


def check_texts(candidate: Candidate, episodes: list[Episode], world: EventWorld) -> None:
    """Every initial prompt and event text must be encodable by the checkpoint's text conditioner."""
    texts = {episode_start(ep, world)[1]: f"initial prompt of episode {ep.id!r}" for ep in episodes}
    texts.update({it.event: f"episode {ep.id!r}, t={it.t}" for ep in episodes for it in ep.events()})
    for text, where in texts.items():
        try:
            candidate.conditioner.embed([text])
        except (ValueError, ImportError) as e:
            raise BenchError(f"checkpoint {candidate.name!r} cannot encode the text {text!r} ({where}): {e}") from e


def reference_world(script: Script, candidates: list[Candidate]) -> WorldConfig:
    """The script's world at the checkpoints' frame size (they must agree)."""
    sizes = {c.name: c.image_size for c in candidates}
    if len(set(sizes.values())) > 1:
        raise BenchError(f"the checkpoints generate different frame sizes {sizes}; bench them in separate runs")
    if not sizes:
        return script.world
    size = next(iter(sizes.values()))
    return replace(script.world, height=size, width=size)


# -- finished parts ---------------------------------------------------------------------------


class Parts:
    """Finished (source, episode) results under `root`, and the config they were made with."""

    def __init__(self, root: Path, run: dict, checkpoints: dict[str, str], restart: bool):
        if restart:
            shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        path = root / "config.json"
        config = {"run": run, "checkpoints": dict(checkpoints)}
        if path.is_file():
            old = json.loads(path.read_text())
            diffs = [k for k in sorted(set(old["run"]) | set(run)) if old["run"].get(k) != run.get(k)]
            diffs += [f"checkpoint {n!r} changed" for n, d in checkpoints.items() if old["checkpoints"].get(n, d) != d]
            if diffs:
                raise BenchError(
                    f"{root.parent} holds a bench run made with another config (differs in: {', '.join(diffs)}); "
                    "pick another --out or pass --restart to discard it"
                )
            config["checkpoints"] = {**old["checkpoints"], **checkpoints}
        _write_atomic(path, json.dumps(config, indent=1))

    def path(self, source: str, index: int, suffix: str = ".json") -> Path:
        return self.root / f"{source}--{index:03d}{suffix}"

    def done(self, source: str, index: int) -> bool:
        return self.path(source, index).is_file()

    def save(self, source: str, index: int, part: dict, frames: np.ndarray | None = None) -> None:
        if frames is not None:  # first the frames, so that a finished part always has them
            tmp = self.path(source, index, ".tmp.npz")
            np.savez_compressed(tmp, frames=frames)
            os.replace(tmp, self.path(source, index, ".npz"))
        _write_atomic(self.path(source, index), json.dumps(part))

    def load(self, source: str, index: int) -> dict:
        return json.loads(self.path(source, index).read_text())

    def frames(self, source: str, index: int) -> np.ndarray:
        with np.load(self.path(source, index, ".npz")) as f:
            return f["frames"]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- running ------------------------------------------------------------------------------------


@torch.inference_mode()
def generate(core, episodes: list[Episode], world: WorldConfig, seed: int, source: str) -> tuple[list[np.ndarray], dict]:
    """Each episode's generated frames [F, H, W, 3] (one row each; a short batch is padded), and step timings."""
    B, K = core.B, core.chunk
    rows = episodes + [episodes[0]] * (B - len(episodes))  # padding rows are generated and discarded
    sim = EventWorld(world)
    starts = [episode_start(ep, sim) for ep in rows]
    schedules = [event_schedule(ep, K, source) for ep in rows]
    actions = [ep.actions() for ep in rows]
    core.reset(list(range(B)), [ep.seed + seed for ep in rows], [{"prompt": p, "image": img} for img, p in starts])
    n_steps = math.ceil(max(ep.frames for ep in rows) / K)
    out = np.zeros((B, n_steps * K) + starts[0][0].shape[1:], np.uint8)  # [B, F, H, W, 3]
    timing: dict[str, list[float]] = {"event": [], "action": []}
    pickups: list[list[int]] = [[] for _ in rows]
    for k in range(n_steps):
        f = k * K
        moves = np.array([a[min(f, len(a) - 1)] for a in actions], np.int64)
        texts = [s.get(f) for s in schedules]
        t0 = time.perf_counter()
        frames, rewards, _, _ = core.step(moves, texts)  # [B, K, H, W, 3]
        timing["event" if any(t is not None for t in texts) else "action"].append(time.perf_counter() - t0)
        out[:, f : f + K] = frames
        for j in np.nonzero(rewards > 0)[0]:
            if f < rows[j].frames:
                pickups[j].append(k)
    return [out[j, : ep.frames] for j, ep in enumerate(episodes)], timing, pickups


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict:
    """Run (or resume) a bench and write its report; returns the bench.json content."""
    from dfworld.envs.core import WorldModelCore
    from dfworld.runtime.backends import build_sampler

    if cfg.batch < 1 or cfg.video_episodes < 0:
        raise BenchError(f"--batch ({cfg.batch}) must be at least 1 and --video-episodes ({cfg.video_episodes}) at least 0")
    sampler = {"timesteps": [float(t) for t in cfg.timesteps]} if cfg.timesteps else None  # each checkpoint's own: None
    try:
        sampler_with(SamplerConfig(), sampler, "--timesteps")
    except ValueError as e:
        raise BenchError(str(e)) from e
    # 1. check everything before running anything
    script = resolve_script(cfg.script)
    candidates = [inspect_checkpoint(name, path) for name, path in parse_checkpoint_specs(cfg.checkpoints)]
    world = reference_world(script, candidates)
    episodes = select_episodes(script, cfg.episodes, cfg.frames)
    sim = EventWorld(world)
    for c in candidates:
        for ep in episodes:
            event_schedule(ep, c.chunk, script.source)
        check_texts(c, episodes, sim)
    selected = Script(script.name, episodes, script.description, script.world, script.version)
    run = {
        "script": script.name,
        "script_sha256": hashlib.sha256(selected.dumps().encode()).hexdigest(),
        "episodes": [ep.id for ep in episodes],
        "world": to_dict(world),
        "frames": cfg.frames,
        "batch": cfg.batch,
        "seed": cfg.seed,
        "device": cfg.device,
        "video_episodes": cfg.video_episodes,
        "decoder": cfg.decoder,
        **({"timesteps": list(cfg.timesteps)} if cfg.timesteps else {}),  # keyed only when set: older outs resume
    }
    out = Path(cfg.out)
    parts = Parts(out / "parts", run, {c.name: c.digest for c in candidates}, cfg.restart)
    # 2. the reference: the simulator plays each episode
    for i, ep in enumerate(tqdm(episodes, desc=REFERENCE, disable=not progress)):
        if parts.done(REFERENCE, i):
            continue
        t0 = time.perf_counter()
        rec = play_episode(ep, sim)
        seconds = time.perf_counter() - t0
        events = [{"t": e.t, "text": e.text, "applied": e.applied} for e in rec.events]
        parts.save(REFERENCE, i, {"episode": ep.id, "frames": ep.frames, "seconds": seconds, "events": events,
                                  "pickups": np.nonzero(rec.rewards > 0)[0].tolist(), "readings": probe(rec.frames, world)})
    # 3. each checkpoint generates the episodes not finished yet, `batch` at a time
    for c in candidates:
        pending = [i for i in range(len(episodes)) if not parts.done(c.name, i)]
        if not pending:
            continue
        core = WorldModelCore(build_sampler(c.path, min(cfg.batch, len(pending)), device=cfg.device, decoder=cfg.decoder or None,
                                            sampler=sampler))
        bar = tqdm(total=len(episodes), initial=len(episodes) - len(pending), desc=c.name, disable=not progress)
        for b in range(0, len(pending), core.B):
            idx = pending[b : b + core.B]
            frames, timing, pickups = generate(core, [episodes[i] for i in idx], world, cfg.seed, script.source)
            total = sum(timing["event"]) + sum(timing["action"])
            n_frames = sum(len(f) for f in frames)
            for i, fr, pk in zip(idx, frames, pickups):
                part = {"episode": episodes[i].id, "frames": len(fr), "seconds": total * len(fr) / n_frames, "step_s": timing,
                        "rows": core.B, "chunk": core.chunk, "pickups": pk, "readings": probe(fr, world)}
                parts.save(c.name, i, part, fr if i < cfg.video_episodes else None)
            bar.update(len(idx))
        bar.close()
        del core
    # 4. scores, tables, plots and videos
    config = {**run, "checkpoints": {c.name: {"path": str(c.path), "sha256": c.digest} for c in candidates}}
    return write_report(out, parts, episodes, [c.name for c in candidates], world, config)
