"""Turning config sections into the typed dataclasses the code uses.

Hydra already rejects keys that the YAML does not define; this adds the checks YAML
cannot express: each key must be a field of the dataclass, and each dataclass checks its
own values in ``__post_init__`` (:func:`check_fields`: choices among a ``Literal``'s values,
numbers that are numbers, sizes of at least 1 ...), so a config built in Python is checked
as one built from YAML. Every problem is a one-line ConfigError.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from nlp_lstm.errors import ConfigError

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
    """Build dataclass ``cls`` from a config section named ``where`` (for messages). The
    dataclass checks its own values (:func:`check_fields` in its ``__post_init__``); its
    one-line error gains the section's name here (``model.hidden_size must be ...``)."""
    values = plain(section) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(names)})")
    missing = [k for k, v in values.items() if v == "???"]
    if missing:
        raise ConfigError(f"{where}.{missing[0]} needs a value ({where}.{missing[0]}=...)")
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(qualify(str(err), where, names)) from None


def qualify(message: str, where: str, names: list[str]) -> str:
    """A dataclass's own message with its field names as the command line spells them:
    ``static_swap needs static_channel=true`` -> ``embeddings.static_swap needs
    embeddings.static_channel=true`` (a name counts where a setting or a verdict follows
    it: ``=``, ``==``, ``!=``, ``(``, ``must``, ``needs``)."""
    pattern = (
        r"(?<![\w.])(" + "|".join(map(re.escape, names)) + r")(?=\s*(?:=|!=|\(|must\b|needs\b))"
    )
    return re.sub(pattern, lambda m: f"{where}.{m.group(1)}", message)


def check_fields(
    config: Any,
    at_least_one: tuple[str, ...] = (),
    probabilities: tuple[str, ...] = (),
    positive: tuple[str, ...] = (),
) -> None:
    """The checks of a config dataclass, for its ``__post_init__``: every field must fit its
    type hint (a ``Literal``'s choices, true/false, integers, numbers; ints become floats
    where a float is expected), the fields named in ``at_least_one`` must be >= 1, those in
    ``probabilities`` in [0, 1) and those in ``positive`` > 0 (each may be None where its
    hint allows). A ConfigError names the field: ``hidden_size must be at least 1, got 0``."""
    hints = _type_hints(type(config))
    for f in dataclasses.fields(config):
        setattr(config, f.name, _coerce(getattr(config, f.name), hints[f.name], f.name))
    for name in at_least_one:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    for name in probabilities:
        value = getattr(config, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    for name in positive:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def defaults_of(cls: type) -> dict[str, Any]:
    """A dataclass's field defaults as a plain dict (``???``, Hydra's missing value, for a
    field without one)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = "???"
    return out


def conf_dir() -> Path:
    """The config folder: shipped inside the package, or the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError("nlp_lstm's conf/ folder is missing from this installation")


def task_names() -> list[str]:
    """The tasks: one per ``conf/task/<name>.yaml`` (the only list of them)."""
    return sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))


def task_module(name: str):
    """``nlp_lstm.tasks.<name>``; a one-line ConfigError when it is not written yet."""
    import importlib

    try:
        return importlib.import_module(f"nlp_lstm.tasks.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"nlp_lstm.tasks.{name}":
            raise ConfigError(
                f"task {name!r} is not implemented yet (conf/task/{name}.yaml exists, "
                f"nlp_lstm/tasks/{name}.py does not)"
            ) from None
        raise


def first_file(*paths: str) -> str:
    """The first of ``paths`` that is a file (the first one when none is): the
    ``${first_file:a,b}`` resolver, for defaults such as "the phrase-level SST-2 training
    file if it is there, else the sentence-level one"."""
    for path in paths:
        if Path(str(path)).expanduser().is_file():
            return str(path)
    return str(paths[0])


def register_schemas() -> None:
    """Put the config dataclasses' defaults into Hydra's ConfigStore, so conf/ composes
    them (``defaults: [/schema@trainer: trainer]``, ``/schema/<task>@_here_: data`` ...) and
    its YAML files hold only what differs: every default is written once, in Python.
    Values are then type-checked by :func:`to_dataclass`."""
    from hydra.core.config_store import ConfigStore

    from nlp_lstm.data.vectors import EmbeddingsConfig
    from nlp_lstm.inside import InspectConfig
    from nlp_lstm.serve.settings import ServeConfig
    from nlp_lstm.train.settings import TrainerConfig

    if not OmegaConf.has_resolver("first_file"):
        OmegaConf.register_new_resolver("first_file", first_file)
    store = ConfigStore.instance()
    store.store(group="schema", name="trainer", node=defaults_of(TrainerConfig))
    store.store(group="schema", name="embeddings", node=defaults_of(EmbeddingsConfig))
    store.store(group="schema", name="serve", node=defaults_of(ServeConfig))
    store.store(group="schema", name="inspect", node=defaults_of(InspectConfig))
    for name in task_names():
        try:
            module = task_module(name)
        except ConfigError:
            continue  # listed but not written yet: choosing it is an error, listing it is not
        for section, cls in getattr(module, "SCHEMAS", {}).items():
            store.store(group=f"schema/{name}", name=section, node=defaults_of(cls))
