"""Typed configs from YAML files and ``key=value`` overrides.

Every command's options are a frozen dataclass (nested dataclasses for sections). This module
turns YAML (and dotted ``section.key=value`` overrides from the command line) into such a
dataclass, checking every key and type against the field annotations. An unknown key or a
value of the wrong type is an error that names the dotted key, the expected type and the
value, so ``bc.stepz=10`` or ``bc.steps=ten`` fails at once rather than hours into a run.

    config = load_config(PipelineConfig, CONFIG_DIR / "pipeline" / "quickstart.yaml", ["bc.steps=500"])
    as_dict(config)  # the resolved config, JSON-ready
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import yaml

CONFIG_DIR = Path(str(files("embodied_rl") / "configs"))
"""The YAML presets and default configs shipped inside the package (randomization, agents,
pipelines, benchmark suites): found the same way from a clone and from a wheel install."""

T = TypeVar("T")

RENAMED_KEYS: dict[str, str] = {
    "lr": "learning_rate",
    "actor_lr": "actor_learning_rate",
    "critic_lr": "critic_learning_rate",
    "temperature_lr": "temperature_learning_rate",
    "total_steps": "env_steps",
}
"""Config keys renamed for one name per idea across configs. Old YAML files, overrides and
checkpoints still load: the old key maps to the new one with a ``FutureWarning``. A dataclass
adds its own renames in a ``renamed_keys`` class attribute; ``"section.key": "other.key"``
entries move a key between sections (the pipeline's ``ppo.env_steps`` is ``finetune.env_steps``)."""


class ConfigError(ValueError):
    """A config key is unknown or its value has the wrong type (the message names the key)."""


class _Loader(yaml.SafeLoader):
    """YAML with numbers read as Python reads them: YAML 1.1 takes ``1e-5`` (no dot) for a
    string, which turned ``learning_rate=1e-5`` into "expected a number"."""


_FLOAT = re.compile(
    r"""^[-+]?(?:\d[\d_]*)?\.\d[\d_]*(?:[eE][-+]?\d+)?$   # 1.5, .5, 1.5e-3
    |^[-+]?\d[\d_]*\.(?:[eE][-+]?\d+)?$                  # 5., 5.e3
    |^[-+]?\d[\d_]*[eE][-+]?\d+$                          # 1e-5
    |^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, with Python's number syntax (``1e-5`` is a float)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key=value (dotted keys for sections)")
        try:
            value = load_yaml(text) if text.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({error})") from None
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is set to a value and a section")
        node[leaf] = value
    return tree


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: sections merge, values in ``update`` win."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against (and, for tuples/dataclasses, converted to) annotation ``tp``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {typing.get_args(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{key}: expected a section (mapping) for {tp.__name__}, got {value!r}"
            )
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list for {_type_name(tp)}, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            items = [
                _convert(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            item_type = args[0] if args else Any
            items = [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list or tp is list else tuple(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """An instance of dataclass ``cls`` from ``values`` (missing keys keep their defaults);
    unknown keys and wrongly typed values raise :class:`ConfigError` naming the key."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {values!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = _apply_renames(cls, values, fields, prefix)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[prefix + k for k in unknown]} for {cls.__name__}; "
            f"valid keys: {sorted(prefix + k for k in fields)}"
        )
    kwargs = {name: _convert(value, hints[name], prefix + name) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from None


def _apply_renames(
    cls: type, values: Mapping[str, Any], fields: Mapping[str, Any], prefix: str
) -> Mapping[str, Any]:
    """``values`` with keys renamed since they were written mapped to their new names."""
    own = {k: v for k, v in getattr(cls, "renamed_keys", {}).items() if "." not in k}
    renamed = {**RENAMED_KEYS, **own}
    old = [k for k in values if k not in fields and renamed.get(k) in fields]
    if not old:
        return values
    values = dict(values)
    for key in old:
        new = renamed[key]
        _check_rename(prefix, key, new, clash=new in values)
        values[new] = values.pop(key)
    return values


def _check_rename(prefix: str, old: str, new: str, clash: bool) -> None:
    """An error when both names are given, else a ``FutureWarning`` naming the new one."""
    if clash:
        raise ConfigError(f"{prefix}{old} and {prefix}{new} name the same value: keep {new}")
    warnings.warn(
        f"{prefix}{old} is now called {prefix}{new}; the old name will stop working",
        FutureWarning,
        stacklevel=5,
    )


def _move_keys(cls: type, values: Mapping[str, Any], prefix: str) -> Mapping[str, Any]:
    """Keys moved from one section to another (``renamed_keys`` entries ``"a.key": "b.key"``)."""
    moves = {k: v for k, v in getattr(cls, "renamed_keys", {}).items() if "." in k}
    for old, new in moves.items():
        (old_section, old_key), (new_section, new_key) = old.split(".", 1), new.split(".", 1)
        section = values.get(old_section)
        if not (isinstance(section, Mapping) and old_key in section):
            continue
        target = dict(values.get(new_section) or {})
        _check_rename(prefix, old, new, clash=new_key in target)
        moved = dict(section)
        target[new_key] = moved.pop(old_key)
        values = {**values, old_section: moved, new_section: target}
    return values


def _renamed_to_current(cls: type, values: Any, prefix: str = "") -> Any:
    """``values`` for dataclass ``cls`` with renamed keys mapped, at every nesting level, so a
    file and its overrides can each use either name before they are merged."""
    if not (dataclasses.is_dataclass(cls) and isinstance(values, Mapping)):
        return values
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = _move_keys(cls, values, prefix)
    values = _apply_renames(cls, values, fields, prefix)
    return {
        k: _renamed_to_current(hints[k], v, f"{prefix}{k}.") if k in fields else v
        for k, v in values.items()
    }


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        loaded = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return dict(loaded)


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> T:
    """``cls`` from the YAML file ``path`` (optional) with ``overrides`` applied on top."""
    values = _renamed_to_current(cls, read_yaml(path) if path is not None else {})
    update = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    update = _renamed_to_current(cls, update)
    try:
        from_dict(cls, values)
    except ConfigError as error:
        raise ConfigError(f"{path or cls.__name__}: {error}") from None
    try:
        return from_dict(cls, merge(values, update))
    except ConfigError as error:  # the file alone was fine: an override is wrong
        given = " ".join(overrides) if not isinstance(overrides, Mapping) else str(dict(overrides))
        raise ConfigError(f"override ({given}): {error}") from None


def as_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON/YAML-ready values (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return plain(config)
