"""Hydra composition and validation of config dataclasses.

YAML in `dfworld.configs` is for people; the dataclasses are the schema. `compose` reads a
config with Hydra overrides (`n=100 world.height=128`) and `build` turns the result into a
dataclass, rejecting unknown keys and wrong types with the key's full name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key that the schema does not accept."""


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _check(value, arm, where)
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
        return tuple(_check(v, item, f"{where}[{i}]") for i, v in enumerate(value))
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


def build(cls: type[T], data: Any, where: str = "config") -> T:
    """Instantiate dataclass `cls` from a mapping, checking keys and types recursively."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if unknown := sorted(set(data) - set(fields)):
        raise ConfigError(f"{where}: unknown key(s) {unknown}; {cls.__name__} has {sorted(fields)}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Compose `dfworld.configs/<config_name>.yaml` with Hydra overrides into a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module(config_module="dfworld.configs", version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"config {config_name!r} with overrides {list(overrides)}: {e}") from e
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


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
