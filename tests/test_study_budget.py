"""Studies at the real budget: rung-based pruners stop trials at the epochs they are set to, a known config can be
queued first, a parameter set that already ran is answered from its trial, and the report says whether early
epochs predict the end. Real Optuna studies (SQLite, worker processes), real training on synthetic faces."""
from __future__ import annotations

import json

import pytest
import yaml

from helpers import cli, load, trials_of, write_sweep

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402


@pytest.mark.slow
def test_successive_halving_stops_trials_at_its_rungs_in_epochs(synthetic_data_dir, tmp_path):
    """Two workers, 8 epochs a trial, rungs after 2 and 4 epochs trained (min_resource 2, factor 2): every
    pruned trial stopped at a rung, evaluated after every epoch or not (the pruner's step is the epoch)."""
    url = f"sqlite:///{tmp_path / 'sh.db'}"
    sweep = write_sweep(tmp_path / "sh.yaml", synthetic_data_dir, trials=8,
                        fixed={"train.epochs": 8, "train.eval_every": 2, "train.eval_all_from": 1.0},
                        pruner={"type": "successive_halving", "min_resource": 2, "reduction_factor": 2},
                        space={"train.lr": {"type": "float", "low": 1e-5, "high": 4e-3, "log": True}})
    r = cli("ex09", "--study", sweep, "--out", tmp_path / "sh", "--storage", url, "--workers", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = trials_of(url)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete, [t.state for t in trials]
    # evaluations after epochs 1, 3, 5, 7 (eval_every 2): steps are epochs, the rungs 2 and 4 are met at 3 and 5
    assert all(sorted(t.intermediate_values) == [1, 3, 5, 7] for t in complete)
    assert {max(t.intermediate_values) for t in pruned} <= {3, 5}, "stopped at a rung, never between"
    assert all("pruner stopped it" in t.user_attrs["reason"] for t in pruned)
    report = cli("report", "--study", sweep, "--out", tmp_path / "sh", "--storage", url)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "sh" / "report.md").read_text()
    assert "## Do early epochs predict the end?" in text and "| 2 |" in text and "| 4 |" in text


@pytest.mark.slow
def test_enqueue_runs_a_given_config_first_and_refuses_one_it_would_not_run(synthetic_data_dir, tmp_path, capsys):
    from helpers import run_main

    space = {"train.lr": {"type": "float", "low": 1e-3, "high": 4e-3, "log": True}}
    first = write_sweep(tmp_path / "a.yaml", synthetic_data_dir, trials=1, baseline=False, space=space)
    assert cli("ex09", "--study", first, "--out", tmp_path / "a").returncode == 0
    earlier = load(f"sqlite:///{tmp_path / 'a' / 'study.db'}").trials[0]
    # another study starts from that trial's run dir: its first trial runs exactly that config
    code, _, err = run_main(["ex09", "--study", first, "--out", tmp_path / "b", "--trials", 1,
                             "--enqueue", tmp_path / "a" / "trial-0000"], capsys)
    assert code == 0, err
    (trial,) = load(f"sqlite:///{tmp_path / 'b' / 'study.db'}").trials
    assert trial.params == earlier.params and trial.user_attrs["enqueued"].endswith("trial-0000")
    assert json.loads((tmp_path / "b" / "trial-0000" / "config.json").read_text())["train"]["lr"] == \
        json.loads((tmp_path / "a" / "trial-0000" / "config.json").read_text())["train"]["lr"]
    # a config that differs in a key the sweep does not search would not be what the trial runs: refused
    config = json.loads((tmp_path / "a" / "trial-0000" / "config.json").read_text())
    config["train"]["batch_size"] = 8
    (tmp_path / "other.json").write_text(json.dumps(config))
    code, _, err = run_main(["ex09", "--study", first, "--out", tmp_path / "c", "--enqueue", tmp_path / "other.json"],
                            capsys)
    assert code == 2 and "train.batch_size" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists(), "checked before the study is created"
    code, _, err = run_main(["ex09", "--enqueue", tmp_path / "other.json"], capsys)
    assert code == 2 and "applies to a study only" in err


