"""A search space from ``sweeps/<name>.yaml``: read safely, validated with errors that name the bad key, and
turned into config overrides for one Optuna trial.

A sweep file (see ``sweeps/kp.yaml``)::

    study: kp                   # Optuna study name (default: the file's stem)
    experiment: <exercise>      # which exercise's config the keys below belong to (exercises/)
    preset: default             # its starting config (the experiment's --preset)
    metric: val/score           # reported every epoch for the pruner; the trial's value is the run's summary
    direction: maximize
    trials: 40                  # total finished trials the study aims for (a re-run resumes towards it)
    timeout_s: 3600             # per worker, optional
    sampler: {type: tpe, seed: 0, n_startup_trials: 8}
    pruner: {type: hyperband, min_resource: 8, reduction_factor: 3}   # or median, successive_halving, none
    fixed: {run.threads: 1}     # overrides every trial shares
    space:
      depth: {type: int, low: 2, high: 4}                    # no dot: a helper, not a config key
      model.widths: {type: list, length: depth, item: {type: int, low: 16, high: 128, step: 16}}
      train.lr: {type: float, low: 3.0e-4, high: 5.0e-3, log: true}
      model.head: {type: categorical, choices: [flatten, gap]}
      model.head_hidden: {type: int, low: 64, high: 512, log: true, when: {model.head: flatten}}

A dotted name must be a key of the experiment's config (checked on load); an undotted name is a helper
parameter that another one uses (as a list ``length`` or in a ``when``). ``when`` makes a parameter
conditional: it is sampled only if each named parameter (defined above it) took one of the listed values.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.config import apply_overrides, flat_keys
from common.errors import ConfigError, short

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"

TOP_LEVEL = {"study", "experiment", "preset", "metric", "direction", "trials", "timeout_s", "sampler", "pruner",
             "storage", "fixed", "space", "baseline"}
SAMPLERS = {"tpe": {"seed", "n_startup_trials", "multivariate", "group", "constant_liar"},
            "random": {"seed"},
            "cmaes": {"seed", "n_startup_trials", "restart_strategy", "sigma0"},
            "gp": {"seed", "n_startup_trials", "deterministic_objective"}}
PRUNERS = {"median": {"n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"},
           "hyperband": {"min_resource", "max_resource", "reduction_factor", "bootstrap_count"},
           "successive_halving": {"min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"},
           "none": set()}
"""A pruner's steps are the epochs a trial has trained (over the training steps that report the metric), so
``min_resource: 8`` is a first rung after 8 epochs."""
STORAGE_KEYS = {"heartbeat_s", "grace_s", "max_retry"}
PARAM_KEYS = {"int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"},
              "categorical": {"choices"}, "list": {"length", "item"}}


@dataclass
class Param:
    name: str
    type: str
    spec: dict
    when: dict[str, list] = field(default_factory=dict)


@dataclass
class Sweep:
    """A validated sweep file."""

    path: Path
    study: str
    experiment: str
    preset: str
    metric: str
    direction: str
    trials: int | None
    timeout_s: float | None
    sampler: dict
    pruner: dict
    storage: dict
    fixed: dict[str, Any]
    space: list[Param]
    baseline: bool
    """Run the preset's own values (+ ``fixed``) as the study's first trial: the bar the search must beat."""
    text: str
    """The file as written (kept in the study so a report can show what was searched)."""


def resolve_sweep_path(study: str) -> Path:
    """``kp`` -> ``sweeps/kp.yaml``; a path to a YAML file is taken as it is."""
    p = Path(study)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"sweep file {p} does not exist")
        return p
    candidate = SWEEPS_DIR / f"{study}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(q.stem for q in SWEEPS_DIR.glob("*.yaml")))
        raise ConfigError(f"no sweep named {short(study)}: {candidate} does not exist (known: {known}); "
                          "or pass a path to a sweep YAML file")
    return candidate


def load_sweep(path: str | Path, make_config: Callable[[str], Any] | None = None) -> Sweep:
    """Read and validate a sweep file. With ``make_config(preset)``, also check every config key and fixed value
    against the experiment's real config (the same typed override system the CLI uses)."""
    from common.files.safe_yaml import load_yaml

    path = Path(path)
    raw = load_yaml(path, "sweep file")
    text = path.read_text()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    where = str(path)
    _unknown(raw, TOP_LEVEL, where)
    for key in ("experiment", "metric", "space"):
        if key not in raw:
            raise ConfigError(f"{where}: missing required key '{key}'")
    direction = raw.get("direction", "maximize")
    _choice(direction, ("maximize", "minimize"), f"{where}: direction")
    trials = raw.get("trials")
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"{where}: trials={short(trials)} must be a positive integer")
    timeout = raw.get("timeout_s")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"{where}: timeout_s={short(timeout)} must be a positive number of seconds")
    sampler = _typed_section(raw.get("sampler", {"type": "tpe", "seed": 0}), SAMPLERS, f"{where}: sampler")
    pruner = _typed_section(raw.get("pruner", {"type": "median"}), PRUNERS, f"{where}: pruner")
    storage = raw.get("storage") or {}
    if not isinstance(storage, dict):
        raise ConfigError(f"{where}: storage must be a mapping with any of {sorted(STORAGE_KEYS)}")
    _unknown(storage, STORAGE_KEYS, f"{where}: storage")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: fixed must be a mapping of config key -> value")
    space = _parse_space(raw["space"], f"{where}: space")
    study = str(raw.get("study", path.stem))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", study):
        raise ConfigError(f"{where}: study: {short(study)} is not a plain name (letters, digits, . _ -; it names the "
                          "study dir runs/studies/<study>)")
    sweep = Sweep(path=path, study=study, experiment=str(raw["experiment"]),
                  preset=str(raw.get("preset", "default")), metric=str(raw["metric"]), direction=direction,
                  trials=trials, timeout_s=float(timeout) if timeout else None, sampler=sampler, pruner=pruner,
                  storage=storage, fixed=fixed, space=space, baseline=bool(raw.get("baseline", True)), text=text)
    if make_config is not None:
        check_against_config(sweep, make_config)
    return sweep


