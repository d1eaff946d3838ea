"""One episode through EventWorld-v0 and WorldModel-v0 on both backends: a strip of frames, and how alike they are.

    python benchmarks/strip_backends.py            # writes docs/figures/rollout-speed-backends-strip.png

The same seed, actions and text events go to EventWorld-v0 (the truth) and to the shipped default on
torch and on ONNX Runtime; every 4th observation of each goes into one row of the strip (EventWorld
on top). Printed: the largest and mean pixel difference of the two backends, the share of frames the
probes read alike on both, and the share whose scene (time, weather) reads as EventWorld's.
"""

from __future__ import annotations

import argparse

import cv2
import gymnasium as gym
import numpy as np
import torch

import dfworld  # noqa: F401  (registers the envs)
from dfworld.world.probes import read_frame

EVENTS = {12: "night falls", 30: "it starts to snow"}  # step -> text event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/figures/rollout-speed-backends-strip.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kw = {"checkpoint": "default", "threads": args.threads}
    envs = {"EventWorld": gym.make("dfworld/EventWorld-v0"), "torch": gym.make("dfworld/WorldModel-v0", backend="torch", **kw),
            "onnx": gym.make("dfworld/WorldModel-v0", backend="onnx", **kw)}
    frames = {k: [e.reset(seed=args.seed)[0]] for k, e in envs.items()}
    rng = np.random.default_rng(args.seed)
    for t in range(args.steps):
        action = EVENTS.get(t, int(rng.integers(0, 5)))
        for k, e in envs.items():
            frames[k].append(e.step(action)[0])
    gen = {k: np.stack(v) for k, v in frames.items()}
    reads = {k: [read_frame(f) for f in v] for k, v in gen.items()}

    def key(r):
        return r.time, r.weather, r.agent is None, r.coin is None, sorted(r.objects)

    diff = np.abs(gen["torch"].astype(int) - gen["onnx"].astype(int))
    alike = np.mean([key(a) == key(b) for a, b in zip(reads["torch"], reads["onnx"])])
    scene = {k: np.mean([(a.time, a.weather) == (b.time, b.weather) for a, b in zip(reads["EventWorld"], reads[k])]) for k in ("torch", "onnx")}
    print(f"torch against onnx: largest pixel difference {diff.max()}, mean {diff.mean():.3f}; probes alike on {alike:.3f} of frames; "
          f"scene read as EventWorld's: torch {scene['torch']:.3f}, onnx {scene['onnx']:.3f}")
    strip = np.concatenate([np.concatenate(list(gen[k][::4]), 1) for k in ("EventWorld", "torch", "onnx")], 0)
    cv2.imwrite(args.out, cv2.resize(strip[..., ::-1], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
