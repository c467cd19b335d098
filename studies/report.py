"""What a study found: ``report.md`` and PNGs in the study dir, and retraining the best trial as a normal run.

Compute accounting: every trial records how many evaluations (pruner steps, usually epochs) it ran and how
many a full run plans; what pruned trials did not run is the compute pruning saved.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from common.config import apply_overrides, format_override
from common.errors import ConfigError
from common.files.atomic import atomic_write_text
from studies.artifacts import fetch_best_artifacts
from studies.confirm import confirm_lines
from studies.constraints import best_trial, constraint_lines, cost_figure, describe, is_feasible
from studies.search import portable, state_counts


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def compute_stats(study) -> dict[str, Any]:
    """Counts by state, evaluations (epochs) run vs saved by pruning, trial wall time."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = state_counts(study)
    run = sum(int(t.user_attrs.get("evals_run", 0)) for t in trials)
    saved = sum(max(0, int(t.user_attrs.get("planned_evals", 0)) - int(t.user_attrs.get("evals_run", 0)))
                for t in trials if t.state == TrialState.PRUNED and "planned_evals" in t.user_attrs)
    walls = [float(t.user_attrs["wall_s"]) for t in trials if "wall_s" in t.user_attrs]
    return {"counts": counts, "evals_run": run, "evals_saved": saved,
            "answered": sum("duplicate_of" in t.user_attrs for t in trials),
            "fraction_saved": saved / (run + saved) if run + saved else 0.0,
            "trial_wall_s": sum(walls), "trials": len(trials)}


