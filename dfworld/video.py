"""Writing frames to mp4 (OpenCV, mp4v), optionally upscaled, captioned and side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

CAPTION_ROWS = 18  # height of the caption strip under each (upscaled) frame


def caption_strip(width: int, text: str) -> np.ndarray:
    strip = np.full((CAPTION_ROWS, width, 3), 24, np.uint8)
    cv2.putText(strip, text[: max(1, width // 7)], (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (235, 235, 235), 1, cv2.LINE_AA)
    return strip


def compose(frame: np.ndarray, scale: int = 1, caption: str | None = None) -> np.ndarray:
    """Upscale one RGB frame (nearest neighbour) and put a caption strip under it."""
    img = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale != 1 else frame
    if caption is not None:
        img = np.concatenate([img, caption_strip(img.shape[1], caption)], 0)
    return img


def side_by_side(columns: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Join equally tall RGB images left to right with a dark gap."""
    h = columns[0].shape[0]
    sep = np.full((h, gap, 3), 0, np.uint8)
    parts = []
    for i, c in enumerate(columns):
        if c.shape[0] != h:
            raise ValueError(f"side_by_side needs equal heights, got {c.shape[0]} and {h}")
        parts += [sep, c] if i else [c]
    return np.concatenate(parts, 1)


def write_strip(path: str | Path, rows: Sequence[np.ndarray], labels: Sequence[str], indices: Sequence[int], scale: int = 2) -> Path:
    """A PNG of frames `indices` of each row of frames ([F, H, W, 3] each, e.g. generated above real), labelled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for frames, label in zip(rows, labels):
        cells = [compose(frames[i], scale, f"{label} {i}") for i in indices]
        lines.append(side_by_side(cells))
    sep = np.zeros((2, lines[0].shape[1], 3), np.uint8)
    image = np.concatenate([x for line in lines for x in (line, sep)][:-1], 0)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def write_mp4(
    path: str | Path,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: int,
    scale: int = 1,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write RGB uint8 frames [F, H, W, 3] to an mp4 file; return its path."""
    path = Path(path)
    if len(frames) == 0:
        raise ValueError("write_mp4: no frames to write")
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"write_mp4: {len(captions)} captions for {len(frames)} frames")
    first = compose(frames[0], scale, None if captions is None else captions[0])
    h, w = first.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an mp4v writer for {str(path)!r}")
    try:
        for i, f in enumerate(frames):
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"write_mp4: frame {i} must be uint8 HWC RGB, got {f.dtype} {f.shape}")
            img = compose(f, scale, None if captions is None else captions[i])
            writer.write(np.ascontiguousarray(img[..., ::-1]))  # RGB -> BGR
    finally:
        writer.release()
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    """Read an mp4 back as RGB frames [F, H, W, 3] (lossy; for checks and tools)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img[..., ::-1])
    cap.release()
    if not frames:
        raise ValueError(f"no frames could be read from {str(path)!r}")
    return np.stack(frames)
