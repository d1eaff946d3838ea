"""Codec quality: reconstruction PSNR and the probes' accuracy on reconstructed frames.

Frames come from freshly planned episodes (held-out seeds, an event every 16 frames), so every
time, weather and object change appears; the probes read the reconstructions and are scored
against the simulator's true state.
"""

from __future__ import annotations

import numpy as np
import torch

from dfworld.checkpoint import load_checkpoint
from dfworld.model.loading import codec_from
from dfworld.world.config import WorldConfig
from dfworld.world.episodes import sample_episodes
from dfworld.world.probes import read_frames, score_readings


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB per frame of uint8 frames [N, H, W, 3]."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


@torch.inference_mode()
def evaluate_codec(checkpoint: str, episodes: int = 20, seed: int = 777, batch: int = 256, decoder: str | None = None) -> dict:
    """PSNR and probe scores of reconstructions through `decoder` (full, or the fast one the codec carries; None: the
    envs' default, fast where carried)."""
    codec = codec_from(load_checkpoint(checkpoint)).use_decoder(decoder)
    world = WorldConfig(height=codec.config.image_size, width=codec.config.image_size)
    frames, states = sample_episodes(world, episodes, seed=seed)
    recon = np.concatenate(
        [codec.decode(codec.encode(torch.from_numpy(frames[i : i + batch]))).numpy() for i in range(0, len(frames), batch)]
    )
    p = psnr_uint8(frames, recon)
    score = score_readings(read_frames(recon, world), states)
    probes = {f"probe_{k}": v for k, v in score.items() if k != "frames"}
    return {"frames": len(frames), "decoder": codec.decoder, "psnr_mean": float(p.mean()), "psnr_p5": float(np.percentile(p, 5)), **probes}
