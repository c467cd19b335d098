"""Dataclass configs with typed ``a.b=value`` overrides (the CLI's ``--set``, and every Optuna trial).

A config is a tree of dataclasses. ``apply_overrides(cfg, ["model.widths=[32,64]", "train.epochs=30"])``
parses each value to the field's declared type (int, float, bool, str, tuples, ``X | None``) and rejects an
unknown key with the list of valid ones, so a typo never silently does nothing.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable

from common.errors import ConfigError, short


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def flat_keys(cfg, prefix: str = "") -> list[str]:
    """Every overridable dotted key of a config tree, e.g. ``train.lr``."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += flat_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _parse_scalar(text: str, typ, key: str):
    if typ is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {short(text)}")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {short(text)}") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {short(text)}") from None
    if typ is str:
        return text
    raise ConfigError(f"{key}: unsupported field type {short(typ)}")


def parse_value(value: Any, typ, key: str):
    """Convert ``value`` (a CLI string, or an already-typed value from YAML/Optuna) to ``typ``."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return parse_value(value, inner[0], key)
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                from common.files.json_files import loads

                try:
                    value = loads(text, key)
                except ConfigError as e:
                    if "nested" in str(e) or "too large" in str(e):
                        raise
                    raise ConfigError(f"{key}: expected a list like [32,64,128], got {short(value)}") from None
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        elem = args[0] if args else str
        return tuple(parse_value(v, elem, key) for v in value)
    if isinstance(value, str):
        return _parse_scalar(value, typ, key)
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if typ in (int, float) and isinstance(value, bool):  # JSON's true is no batch size (bool is an int to Python)
        raise ConfigError(f"{key}: expected {'an integer' if typ is int else 'a number'}, got {short(value)}")
    if isinstance(value, typ):
        return value
    raise ConfigError(f"{key}: expected {getattr(typ, '__name__', typ)}, got {short(value)}")


def get_value(cfg, key: str) -> Any:
    """The value at dotted ``key`` (which must exist: see :func:`flat_keys`)."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def format_override(key: str, value: Any) -> str:
    """``key=value`` as the CLI's ``--set`` parses it back (lists as JSON, strings bare)."""
    if isinstance(value, (list, tuple)):
        return f"{key}={json.dumps(list(value), separators=(',', ':'))}"
    return f"{key}={value}"


def set_value(cfg, key: str, value: Any) -> None:
    """Set dotted ``key`` on the config tree, parsing ``value`` to the field's type."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            valid = ", ".join(flat_keys(cfg))
            raise ConfigError(f"unknown config key {short(key)}. Valid keys: {valid}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, part)):
                first = dataclasses.fields(getattr(node, part))[0].name
                raise ConfigError(f"{short(key)} is a section; set one of its keys, e.g. {key}.{first}=...")
            hints = typing.get_type_hints(type(node))
            setattr(node, part, parse_value(value, hints[part], key))
        else:
            node = getattr(node, part)


def apply_overrides(cfg, overrides: Iterable[str] | dict) -> Any:
    """Apply ``["a.b=v", ...]`` (CLI form) or ``{"a.b": v}`` (typed form) to ``cfg`` in place; returns it."""
    items = overrides.items() if isinstance(overrides, dict) else (split_override(o) for o in overrides)
    for key, value in items:
        set_value(cfg, key, value)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def split_override(override: str) -> tuple[str, str]:
    if "=" not in override:
        raise ConfigError(f"override {short(override)} must look like key=value, e.g. train.epochs=30")
    key, value = override.split("=", 1)
    return key.strip(), value


def flatten(d: dict, at: str = "") -> dict:
    """A nested dict (a config as :func:`to_dict` writes it) as ``{"section.key": value}``."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{at}{k}.") if isinstance(v, dict) else {at + k: v})
    return out