@pytest.mark.slow
def test_a_parameter_set_that_already_ran_is_answered_not_trained(synthetic_data_dir, tmp_path):
    """Two choices, four trials: the sampler must repeat itself, and a repeat costs no training."""
    sweep = write_sweep(tmp_path / "d.yaml", synthetic_data_dir, trials=4, baseline=False, pruner={"type": "none"},
                        space={"train.lr": {"type": "categorical", "choices": [0.002, 0.003]}})
    r = cli("ex09", "--study", sweep, "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr[-3000:]
    trials = load(f"sqlite:///{tmp_path / 'd' / 'study.db'}").trials
    twins = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(twins) >= 2 and "answered from trial" in r.stderr
    for t in twins:
        original = trials[t.user_attrs["duplicate_of"]]
        assert t.params == original.params and t.value == original.value and t.state == TrialState.COMPLETE
        assert not (tmp_path / "d" / f"trial-{t.number:04d}").exists(), "not trained again"


def test_rung_correlation_is_spearman_over_complete_trials():
    """A real in-memory study whose early order is the final order at epoch 4 and reversed at epoch 1."""
    from optuna.distributions import FloatDistribution

    from studies.report import rung_correlations, rung_steps

    study = optuna.create_study(direction="maximize")
    for i, final in enumerate([1.0, 2.0, 3.0, 4.0]):
        study.add_trial(optuna.trial.create_trial(
            params={"x": float(i)}, distributions={"x": FloatDistribution(0, 10)}, value=final,
            intermediate_values={0: 0.0, 1: 10.0 - final, 4: final / 2, 9: final}))
    assert rung_steps({"type": "hyperband", "min_resource": 1, "reduction_factor": 2}, 9) == [1, 2, 4, 8]
    rows = {r["epochs"]: r for r in rung_correlations(study, {"type": "hyperband", "min_resource": 1,
                                                              "reduction_factor": 2})}
    assert rows[1]["spearman"] == pytest.approx(-1.0) and rows[4]["spearman"] == pytest.approx(1.0)
    assert rows[2]["spearman"] == pytest.approx(1.0), "a rung between reports reads the next one reported (4)"
    assert rows[1]["trials"] == 4


def test_the_confirm_verdict_is_about_the_best_challenger_also_when_the_preset_ranks_first():
    from studies.confirm import rank

    def row(name, values, study_value=None):
        return {"name": name, "values": values, "mean": sum(values) / len(values), "sd": 1.0,
                "study_value": study_value, "figures": {"wall_s": 100.0}}

    rows = [row("preset", [500.0, 510.0, 496.0]), row("trial-0018", [505.0, 482.0, 469.0], 505.0),
            row("trial-0007", [470.0, 460.0, 465.0], 490.0)]
    out = rank(rows, "val/score", 1, [0, 1, 2])
    assert out["winner"] == "preset" and not out["beats_preset"]
    assert out["verdict"].startswith("the preset ranks first; trial-0018 does not beat the preset"), out["verdict"]
    assert "preset does not beat the preset" not in out["verdict"]
    assert out["winners_curse"] == pytest.approx(505.0 - 485.333, abs=1e-3), "the challenger's, not the preset's"
    assert out["verdict"].endswith("the study's value of it overstated its confirmed mean by 19.67"), out["verdict"]
    assert [r["name"] for r in rows] == ["preset", "trial-0018", "trial-0007"]
    assert rows[1]["paired_diff"]["values"] == pytest.approx([5.0, -28.0, -27.0])

    rows = [row("preset", [500.0, 510.0, 496.0]), row("trial-0003", [520.0, 528.0, 519.0], 530.0)]
    out = rank(rows, "val/score", 1, [0, 1, 2])
    assert out["winner"] == "trial-0003" and out["beats_preset"], "+20.3 paired, sd 1.5"
    assert out["verdict"].startswith("trial-0003 beats the preset by more than the paired sd")
    lower = rank([row("preset", [0.20, 0.21]), row("trial-0001", [0.10, 0.12], 0.09)], "val/loss", -1, [0, 1])
    assert lower["winner"] == "trial-0001" and lower["beats_preset"], "minimize: the lower loss wins"
    assert lower["verdict"].endswith("overstated its confirmed mean by 0.02"), "a loss below its mean overstates"


@pytest.mark.slow
def test_confirm_ranks_the_top_trials_against_the_preset_and_its_best_config_reproduces(synthetic_data_dir,
                                                                                         tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from common.plots import read_metrics
    from helpers import REPO, ctrl_c_works, wait_for
    from studies.cores import threads_per_worker

    sweep = write_sweep(tmp_path / "c.yaml", synthetic_data_dir, trials=3, pruner={"type": "none"},
                        fixed={"train.epochs": 3})
    assert cli("ex09", "--study", sweep, "--out", tmp_path / "c").returncode == 0
    confirm = ["report", "--study", sweep, "--out", tmp_path / "c", "--confirm", 2, "--seeds", "0,1",
               "--no-progress", "--workers", 2, "--set", "train.epochs=8"]  # the full budget of this tiny study, say
    # Ctrl-C in the middle, to the process group as a terminal sends it (parent and workers at once): the same
    # command goes on, keeping the seeds that finished
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *map(str, confirm)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works,
                            start_new_session=True)
    finished = tmp_path / "c" / "confirm" / "preset" / "seed-0" / "summary.json"
    try:
        wait_for(lambda: (tmp_path / "c" / "confirm" / "preset" / "seed-1" / "last.pt").is_file(), 240,
                 "the preset's second seed under way")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    before = finished.stat().st_mtime_ns
    again = cli(*confirm)  # every run in a fresh process, as a user makes them: comparable to the last bit
    out, err = again.stdout, again.stderr
    assert again.returncode == 0, err[-3000:]
    assert finished.stat().st_mtime_ns == before, "the finished seed was not trained again"
    assert "seed 1 -> " in err and "(resumed)" in err, "the interrupted seed went on from its last.pt"
    result = json.loads((tmp_path / "c" / "confirm" / "confirm.json").read_text())
    names = [c["name"] for c in result["candidates"]]
    assert len(names) == 3 and "preset" in names and result["seeds"] == [0, 1]
    values = [c["mean"] for c in result["candidates"]]
    assert values == sorted(values, reverse=True), "ranked by the confirmed mean"
    for c in result["candidates"]:
        preset = next(p for p in result["candidates"] if p["name"] == "preset")
        assert c["paired_diff"]["values"] == pytest.approx([a - b for a, b in zip(c["values"], preset["values"])])
    assert result["verdict"] in out
    report = (tmp_path / "c" / "report.md").read_text()
    assert "## Confirmation on fresh runs" in report and "paired vs preset" in report and "x the preset's wall" in out
    threads = {json.loads((tmp_path / "c" / "confirm" / c / f"seed-{s}" / "config.json").read_text())["run"]["threads"]
               for c in names for s in (0, 1)}
    assert threads == {threads_per_worker(2)}, "two workers share the cores, every candidate alike"
    # --config best-config.json runs the winner again: the confirmed run of the first seed, to the last digit
    winner = result["winner"]
    rerun = cli("ex09", "--config", tmp_path / "c" / "confirm" / "best-config.json", "--out", tmp_path / "again",
                "--no-progress")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    confirmed = tmp_path / "c" / "confirm" / winner / "seed-0"
    assert json.loads((confirmed / "summary.json").read_text())["epochs"] == 8, "--set reached every candidate"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "again" / "metrics.jsonl")) == strip(read_metrics(confirmed / "metrics.jsonl"))
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["val/score"] == \
        json.loads((confirmed / "summary.json").read_text())["val/score"]


