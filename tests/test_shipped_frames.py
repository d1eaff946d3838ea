"""The shipped generators generate the recorded frames across refactors: to the bit on the CPU that recorded them.

`tests/data/shipped_frames.npz` holds the frames each shipped checkpoint generated through
`WorldModel-v0` (one thread, a fixed seed, actions and a text event; a reset from noise, one
from a given image and one from the seed's real start) when it was recorded; a change that moves
or renames code must leave them unchanged to the bit. Re-record only when the shipped checkpoints
or the installed kernels change (`python tests/test_shipped_frames.py`, and `ATEN_CPU_CAPABILITY=avx2 python
tests/test_shipped_frames.py` for the AVX2 recording on an AVX512 CPU); last recorded 2026-12-04 (an AMD EPYC) when the
default gained its fast decoder, which the envs decode with (dmd and stream unchanged, recorded again on this CPU).

The CPU's kernels differ by vector unit (torch's `get_cpu_capability()`: an AVX2-only CPU rounds a
few frames one level apart from an AVX512 one), so each capability has its own recording,
`shipped_frames.npz` (AVX512, the first) and `shipped_frames_<capability>.npz`; recording writes
the one of the machine it runs on. A CPU with none recorded fails, naming the file to record.

Beyond the vector unit, CPUs of the same capability still round a few pixels one level apart (2026-12-03: the
recordings of an AMD AVX512 CPU against an Intel Xeon's: dmd and stream at most 1 level, on 0.01-0.03% of the
pixels; the Intel's own AVX512 against its AVX2 path: at most 1 level on at most 0.05%). Each recording names the CPU
it was made on (`cpu`, /proc/cpuinfo's model name): there the frames must match to the bit; on another CPU at most
one level apart on at most 0.5% of the pixels, ten times that drift (any change of weights or of the computation
moves them by far more: the fidelity-tuned default against the one before, up to 255 levels in 34 of 35 frames).

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
TOLERANCE = (1, 0.005)  # on another CPU than the recording's: most levels apart, fraction of pixels that differ


def cpu_name() -> str:
    """This CPU's model name (what a recording is tied to for the exact match)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
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
    recording = np.load(path)
    want = recording[name]
    got = episode_frames(name)
    assert got.shape == want.shape and got.dtype == want.dtype
    diff = np.abs(got.astype(int) - want)
    frames = int((diff > 0).any(axis=(1, 2, 3)).sum())
    where = f"{frames} of {len(want)} frames differ (max |diff| {diff.max()}, {(diff > 0).mean():.5f} of the pixels)"
    recorded_on = str(recording["cpu"]) if "cpu" in recording.files else ""
    if recorded_on == cpu_name():
        assert diff.max() == 0, f"{name}: recorded on this CPU, {where}"
    else:
        levels, fraction = TOLERANCE
        assert diff.max() <= levels and (diff > 0).mean() <= fraction, f"{name}: recorded on {recorded_on!r}, {where}"


if __name__ == "__main__":
    np.savez_compressed(reference(), cpu=np.array(cpu_name()), **{n: episode_frames(n) for n in NAMES})
    print(f"recorded {reference()}")
