"""`dfworld demo`, the main job: a scripted event episode played through `dfworld/WorldModel-v0`.

The world model (the shipped default generator, or any generator checkpoint) is reset with the
episode's seed, so it starts from EventWorld's start frames for that seed, and is stepped with
the script's actions, its text events scheduled at their steps. EventWorld plays the same
episode as the reference. The probes read both, and the demo writes a side-by-side video
(generated | real), a PNG strip of frames (generated above real) and a report: fidelity (the
faithful fraction of frames, overall and by frames since reset, and the agent error), frames per
second, every event with the probes' reading before and after it, its reaction delay and the
consistency of what it did not target (definitions: `dfworld.bench.suite_runner`,
`dfworld.bench.fidelity`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dfworld.bench.fidelity import episode_fidelity, fidelity_headline
from dfworld.bench.metrics import consistency_curve, reaction_delay
from dfworld.bench.suite_runner import event_schedule, select_episodes
from dfworld.video import side_by_side, write_mp4, write_strip
from dfworld.world.episodes import play_episode
from dfworld.world.events import parse_event
from dfworld.world.probes import read_frames
from dfworld.world.simulator import EventWorld
from dfworld.world.suite import resolve_script


def run_demo(
    checkpoint: str | None = None,
    script: str = "core",
    episode: str | None = None,
    frames: int = 240,
    out: str | Path = "outputs/demo",
    scale: int = 4,
    threads: int = 0,
) -> dict:
    import gymnasium as gym
    import torch

    import dfworld.envs  # noqa: F401  (registers the environments)

    if threads:
        torch.set_num_threads(threads)
    sc = resolve_script(script)
    ids = [ep.id for ep in sc.episodes]
    name = episode or ids[0]
    if name not in ids:
        raise ValueError(f"episode {name!r} is not in {sc.source}; it has {ids}")
    ep = select_episodes(replace(sc, episodes=[sc.episodes[ids.index(name)]]), 1, frames)[0]

    # 1. the world model, as users make it
    kwargs = {} if checkpoint is None else {"checkpoint": checkpoint}
    env = gym.make("dfworld/WorldModel-v0", coins_to_win=10**6, max_episode_steps=10**6, **kwargs)
    core = env.unwrapped.core
    K = core.chunk
    world = replace(sc.world, height=core.world.height, width=core.world.width)
    ref = play_episode(ep, EventWorld(world))  # 2. the reference
    schedule = [(f // K, text) for f, text in sorted(event_schedule(ep, K, str(sc.source)).items())]
    _, info = env.reset(seed=ep.seed, options={"events": schedule})  # the seed's real start, as EventWorld's
    if info["prompt"] != ref.initial_prompt:
        raise RuntimeError(f"the world model started under {info['prompt']!r}, EventWorld under {ref.initial_prompt!r}")
    generated, prompts, gen_pickups = [], [], []
    t0 = time.perf_counter()
    for k in tqdm(range(-(-ep.frames // K)), desc=f"world model: {ep.id}"):
        _, reward, _, _, info = env.step(int(ref.actions[min(k * K, ep.frames - 1)]))
        generated.append(info["frames"])
        gen_pickups += [k] * int(reward > 0)
        prompts.extend([info["prompt"]] * K)
    seconds = time.perf_counter() - t0
    env.close()
    gen = np.concatenate(generated)[: ep.frames]

    # 3. probes on both, per event
    g_read, r_read = read_frames(gen, world), read_frames(ref.frames, world)
    applied = [e for e in ref.events if e.applied]
    events = []
    for i, e in enumerate(applied):
        end = applied[i + 1].t if i + 1 < len(applied) else ep.frames
        ev = parse_event(e.text)
        row = {"t": e.t, "event": e.text}
        for src, rd in (("generated", g_read), ("real", r_read)):
            before, after = rd[max(e.t - 8, 0) : e.t], rd[e.t : end]
            curve = consistency_curve(ev, before, after)
            row[src] = {
                "reaction_delay": reaction_delay(ev, after),
                "consistency": None if curve is None else round(float(curve.mean()), 3),
                "after_16": _describe(rd[min(e.t + 15, len(rd) - 1)]),
            }
        events.append(row)
    pickups = np.nonzero(ref.rewards > 0)[0].tolist()
    fid = fidelity_headline([episode_fidelity(g_read, r_read, [(e.t, parse_event(e.text)) for e in applied], pickups, gen_pickups, K)])
    errors = [float(np.hypot(g.agent.x - r.agent.x, g.agent.y - r.agent.y)) for g, r in zip(g_read, r_read)
              if g.agent is not None and r.agent is not None]
    took = [r["generated"]["reaction_delay"] for r in events]
    cons = [r["generated"]["consistency"] for r in events if r["generated"]["consistency"] is not None]
    out = Path(out)
    video = write_mp4(
        out / f"{ep.id}.mp4",
        np.stack([side_by_side([g, r]) for g, r in zip(gen, ref.frames)]),
        world.fps,
        scale=scale,
        captions=[f"{f:3d} {p}  (generated | real)" for f, p in enumerate(prompts[: ep.frames])],
    )
    shown = sorted({min(f, ep.frames - 1) for f in (0, 4, 8, 16, 32, 64, 96, 128, 160, 200, 239)})
    strip = write_strip(out / f"{ep.id}.png", [gen, ref.frames], ["gen", "real"], shown, scale=2)
    report = {
        "checkpoint": str(core.checkpoint),
        "script": sc.name,
        "episode": ep.id,
        "seed": ep.seed,
        "frames": int(ep.frames),
        "frames_per_second": round(ep.frames / seconds, 1),
        "reactivity_16": round(float(np.mean([d is not None and d < 16 for d in took])), 3) if took else None,
        "consistency": round(float(np.mean(cons)), 3) if cons else None,
        "fidelity": {k: None if v is None else round(v, 3) for k, v in fid.items()},
        "agent_error_median_px": round(float(np.median(errors)), 2) if errors else None,
        "events": events,
        "video": str(video),
        "strip": str(strip),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(_markdown(report))
    return report


def _describe(r) -> str:
    objs = " ".join(sorted(r.objects)) or "no objects"
    return f"{r.time}, {r.weather}, {objs}, agent {'found' if r.agent is not None else 'missing'}"


def _markdown(rep: dict) -> str:
    lines = [
        f"# dfworld demo: {rep['script']} / {rep['episode']} (seed {rep['seed']})",
        "",
        f"- world model: `{rep['checkpoint']}` through `dfworld/WorldModel-v0`, {rep['frames']} frames at "
        f"{rep['frames_per_second']} frames/s on this machine",
        f"- events that took effect within 16 frames (probes): {rep['reactivity_16']}; consistency of what the events "
        f"did not target: {rep['consistency']}",
        f"- fidelity against EventWorld: {rep['fidelity']['faithful']} of the frames faithful (frames 0-15: "
        f"{rep['fidelity']['faithful_0_15']}, 16-63: {rep['fidelity']['faithful_16_63']}, 64-239: "
        f"{rep['fidelity']['faithful_64_239']}); agent error median {rep['agent_error_median_px']} px",
        f"- video (generated | real): {rep['video']}; frames (generated above real): {rep['strip']}",
        "",
        "| t | event | delay (gen / real) | consistency (gen / real) | probes 16 frames after (generated) |",
        "|---|---|---|---|---|",
    ]
    for e in rep["events"]:
        g, r = e["generated"], e["real"]
        lines.append(
            f"| {e['t']} | {e['event']} | {g['reaction_delay']} / {r['reaction_delay']} | {g['consistency']} / "
            f"{r['consistency']} | {g['after_16']} |"
        )
    return "\n".join(lines) + "\n"
