"""Env step time against the `threads` argument, on an idle machine and beside a busy process.

    python benchmarks/bench_threads.py [--steps 10] [--batch 1] [--backend torch]

WorldModel-v0 (the shipped default unless --checkpoint) is timed for `--steps` action steps at
each thread setting (None: torch's own setting, then 1 and 2), first with nothing else running,
then while `--busy` processes spin on the CPU (what a training job or a second env does to a
2-core machine). Prints the seconds per step and the ratio to the fastest setting of each case;
the envs' default is chosen from these figures (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np
import torch


def spin(stop) -> None:
    x = 0
    while not stop.is_set():
        x += 1


def time_steps(checkpoint, threads, steps: int, batch: int, backend: str) -> float:
    from dfworld.envs.world_model import WorldModelVectorEnv

    env = WorldModelVectorEnv(batch, checkpoint, backend=backend, threads=threads)
    env.reset(seed=0)
    env.step(np.zeros(batch, np.int64))  # warm-up
    t0 = time.perf_counter()
    for i in range(steps):
        env.step(np.full(batch, 1 + i % 4, np.int64))
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="generator checkpoint (default: the shipped default)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    ap.add_argument("--batch", type=int, default=1, help="rows of the vector env")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--busy", type=int, default=1, help="spinning processes in the loaded case")
    args = ap.parse_args()
    settings = [None, 1, 2]
    print(f"torch {torch.__version__}, its default threads {torch.get_num_threads()}, {mp.cpu_count()} CPUs; "
          f"backend {args.backend}, batch {args.batch}, {args.steps} steps")
    print("| machine | threads | s / step | vs fastest |")
    print("|---|---|---|---|")
    for load in (0, args.busy):
        stop = mp.Event()
        procs = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(load)]
        for p in procs:
            p.start()
        try:
            times = {t: time_steps(args.checkpoint, t, args.steps, args.batch, args.backend) for t in settings}
        finally:
            stop.set()
            for p in procs:
                p.join()
        best = min(times.values())
        for t, s in times.items():
            name = "torch's own" if t is None else str(t)
            print(f"| {'idle' if not load else f'{load} busy process(es)'} | {name} | {s:.3f} | {s / best:.2f}x |")


if __name__ == "__main__":
    main()