def rung_steps(pruner: dict, last: int) -> list[int]:
    """The pruner steps (epochs trained) where early values are compared with final ones: a Hyperband or
    successive-halving sweep's rungs (min_resource * reduction_factor^k), else 1/9 and 1/3 of the way."""
    if pruner.get("type") in ("hyperband", "successive_halving") and isinstance(pruner.get("min_resource"), int):
        rf = int(pruner.get("reduction_factor", 3 if pruner["type"] == "hyperband" else 4))
        steps, step = [], max(1, pruner["min_resource"])
        while step < last:
            steps.append(step)
            step *= max(2, rf)
        return steps
    return sorted({s for s in (last // 9, last // 3) if 0 < s < last})


def rung_correlations(study, pruner: dict) -> list[dict]:
    """Over complete trials: the Spearman rank correlation between each rung's value (the first reported at or
    after it) and the trial's final value. High: the rungs predict the end and pruning there is safe; low: the
    pruner stops trials that would have won (raise min_resource)."""
    from optuna.trial import TrialState
    from scipy.stats import spearmanr

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
                and t.intermediate_values and t.value is not None]
    if not complete:
        return []
    out = []
    for step in rung_steps(pruner, max(max(t.intermediate_values) for t in complete)):
        pairs = [(t.intermediate_values[min(s for s in t.intermediate_values if s >= step)], t.value)
                 for t in complete if max(t.intermediate_values) >= step]
        rho = None
        if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
            rho = float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
        out.append({"epochs": step, "trials": len(pairs), "spearman": rho})
    return out


def _rung_lines(study, pruner: dict) -> list[str]:
    rows = rung_correlations(study, pruner)
    if not rows:
        return []
    lines = ["## Do early epochs predict the end?", "",
             "Spearman rank correlation, over complete trials, between the value after so many epochs and the "
             "final value (1: the same order).", "", "| epochs trained | trials | Spearman |", "|---|---|---|"]
    for r in rows:
        rho = "n/a (< 3 trials that differ)" if r["spearman"] is None else f"{r['spearman']:.2f}"
        lines.append(f"| {r['epochs']} | {r['trials']} | {rho} |")
    weak = [r for r in rows if r["spearman"] is not None and r["spearman"] < 0.5]
    if weak:
        lines += ["", f"**Warning**: after {weak[0]['epochs']} epochs the order is a poor guide to the end "
                      f"(Spearman {weak[0]['spearman']:.2f} < 0.5): pruning there may stop winners; raise the "
                      "pruner's min_resource."]
    return lines + [""]


def _figures(study, study_dir: Path) -> dict[str, str]:
    """Optuna's matplotlib plots; a plot that cannot be drawn yet (too few trials) is reported, not raised."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    plots = {"study_history.png": ovm.plot_optimization_history,
             "study_importances.png": ovm.plot_param_importances,
             "study_intermediate.png": ovm.plot_intermediate_values}
    out: dict[str, str] = {}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning on every matplotlib plot
                ax = plot(study)
            fig = (ax if hasattr(ax, "savefig") else getattr(ax, "figure", None) or ax.flat[0].figure)
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(study_dir / name, dpi=100)
            plt.close(fig)
            out[name] = "ok"
        except Exception as e:  # e.g. importances need 2+ complete trials with varying parameters
            out[name] = f"not drawn: {type(e).__name__}: {str(e)[:160]}"
    return out


def write_report(study, study_dir: str | Path, best_files: dict[str, Path] | None = None,
                 pruner: dict | None = None, constraints: dict | None = None) -> Path:
    """Write ``report.md`` (+ PNGs) into ``study_dir``; returns its path. ``best_files``: the best trial's files
    fetched from the artifact store; ``pruner``: the sweep's pruner (where its rungs are); ``constraints``: its
    cost limits (the best trial is the best within them)."""
    from optuna.trial import TrialState

    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    stats = compute_stats(study)
    metric = study.user_attrs.get("metric", "value")
    direction = study.direction.name.lower()
    lines = [f"# Study `{study.study_name}`", "",
             f"Experiment **{study.user_attrs.get('experiment', '?')}**, {direction} **{metric}**. "
             f"{stats['trials']} trials: " + ", ".join(f"{n} {k}" for k, n in stats["counts"].items() if n) + ".", ""]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    constraints = constraints or {}
    best = best_trial(study)
    if best is not None:
        within = f" within the constraints ({describe(constraints)})" if constraints else ""
        lines += ["## Best trial" + within, "",
                  f"Trial **{best.number}**: {metric} = **{best.value:.4g}** "
                  f"({best.user_attrs.get('evals_run', '?')} evaluations, {best.user_attrs.get('wall_s', 0):.0f} s), "
                  f"run dir `trial-{best.number:04d}/`.", "",
                  "| parameter | value |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt(v)} |" for k, v in best.params.items()]
        baseline = [t for t in complete if t.user_attrs.get("baseline")]
        if baseline:
            b = baseline[0]
            lines += ["", f"Baseline (the preset's own values under the same fixed budget, trial {b.number}): "
                          f"{metric} = {b.value:.4g}; the best trial is "
                          f"{'at' if best.number == b.number else f'{best.value - b.value:+.4g} against'} it."]
        overrides = best.user_attrs.get("overrides", {})
        lines += ["", "Its config overrides (retrain with `python -m experiments.run report --study "
                  f"{study.study_name} --retrain-best`):", "", "```",
                  " ".join(format_override(k, v) for k, v in overrides.items()), "```", ""]
    else:
        lines += [f"No complete trial keeps the sweep's constraints ({describe(constraints)})." if complete
                  else "No complete trial yet.", ""]
    lines += ["## Compute", "",
              f"- evaluations (epochs) run: {stats['evals_run']}; saved by pruning: {stats['evals_saved']} "
              f"(**{stats['fraction_saved']:.0%}** of what running every trial to the end would have cost)",
              f"- trials answered from an earlier trial with the same parameters (not trained): {stats['answered']}",
              f"- trial wall time: {stats['trial_wall_s'] / 3600:.2f} h in all", ""]
    ranked = sorted(complete, key=lambda t: t.value, reverse=direction == "maximize")[:10]
    if ranked:
        lines += ["## Top trials", "", f"| trial | {metric} | evals | wall s | projected wall s | feasible | params |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {t.number} | {t.value:.4g} | {t.user_attrs.get('evals_run', '?')} | "
                  f"{t.user_attrs.get('wall_s', 0):.0f} | {_fmt(t.user_attrs.get('projected_wall_s', ''))} | "
                  f"{'yes' if is_feasible(t) else 'no: ' + _fmt(max(t.constraints.values()))} | "
                  + ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()) + " |" for t in ranked]
        lines.append("")
    lines += constraint_lines(study, constraints)
    lines += _rung_lines(study, pruner or {})
    lines += confirm_lines(study_dir)
    stopped = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.PRUNED, TrialState.FAIL)]
    if stopped:
        lines += ["## Pruned and failed trials", "", "| trial | state | reason |", "|---|---|---|"]
        lines += [f"| {t.number} | {t.state.name.lower()} | {t.user_attrs.get('reason', '')[:200]} |"
                  for t in stopped]
        lines.append("")
    figures = _figures(study, study_dir)
    if "wall_s" in constraints:
        figures["study_cost.png"] = cost_figure(study, study_dir / "study_cost.png", constraints)
    if best_files:
        lines += ["## The best trial's files (from the artifact store)", ""]
        lines += [f"- [`{name}`]({path.relative_to(study_dir) if path.is_relative_to(study_dir) else path})"
                  for name, path in best_files.items()] + [""]
    lines += ["## Figures", ""]
    for name, status in figures.items():
        lines.append(f"![{name}]({name})" if status == "ok" else f"- {name}: {status}")
    path = study_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def retrain_best(study, sweep, experiment, out_dir: Path, overrides: list[str], progress: bool = True,
                 overwrite: bool = False) -> dict:
    """Train the best trial's config (its recorded overrides, then ``overrides``) as a normal run."""
    best = best_trial(study)
    if best is None:
        raise ConfigError(f"study {study.study_name} has no complete trial (within its constraints) to retrain")
    cfg = experiment.make_config(sweep.preset)
    apply_overrides(cfg, {**dict(sweep.fixed), **portable(best.user_attrs.get("overrides", {}))})
    cfg.run.threads = 0  # a normal run: all cores, unless --set run.threads=N says otherwise
    apply_overrides(cfg, overrides)
    cfg.track.group, cfg.track.name = sweep.study, f"{sweep.study}-best-retrain"
    print(f"[report] retraining trial {best.number} ({sweep.metric} {best.value:.4g}) into {out_dir}")
    summary = experiment.train(cfg, out_dir, overwrite=overwrite, progress=progress)
    print(f"[report] retrained: {sweep.metric} {summary[sweep.metric]:.4g} (the trial had {best.value:.4g})")
    return summary


REPORT_WAIT_S = 5.0


def _busy_errors() -> tuple[type, ...]:
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import OperationalError
    return StorageInternalError, OperationalError


def report_study(study_name_or_file: str, overrides: list[str], *, out: Path | None = None,
                 storage: str | None = None, retrain: bool = False, overwrite: bool = False, progress: bool = True,
                 artifacts: Path | None = None, confirm: int | None = None, seeds: list[int] | None = None,
                 workers: int = 1, worker_index: int | None = None, worker_threads: int | None = None,
                 study_name: str | None = None) -> int:
    """``python -m experiments.run report``: write the report (and retrain the best trial, or confirm the top
    ``confirm`` trials on ``seeds`` in ``workers`` processes, when asked)."""
    import json

    from studies.cores import check_workers
    from studies.search import load_study
    from studies.storage import storage_url
    from studies.study_dir import check_study_dir, claim_study_dir, study_dir_of
    from studies.workers import open_sweep

    if (overrides and not (retrain or confirm)) or (overwrite and not retrain):
        raise ConfigError("--set, --data-dir and --overwrite apply to --retrain-best only (--set and --data-dir to "
                          "--confirm too); add one or drop them")
    if confirm is not None and confirm < 1:  # checked before the study is read: 0 would silently confirm nothing
        raise ConfigError(f"--confirm {confirm}: give how many of the top trials to confirm (>= 1)")
    if seeds and not confirm:
        raise ConfigError("--seeds applies to --confirm K only; add it or drop --seeds")
    if confirm and retrain:
        raise ConfigError("--confirm and --retrain-best are two ways to retrain; give one")
    if workers != 1 and not confirm:
        raise ConfigError("--workers applies to --confirm K only; add it or drop --workers")
    check_workers(workers)
    sweep, exp = open_sweep(study_name_or_file, study_name=study_name)
    study_dir = study_dir_of(sweep, out)
    check_study_dir(study_dir, sweep.study)  # report.md and its figures go into a study's own dir only
    url = storage_url(storage, study_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no study storage at {url[len('sqlite:///'):]}: run the study first, or pass "
                          "--out/--storage where it lives")
    from studies.storage import open_storage
    busy = _busy_errors()
    try:  # a report waits seconds, not minutes, for a storage another process holds (then says so)
        study = load_study(sweep, url, open_storage(url, sweep.storage, wait_s=REPORT_WAIT_S))
        study.get_trials(deepcopy=False)
    except busy as e:
        if "locked" not in str(e):
            raise
        from studies.storage import busy_error
        raise busy_error(url, REPORT_WAIT_S) from None
    claim_study_dir(study_dir, sweep.study)
    if confirm and worker_index is not None:  # a --workers process started below: its share of the candidates
        from studies.confirm import train_share
        train_share(study, sweep, exp, study_dir, confirm, seeds, overrides, worker_index, workers, worker_threads)
        return 0
    best_files = {}
    store_dir = Path(artifacts or study_dir / "artifacts")
    if store_dir.is_dir() and any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        from studies.storage import artifact_store

        best_files = fetch_best_artifacts(study, artifact_store(store_dir), study_dir / "best-trial")
        for name, path in best_files.items():
            print(f"best trial's {name}: {path}")
    if confirm:
        from studies import confirm as confirming

        result = confirming.confirm(study, sweep, exp, study_dir, confirm, seeds or [0, 1, 2], overrides, progress,
                                    workers, url)
        print(f"confirm: {study_dir / 'confirm' / 'confirm.json'}; {study_dir / 'confirm' / 'best-config.json'}")
        print(result["verdict"])
    print(f"report: {write_report(study, study_dir, best_files, sweep.pruner, sweep.constraints)}")
    for png in sorted(study_dir.glob("study_*.png")):
        print(f"figure: {png}")
    if retrain:
        from common.run.run_files import check_replaceable

        if overwrite:  # refused now if it is not ours; replaced after the run's own checks
            check_replaceable(study_dir / "best-retrain")
        summary = retrain_best(study, sweep, exp, study_dir / "best-retrain", overrides, progress=progress,
                               overwrite=overwrite)
        print(json.dumps({k: summary.get(k) for k in (sweep.metric, "params", "epochs", "wall_s") if k in summary}))
    return 0
