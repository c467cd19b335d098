"""A search space from ``sweeps/<name>.yaml``: read safely, validated with errors that name the bad key, and
turned into config overrides for one Optuna trial.

A sweep file (see ``sweeps/kp.yaml``)::

    study: kp                   # Optuna study name (default: the file's stem)
    experiment: <exercise>      # which exercise's config the keys below belong to (exercises/)
    preset: default             # its starting config (the experiment's --preset)
    metric: val/score           # reported every epoch for the pruner; the trial's value is the run's summary
    direction: maximize
    trials: 40                  # total finished trials the study aims for (a re-run resumes towards it)
    sampler: {type: tpe, seed: 0, n_startup_trials: 8}   # or random, cmaes, gp, grid (every cell once)
    pruner: {type: hyperband, min_resource: 8, reduction_factor: 3}   # or median, successive_halving, none
    fixed: {run.threads: 1}     # overrides every trial shares
    space:
      depth: {type: int, low: 2, high: 4}                    # no dot: a helper, not a config key
      model.widths: {type: list, length: depth, item: {type: int, low: 16, high: 128, step: 16}}
      train.lr: {type: float, low: 3.0e-4, high: 5.0e-3, log: true}
      model.head_hidden: {type: int, low: 64, high: 512, log: true, when: {depth: [3, 4]}}
    tie_break: {metric: val/loss, weight: -0.001}   # optional: value = metric + weight * val/loss
    constraints: {wall_s: {max_ratio: 1.1}}          # optional cost limits (studies.constraints)

A dotted name must be a key of the experiment's config (checked on load); an undotted name is a helper
parameter that another one uses (as a list ``length`` or in a ``when``): :mod:`studies.space`.
"""
from __future__ import annotations

import importlib.resources
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common.config import apply_overrides, flat_keys
from common.errors import ConfigError, short
from studies.constraints import parse_constraints
from studies.space import Param, _choice, _number, _parse_space, _typed_section, _unknown, grid_values

SWEEPS_DIR = Path(str(importlib.resources.files("sweeps")))
"""The shipped sweeps, wherever the package is (a checkout or an installed wheel: package data)."""

TOP_LEVEL = {"study", "experiment", "preset", "metric", "direction", "trials", "timeout_s", "sampler", "pruner",
             "storage", "fixed", "space", "baseline", "tie_break", "constraints"}
SAMPLERS = {"tpe": {"seed": "int", "n_startup_trials": "int", "multivariate": "bool", "group": "bool",
                   "constant_liar": "bool"},
            "random": {"seed": "int"},
            "cmaes": {"seed": "int", "n_startup_trials": "int", "restart_strategy": "str", "sigma0": "number"},
            "gp": {"seed": "int", "n_startup_trials": "int", "deterministic_objective": "bool"},
            "grid": {"seed": "int"}}
PRUNERS = {"median": {"n_startup_trials": "int", "n_warmup_steps": "int", "interval_steps": "int",
                      "n_min_trials": "int"},
           "hyperband": {"min_resource": "int|auto", "max_resource": "int|auto", "reduction_factor": "int",
                         "bootstrap_count": "int"},
           "successive_halving": {"min_resource": "int|auto", "reduction_factor": "int",
                                  "min_early_stopping_rate": "int", "bootstrap_count": "int"},
           "none": {}}
"""Each sampler's and pruner's settings and what kind of value each takes (checked on load: ``seed: zero``
would otherwise reach Optuna only when the first worker starts, ``min_resource: eight`` only at the first rung).
A pruner's steps are the epochs a trial has trained (over the training steps that report the metric), so
``min_resource: 8`` is a first rung after 8 epochs."""


ZERO_ALLOWED = {"seed", "n_startup_trials", "n_warmup_steps", "min_early_stopping_rate", "bootstrap_count"}


