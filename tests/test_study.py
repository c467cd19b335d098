"""Optuna studies end to end on a real SQLite storage, in this process or through the real CLI: trials train the
real ex09/ex08 code on small synthetic data, with real W&B offline files read back."""
from __future__ import annotations

import json

import pytest

from helpers import check_invariants, cli, load, write_ae_sweep, write_sweep
from studies.sweep import load_sweep
from wandb_records import read_run

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402


@pytest.mark.slow
def test_study_runs_trials_with_wandb_runs_and_a_report(synthetic_data_dir, tmp_path):
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir)
    out = tmp_path / "study"
    r = cli("ex09", "--study", sweep, "--out", out, "--trials", 3)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    study = load(f"sqlite:///{out / 'study.db'}")
    finished = check_invariants(study, 3)
    assert summary["complete"] + summary.get("pruned", 0) == len(finished)
    first = study.trials[0]
    assert first.user_attrs["baseline"] and first.params == {"depth": 2, "model.widths[0]": 16,
                                                             "model.widths[1]": 32, "train.lr": 2e-3}
    for t in study.trials:
        # The trial's run dir holds a normal run, and its overrides reproduce its config.
        run_cfg = json.loads((out / f"trial-{t.number:04d}" / "config.json").read_text())
        assert run_cfg["model"]["widths"] == t.user_attrs["overrides"]["model.widths"]
        records = [read_run(p) for p in (out / f"trial-{t.number:04d}" / "wandb").glob("offline-run-*")]
        assert len(records) == 1, "one W&B run per trial"
        rec = records[0]
        assert rec["run"]["group"] == "t" and rec["run"]["name"] == f"t-{t.number}"
        assert rec["config"]["trial"]["params"] == pytest.approx(t.params)
        assert rec["config"]["train"]["lr"] == pytest.approx(t.params["train.lr"])
        scores = [h["val/score"] for h in rec["history"] if "val/score" in h]
        assert scores == pytest.approx(list(t.intermediate_values.values()), rel=1e-9)
        assert rec["summary"]["trial/state"] == t.state.name.lower()
        if t.state == TrialState.COMPLETE:
            assert rec["summary"]["trial/value"] == pytest.approx(t.value) and rec["exit_code"] == 0

    # Re-running the same command with a higher target resumes: old trials kept, numbering goes on.
    values = {t.number: t.value for t in finished}
    r = cli("ex09", "--study", sweep, "--out", out, "--trials", 4)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load(f"sqlite:///{out / 'study.db'}")
    check_invariants(study, 4)
    assert {t.number: t.value for t in study.trials if t.number in values} == values

    r = cli("report", "--study", sweep, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    report = (out / "report.md").read_text()
    best = study.best_trial
    assert f"Trial **{best.number}**" in report and "Baseline" in report and "saved by pruning" in report
    assert (out / "study_history.png").stat().st_size > 5000 and (out / "study_intermediate.png").is_file()

    r = cli("report", "--study", sweep, "--out", out, "--retrain-best", "--set", "train.epochs=1", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    retrained = json.loads((out / "best-retrain" / "summary.json").read_text())
    assert retrained["epochs"] == 1 and retrained["val/score"] > 0
    retrained_cfg = json.loads((out / "best-retrain" / "config.json").read_text())
    assert retrained_cfg["model"]["widths"] == best.user_attrs["overrides"]["model.widths"]


def test_nan_trials_are_pruned_with_a_reason_and_the_study_goes_on(synthetic_data_dir, tmp_path):
    from experiments.run import main

    sweep = write_sweep(tmp_path / "nan.yaml", synthetic_data_dir, baseline=False, fixed={"train.lr": 1e30},
                        space={"train.weight_decay": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}})
    out = tmp_path / "nan"
    assert main(["ex09", "--study", str(sweep), "--out", str(out), "--trials", "2"]) == 0
    study = load(f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    for t in study.trials:
        assert "non-finite loss" in t.user_attrs["reason"] and "lower train.lr" in t.user_attrs["reason"]
        rec = read_run(next((out / f"trial-{t.number:04d}" / "wandb").glob("offline-run-*")))
        assert rec["summary"]["trial/state"] == "pruned" and "non-finite" in rec["summary"]["trial/reason"]


@pytest.mark.slow  # 7 s; the NaN-pruning study stays in the fast loop
def test_pruner_stops_bad_trials_and_saves_epochs(synthetic_data_dir, tmp_path):
    """A learning rate too small to learn anything in the budget trails the median and is pruned early."""
    from experiments.run import main
    from studies.report import compute_stats

    sweep = write_sweep(tmp_path / "p.yaml", synthetic_data_dir, baseline=False,
                        fixed={"train.epochs": 6, "train.ema_decay": 0.0},
                        sampler={"type": "tpe", "seed": 0, "n_startup_trials": 10},
                        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
                        space={"train.lr": {"type": "categorical", "choices": [3e-3, 2.9e-3, 1e-9]}})
    out = tmp_path / "p"
    study_url = f"sqlite:///{out / 'study.db'}"
    from studies.search import create_or_load_study
    from studies.storage import open_storage
    study = create_or_load_study(load_sweep(sweep), open_storage(study_url))
    for lr in (3e-3, 2.9e-3, 1e-9):  # two that learn (not one twice: a repeat is answered, not trained)
        study.enqueue_trial({"train.lr": lr})
    assert main(["ex09", "--study", str(sweep), "--out", str(out), "--trials", "3"]) == 0
    study = load(study_url)
    states = [(t.params["train.lr"], t.state) for t in study.trials]
    assert states == [(3e-3, TrialState.COMPLETE), (2.9e-3, TrialState.COMPLETE), (1e-9, TrialState.PRUNED)]
    pruned = study.trials[2]
    assert "pruner stopped it after 2 of 6 evaluations" in pruned.user_attrs["reason"]
    stats = compute_stats(study)
    assert stats["evals_run"] == 6 + 6 + 2 and stats["evals_saved"] == 4
    assert stats["fraction_saved"] == pytest.approx(4 / 18)


@pytest.mark.slow  # 7 s; the ex09 studies stay in the fast loop
def test_ex08_study_reports_val_accuracy_per_classifier_epoch(synthetic_mnist, tmp_path):
    from experiments.run import main

    sweep = write_ae_sweep(tmp_path / "ae.yaml", synthetic_mnist)
    out = tmp_path / "ae"
    assert main(["ex08", "--study", str(sweep), "--out", str(out)]) == 0
    study = load(f"sqlite:///{out / 'study.db'}", "ae-tiny")
    check_invariants(study, 2)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and len(t.intermediate_values) == 3 + 2 == t.user_attrs["planned_evals"]
        summary = json.loads((out / f"trial-{t.number:04d}" / "summary.json").read_text())
        assert t.value == summary["val/acc"] and 0.0 <= t.value <= 1.0
        rec = read_run(next((out / f"trial-{t.number:04d}" / "wandb").glob("offline-run-*")))
        assert rec["run"]["name"] == f"ae-tiny-{t.number}"
        assert [h["teacher/val/acc"] for h in rec["history"] if "teacher/val/acc" in h] == \
            pytest.approx(list(t.intermediate_values.values())[3:])


def test_a_config_only_the_run_can_refuse_is_pruned_as_infeasible(synthetic_mnist, tmp_path):
    """A pretraining batch larger than the unlabeled pool: no step at all. The run refuses it (ConfigError);
    the study prunes the trial with that reason rather than failing it."""
    from experiments.run import main

    sweep = write_ae_sweep(tmp_path / "ae.yaml", synthetic_mnist, **{"pretrain.batch_size": 512})
    out = tmp_path / "ae"
    assert main(["ex08", "--study", str(sweep), "--out", str(out), "--trials", "1"]) == 0
    (trial,) = load(f"sqlite:///{out / 'study.db'}", "ae-tiny").trials
    assert trial.state == TrialState.PRUNED
    reason = trial.user_attrs["reason"]
    assert "infeasible config" in reason and "pretrain.batch_size=512" in reason


def test_a_model_over_the_course_limits_is_pruned_as_infeasible(synthetic_data_dir, tmp_path):
    from experiments.run import main

    # a flatten head on >= 16x6x6 features x 16000 hidden units: > 9M parameters
    sweep = write_sweep(tmp_path / "big.yaml", synthetic_data_dir, baseline=False, fixed={"model.head": "flatten",
                                                                                         "model.head_hidden": 16000})
    out = tmp_path / "big"
    assert main(["ex09", "--study", str(sweep), "--out", str(out), "--trials", "1"]) == 0
    (trial,) = load(f"sqlite:///{out / 'study.db'}").trials
    assert trial.state == TrialState.PRUNED and "infeasible model" in trial.user_attrs["reason"]
    assert "fewer than 5,000,000" in trial.user_attrs["reason"]


@pytest.mark.slow
@pytest.mark.realdata
def test_shipped_kp_sweep_runs_on_the_real_data(real_data, tmp_path):
    """The shipped sweep, short: the baseline trial (the default recipe) and one sampled trial, 2 epochs each."""
    out = tmp_path / "kp"
    r = cli("ex09", "--study", "kp", "--data-dir", real_data, "--out", out, "--trials", 2,
            "--set", "train.epochs=2", "track.mode=disabled", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(f"sqlite:///{out / 'study.db'}", "kp")
    check_invariants(study, 2)
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] and baseline.state == TrialState.COMPLETE
    first, second = baseline.intermediate_values.values()
    # the value is the best epoch's model scored with its shifted test-time views, which per-epoch scores skip
    assert second > first and baseline.value == pytest.approx(second, rel=0.05), "it learns; best epoch reported"


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp"])
def test_a_three_trial_study_completes_with_each_sampler(sampler, synthetic_data_dir, tmp_path):
    """Every sampler the sweep format offers runs a real study. One startup trial, so trials 2 and 3 come from
    the sampler's own model (CMA-ES, the GP, TPE), where a missing dependency would show."""
    from experiments.run import main

    spec = {"type": sampler, "seed": 0} | ({} if sampler == "random" else {"n_startup_trials": 1})
    sweep = write_sweep(tmp_path / f"{sampler}.yaml", synthetic_data_dir, sampler=spec, baseline=False,
                        pruner={"type": "none"}, fixed={"train.epochs": 1},
                        space={"train.lr": {"type": "float", "low": 1e-3, "high": 4e-3, "log": True},
                               "train.weight_decay": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}})
    out = tmp_path / sampler
    assert main(["ex09", "--study", str(sweep), "--out", str(out), "--trials", "3"]) == 0
    study = load(f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    points = {(t.params["train.lr"], t.params["train.weight_decay"]) for t in study.trials}
    assert len(points) == 3, "the sampler proposed three different points"


def test_ctrl_c_inside_a_sqlite_query_leaves_the_study_writable(tmp_path):
    """Python's own Ctrl-C (a process without our handlers, which hold it until the storage call is over: see
    test_study_workers) that lands right after a SELECT ran must not leave the interrupted connection holding
    the write lock: the next write waited 120 s in CI."""
    import sqlite3

    from sqlalchemy import event

    from studies.storage import open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1.0})
    armed = [True]

    @event.listens_for(storage.engine, "after_cursor_execute")
    def _ctrl_c(_conn, _cursor, statement, *_):
        if armed[0] and statement.lstrip().upper().startswith("SELECT"):
            armed[0] = False
            raise KeyboardInterrupt  # where a real SIGINT surfaces: Python code right after the C call

    with pytest.raises(KeyboardInterrupt):
        study.get_trials(deepcopy=False)
    other = sqlite3.connect(tmp_path / "s.db", timeout=1, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # "database is locked" after 1 s if the interrupted query still holds it
    other.execute("ROLLBACK")
    other.close()
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.WAITING]


