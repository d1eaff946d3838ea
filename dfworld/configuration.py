"""Hydra composition and validation of config dataclasses.

YAML in `dfworld.configs` is for people; the dataclasses are the schema and hold the defaults.
`compose` reads a config with Hydra overrides (`n=100 world.height=128`) and `build` turns the
result into a dataclass, rejecting unknown keys and wrong types with the key's full name.
`load_config` does both over the dataclass's defaults, so a YAML holds only what it overrides
and a command-line override may name any field of the dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key that the schema does not accept."""


def _check(value: Any, tp: Any, where: str, complete: bool = False) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, complete)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _check(value, arm, where, complete)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return tuple(_check(v, item, f"{where}[{i}]", complete) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value  # Any and other annotations are taken as given


def build(cls: type[T], data: Any, where: str = "config", complete: bool = False) -> T:
    """Instantiate dataclass `cls` from a mapping, checking keys and types recursively.

    `complete`: every field must be given (a checkpoint's config: a field left out would silently
    take today's default, which need not be what the checkpoint was trained with), except the ones
    the class names in `ADDED_LATER`: fields added after checkpoints were written, whose default is
    what every model before them did.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r:.80}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if unknown := sorted(set(data) - set(fields)):
        raise ConfigError(f"{where}: unknown key(s) {unknown}; {cls.__name__} has {sorted(fields)}")
    if complete and (missing := sorted(set(fields) - set(data) - set(getattr(cls, "ADDED_LATER", ())))):
        raise ConfigError(f"{where}: missing key(s) {missing} of {cls.__name__}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}", complete) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = (), schema: dict | None = None) -> dict:
    """Compose `dfworld.configs/<config_name>.yaml` with Hydra overrides into a plain dict.

    With `schema` (a dataclass's defaults as a dict), the YAML is read over it, and an override
    of a key the YAML leaves out is added (Hydra's `++key=value`) rather than refused.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    try:
        with initialize_config_module(config_module="dfworld.configs", version_base="1.3"):
            if schema is not None:
                plain = hydra_compose(config_name=config_name)
                missing = object()
                overrides = [o if o[:1] in "+~" or "=" not in o or _replaces(OmegaConf.select(plain, o.split("=", 1)[0], default=missing),
                                                                             o.split("=", 1)[1], missing) else "++" + o
                             for o in overrides]
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"config {config_name!r} with overrides {overrides}: {e}") from e
    data = OmegaConf.to_container(cfg, resolve=True)
    return _merge(schema, data) if schema is not None else data  # type: ignore[return-value]


def _replaces(node: Any, value: str, missing: object) -> bool:
    """Whether a plain `key=value` override works on the composed YAML: the key is there, and is not
    a mapping given whole (`overrides={teacher: [...]}` into `overrides: {}`, which Hydra refuses)."""
    from omegaconf import DictConfig

    return node is not missing and not (isinstance(node, DictConfig) and value.lstrip().startswith("{"))


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(cls: type[T], config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Dataclass `cls` from its defaults, `dfworld.configs/<config_name>.yaml` on top, then the overrides."""
    return build(cls, compose(config_name, overrides, schema=to_dict(cls())), config_name)


def to_dict(obj: Any) -> Any:
    """A dataclass as plain data (tuples as lists), for YAML and JSON records."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def compose_group(group: str, name: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """One option of a config group (e.g. model/default) as a plain dict, without the group key."""
    return compose(f"{group}/{name}", overrides)[group]