def _check_kinds(section: dict, kinds: dict[str, str], where: str) -> None:
    """Each setting of a sampler or pruner section has its kind of value (booleans are not numbers)."""
    for key, value in section.items():
        kind = kinds.get(key)
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
              "bool": isinstance(value, bool), "str": isinstance(value, str),
              "int|auto": value == "auto" or (isinstance(value, int) and not isinstance(value, bool)),
              None: True}[kind]
        if not ok:
            wanted = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
                      "int|auto": "an integer or 'auto'"}[kind]
            raise ConfigError(f"{where}.{key}={short(value)}: expected {wanted}")
        least = 0 if key in ZERO_ALLOWED else 2 if key == "reduction_factor" else 1
        if kind in ("int", "int|auto") and value != "auto" and value < least:
            raise ConfigError(f"{where}.{key}={value} is out of range: it must be >= {least}")


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A study's name: it names its dir (``runs/studies/<study>``)."""
STORAGE_KEYS = {"heartbeat_s", "grace_s", "max_retry"}



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
    tie_break: dict | None
    """``{metric, weight}``: the value is ``metric + weight * tie_break metric`` (a coarse metric's ties broken)."""
    constraints: dict
    """``{wall_s|params|size_mb: {max: x} | {max_ratio: r}}``: cost limits a trial must keep to be the best
    (:mod:`studies.constraints`); {} = none."""
    text: str
    """The file as written (kept in the study so a report can show what was searched)."""
    sections: dict[str, str]
    """A digest of each section that decides what the trials compute and how they are chosen (all but ``trials``,
    ``timeout_s``, ``storage`` and ``study``): a study refuses to go on under a sweep that changed one."""


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
    grid = sampler["type"] == "grid"  # every cell of the space once: no pruning, no baseline unless asked
    pruner = _typed_section(raw.get("pruner", {"type": "none" if grid else "median"}), PRUNERS, f"{where}: pruner")
    _check_kinds(sampler, SAMPLERS[sampler["type"]], f"{where}: sampler")
    _check_kinds(pruner, PRUNERS[pruner["type"]], f"{where}: pruner")
    storage = raw.get("storage") or {}
    if not isinstance(storage, dict):
        raise ConfigError(f"{where}: storage must be a mapping with any of {sorted(STORAGE_KEYS)}")
    _unknown(storage, STORAGE_KEYS, f"{where}: storage")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: fixed must be a mapping of config key -> value")
    space = _parse_space(raw["space"], f"{where}: space")
    if grid:  # checked here, not when a worker first builds the sampler; a grid's size is its default trials
        cells = math.prod(len(v) for v in grid_values(space, f"{where}: space").values())
        trials = trials or cells
    tie_break = raw.get("tie_break")
    if tie_break is not None and not (isinstance(tie_break, dict) and set(tie_break) == {"metric", "weight"}
                                      and isinstance(tie_break["metric"], str)):
        raise ConfigError(f"{where}: tie_break must be a mapping {{metric: NAME, weight: NUMBER}}")
    if tie_break is not None:
        _number(tie_break, "weight", f"{where}: tie_break", integer=False)
    baseline = bool(raw.get("baseline", not grid))
    constraints = parse_constraints(raw.get("constraints"), where, baseline)
    study = str(raw.get("study", path.stem))
    if not STUDY_NAME.fullmatch(study):
        raise ConfigError(f"{where}: study: {short(study)} is not a plain name (letters, digits, . _ -; it names the "
                          "study dir runs/studies/<study>)")
    sweep = Sweep(path=path, study=study, experiment=str(raw["experiment"]),
                  preset=str(raw.get("preset", "default")), metric=str(raw["metric"]), direction=direction,
                  trials=trials, timeout_s=float(timeout) if timeout else None, sampler=sampler, pruner=pruner,
                  storage=storage, fixed=fixed, space=space, baseline=baseline,
                  tie_break=tie_break, constraints=constraints, text=text, sections=section_digests(raw))
    if make_config is not None:
        check_against_config(sweep, make_config)
    return sweep


def section_digests(raw: dict) -> dict[str, str]:
    """``{section: sha256 of its canonical JSON}`` for the sections of a sweep that define its study."""
    import hashlib
    import json

    return {key: hashlib.sha256(json.dumps(raw[key], sort_keys=True, default=str).encode()).hexdigest()[:16]
            for key in sorted(raw) if key not in ("trials", "timeout_s", "storage", "study")}


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
