"""The generator checkpoints shipped inside the package, and how a checkpoint argument resolves.

`dfworld pipeline` writes them (its `ship` stage) and every entry point reads them by name:
`default` is the Delta Forcing generator tuned on its own rollouts against EventWorld (the delta
stage, then the fidelity stage), `dmd` and `stream` the baselines of the earlier stages, kept for
the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = {"default": "fidelity", "dmd": "dmd", "stream": "stream"}  # shipped name -> the stage it comes from
SHIP_LIMIT_MB = 30.0  # the shipped checkpoints together, at most


def shipped_checkpoint(name: str = "default") -> Path:
    """The directory of a shipped generator checkpoint: default (Delta Forcing, then fidelity), dmd or stream."""
    from importlib import resources

    if name not in SHIPPED:
        raise ValueError(f"unknown shipped checkpoint {name!r}; shipped: {', '.join(SHIPPED)}")
    return Path(str(resources.files("dfworld") / "checkpoints" / name))


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A checkpoint directory, or the name of a shipped one (None: the shipped default).

    A shipped name that this install lacks raises FileNotFoundError naming it.
    """
    if checkpoint is None:
        path = shipped_checkpoint("default")
    elif str(checkpoint) in SHIPPED and not Path(checkpoint).exists():
        path = shipped_checkpoint(str(checkpoint))
    else:
        return Path(checkpoint)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"this dfworld install lacks its shipped generator {path.name!r} ({path}); reinstall it, or pass "
            "checkpoint=<a generator checkpoint directory>"
        )
    return path
