"""A sweep's search space: its parameters (``int``, ``float``, ``categorical``, ``list``, any of them conditional
with ``when``), validated with errors that name the parameter, sampled into config overrides for one Optuna
trial, and read back from a config (the preset as the baseline trial, ``--enqueue``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError, short

PARAM_KEYS = {"int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"},
              "categorical": {"choices"}, "list": {"length", "item", "items"}}


@dataclass
class Param:
    name: str
    type: str
    spec: dict
    when: dict[str, list] = field(default_factory=dict)


def baseline_params(space: list[Param], cfg) -> dict[str, Any]:
    """The Optuna parameters that reproduce ``cfg`` (the preset with the fixed overrides), for enqueueing it as
    a trial: config keys read from ``cfg``, a list's length helper from the list's length."""
    from common.config import get_value

    values: dict[str, Any] = {}
    lengths = {p.spec["length"]: p.name for p in space if p.type == "list"}
    for p in space:
        if "." in p.name:
            values[p.name] = get_value(cfg, p.name)
        elif p.name in lengths:
            values[p.name] = len(get_value(cfg, lengths[p.name]))
    params: dict[str, Any] = {}
    for p in space:
        if p.name not in values or any(values.get(dep, _MISSING) not in ok for dep, ok in p.when.items()):
            continue
        if p.type == "list":
            params.update({f"{p.name}[{i}]": v for i, v in enumerate(values[p.name])})
        else:
            params[p.name] = values[p.name]
    return params


def check_choices(params: dict[str, Any], space: list[Param], what: str) -> None:
    """Every categorical parameter's value in ``params`` (a baseline, an enqueued config) is among its choices:
    Optuna cannot run a queued trial whose categorical value is not (it crashed the baseline trial 0)."""
    specs = {p.name: p.spec for p in space if p.type == "categorical"}
    for p in space:
        if p.type == "list":
            items = p.spec.get("items") or [p.spec.get("item")] * 64
            specs.update({f"{p.name}[{i}]": item for i, item in enumerate(items) if item["type"] == "categorical"})
    for name, value in params.items():
        if name in specs and value not in specs[name]["choices"]:
            raise ConfigError(f"{what}: {name}={short(value)} is not among the sweep's choices for it "
                              f"({', '.join(map(short, specs[name]['choices']))}); add it to the choices or give a "
                              "config inside the space")


def suggest(trial, space: list[Param]) -> dict[str, Any]:
    """Sample one point of ``space`` with an Optuna trial; returns the config overrides (dotted keys only)."""
    values: dict[str, Any] = {}
    for p in space:
        if any(values.get(dep, _MISSING) not in allowed for dep, allowed in p.when.items()):
            continue  # condition not met: this parameter does not exist in this trial
        if p.type == "list":
            n = values[p.spec["length"]]
            values[p.name] = tuple(_suggest_one(trial, f"{p.name}[{i}]", item_spec(p.spec, i)) for i in range(n))
        else:
            values[p.name] = _suggest_one(trial, p.name, p.spec)
    return {k: v for k, v in values.items() if "." in k}


_MISSING = object()


def grid_values(space: list[Param], where: str) -> dict[str, list]:
    """The grid of a ``sampler: grid`` sweep (Optuna's ``GridSampler``): every value of each parameter, from a
    categorical's choices or an int's ``low..high`` by ``step``. A float range or a list has no finite grid."""
    grid: dict[str, list] = {}
    for p in space:
        if p.type == "categorical":
            grid[p.name] = list(p.spec["choices"])
        elif p.type == "int" and not p.spec.get("log"):
            grid[p.name] = list(range(p.spec["low"], p.spec["high"] + 1, p.spec.get("step", 1)))
        else:
            raise ConfigError(f"{where}.{p.name}: a grid sweep takes categorical or int parameters only "
                              f"(this one is {p.type}{' with log' if p.spec.get('log') else ''}); list the values "
                              "as choices")
    return grid


def cell_covered(cell: dict, params: dict) -> bool:
    """Whether a trial with ``params`` ran grid ``cell``: the same value in every parameter the trial used (a
    parameter its ``when`` switched off does not tell cells apart)."""
    return bool(params) and all(cell.get(name, _MISSING) == value for name, value in params.items())


def item_spec(spec: dict, i: int) -> dict:
    """A list's ``i``-th item: ``item`` (every position alike) or ``items[i]`` (a range per position: a CNN's
    first block costs most, so its width wants a range of its own)."""
    return spec["items"][i] if "items" in spec else spec["item"]


def _suggest_one(trial, name: str, spec: dict):
    t = spec["type"]
    if t == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    if t == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
    return trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False))


# --- validation helpers --------------------------------------------------------------------------------------

def _unknown(d: dict, allowed, where: str) -> None:
    allowed = set(allowed)
    bad = sorted(set(d) - allowed)
    if bad:
        raise ConfigError(f"{where}: unknown key {short(bad[0])}; valid keys: {', '.join(sorted(allowed))}")


def _choice(value, valid, where: str) -> None:
    if value not in valid:
        raise ConfigError(f"{where}={short(value)} is not valid; choose one of {', '.join(valid)}")


def _typed_section(section, table: dict[str, set], where: str) -> dict:
    if isinstance(section, str):
        section = {"type": section}
    if not isinstance(section, dict) or "type" not in section:
        raise ConfigError(f"{where}: expected a mapping with a 'type' ({', '.join(table)})")
    _choice(section["type"], tuple(table), f"{where}.type")
    _unknown({k: v for k, v in section.items() if k != "type"}, table[section["type"]], f"{where} ({section['type']})")
    return dict(section)


def _number(spec: dict, key: str, where: str, integer: bool) -> float:
    v = spec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        hint = ""
        if isinstance(v, str):
            try:
                float(v)
                hint = " (YAML reads exponents without a dot, like 1e-3, as text: write 1.0e-3)"
            except ValueError:
                pass
        raise ConfigError(f"{where}.{key}={short(v)}: expected {'an integer' if integer else 'a number'}{hint}")
    if not math.isfinite(v):
        raise ConfigError(f"{where}.{key}={short(v)} must be finite")
    return v


def _check_param(spec, where: str, allow_list: bool) -> dict:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: expected a mapping with a 'type' (int, float, categorical"
                          f"{', list' if allow_list else ''})")
    t = spec["type"]
    _choice(t, tuple(PARAM_KEYS) if allow_list else ("int", "float", "categorical"), f"{where}.type")
    _unknown({k: v for k, v in spec.items() if k not in ("type", "when")}, PARAM_KEYS[t], f"{where} ({t})")
    if t == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices must be a non-empty list")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ConfigError(f"{where}.choices: {short(c)} is not a scalar; Optuna stores only None, bool, int, "
                                  "float and str (use a list parameter or a helper for structured values)")
    elif t in ("int", "float"):
        integer = t == "int"
        low, high = _number(spec, "low", where, integer), _number(spec, "high", where, integer)
        if low > high:
            raise ConfigError(f"{where}: low={low} is above high={high}")
        if spec.get("log"):
            if low <= 0:
                raise ConfigError(f"{where}: log=true needs low > 0, got low={low}")
            if spec.get("step") not in (None, 1):
                raise ConfigError(f"{where}: log=true cannot be combined with step={spec['step']}")
        if "step" in spec and spec["step"] is not None and _number(spec, "step", where, integer) <= 0:
            raise ConfigError(f"{where}.step={spec['step']} must be > 0")
        if spec.get("step") is not None and high > low and spec["step"] > high - low:
            raise ConfigError(f"{where}.step={spec['step']} is larger than the range {low}..{high}: the only value "
                              f"left would be {low}; give a smaller step (or a categorical of the values you mean)")
    return spec


def _parse_space(space, where: str) -> list[Param]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: expected a non-empty mapping of parameter name -> spec")
    params: list[Param] = []
    seen: dict[str, Param] = {}
    for name, spec in space.items():
        here = f"{where}.{name}"
        _check_param(spec, here, allow_list=True)
        if spec["type"] == "list":
            length = spec.get("length")
            if length not in seen or seen[length].type != "int":
                raise ConfigError(f"{here}.length={short(length)} must name an int parameter defined above it")
            if seen[length].spec["low"] < 1:
                raise ConfigError(f"{here}.length: {length} can be {seen[length].spec['low']}; lists need >= 1 item")
            if ("item" in spec) == ("items" in spec):
                raise ConfigError(f"{here}: give 'item' (one spec for every position) or 'items' (a list of specs, "
                                  "one per position), not both or neither")
            if "items" in spec:
                items = spec["items"]
                if not isinstance(items, list) or len(items) < seen[length].spec["high"]:
                    raise ConfigError(f"{here}.items: expected a list of at least {seen[length].spec['high']} specs "
                                      f"({length} goes up to {seen[length].spec['high']})")
                for i, item in enumerate(items):
                    _check_param(item, f"{here}.items[{i}]", allow_list=False)
            else:
                _check_param(spec.get("item"), f"{here}.item", allow_list=False)
        when = spec.get("when") or {}
        if not isinstance(when, dict):
            raise ConfigError(f"{here}.when must map a parameter above it to a value or a list of values")
        for dep in when:
            if dep not in seen:
                raise ConfigError(f"{here}.when: {short(dep)} is not a parameter defined above {short(name)}")
        when = {dep: allowed if isinstance(allowed, list) else [allowed] for dep, allowed in when.items()}
        param = Param(name=str(name), type=spec["type"], spec=spec, when=when)
        params.append(param)
        seen[param.name] = param
    used = {p.spec.get("length") for p in params} | {dep for p in params for dep in p.when}
    for p in params:
        if "." not in p.name and p.name not in used:
            raise ConfigError(f"{where}.{p.name}: not a config key (those look like section.field) and no other "
                              "parameter uses it as a length or a 'when' condition")
    return params
