"""The shipped generators generate bit-identical frames across refactors.

`tests/data/shipped_frames.npz` holds the frames each shipped checkpoint generated through
`WorldModel-v0` (one thread, a fixed seed, actions and a text event; a reset from noise, one
from a given image and one from the seed's real start) when it was recorded; a change that moves
or renames code must leave them unchanged to the bit. Re-record only when the shipped checkpoints
or the installed kernels change (`python tests/test_shipped_frames.py`); last recorded 2026-12-02 for the
context-conditioned chain shipped that day (the self-attention's fused SDPA kernel landed with it).

The CPU's kernels differ by vector unit (torch's `get_cpu_capability()`: an AVX2-only CPU rounds a
few frames one level apart from an AVX512 one), so each capability has its own recording,
`shipped_frames.npz` (AVX512, the first) and `shipped_frames_<capability>.npz`; recording writes
the one of the machine it runs on. A CPU with none recorded fails, naming the file to record.

The frames are generated at the four levels every shipped student was distilled for
(`RECORDED_SAMPLER`), whatever schedule a checkpoint ships with: since 2026-12-03 the default runs
one of them (its config's `sampler`), a change of config the recording need not follow; the
one-level path is the same code run once per chunk.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dfworld  # noqa: F401  (registers the envs)

DATA = Path(__file__).parent / "data"


def reference() -> Path:
    """The recording for this CPU's vector unit."""
    cap = torch.backends.cpu.get_cpu_capability()
    return DATA / ("shipped_frames.npz" if cap == "AVX512" else f"shipped_frames_{cap}.npz")
NAMES = ("default", "dmd", "stream")
RECORDED_SAMPLER = {"timesteps": [1000.0, 750.0, 500.0, 250.0]}


def episode_frames(name: str) -> np.ndarray:
    """Every frame of a short scripted episode on one thread: [F, H, W, 3] uint8."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # kernels may split reductions by thread count
    try:
        env = gym.make("dfworld/WorldModel-v0", checkpoint=name, sampler=RECORDED_SAMPLER)
        obs, _ = env.reset(seed=7, options={"start": "noise"})
        frames = [obs[None]]
        for action in (1, 4, "night falls", 2):
            frames.append(env.step(action)[4]["frames"])
        obs, _ = env.reset(seed=8, options={"image": frames[-1][-1], "prompt": "a clear day"})
        frames.append(obs[None])
        for action in (3, 0):
            frames.append(env.step(action)[4]["frames"])
        obs, _ = env.reset(seed=9)  # the real start: EventWorld's frames for seed 9
        frames.append(obs[None])
        for action in (4, 1):
            frames.append(env.step(action)[4]["frames"])
        env.close()
    finally:
        torch.set_num_threads(threads)
    return np.concatenate(frames)


@pytest.mark.parametrize("name", NAMES)
def test_the_shipped_generator_makes_the_recorded_frames_to_the_bit(name):
    path = reference()
    assert path.is_file(), f"no recording for this CPU ({path.name}): record it with `python tests/test_shipped_frames.py`"
    want = np.load(path)[name]
    got = episode_frames(name)
    assert got.shape == want.shape and got.dtype == want.dtype
    differ = int((got != want).any(axis=(1, 2, 3)).sum())
    assert differ == 0, f"{name}: {differ} of {len(want)} frames differ from the recording (max |diff| {np.abs(got.astype(int) - want).max()})"


if __name__ == "__main__":
    np.savez_compressed(reference(), **{n: episode_frames(n) for n in NAMES})
    print(f"recorded {reference()}")