def test_a_tie_break_orders_equal_metrics_by_the_second_one(tmp_path, synthetic_data_dir):
    from studies.objective import trial_value
    from studies.sweep import load_sweep

    plain = load_sweep(write_sweep(tmp_path / "p.yaml", synthetic_data_dir))
    broken = load_sweep(write_sweep(tmp_path / "b.yaml", synthetic_data_dir, metric="val/acc",
                                    tie_break={"metric": "val/loss", "weight": -0.001}))
    assert trial_value(plain, {"val/score": 5.0}) == 5.0 and trial_value(plain, {"train/loss": 1.0}) is None
    better, worse = {"val/acc": 0.9, "val/loss": 0.3}, {"val/acc": 0.9, "val/loss": 0.5}
    assert trial_value(broken, better) > trial_value(broken, worse) > trial_value(broken, {"val/acc": 0.89,
                                                                                           "val/loss": 0.0})
    with pytest.raises(Exception, match="tie_break must be a mapping"):
        load_sweep(write_sweep(tmp_path / "x.yaml", synthetic_data_dir, tie_break="val/loss"))


@pytest.mark.slow
def test_a_teacher_step_study_trains_steps_one_and_two_once(synthetic_mnist, tmp_path):
    """A space over the teacher step only: the first trial trains all three steps, the next takes steps 1-2 from
    the step cache (its run record says so) and trains only the teacher, in less time."""
    from helpers import write_ae_sweep

    sweep = write_ae_sweep(tmp_path / "t.yaml", synthetic_mnist, **{"pretrain.epochs": 3, "transfer.epochs": 4})
    spec = yaml.safe_load(sweep.read_text())
    spec["space"] = {"teacher.lr": {"type": "float", "low": 2e-5, "high": 2e-4, "log": True}}
    sweep.write_text(yaml.safe_dump(spec))
    from experiments.run import main

    assert main(["ex08", "--study", str(sweep), "--out", str(tmp_path / "t")]) == 0  # in-process: synthetic md5s
    first, second = (json.loads((tmp_path / "t" / f"trial-000{i}" / "run.json").read_text()) for i in (0, 1))
    assert "cached_steps" not in first and list(second["cached_steps"]) == ["pretrain", "transfer"]
    trials = load(f"sqlite:///{tmp_path / 't' / 'study.db'}", "ae-tiny").trials
    assert trials[1].user_attrs["wall_s"] < trials[0].user_attrs["wall_s"]
    summary = json.loads((tmp_path / "t" / "trial-0001" / "summary.json").read_text())
    assert "cached" in summary["steps"]["transfer"] and "cached" not in summary["steps"]["teacher"]
