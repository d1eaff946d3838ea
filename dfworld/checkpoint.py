"""Checkpoints: safetensors weights plus a JSON config; nothing is ever unpickled.

A checkpoint is a directory:

    config.json              format, version, stage, the configs of every module, a training record
    weights.safetensors      inference weights (EMA where there is one), keys "<module>.<param>"
    text_cache.safetensors   cached text embeddings (optional)
    train_state.safetensors  raw weights, optimizer tensors, RNG state (for exact resume; optional)
    train_state.json         step, optimizer settings, logger rows (for exact resume; optional)

config.json records the SHA-256 of every other file (`files`); loading checks the format and
version, that config.json is a JSON object, that every recorded file is there with its digest
(a flipped byte or a truncated file is refused, naming the file), that every weight is finite,
and that every tensor matches the module it is loaded into; each failure names the file and the
problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = "dfworld-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, another format, or not this model."""


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    train_state: dict[str, torch.Tensor] = field(default_factory=dict)
    train_meta: dict[str, Any] = field(default_factory=dict)

    def module_weights(self, name: str) -> dict[str, torch.Tensor]:
        prefix = name + "."
        out = {k[len(prefix) :]: v for k, v in self.weights.items() if k.startswith(prefix)}
        if not out:
            raise CheckpointError(f"checkpoint {str(self.path)!r} has no weights for {name!r}; it has {self.modules()}")
        return out

    def modules(self) -> list[str]:
        return sorted({k.split(".", 1)[0] for k in self.weights})


DIGESTED_FILES = ("config.json", "weights.safetensors", "text_cache.safetensors")


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a checkpoint's config, inference weights and text cache, read in that order.

    The one identity of a checkpoint: exports on first use, bench runs and cached latents are
    keyed by it, and BENCHMARKS.md names each figure's checkpoint by its first 12 characters.
    The training state is left out: resuming does not change what a checkpoint generates.
    """
    path = Path(path)
    if not (path / "weights.safetensors").is_file():
        raise CheckpointError(f"{str(path)!r} holds no weights.safetensors: not a checkpoint directory")
    return _sha256([path / name for name in DIGESTED_FILES if (path / name).is_file()])


def _sha256(paths: list[Path]) -> str:
    """SHA-256 (hex) of the files' bytes, read in order, a MiB at a time."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file (corrupt or truncated?): {e}") from e


def save_checkpoint(
    path: str | Path,
    config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    train_state: dict[str, torch.Tensor] | None = None,
    train_meta: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (a temporary directory renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
    if train_state is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in train_state.items()}, str(tmp / "train_state.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(train_meta or {}))
    for name, src in (extra_files or {}).items():
        shutil.copyfile(src, tmp / name)
    files = {f.name: _sha256([f]) for f in sorted(tmp.iterdir())}  # what load_checkpoint checks
    config = {k: v for k, v in config.items() if k != "files"}
    (tmp / "config.json").write_text(
        json.dumps({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **config, "files": files}, indent=1)
    )
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: str | Path, stage: str | tuple[str, ...] | None = None, train_state: bool = False) -> Checkpoint:
    """Read and check a checkpoint directory (optionally that it comes from `stage`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{str(path)!r} is not a dfworld checkpoint (no config.json)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(cfg_path)!r} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(cfg_path)!r} holds a JSON {type(config).__name__}, not an object")
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} has format {config.get('format')!r}; expected {CHECKPOINT_FORMAT!r}")
    if config.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} is checkpoint format version {config.get('version')!r}; "
            f"this dfworld reads version {CHECKPOINT_VERSION} (retrain or convert it)"
        )
    stages = (stage,) if isinstance(stage, str) else stage
    if stages is not None and config.get("stage") not in stages:
        raise CheckpointError(f"{str(path)!r} is a {config.get('stage')!r} checkpoint; expected {' or '.join(stages)}")
    wpath = path / "weights.safetensors"
    if not wpath.is_file():
        raise CheckpointError(f"{str(path)!r} has no weights.safetensors")
    if train_state and not ((path / "train_state.safetensors").is_file() and (path / "train_state.json").is_file()):
        raise CheckpointError(f"{str(path)!r} holds no training state to resume from")
    _check_files(path, config, train_state)
    weights, _ = _read_safetensors(wpath)
    if bad := [k for k, v in weights.items() if v.dtype.is_floating_point and not bool(torch.isfinite(v).all())]:
        raise CheckpointError(f"{str(wpath)!r} holds non-finite values (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[0]!r}")
    ckpt = Checkpoint(path, config, weights)
    if train_state:
        spath, mpath = path / "train_state.safetensors", path / "train_state.json"
        if not spath.is_file() or not mpath.is_file():
            raise CheckpointError(f"{str(path)!r} holds no training state to resume from")
        ckpt.train_state, _ = _read_safetensors(spath)
        ckpt.train_meta = json.loads(mpath.read_text())
    return ckpt


def _check_files(path: Path, config: dict[str, Any], train_state: bool) -> None:
    """Every file config.json records is there with its SHA-256 (training state only when it is read)."""
    files = config.get("files")
    if files is None:  # written before digests were recorded
        return
    if not isinstance(files, dict):
        raise CheckpointError(f"{str(path / 'config.json')!r}: 'files' must map file names to SHA-256 digests")
    for name, digest in files.items():
        if name.startswith("train_state") and not train_state:
            continue
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{str(f)!r} is missing (config.json records it)")
        if _sha256([f]) != digest:
            raise CheckpointError(f"{str(f)!r} is corrupt or truncated: its SHA-256 differs from the one config.json records")


def load_into(module: nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Load weights strictly, naming missing, unexpected and mis-shaped tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(weights))
        if weights[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"{where} does not match the model: " + ", ".join(parts))
    module.load_state_dict(weights)


def check_config(expected: dict[str, Any], found: dict[str, Any], where: str) -> None:
    """Raise naming every field where a checkpoint's config differs from the one asked for."""
    diffs = [f"{k}: checkpoint {found.get(k)!r} vs asked {v!r}" for k, v in expected.items() if found.get(k) != v]
    diffs += [f"{k}: only in the checkpoint" for k in found if k not in expected]
    if diffs:
        raise CheckpointError(f"{where}: config does not match: " + "; ".join(diffs))


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """An optimizer's state as flat tensors `<prefix><param index>.<key>` plus its JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {
        f"{prefix}{idx}.{key}": val if torch.is_tensor(val) else torch.tensor(val)
        for idx, st in sd["state"].items()
        for key, val in st.items()
    }
    return tensors, sd["param_groups"]


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, param_groups: list) -> None:
    """Restore what `optimizer_tensors` wrote."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix):
            idx, key = k[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})
