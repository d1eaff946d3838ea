"""Clip quality of the teacher and of the generators: sampled clips for held-out seeds and paraphrases.

For each evaluation clip (written by `dfworld data clips split=heldout seed=<new>`), the model
samples a clip from noise given the clip's prompt and actions: the teacher with its Euler sampler
and classifier-free guidance, a generator (ode, dmd, stream, delta) chunk by chunk with its
few-step sampler and KV cache, as the environment runs it. The probes then measure:

- prompt accuracy: the fraction of clips in which the prompted attribute holds in most frames
  (time or weather is the prompted one; an object event's colour is present, absent or changed);
- object detection: the fraction of (frame, persistent object) pairs in which the probe finds
  the object, where persistent objects are those found in most frames of the clip;
- agent detection: the fraction of frames in which the probe finds the agent;
- object count: the number of persistent objects per clip. Detection alone rewards a model that
  scatters blobs of every colour (it finds every colour, so every object); the real clips hold
  two to four objects, so a count above theirs is clutter.

The same figures on the real clips are the reference.

With `context` = n, every model continues the clip's first n real frames instead of starting
from noise (the teacher holds them clean at level 0; a generator writes them into its cache, as
the env's real start), and the generated frames after them are also scored for fidelity to the
real clip (`dfworld.bench.fidelity`: the faithful fraction, the agent error).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dfworld.bench.fidelity import faithful_frames, frame_checks
from dfworld.bench.metrics import event_holds, object_detection_rate, persistent_objects
from dfworld.checkpoint import load_checkpoint
from dfworld.configuration import build
from dfworld.model.loading import GENERATOR_STAGES, codec_from, conditioner_from, sampler_with, transformer_from
from dfworld.rollout import Rollout
from dfworld.sampling import sample_clips
from dfworld.schedule import SamplerConfig
from dfworld.video import compose, side_by_side, write_mp4
from dfworld.world.datasets import load_clips
from dfworld.world.events import parse_event
from dfworld.world.probes import read_frames


def clip_scores(frames: np.ndarray, prompt: str, config) -> dict[str, float]:
    readings = read_frames(frames, config)
    event = parse_event(prompt)
    holds = np.mean([event_holds(event, r) for r in readings])
    exclude = {event.color} if event.kind in ("object_appear", "object_vanish", "object_recolor") else set()
    return {
        "prompt_ok": float(holds > 0.5),
        "objects": object_detection_rate(readings, exclude),
        "agent": float(np.mean([r.agent is not None for r in readings])),
        "object_count": float(len(persistent_objects(readings))),
    }


def generator_clips(generator, conditioner, sampler: SamplerConfig, prompts: list[str], actions: torch.Tensor, seeds: list[int],
                    device, context: torch.Tensor | None = None) -> torch.Tensor:
    """Clips [B, F, C, h, w] from a block-causal generator, chunk by chunk, as the env generates them (after `context`)."""
    rollout = Rollout(generator, conditioner, len(prompts), sampler, device)
    n = 0 if context is None else context.shape[1]
    rollout.reset(list(range(len(prompts))), prompts, seeds, context, actions[:, :n] if n else None)
    K = generator.config.chunk_frames
    fresh = [rollout.generate(actions[:, c : c + K]) for c in range(n, actions.shape[1], K)]
    return torch.cat(([context] if n else []) + fresh, 1)


CHECKS = ("scene", "objects", "agent", "coin")  # the parts of the faithful test (dfworld.bench.fidelity.frame_checks)


def clip_fidelity(frames: np.ndarray, real: np.ndarray, context: int, coins: np.ndarray, config) -> dict:
    """Faithful fraction and mean agent error of the frames after the context (a clip has no event inside it), with
    the per-frame flags and which part of the test each frame passes (where fidelity is lost first)."""
    gen_r, real_r = read_frames(frames[context:], config), read_frames(real[context:], config)
    picked = np.nonzero(np.diff(coins[context:]) > 0)[0]
    first = int(picked[0]) + 1 if len(picked) else None
    flags = faithful_frames(gen_r, real_r, [], first)
    checks = [frame_checks(g, r, frozenset(), first is None or f < first) for f, (g, r) in enumerate(zip(gen_r, real_r))]
    err = [float(np.hypot(g.agent.x - r.agent.x, g.agent.y - r.agent.y)) for g, r in zip(gen_r, real_r)
           if g.agent is not None and r.agent is not None]
    return {"faithful": float(flags.mean()), "agent_error_px": float(np.mean(err)) if err else float("nan"),
            "per_frame": flags.astype(float).tolist(), "checks": {k: [float(c[k]) for c in checks] for k in CHECKS}}


def evaluate_teacher(
    checkpoint: str | Path,
    clips: str | Path,
    n: int = 64,
    steps: int = 24,
    guidance: float = 3.0,
    batch: int = 16,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "cpu",
    noise: str | None = None,
    wording: str = "clip",
    context: int = 0,
    decoder: str = "",
    timesteps: list[float] | None = None,
) -> dict:
    """Probe figures of clips sampled for the clips' prompts and actions (see the module docstring).

    `wording`: clip (each clip's own prompt), or canonical (the first training wording of the
    clip's event instead, "night falls" for "the stars come out"): on held-out clips, the gap
    between the two is what the wording costs, apart from drawing the event.

    `noise`: fresh, or repeat (every chunk starts from the same noise: dfworld.sampling.initial_noise);
    None takes the model's own: repeat for the teacher, the checkpoint's sampler for a generator.
    `timesteps`: a generator's sampler levels in place of its own (fewer passes than it was distilled for).
    """
    if noise not in (None, "fresh", "repeat"):
        raise ValueError(f"noise must be fresh or repeat, got {noise!r}")
    if wording not in ("clip", "canonical"):
        raise ValueError(f"wording must be clip or canonical, got {wording!r}")
    ckpt = load_checkpoint(checkpoint, stage=("teacher",) + GENERATOR_STAGES)
    is_teacher = ckpt.config["stage"] == "teacher"
    sampler = build(SamplerConfig, ckpt.config.get("sampler", {}), f"{checkpoint}: sampler")
    if noise is not None:
        sampler = replace(sampler, repeat_noise=noise == "repeat")
    if timesteps:
        if is_teacher:
            raise ValueError("timesteps are a generator's sampler levels; a teacher samples with --steps")
        sampler = sampler_with(sampler, {"timesteps": list(timesteps)}, "timesteps")
    repeat = sampler.repeat_noise if not is_teacher else noise != "fresh"
    model = transformer_from(ckpt, "teacher" if is_teacher else "generator").to(device)
    codec = codec_from(ckpt).to(device)
    codec.use_decoder(decoder or None)  # the envs' default: fast where the checkpoint carries one
    cond = conditioner_from(ckpt)
    data = load_clips(clips)
    n = min(n, len(data.prompts))
    if context < 0 or context >= data.frames.shape[1] or (context and "coins" not in data.states):
        raise ValueError(f"context={context}: give 0 or fewer frames than the clips' {data.frames.shape[1]}, on clips with states")
    world = data.dataset.world
    rng = torch.Generator(device=device).manual_seed(seed)
    rows, videos = [], []
    for i in tqdm(range(0, n, batch), desc="teacher eval"):
        prompts = data.prompts[i : min(i + batch, n)]
        if wording == "canonical":
            prompts = [parse_event(p).text(0, "train") for p in prompts]
        text, mask = cond(prompts, device)
        actions = data.actions[i : i + len(prompts)].to(device)
        ctx = None
        if context:
            with torch.inference_mode():
                real_frames = data.frames[i : i + len(prompts), :context].to(device)
                ctx = codec.encode(real_frames.flatten(0, 1)).unflatten(0, real_frames.shape[:2])
        if is_teacher:
            lat = sample_clips(model, text, mask, actions, data.frames.shape[1], steps, guidance, ckpt.config["shift"], rng, repeat,
                               context=ctx)
        else:  # the generator's own few-step sampler (no CFG: distillation folded it in)
            F = data.frames.shape[1] - data.frames.shape[1] % model.config.chunk_frames
            seeds = [seed * 100_003 + i + j for j in range(len(prompts))]
            lat = generator_clips(model, cond, sampler, prompts, actions[:, :F], seeds, device, ctx)
        with torch.inference_mode():
            frames = codec.decode(lat).cpu().numpy()
        for j, p in enumerate(prompts):
            real = data.frames[i + j].numpy()
            rows.append({"prompt": p, "kind": parse_event(p).kind, "generated": clip_scores(frames[j], p, world),
                         "real": clip_scores(real, p, world)})
            if context:
                coins = data.states["coins"][i + j].numpy()
                rows[-1]["fidelity"] = clip_fidelity(frames[j], real[: len(frames[j])], context, coins, world)
            if len(videos) < 8:
                videos.append((real, frames[j], p))
    summary = {
        f"{src}_{k}": float(np.mean([r[src][k] for r in rows]))
        for src in ("generated", "real")
        for k in ("prompt_ok", "objects", "agent", "object_count")
    }
    # the prompted attribute per event kind (time of day, weather, object events): where the misses are
    kinds = sorted({r["kind"] for r in rows})
    summary["generated_prompt_ok_by_kind"] = {
        k: {"clips": sum(r["kind"] == k for r in rows), "rate": float(np.mean([r["generated"]["prompt_ok"] for r in rows if r["kind"] == k]))}
        for k in kinds
    }
    summary.update({"clips": len(rows), "checkpoint": str(checkpoint), "stage": ckpt.config["stage"], "seed": seed,
                    "noise": "repeat" if repeat else "fresh", "wording": wording, "context": context,
                    "decoder": codec.decoder})
    if context:
        summary["faithful"] = float(np.mean([r["fidelity"]["faithful"] for r in rows]))
        summary["agent_error_px"] = float(np.nanmean([r["fidelity"]["agent_error_px"] for r in rows]))
        # per frame after the context: the faithful fraction, and the share passing each part of the test
        summary["faithful_curve"] = np.mean([r["fidelity"]["per_frame"] for r in rows], 0).round(3).tolist()
        summary["checks_curve"] = {k: np.mean([r["fidelity"]["checks"][k] for r in rows], 0).round(3).tolist() for k in CHECKS}
    if is_teacher:
        summary.update(steps=steps, guidance=guidance)
    else:
        summary["timesteps"] = list(sampler.timesteps)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "teacher_eval.json").write_text(json.dumps({"summary": summary, "clips": rows}, indent=1))
        # real | generated, for the first four clips side by side
        grid = [
            side_by_side([side_by_side([compose(r[f], 3), compose(g[f], 3)]) for r, g, _ in videos[:4]])
            for f in range(videos[0][0].shape[0])
        ]
        write_mp4(out / "teacher_samples.mp4", np.stack(grid), world.fps)
    return summary
