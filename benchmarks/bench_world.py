"""EventWorld figures: simulator and env throughput, data-set writing, probe speed and accuracy.

    taskset -c 0 python benchmarks/bench_world.py            # one core, as BENCHMARKS.md records

Prints a Markdown table. Throughputs are the median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np

import dfworld  # noqa: F401  (registers the env ids)
from dfworld.world.config import WorldConfig
from dfworld.world.datasets import ClipsConfig, EpisodesConfig, write_clips, write_episodes
from dfworld.world.episodes import sample_episodes
from dfworld.world.events import Event
from dfworld.world.probes import degrade, read_frames, score_readings
from dfworld.world.simulator import EventWorld

EVENTS = [Event("time_night"), Event("weather_rain"), Event("time_day"), Event("weather_clear")]


def median_rate(fn, repeats: int) -> float:
    """Median over runs of (items / seconds) where fn() returns the item count."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def sim_frames(n: int) -> int:
    world = EventWorld()
    world.reset(0)
    actions = np.random.default_rng(0).integers(0, 5, n)
    for f in range(n):
        if f % 64 == 32:
            world.apply_event(EVENTS[(f // 64) % len(EVENTS)])
        world.step(int(actions[f]))
    return n


def env_frames(n_steps: int, frames_per_step: int) -> int:
    env = gym.make("dfworld/EventWorld-v0", frames_per_step=frames_per_step)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 5, n_steps)
    for i in range(n_steps):
        _, _, terminated, truncated, _ = env.step(int(actions[i]))
        if terminated or truncated:
            env.reset()
    return n_steps * frames_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000, help="frames per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per throughput figure (median)")
    parser.add_argument("--probe-episodes", type=int, default=30, help="episodes of 96 frames for probe accuracy")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    rows = [
        ("simulator, raw (EventWorld.step)", "frames/s", median_rate(lambda: sim_frames(args.frames), args.repeats)),
        ("env, 1 frame/step (gym.make wrappers)", "frames/s", median_rate(lambda: env_frames(args.frames, 1), args.repeats)),
        ("env, 4 frames/step (default)", "frames/s", median_rate(lambda: env_frames(args.frames // 4, 4), args.repeats)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        n_clips = 256

        def clips() -> int:
            out = Path(tmp) / f"clips-{time.perf_counter_ns()}"
            write_clips(ClipsConfig(out=str(out), n=n_clips, frames=16), progress=False)
            return n_clips * 16

        def episodes() -> int:
            out = Path(tmp) / f"eps-{time.perf_counter_ns()}"
            write_episodes(EpisodesConfig(out=str(out), script="core"), progress=False)
            return 24 * 320

        rows.append(("data clips (16 frames, incl. history and compression)", "stored frames/s", median_rate(clips, args.repeats)))
        rows.append(("data episodes (shipped suite, 24 x 320)", "stored frames/s", median_rate(episodes, args.repeats)))

    frames, states = sample_episodes(WorldConfig(), args.probe_episodes)
    rows.append(("probes (read_frame)", "frames/s", median_rate(lambda: len(read_frames(frames[:2000])), args.repeats)))

    print(f"machine: {platform.machine()} {os.cpu_count()} cores visible, affinity {sorted(os.sched_getaffinity(0))}")
    print("\n| figure | unit | value |\n|---|---|---|")
    for name, unit, value in rows:
        print(f"| {name} | {unit} | {value:,.0f} |")

    print(f"\nProbe accuracy on {len(frames)} frames ({args.probe_episodes} planned episodes, an event every 16 frames):\n")
    print("| frames | time acc | weather acc | presence acc | pos err mean | pos err p99 | pos err max |\n|---|---|---|---|---|---|---|")
    for label, blur, noise in [("clean", 0, 0), ("blur 1 + noise 8/255", 1.0, 8.0), ("blur 1.5 + noise 16/255", 1.5, 16.0)]:
        fr = frames if blur == 0 and noise == 0 else degrade(frames, blur, noise)
        s = score_readings(read_frames(fr), states)
        print(
            f"| {label} | {s['time_acc']:.4f} | {s['weather_acc']:.4f} | {s['presence_acc']:.4f} "
            f"| {s['pos_err_mean']:.2f} px | {s['pos_err_p99']:.2f} px | {s['pos_err_max']:.2f} px |"
        )


if __name__ == "__main__":
    main()
