"""Optuna studies end to end on real storages (SQLite, a journal file, a PostgreSQL server), real worker
processes, real W&B offline files; the trials train the real ex09/ex08 code on small synthetic data."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common.config import ConfigError
from common.sweep import SWEEPS_DIR, baseline_params, load_sweep, suggest
from common.wandb_records import read_run
from conftest import REPO

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402


def write_sweep(path: Path, data_dir: Path, *, fixed=None, space=None, **top) -> Path:
    """A seconds-per-trial ex09 sweep on the synthetic faces."""
    spec = {"study": "t", "experiment": "ex09", "preset": "quick", "metric": "val_score", "direction": "maximize",
            "trials": 3, "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
            "storage": {"heartbeat_s": 1, "grace_s": 4},  # short, yet past a loaded CI's stalls
            "fixed": {"data.data_dir": str(data_dir), "model.widths": [16, 32], "model.head_hidden": 32, "train.epochs": 2,
                      "train.batch_size": 16, "train.ema_decay": 0.9, "train.threads": 1, "track.mode": "offline",
                      **(fixed or {})},
            "space": space or {"depth": {"type": "int", "low": 1, "high": 2},
                               "model.widths": {"type": "list", "length": "depth",
                                                "item": {"type": "int", "low": 8, "high": 24, "step": 8}},
                               "train.lr": {"type": "float", "low": 1e-3, "high": 4e-3, "log": True}}}
    spec.update(top)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(*args, timeout=300, env=None) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process (as a user, or a worker on another machine, would start it)."""
    return subprocess.run([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def load(url: str, name: str = "t"):
    from common.study import open_storage
    return optuna.load_study(study_name=name, storage=open_storage(url))


def check_invariants(study, target: int) -> list:
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "trial numbers must be unique"
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], "no trial may stay RUNNING"
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= target
    return finished


# --- sweep files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,experiment", [("kp", "ex09"), ("ae", "ex08")])
def test_shipped_sweeps_are_valid_against_their_configs(name, experiment):
    from experiments.registry import get_experiment

    sweep = load_sweep(SWEEPS_DIR / f"{name}.yaml", get_experiment(experiment).make_config)
    assert sweep.experiment == experiment and sweep.study == name and len(sweep.space) >= 10


@pytest.mark.parametrize("mutate,message", [
    (lambda s: s.update(colour="red"), "unknown key 'colour'"),
    (lambda s: s.pop("metric"), "missing required key 'metric'"),
    (lambda s: s.update(direction="up"), "direction='up' is not valid"),
    (lambda s: s["space"].update({"train.lrr": {"type": "float", "low": 1e-3, "high": 1e-2}}),
     "'train.lrr' is not a key of the ex09 config"),
    (lambda s: s["fixed"].update({"train.epochs": "many"}), "train.epochs: expected an integer"),
    (lambda s: s["space"].update({"train.lr": {"type": "float", "low": 1e-2, "high": 1e-3}}), "is above high"),
    (lambda s: s["space"].update({"train.lr": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}),
     "log=true needs low > 0"),
    (lambda s: s["space"].update({"train.lr": {"type": "float", "low": 1e-3}}), "space.train.lr.high=None"),
    (lambda s: s["space"].update({"train.lr": {"type": "gaussian"}}), "space.train.lr.type='gaussian'"),
    (lambda s: s["space"].update({"train.lr": {"type": "float", "low": "1e-3", "high": 1.0}}), "write 1.0e-3"),
    (lambda s: s["space"].update({"model.head": {"type": "categorical", "choices": [[1, 2]]}}), "not a scalar"),
    (lambda s: s["space"].update({"model.kernel": {"type": "int", "low": 3, "high": 5, "when": {"arch": "cnn"}}}),
     "'arch' is not a parameter defined above"),
    (lambda s: s["space"].update({"width": {"type": "int", "low": 3, "high": 5}}), "no other parameter uses it"),
    (lambda s: s["space"]["model.widths"].update(length="train.lr"), "must name an int parameter"),
    (lambda s: s.update(sampler={"type": "grid"}), "sampler.type='grid'"),
    (lambda s: s.update(pruner={"type": "median", "patience": 3}), "unknown key 'patience'"),
    (lambda s: s.update(trials=0), "trials=0 must be a positive integer"),
])
def test_bad_sweeps_name_the_bad_key(tmp_path, mutate, message):
    from experiments.registry import get_experiment

    path = write_sweep(tmp_path / "s.yaml", tmp_path)
    spec = yaml.safe_load(path.read_text())
    mutate(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_sweep(path, get_experiment("ex09").make_config)


def test_invalid_yaml_and_the_cli_exit_code(tmp_path, capsys):
    from experiments.run import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("study: t\nspace: {depth: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(bad)
    assert main(["ex09", "--study", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    assert main(["ex09", "--study", "no-such-sweep"]) == 2
    assert "known: ae, kp" in capsys.readouterr().err
    ex08_sweep = write_sweep(tmp_path / "x.yaml", tmp_path)
    assert main(["ex08", "--study", str(ex08_sweep)]) == 2
    assert "is a sweep of ex09" in capsys.readouterr().err


def test_conditional_and_list_parameters_and_the_baseline_round_trip():
    from ex09_keypoints.config import make_config

    sweep = load_sweep(SWEEPS_DIR / "kp.yaml")
    cnn = dict(baseline_params(sweep.space, make_config("default")))
    assert cnn["depth"] == 3 and [cnn[f"model.widths[{i}]"] for i in range(3)] == [48, 96, 192]
    overrides = suggest(optuna.trial.FixedTrial(cnn), sweep.space)
    cfg = make_config("default")
    assert overrides["model.widths"] == cfg.model.widths and overrides["train.lr"] == cfg.train.lr
    assert "depth" not in overrides  # a helper, not a config key
    timm = {k: v for k, v in cnn.items() if k in ("model.head_hidden", "model.head_dropout") or k.startswith(
        ("train.", "augment."))}
    timm["model.arch"] = "timm:lcnet_050"
    overrides = suggest(optuna.trial.FixedTrial(timm), sweep.space)
    assert overrides["model.arch"] == "timm:lcnet_050"
    assert not any(k in overrides for k in ("model.widths", "model.kernel", "model.head")), "conditional on cnn"


@pytest.mark.parametrize("sampler,pruner,classes", [
    ({"type": "tpe", "seed": 3, "multivariate": True}, {"type": "median", "n_warmup_steps": 2},
     ("TPESampler", "MedianPruner")),
    ({"type": "random", "seed": 3}, {"type": "hyperband", "min_resource": 1, "max_resource": 12}, ("RandomSampler",
                                                                                                 "HyperbandPruner")),
    ({"type": "cmaes", "seed": 3}, {"type": "none"}, ("CmaEsSampler", "NopPruner")),
])
def test_samplers_and_pruners_from_the_sweep(tmp_path, sampler, pruner, classes):
    from common.study import make_pruner, make_sampler

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", tmp_path, sampler=sampler, pruner=pruner))
    assert (type(make_sampler(sweep.sampler)).__name__, type(make_pruner(sweep.pruner)).__name__) == classes
    # Seeded samplers: the same offset proposes the same point, another offset (worker, resume) another one.
    def first_lr(offset):
        study = optuna.create_study(sampler=make_sampler(sweep.sampler, offset))
        return suggest(study.ask(), sweep.space)["train.lr"]
    assert first_lr(0) == first_lr(0) != first_lr(1)


def test_unreachable_storage_and_misplaced_flags_are_clear_errors(capsys):
    from experiments.run import main

    assert main(["ex09", "--study", "kp", "--storage", "postgresql+psycopg2://me:topsecret@127.0.0.1:1/optuna"]) == 2
    err = capsys.readouterr().err
    assert "cannot open study storage postgresql+psycopg2://me:***@127.0.0.1:1/optuna" in err
    assert "topsecret" not in err
    assert main(["ex09", "--study", "kp", "--preset", "quick"]) == 2
    assert "--preset does not apply to --study" in capsys.readouterr().err


def test_redact_hides_storage_passwords():
    from common.study import redact

    assert "hunter2" not in redact("postgresql+psycopg2://me:hunter2@db.example:5432/optuna")
    assert redact("postgresql+psycopg2://me:hunter2@db.example:5432/optuna").endswith("@db.example:5432/optuna")
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


# --- running studies -----------------------------------------------------------------------------------------

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
    assert retrained["epochs"] == 1 and retrained["val_score"] > 0
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


def test_pruner_stops_bad_trials_and_saves_epochs(synthetic_data_dir, tmp_path):
    """A learning rate too small to learn anything in the budget trails the median and is pruned early."""
    from common.study_report import compute_stats
    from experiments.run import main

    sweep = write_sweep(tmp_path / "p.yaml", synthetic_data_dir, baseline=False,
                        fixed={"train.epochs": 6, "train.ema_decay": 0.0},
                        sampler={"type": "tpe", "seed": 0, "n_startup_trials": 10},
                        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
                        space={"train.lr": {"type": "categorical", "choices": [3e-3, 1e-9]}})
    out = tmp_path / "p"
    study_url = f"sqlite:///{out / 'study.db'}"
    from common.study import create_or_load_study, open_storage
    study = create_or_load_study(load_sweep(sweep), open_storage(study_url))
    for lr in (3e-3, 3e-3, 1e-9):
        study.enqueue_trial({"train.lr": lr})
    assert main(["ex09", "--study", str(sweep), "--out", str(out), "--trials", "3"]) == 0
    study = load(study_url)
    states = [(t.params["train.lr"], t.state) for t in study.trials]
    assert states == [(3e-3, TrialState.COMPLETE), (3e-3, TrialState.COMPLETE), (1e-9, TrialState.PRUNED)]
    pruned = study.trials[2]
    assert "pruner stopped it after 2 of 6 evaluations" in pruned.user_attrs["reason"]
    stats = compute_stats(study)
    assert stats["evals_run"] == 6 + 6 + 2 and stats["evals_saved"] == 4
    assert stats["fraction_saved"] == pytest.approx(4 / 18)


@pytest.mark.parametrize("storage", ["sqlite", "journal", "postgres"])
def test_two_workers_share_one_study(storage, synthetic_data_dir, tmp_path, request):
    url = {"sqlite": f"sqlite:///{tmp_path / 'w.db'}", "journal": f"journal:///{tmp_path / 'w.log'}"}.get(storage)
    if storage == "postgres":
        url = request.getfixturevalue("postgres_url")
    sweep = write_sweep(tmp_path / "w.yaml", synthetic_data_dir, trials=6)
    r = cli("ex09", "--study", sweep, "--out", tmp_path / "w", "--workers", 2, "--storage", url)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "s3cret-pw" not in r.stdout + r.stderr, "the storage password must never be printed"
    study = load(url)
    finished = check_invariants(study, 6)
    assert len(finished) <= 6 + 1, "workers stop at the target (one may overshoot by the trial it was running)"
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2, "both workers ran trials"
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == len(complete), "no duplicated points"


def _wait_for(predicate, timeout_s: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _trials(url):
    try:
        return load(url).get_trials(deepcopy=False)
    except Exception:  # the study is not created yet
        return []


def test_sigkilled_worker_loses_nothing_and_the_study_resumes(synthetic_data_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    sweep = write_sweep(tmp_path / "k.yaml", synthetic_data_dir, trials=5, fixed={"train.epochs": 12})
    args = [sys.executable, "-m", "experiments.run", "ex09", "--study", str(sweep), "--out", str(tmp_path / "k"),
            "--workers", "2", "--storage", url]
    with (tmp_path / "first.log").open("w") as log:  # a file, not a pipe nobody reads (a full one blocks)
        parent = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        # Kill one worker while it is mid-trial, after at least one trial has finished.
        def victim():
            trials = _trials(url)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("pid")
                       and t.intermediate_values]
            return (done, running[0]) if done and running else None
        done, running = _wait_for(victim, 240, "a finished trial and a running one")
        os.kill(running.user_attrs["pid"], signal.SIGKILL)
        parent.wait(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()
    finished_before = {t.number: t.value for t in _trials(url) if t.state == TrialState.COMPLETE}
    assert set(t.number for t in done) <= set(finished_before)

    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)  # the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(url)
    check_invariants(study, 5)
    killed = study.trials[running.number]
    assert killed.state == TrialState.FAIL
    assert retries_of(study, running.number) == [killed.params], "the killed trial's parameters are queued again"
    assert {t.number: t.value for t in study.trials if t.number in finished_before} == finished_before


def retries_of(study, number: int) -> list[dict]:
    """Params of the trials queued to retry trial ``number``. The killed trial may itself be a retry (a worker
    stalled on a loaded machine can lose its trial to the heartbeat check): then ``failed_trial`` names the
    first of the chain, and ``retry_history`` lists them all."""
    return [t.params for t in study.trials if t.system_attrs.get("retry_history", [None])[-1] == number]


def test_a_worker_whose_trial_is_taken_over_goes_on(synthetic_data_dir, tmp_path):
    """A worker frozen for longer than the grace period (SIGSTOP here: a suspended laptop, a stalled database)
    comes back to find another worker failed and re-queued its trial. It must not crash: it drops that trial
    and goes on, and the study finishes."""
    from common.study import open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    sweep = write_sweep(tmp_path / "s.yaml", synthetic_data_dir, trials=2, fixed={"train.epochs": 8})
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "ex09", "--study", str(sweep), "--out",
                             str(tmp_path / "s"), "--storage", url], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        running = _wait_for(lambda: [t for t in _trials(url) if t.state == TrialState.RUNNING
                                     and t.intermediate_values], 180, "a running trial")[0]
        proc.send_signal(signal.SIGSTOP)
        time.sleep(6)  # > grace_s (4 s in write_sweep): the heartbeat is stale now
        # What any other worker does before it asks for a trial (Optuna's own stale check and retry callback).
        other = optuna.load_study(study_name="t", storage=open_storage(url, {"heartbeat_s": 1, "grace_s": 4}))
        optuna.storages.fail_stale_trials(other)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"trial {running.number} was marked FAIL by another worker" in err
    study = load(url)
    check_invariants(study, 2)
    taken = study.trials[running.number]
    assert taken.state == TrialState.FAIL
    # It was the queued baseline, whose widths [16, 32] lie outside the sweep's 8..24: Optuna's retry callback
    # cannot re-create such a trial; ours queues it as enqueue_trial does, and it ran with the same values.
    assert taken.user_attrs.get("baseline") and taken.params["model.widths[1]"] == 32
    assert retries_of(study, running.number) == [taken.params]
    assert [t.number for t in study.trials if t.state == TrialState.FAIL] == [running.number]


def interrupt_when(args: list, ready, what: str, timeout_s: float = 90) -> tuple[int, str]:
    """Start the CLI with ``args``, send it SIGINT once ``ready()`` holds; returns (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, 180, what)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_ctrl_c_marks_the_running_trial_and_exits(synthetic_data_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    sweep = write_sweep(tmp_path / "c.yaml", synthetic_data_dir, trials=3, fixed={"train.epochs": 40})
    code, err = interrupt_when(["ex09", "--study", sweep, "--out", tmp_path / "c", "--storage", url],
                               lambda: any(t.state == TrialState.RUNNING and t.intermediate_values
                                           for t in _trials(url)), "a running trial", timeout_s=60)
    assert code == 130, err[-2000:]
    assert "Re-run the same command to resume" in err
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert trials[0].user_attrs["reason"] == "interrupted (Ctrl-C)"


def write_ae_sweep(path: Path, data_dir: Path, **fixed) -> Path:
    """A seconds-per-trial ex08 sweep on the synthetic digits (256 unlabeled images)."""
    path.write_text(yaml.safe_dump({
        "study": "ae-tiny", "experiment": "ex08", "preset": "leaderboard", "metric": "val_acc", "trials": 2,
        "sampler": {"type": "random", "seed": 1}, "pruner": {"type": "none"},
        "fixed": {"data.data_dir": str(data_dir), "data.max_unlabeled": 256, "model.hidden": [64],
                  "model.latent": 16, "model.head_hidden": [16], "pretrain.epochs": 1, "pretrain.batch_size": 64,
                  "teacher.unlabeled_batch": 64, "run.threads": 1, "transfer.epochs": 3,
                  "transfer.samples_per_epoch": 64, "teacher.epochs": 2, "teacher.unlabeled_per_epoch": 256,
                  "track.mode": "offline", **fixed},
        "space": {"transfer.lr_head": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True}}}))
    return path


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
        assert t.value == summary["val_acc"] and 0.0 <= t.value <= 1.0
        rec = read_run(next((out / f"trial-{t.number:04d}" / "wandb").glob("offline-run-*")))
        assert rec["run"]["name"] == f"ae-tiny-{t.number}"
        assert [h["teacher/val_acc"] for h in rec["history"] if "teacher/val_acc" in h] == \
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
    sweep = write_sweep(tmp_path / "big.yaml", synthetic_data_dir, baseline=False, fixed={"model.head_hidden": 16000})
    out = tmp_path / "big"
    assert main(["ex09", "--study", str(sweep), "--out", str(out), "--trials", "1"]) == 0
    (trial,) = load(f"sqlite:///{out / 'study.db'}").trials
    assert trial.state == TrialState.PRUNED and "infeasible model" in trial.user_attrs["reason"]
    assert "fewer than 5,000,000" in trial.user_attrs["reason"]


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
    assert second > first and baseline.value == pytest.approx(second, rel=1e-6), "it learns; best epoch reported"


def test_interrupting_the_parent_stops_its_workers_cleanly(synthetic_data_dir, tmp_path):
    """SIGINT to the parent alone (kill -INT, not a terminal's Ctrl-C) reaches its workers: each marks its
    running trial and exits, nothing stays RUNNING."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    sweep = write_sweep(tmp_path / "i.yaml", synthetic_data_dir, trials=6, fixed={"train.epochs": 1000},
                        pruner={"type": "none"})  # trials far longer than the 10 s the parent waits
    def both_running():
        running = [t.number for t in _trials(url) if t.state == TrialState.RUNNING and t.intermediate_values]
        return running if len(running) == 2 else None
    code, err = interrupt_when(["ex09", "--study", sweep, "--out", tmp_path / "i", "--storage", url,
                                "--workers", 2], both_running, "both workers mid-trial")
    assert code == 130, err[-2000:]
    trials = _trials(url)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["reason"] == "interrupted (Ctrl-C)" for t in failed)
    assert {t.user_attrs["worker"] for t in failed} == {0, 1}


POP_SCRIPT = """
import json, sys, time
sys.path.insert(0, {repo!r})
from common.study import open_storage
import optuna
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="race", storage=open_storage({url!r}))
while time.time() < {start}:
    time.sleep(0.001)
got = []
for _ in range({per_worker}):
    trial = study.ask()
    got.append(trial.number)
    study.tell(trial, 0.0)
print(json.dumps(got))
"""


def test_sqlite_hands_each_queued_trial_to_one_worker_only(tmp_path):
    """Without SELECT ... FOR UPDATE, workers popping queued (WAITING) trials at once could both get the same
    one; the BEGIN IMMEDIATE hook makes popping atomic."""
    from common.study import open_storage

    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for i in range(60):
        study.enqueue_trial({"x": float(i)}, skip_if_exists=False)
    start = time.time() + 4
    script = POP_SCRIPT.format(repo=str(REPO), url=url, start=start, per_worker=15)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1500:] for _, err in results]
    numbers = [n for out, _ in results for n in json.loads(out)]
    assert len(numbers) == 60 and len(set(numbers)) == 60, "a queued trial was handed to two workers"