def check_against_config(sweep: Sweep, make_config: Callable[[str], Any]) -> None:
    """Every dotted name must be a config key, and the fixed values must parse as their fields' types."""
    where = f"{sweep.path}"
    try:
        cfg = make_config(sweep.preset)
    except ConfigError as e:
        raise ConfigError(f"{where}: preset: {e}") from None
    keys = set(flat_keys(cfg))
    for key in list(sweep.fixed) + [p.name for p in sweep.space if "." in p.name]:
        if key not in keys:
            raise ConfigError(f"{where}: {short(key)} is not a key of the {sweep.experiment} config. "
                              f"Valid keys: {', '.join(sorted(keys))}")
    try:
        apply_overrides(cfg, dict(sweep.fixed))
    except ConfigError as e:
        raise ConfigError(f"{where}: fixed: {e}") from None


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


def suggest(trial, space: list[Param]) -> dict[str, Any]:
    """Sample one point of ``space`` with an Optuna trial; returns the config overrides (dotted keys only)."""
    values: dict[str, Any] = {}
    for p in space:
        if any(values.get(dep, _MISSING) not in allowed for dep, allowed in p.when.items()):
            continue  # condition not met: this parameter does not exist in this trial
        if p.type == "list":
            n = values[p.spec["length"]]
            values[p.name] = tuple(_suggest_one(trial, f"{p.name}[{i}]", p.spec["item"]) for i in range(n))
        else:
            values[p.name] = _suggest_one(trial, p.name, p.spec)
    return {k: v for k, v in values.items() if "." in k}


_MISSING = object()


def _suggest_one(trial, name: str, spec: dict):
    t = spec["type"]
    if t == "categorical":
        return trial.suggest_categorical(name, spec["choices"])
    if t == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
    return trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False))


# --- validation helpers --------------------------------------------------------------------------------------

def _unknown(d: dict, allowed: set, where: str) -> None:
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
            _check_param(spec.get("item"), f"{here}.item", allow_list=False)
        when = spec.get("when") or {}
        if not isinstance(when, dict):
            raise ConfigError(f"{here}.when must map a parameter above it to a value or a list of values")
        for dep, allowed in when.items():
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