def diff_overrides(base, cfg) -> list[str]:
    """The ``key=value`` overrides that turn config ``base`` into ``cfg`` (what ``--set`` would have to say)."""
    return [format_override(k, get_value(cfg, k)) for k in flat_keys(cfg) if get_value(cfg, k) != get_value(base, k)]


def from_dict(cls, data: dict):
    """Rebuild a config tree of type ``cls`` from :func:`to_dict` output (unknown keys rejected)."""
    return apply_dict(cls(), data)


def apply_dict(cfg, data: dict):
    """Set every key of a nested dict (:func:`to_dict`'s shape, or part of it) on ``cfg``; returns it."""
    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                set_value(cfg, prefix + k, v)
    walk("", data)
    return cfg


def save_config(cfg, path: str | Path) -> None:
    """``config.json``: the resolved config, led by the exercise it belongs to (the config class's ``experiment``)."""
    from common.files.atomic import atomic_write_text

    head = {"experiment": cfg.experiment} if getattr(cfg, "experiment", None) else {}
    atomic_write_text(Path(path), json.dumps({**head, **to_dict(cfg)}, indent=2) + "\n")


_RANGE = re.compile(r"^\s*(?:(?P<op>>=|>)\s*(?P<min>[-\d.e]+)"  # ">= 0", "> 0"
                    r"|(?P<lb>[\[(])\s*(?P<lo>[-\d.e]+)\s*,\s*(?P<hi>[-\d.e]+)\s*(?P<rb>[\])]))\s*$")  # "[0, 1)"


def _in_range(value: float, spec: str) -> bool:
    m = _RANGE.match(spec)
    if m is None:
        raise ValueError(f"bad range spec {short(spec)}")
    if m["op"]:
        return value >= float(m["min"]) if m["op"] == ">=" else value > float(m["min"])
    lo, hi = float(m["lo"]), float(m["hi"])
    return ((value >= lo) if m["lb"] == "[" else (value > lo)) and ((value <= hi) if m["rb"] == "]" else (value < hi))


def check_ranges(cfg, ranges: dict[str, str]) -> None:
    """Every number in the config must be finite, and each key of ``ranges`` within its range, written
    ``">= 1"``, ``"> 0"`` or an interval like ``"[0, 1)"`` (every element, for a tuple). Called by each config's
    ``validate()``, so a bad value stops the run before it starts instead of an epoch into it."""
    for key in flat_keys(cfg):
        values = get_value(cfg, key)
        for v in values if isinstance(values, tuple) else (values,):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{key}={v} must be a finite number")
    for key, spec in ranges.items():
        values = get_value(cfg, key)
        for v in values if isinstance(values, tuple) else (values,):
            if not _in_range(v, spec):
                raise ConfigError(f"{key}={format_override(key, values).split('=', 1)[1]} is out of range: "
                                  f"it must be {spec}")


def changed_keys(saved: dict, now: dict, prefix: str = "model.", ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between a saved config (section) and the current one (tuples and
    lists compare equal), as ``<prefix><key>``, leaving out keys that start with any of ``ignore``."""
    saved, now = (flatten(json.loads(json.dumps(c))) for c in (saved, now))
    return [prefix + k for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k) and not (prefix + k).startswith(ignore)]


# What a resumed run may change: where the data and W&B are, the wall-clock budget, which ex08 step is asked for,
# whether finished steps may come from a cache (they are the same either way).
RESUME_MAY_CHANGE = ("data.data_dir", "track.", "train.time_limit_s", "only_step", "cache_steps")


def check_resumable(saved_config: dict, cfg, where) -> None:
    """Refuse (naming the keys) to resume a run whose saved config differs from ``cfg``: it would not go on
    with the same computation."""
    differ = changed_keys(saved_config, to_dict(cfg), prefix="", ignore=RESUME_MAY_CHANGE)
    if differ:
        raise ConfigError(f"--resume {where} was trained with other settings ({', '.join(differ)}); resume with "
                          "the --preset and --set it was trained with")