@pytest.mark.slow  # ~25 s: a grid interrupted by Ctrl-C, then resumed
def test_a_grid_study_runs_every_cell_once_and_resumes_the_interrupted_one(synthetic_data_dir, tmp_path):
    """A ``sampler: grid`` sweep (Optuna's GridSampler) trains each cell of norm x seed once; a parameter that
    ``when`` switches off does not make a cell of its own; a cell interrupted by Ctrl-C (FAIL, which the grid
    counts as visited) is queued again by the re-run, and the cells that finished are not trained again."""
    from helpers import interrupt_when, trials_of

    space = {"model.norm": {"type": "categorical", "choices": ["batch", "none"]},
             "model.norm_groups": {"type": "categorical", "choices": [2, 4], "when": {"model.norm": "group"}},
             "run.seed": {"type": "categorical", "choices": [0, 1]}}
    sweep = write_sweep(tmp_path / "g.yaml", synthetic_data_dir, sampler={"type": "grid", "seed": 0}, trials=None,
                        pruner={"type": "none"}, space=space, fixed={"train.epochs": 3})
    assert load_sweep(sweep).trials == 8 and not load_sweep(sweep).baseline, "2 x 2 x 2 cells, no baseline"
    out, url = tmp_path / "g", f"sqlite:///{tmp_path / 'g' / 'study.db'}"
    code, err = interrupt_when(["ex09", "--study", sweep, "--out", out],
                               lambda: any(t.state == TrialState.COMPLETE for t in trials_of(url))
                               and any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials_of(url)),
                               "a finished cell and a running one")
    assert code == 130, err[-2000:]
    before = {t.number: (t.params, t.value) for t in trials_of(url) if t.state == TrialState.COMPLETE}
    assert any(t.state == TrialState.FAIL for t in trials_of(url))
    r = cli("ex09", "--study", sweep, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(url)
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    cells = sorted((t.params["model.norm"], t.params["run.seed"]) for t in trained)
    assert cells == [("batch", 0), ("batch", 1), ("none", 0), ("none", 1)], "each cell trained exactly once"
    assert {n: (t.params, t.value) for n, t in ((t.number, t) for t in study.trials) if n in before} == before
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 8, "twins answered, not trained"


@pytest.mark.slow  # ~30 s
def test_two_workers_on_a_grid_train_each_cell_once(synthetic_data_dir, tmp_path):
    """Once every cell has started, Optuna's GridSampler hands a free worker a cell the other worker still runs
    (seen in the tutorial's grids: 31 trials for 30 cells); the worker stops instead, so each cell runs once."""
    space = {"train.epochs": {"type": "categorical", "choices": [1, 12]},
             "run.seed": {"type": "categorical", "choices": [0, 1, 2]}}
    # Grid seed 5 puts a 12-epoch cell last and a 1-epoch cell before it: a worker is free while the last one runs.
    sweep = write_sweep(tmp_path / "g.yaml", synthetic_data_dir, sampler={"type": "grid", "seed": 5}, trials=None,
                        pruner={"type": "none"}, space=space)
    out = tmp_path / "g"
    r = cli("ex09", "--study", sweep, "--out", out, "--workers", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(f"sqlite:///{out / 'study.db'}")
    cells = sorted((t.params["train.epochs"], t.params["run.seed"]) for t in study.trials)
    assert cells == [(e, s) for e in (1, 12) for s in (0, 1, 2)], "each cell exactly once"
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_grid_cell_whose_trial_failed_before_asking_for_a_value_is_queued_again(synthetic_data_dir, tmp_path):
    """A Ctrl-C right as a grid trial starts leaves it FAIL with a grid id but no params (seen in CI: the resumed
    tutorial's norms grid ended with a hole); its cell is queued again, the one the grid id stands for."""
    import optuna

    from studies.search import make_sampler, requeue_grid_cells

    grid = {"model.norm": {"type": "categorical", "choices": ["batch", "group", "none"]},
            "train.batch_size": {"type": "categorical", "choices": [8, 32]}}
    sweep = load_sweep(write_sweep(tmp_path / "g.yaml", synthetic_data_dir, sampler={"type": "grid", "seed": 3},
                                   space=grid))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'g.db'}", study_name="g",
                                sampler=make_sampler(sweep.sampler, space=sweep.space))
    ran = []

    def objective(trial):  # five cells run, then a trial is stopped before its first suggest
        if len(ran) == 5:
            raise KeyboardInterrupt
        ran.append({name: trial.suggest_categorical(name, spec["choices"]) for name, spec in grid.items()})
        return 1.0
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=6)
    stopped = study.trials[-1]
    assert stopped.state == TrialState.FAIL and stopped.params == {} and "grid_id" in stopped.system_attrs
    hole = [{"model.norm": n, "train.batch_size": b} for n in ("batch", "group", "none") for b in (8, 32)
            if {"model.norm": n, "train.batch_size": b} not in ran]
    assert requeue_grid_cells(study, sweep) == hole and len(hole) == 1
    assert study.trials[-1].state == TrialState.WAITING and requeue_grid_cells(study, sweep) == [], "queued once"
