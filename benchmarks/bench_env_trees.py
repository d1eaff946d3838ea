"""The world-model env of two source trees (commits), each with its own shipped default: frames/s, in alternating rounds.

    git worktree add /tmp/dfworld-1201 aa85cd7                     # the code and default of 2026-12-01
    python benchmarks/bench_env_trees.py --tree 2026-12-01=/tmp/dfworld-1201 --tree now=. --batches 1,64 --threads 2
    python benchmarks/bench_env_trees.py --tree before=/tmp/dfworld-head --tree now=. --batches 1 --threads 1 --events

`bench_env_backends.py` compares configurations of one tree in one process; a speed-up of the
code itself (the exported graphs, the cache write) reaches every configuration alike, so a baseline
"as it was" needs the old code. Here every round starts one fresh process per tree (its own
packages, its own `dfworld/checkpoints/default`, the env as a user makes it:
`gym.make("dfworld/WorldModel-v0", backend=...)` at batch 1, `gym.make_vec(..., num_envs=N)` above),
which warms up and times `--steps` random action steps (moves, no text events); the trees take turns, round after round,
so a change of machine load hits both; the figure is the median over rounds of each round's
median step. Ratios are against the first tree. With `--events` each process then times as many
steps with a text event in every row (a re-cache before the chunk): the event step's median and
its ratio to the same process's action step. ONNX exports are made on first use (in the
export cache, keyed per checkpoint and export version) before the first round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import importlib.util, json, os, statistics, sys, time
# the tree's packages, as pyproject.toml maps them, ahead of an installed (editable) dfworld
MAP = {"dfworld": "dfworld", "dfworld.envs": "envs", "dfworld.agents": "agents", "dfworld.configs": "configs"}
class TreeFinder:
    def find_spec(self, name, path=None, target=None):
        if name in MAP:
            d = os.path.join(os.getcwd(), MAP[name])
            return importlib.util.spec_from_file_location(name, os.path.join(d, "__init__.py"), submodule_search_locations=[d])
sys.meta_path.insert(0, TreeFinder())
import gymnasium as gym, numpy as np, torch
import dfworld  # registers the envs
B, backend, threads, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
kw = {"backend": backend, "threads": threads}
env = gym.make("dfworld/WorldModel-v0", **kw) if B == 1 else gym.make_vec("dfworld/WorldModel-v0", num_envs=B, **kw)
env.reset(seed=0)
rng = np.random.default_rng(0)
times = []
for i in range(steps + 2):  # two warm-up steps; action steps (a move, no text event)
    a = rng.integers(0, 5, B) if B > 1 else int(rng.integers(0, 5))
    t0 = time.perf_counter()
    _, _, term, trunc, _ = env.step(a)
    if i >= 2:
        times.append(time.perf_counter() - t0)
    if B == 1 and (term or trunc):
        env.reset()
events = []
texts = ["night falls", "it starts to rain", "the sun comes out", "snow begins to fall"]
for i in range(int(sys.argv[5]) and steps + 1):  # with --events: steps whose every row has a text event (one warm-up)
    a = [texts[(i + r) % len(texts)] for r in range(B)]
    t0 = time.perf_counter()
    _, _, term, trunc, _ = env.step(a if B > 1 else a[0])
    if i >= 1:
        events.append(time.perf_counter() - t0)
    if B == 1 and (term or trunc):
        env.reset()
frames = json.load(open("dfworld/checkpoints/default/config.json"))["model"]["chunk_frames"]  # generated per step and row
print(json.dumps({"step": statistics.median(times), "event": statistics.median(events) if events else None,
                  "frames": B * int(frames), "dfworld": dfworld.__file__}))
"""


def run_child(tree: Path, B: int, backend: str, threads: int, steps: int, events: bool = False) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(B), backend, str(threads), str(steps), str(int(events))], cwd=tree, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{tree}: batch {B} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a source tree (a git worktree); the first is the baseline")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per round (a quarter, at least 3, above batch 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", action="store_true", help="also time steps with a text event in every row: event / action step")
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in args.tree)}
    print(f"backend {args.backend}; threads {args.threads}; {args.rounds} rounds; trees: "
          + ", ".join(f"{n} = {p}" for n, p in trees.items()) + "\n")
    names = list(trees)
    ev = [f"{n} event / step" for n in names] if args.events else []
    print("| batch | " + " | ".join(f"{n} step | {n} frames/s" for n in names) + " | "
          + " | ".join([f"{n} vs {names[0]}" for n in names[1:]] + ev) + " |")
    print("|---" * (1 + 2 * len(names) + len(names) - 1 + len(ev)) + "|")
    for B in [int(b) for b in args.batches.split(",")]:
        steps = args.steps if B == 1 else max(3, args.steps // 4)
        for tree in trees.values():  # the export on first use, outside the rounds
            run_child(tree, B, args.backend, args.threads, 1)
        per: dict[str, list[float]] = {n: [] for n in names}
        per_event: dict[str, list[float]] = {n: [] for n in names}
        frames = {}
        for _ in range(args.rounds):
            for n, tree in trees.items():
                r = run_child(tree, B, args.backend, args.threads, steps, args.events)
                per[n].append(r["step"])
                if r.get("event") is not None:
                    per_event[n].append(r["event"])
                frames[n] = r["frames"]
        med = {n: statistics.median(v) for n, v in per.items()}
        cells = " | ".join(f"{med[n] * 1e3:,.1f} ms | {frames[n] / med[n]:,.1f}" for n in names)
        ratios = [f"{(frames[n] / med[n]) / (frames[names[0]] / med[names[0]]):.2f}x" for n in names[1:]]
        if args.events:
            ratios += [f"{statistics.median(per_event[n]) * 1e3:,.1f} ms / {statistics.median(per_event[n]) / med[n]:.2f}x" for n in names]
        print(f"| {B} | {cells} | {' | '.join(ratios)} |", flush=True)


if __name__ == "__main__":
    main()
