"""Turning config sections into the typed dataclasses the code uses.

Hydra already rejects keys that the YAML does not define; this adds the checks YAML
cannot express: each key must be a field of the dataclass, choices must be among a
``Literal``'s values and numbers must be numbers. Every problem is a one-line ConfigError.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from nlp_lstm.data.errors import ConfigError

T = TypeVar("T")


def plain(section: Any) -> Any:
    """A resolved plain-Python copy of a DictConfig (or the value itself)."""
    if isinstance(section, DictConfig):
        return OmegaConf.to_container(section, resolve=True)
    return section


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false; got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer; got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number; got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string; got {value!r}")
    return value


def to_dataclass(cls: type[T], section: Any, where: str) -> T:
    """Build dataclass ``cls`` from a config section named ``where`` (for messages)."""
    values = plain(section) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)
