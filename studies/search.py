"""An Optuna study from a sweep: its sampler and pruner, created once (before any worker starts: two workers
creating one study at once race) or loaded, with the preset's own values queued as the baseline trial."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.config import RESUME_MAY_CHANGE
from common.errors import ConfigError
from studies.constraints import best_trial
from studies.space import baseline_params, cell_covered, check_choices, grid_values, suggest
from studies.storage import lazy_optuna, open_storage, redact
from studies.study_dir import trial_dir
from studies.sweep import Sweep

ENQUEUE_MAY_DIFFER = (*RESUME_MAY_CHANGE, "run.threads", "run.device", "preset")
"""Keys in which an enqueued config may differ from the trial that runs it: where things are, not what is computed."""


def portable(overrides: dict) -> dict:
    """A trial's recorded overrides without where things were on the machine that ran it (its data dir, tracking,
    threads): what it computed, to train again on this one (a study resumed from a committed journal, say)."""
    return {k: v for k, v in overrides.items() if not k.startswith(ENQUEUE_MAY_DIFFER)}  # as changed_keys ignores


def make_sampler(spec: dict, seed_offset: int = 0, space: list | None = None):
    """TPE (seeded by default), random, CMA-ES, a Gaussian process or a grid over ``space``. ``seed_offset`` keeps
    workers (and resumed runs) from proposing the same points: each gets ``seed + offset``."""
    optuna = lazy_optuna()

    kwargs = {k: v for k, v in spec.items() if k != "type"}
    kind = spec["type"]
    if kind == "grid":  # every cell once; the seed shuffles which grid id is which cell, so every worker and
        # every resume must share it (an offset would map the ids already run to other cells: holes and repeats)
        return optuna.samplers.GridSampler(grid_values(space or [], "space"), **kwargs)
    if kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + seed_offset
    if kind == "random":
        return optuna.samplers.RandomSampler(**kwargs)
    # CMA-ES and GP model the numeric parameters they see in every trial; categorical or conditional ones are
    # sampled independently (randomly), which is expected here, so the per-trial warning is off.
    if kind == "cmaes":  # needs the `cmaes` package (a dependency)
        return optuna.samplers.CmaEsSampler(warn_independent_sampling=False, **kwargs)
    if kind == "gp":  # Optuna's GP-based Bayesian optimisation (torch + scipy): suits a small continuous space
        return optuna.samplers.GPSampler(warn_independent_sampling=False, **kwargs)
    return optuna.samplers.TPESampler(**kwargs)


def make_pruner(spec: dict):
    optuna = lazy_optuna()

    kwargs = {k: v for k, v in spec.items() if k != "type"}
    kind = spec["type"]
    if kind == "median":
        return optuna.pruners.MedianPruner(**kwargs)
    if kind == "hyperband":  # brackets of successive halving (Li et al. 2018); rungs at min_resource * rf^k epochs
        return optuna.pruners.HyperbandPruner(**kwargs)
    if kind == "successive_halving":  # asynchronous SH (ASHA, Li et al. 2020): one bracket
        return optuna.pruners.SuccessiveHalvingPruner(**kwargs)
    return optuna.pruners.NopPruner()


def create_or_load_study(sweep: Sweep, storage, seed_offset: int = 0, baseline_cfg=None):
    """Create the study if it does not exist (call this once, before workers start), else load it. A new study
    gets ``baseline_cfg`` (the preset + fixed overrides) queued as its first trial when the sweep asks."""
    optuna = lazy_optuna()

    study = optuna.create_study(study_name=sweep.study, storage=storage, direction=sweep.direction,
                                load_if_exists=True, sampler=make_sampler(sweep.sampler, seed_offset, sweep.space),
                                pruner=make_pruner(sweep.pruner))
    attrs = study.user_attrs
    if "experiment" not in attrs:
        study.set_user_attr("experiment", sweep.experiment)
        study.set_user_attr("metric", sweep.metric)
        study.set_user_attr("sweep_yaml", sweep.text)
        study.set_metric_names([sweep.metric])  # the dashboard's axes say val/score, not "Objective 0"
        if sweep.baseline and baseline_cfg is not None:
            study.enqueue_trial(baseline_params(sweep.space, baseline_cfg), user_attrs={"baseline": True})
    elif attrs["experiment"] != sweep.experiment or attrs.get("metric") != sweep.metric:
        raise ConfigError(f"study {sweep.study!r} in this storage searches {attrs['experiment']}/"
                          f"{attrs.get('metric')}, but {sweep.path} says {sweep.experiment}/{sweep.metric}; "
                          "use another storage or study name")
    if study.direction.name.lower() != sweep.direction:
        raise ConfigError(f"study {sweep.study!r} was created to {study.direction.name.lower()}, "
                          f"but {sweep.path} says {sweep.direction}")
    check_same_study(study, sweep, baseline_cfg)
    return study


NEW_STUDY = "start a new study with --study-name NAME (or another --out)"


def check_same_study(study, sweep: Sweep, baseline_cfg) -> None:
    """A study goes on only under the sweep and the fixed settings (the sweep's ``fixed``, ``--set``) it was
    created with: otherwise its new trials would compute something else than its old ones (a trial is even
    answered from an old one with the same parameters) and the report would rank both together. The first run
    records both (as does the first run after an update, for a study created before)."""
    from common.config import changed_keys, flatten, to_dict

    attrs = study.user_attrs
    then = attrs.get("sweep_sections")
    if isinstance(then, dict):
        differ = sorted(k for k in set(then) | set(sweep.sections) if then.get(k) != sweep.sections.get(k))
        if differ:
            raise ConfigError(f"{sweep.path} changed since study {sweep.study!r} was created (its {', '.join(differ)} "
                              f"differ); restore the file to go on, or {NEW_STUDY}")
    else:
        study.set_user_attr("sweep_sections", sweep.sections)
    if baseline_cfg is None:
        return
    now = to_dict(baseline_cfg)
    then = attrs.get("fixed_config")
    if isinstance(then, dict):
        differ = changed_keys(then, now, prefix="", ignore=ENQUEUE_MAY_DIFFER)
        if differ:
            old, new = flatten(then), flatten(now)
            shown = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in differ[:4])
            raise ConfigError(f"study {sweep.study!r} was run with {shown}: a study's fixed settings (the sweep's "
                              f"fixed and --set) are part of it; resume with the same --set, or {NEW_STUDY}")
    else:
        study.set_user_attr("fixed_config", now)


def requeue_grid_cells(study, sweep: Sweep) -> list[dict]:
    """Queue again the grid cells a failed trial ran (a Ctrl-C, a crash) that no other trial finished, runs or
    waits for: ``GridSampler`` counts a failed cell as visited and would never run it again, so a resumed grid
    study would end with holes. Returns the cells queued."""
    import itertools

    from optuna.trial import TrialState

    if sweep.sampler["type"] != "grid":
        return []
    trials = study.get_trials(deepcopy=False)
    sampler = make_sampler(sweep.sampler, space=sweep.space)

    def cell_of(t) -> dict:
        """A failed trial's cell: its params, or, stopped before it asked for one (a Ctrl-C as it started), the
        cell of the grid id GridSampler gave it (the sampler's own lookup; every worker's is seeded alike)."""
        grid_id = t.system_attrs.get("grid_id")
        return t.params or ({} if grid_id is None else dict(zip(sampler._param_names, sampler._all_grids[grid_id])))

    failed = [cell for cell in (cell_of(t) for t in trials if t.state == TrialState.FAIL) if cell]
    live = [t.params or t.system_attrs.get("fixed_params", {}) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)]
    grid = grid_values(sweep.space, f"{sweep.path}: space")
    cells = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if failed else []
    missing = [cell for cell in cells if any(cell_covered(cell, params) for params in failed)
               and not any(cell_covered(cell, params) for params in live)]
    for cell in missing:
        study.enqueue_trial(cell, user_attrs={"requeued_cell": True})
    return missing


def grid_cells_left(study, sweep: Sweep) -> bool:
    """Whether a grid study still has a cell for a new trial: a queued (re-queued) cell, or a grid id no trial has
    taken. Once every cell has started, ``GridSampler`` gives a new trial a cell that another worker still runs
    (a duplicate, seen with 2 workers); a worker asks this first and stops instead."""
    import math

    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    taken = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
    return len(taken) < math.prod(len(v) for v in grid_values(sweep.space, f"{sweep.path}: space").values())


def check_grid_cells(sweep: Sweep, experiment) -> None:
    """Every cell of a grid sweep is a valid config with its fixed settings (and ``--set``): refused before
    anything trains, naming the cell, where the worker would prune it and the grid would end with a hole (a
    tutorial ``--set model.widths=[12,24]`` left no group-norm cell, and its report had nothing to show)."""
    import itertools

    from optuna.trial import FixedTrial

    from common.config import apply_overrides

    if sweep.sampler["type"] != "grid":
        return
    grid = grid_values(sweep.space, f"{sweep.path}: space")
    for values in itertools.product(*grid.values()):
        cell = dict(zip(grid, values))
        try:
            apply_overrides(experiment.make_config(sweep.preset), {**sweep.fixed,
                                                                   **suggest(FixedTrial(cell), sweep.space)})
        except ConfigError as e:
            shown = ", ".join(f"{k}={v}" for k, v in cell.items())
            raise ConfigError(f"{sweep.path}: the grid cell {shown} is not a valid config with the fixed settings "
                              f"and --set given ({e}); change the --set (nothing was trained)") from None


def params_of_config(sweep: Sweep, experiment, path: Path) -> dict:
    """The study parameters that make a trial run the config in ``path`` (a ``config.json``, or a run dir such
    as an earlier study's trial), for ``--enqueue``. Refused, naming the keys, when that config differs from the
    sweep's preset and fixed values outside the searched keys: the trial would not run it."""
    from optuna.trial import FixedTrial

    from common.config import apply_overrides, changed_keys, to_dict
    from exercises import config_from_file

    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ConfigError(f"--enqueue {path}: no such config file; give a run dir or its config.json")
    cfg = config_from_file(experiment, file)
    params = baseline_params(sweep.space, cfg)
    check_choices(params, sweep.space, f"--enqueue {file}")
    expected = apply_overrides(experiment.make_config(sweep.preset), {**sweep.fixed,
                                                                      **suggest(FixedTrial(params), sweep.space)})
    differ = changed_keys(to_dict(cfg), to_dict(expected), prefix="", ignore=ENQUEUE_MAY_DIFFER)
    if differ:
        raise ConfigError(f"--enqueue {file} differs from the sweep's preset {sweep.preset!r} and fixed values in "
                          f"keys it does not search ({', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''}); "
                          "search them, fix them with --set, or enqueue another config")
    return params


def load_study(sweep: Sweep, url: str, storage=None):
    """An existing study (for reports and summaries); a clear error when the storage does not hold it."""
    optuna = lazy_optuna()
    try:
        return optuna.load_study(study_name=sweep.study, storage=storage or open_storage(url, sweep.storage))
    except KeyError:
        raise ConfigError(f"no study named {sweep.study!r} in {redact(url)}: run it first "
                          f"(python -m experiments.run {sweep.experiment} --study ...)") from None


def state_counts(study) -> dict[str, int]:
    """Trials by state, e.g. ``{"complete": 12, "pruned": 14, "fail": 0, ...}`` (every state, zeros included)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}


def finished_count(study) -> int:
    counts = state_counts(study)
    return counts["complete"] + counts["pruned"]


def study_summary(study) -> dict:
    """Counts by state and the best trial, for printing after a run (the report has the details)."""
    counts = state_counts(study)
    out: dict[str, Any] = {"study": study.study_name, "trials": sum(counts.values()),
                           **{k: v for k, v in counts.items() if v}}
    best = best_trial(study)
    if best is not None:
        out.update(best_trial=best.number, best_value=best.value, best_params=best.params)
    return out


def print_summary(study, study_dir: Path) -> dict:
    """Print counts, the best trial and its run dir; the last line is one JSON object."""
    s = study_summary(study)
    print(f"study {s['study']}: {s['trials']} trials ("
          + ", ".join(f"{s[k]} {k}" for k in ("complete", "pruned", "fail", "running", "waiting") if k in s) + ")")
    if "best_value" in s:
        print(f"best: trial {s['best_trial']}  value {s['best_value']:.4g}  params {json.dumps(s['best_params'])}")
        print(f"  run dir: {trial_dir(study_dir, s['best_trial'])}")
    print(json.dumps(s))
    return s
