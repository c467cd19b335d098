"""The tutorial's ablations as grid studies: a ``sweeps/tutorial-*.yaml`` grid (variant x seed) is written into
the tutorial's dir with the seeds and the budget filled in (that file is the record of what ran), run like any
study (resumable, ``--workers``, any storage) and summarised per variant as mean +- sd over the seeds."""
from __future__ import annotations

from pathlib import Path

from common.errors import ConfigError
from common.files.atomic import atomic_write_text

BUDGETS = {
    "quick": {"model.convs_per_block": 1, "train.epochs": 8, "train.eval_every": 8, "train.eval_all_from": 1.0},
    "default": {},
}
"""Overrides on each sweep's ``default`` preset: ``quick`` (one conv per block, 8 epochs, one val score at the
end: every cell of all three grids, 3 seeds, in the tutorial's time budget; RESULTS.md) or the default recipe."""


def grid_sweep(name: str, seeds: list[int], budget: str, out: Path, extra: dict | None = None) -> Path:
    """``out/sweeps/<name>.yaml``: the shipped grid with ``run.seed`` over ``seeds`` and ``extra`` (the
    budget's overrides, ``--set``) in ``fixed``. An existing file must say the same: a re-run with other seeds,
    budget or overrides would mix cells of two experiments in one study."""
    import yaml

    from common.files.safe_yaml import load_yaml
    from studies.sweep import SWEEPS_DIR

    spec = load_yaml(SWEEPS_DIR / f"{name}.yaml", "sweep file")
    spec["space"]["run.seed"] = {"type": "categorical", "choices": list(seeds)}
    spec["fixed"] = {**(spec.get("fixed") or {}), **(extra or {})}
    text = (f"# written by the tutorial from sweeps/{name}.yaml: seeds {','.join(map(str, seeds))}, budget "
            f"{budget}\n" + yaml.safe_dump(spec, sort_keys=False))
    path = Path(out) / "sweeps" / f"{name}.yaml"
    if path.is_file() and path.read_text() != text:
        raise ConfigError(f"{path} was written for other seeds, budget or data; give another --out, or the same "
                          "--seeds and --budget as that run")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def check_grid(name: str, extra: dict, data_dir: str | None) -> None:
    """Every cell of the shipped grid ``name`` is a valid config with ``extra`` (the budget, ``--set``) fixed:
    refused now, naming the cell, rather than pruned mid-tutorial (its section would have nothing to show)."""
    from studies.search import check_grid_cells
    from studies.sweep import SWEEPS_DIR
    from studies.workers import open_sweep

    sweep, exp = open_sweep(str(SWEEPS_DIR / f"{name}.yaml"))
    sweep.fixed = {**sweep.fixed, **extra, **({"data.data_dir": data_dir} if data_dir else {})}
    check_grid_cells(sweep, exp)


def run_grid(sweep_path: Path, study_dir: Path, workers: int, overrides: list[str]) -> int:
    """Train the grid's cells that have not finished (a re-run trains only what is missing)."""
    from studies.workers import run_study

    return run_study("ex09", str(sweep_path), overrides, out=study_dir, workers=workers)


def cells(sweep_path: Path, study_dir: Path) -> list[dict]:
    """One row per variant (the grid's parameters but the seed): the seeds' val scores and run dirs, their mean
    +- sd, the model's parameters and its training seconds per epoch (each seed's run summary, mean)."""
    import statistics

    from optuna.trial import TrialState

    from common.files.json_files import read_json
    from studies.search import load_study
    from studies.storage import default_storage
    from studies.study_dir import trial_dir
    from studies.sweep import load_sweep

    study = load_study(load_sweep(sweep_path), default_storage(study_dir))
    rows: dict[tuple, dict] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "duplicate_of" in t.user_attrs:
            continue  # a twin cell (a parameter its 'when' switched off): the same run as the one it names
        variant = tuple((k, v) for k, v in sorted(t.params.items()) if k != "run.seed")
        summary = read_json(trial_dir(study_dir, t.number) / "summary.json") or {}
        row = rows.setdefault(variant, {"variant": dict(variant), "seeds": {}, "runs": {},
                                        "params": summary.get("params"), "s_per_epoch": []})
        if t.params["run.seed"] in row["seeds"]:
            continue  # a cell two workers ran at once (a rare race at a grid's end): its first run counts
        row["seeds"][t.params["run.seed"]] = t.value
        row["runs"][t.params["run.seed"]] = trial_dir(study_dir, t.number)
        if summary.get("wall_s") and summary.get("epochs"):
            row["s_per_epoch"].append(summary["wall_s"] / summary["epochs"])
    out = []
    for row in rows.values():
        values = [row["seeds"][s] for s in sorted(row["seeds"])]
        row["mean"] = statistics.fmean(values)
        row["sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["s_per_epoch"] = statistics.fmean(row["s_per_epoch"]) if row["s_per_epoch"] else None
        out.append(row)
    return out
