"""Cost limits as Optuna constraints on tiny real studies (studies.constraints): trials over a limit are marked
infeasible, pruned ones too (their wall projected to the full run), the best trial and --confirm keep to the
feasible ones, and the report draws value against cost."""
from __future__ import annotations

import json

import pytest

from helpers import cli, load, write_sweep
from studies.sweep import load_sweep
from wandb_records import read_run

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

MAX_WALL_RATIO = 3.0  # the constrained sweep's wall limit, in multiples of the baseline trial's projected wall


def _constrained_sweep(tmp_path, data_dir, **top):
    # 4 epochs, not 2: a wall projected from one interval between evaluations failed CI once (a cheap trial's one
    # epoch was >2x the baseline's, two workers on 2 cores); the median of 3 and a 3x limit leave margin both
    # ways: the cheap trial projects ~1x the baseline's wall, the 60-epoch one ~15x.
    return write_sweep(tmp_path / "t.yaml", data_dir, trials=4, pruner={"type": "none"},
                       fixed={"model.head": "flatten", "train.epochs": 4},  # flatten: head_hidden sets its size
                       space={"train.epochs": {"type": "categorical", "choices": [4, 60]},
                              "model.head_hidden": {"type": "categorical", "choices": [32, 64, 2048]}},
                       constraints={"wall_s": {"max_ratio": MAX_WALL_RATIO}, "params": {"max": 100000}}, **top)


@pytest.mark.slow  # ~40 s: four trials in two workers, then a confirmation of two candidates
def test_infeasible_trials_are_marked_never_best_and_never_confirmed(synthetic_data_dir, tmp_path):
    from studies.search import create_or_load_study
    from studies.storage import open_storage

    sweep = _constrained_sweep(tmp_path, synthetic_data_dir)
    out, url = tmp_path / "study", f"sqlite:///{tmp_path / 'study' / 'study.db'}"
    from common.config import apply_overrides
    from exercises import get_experiment
    exp = get_experiment("ex09")
    s = load_sweep(sweep)
    study = create_or_load_study(s, open_storage(url), baseline_cfg=apply_overrides(exp.make_config("quick"),
                                                                                      dict(s.fixed)))
    study.enqueue_trial({"train.epochs": 60, "model.head_hidden": 32})    # better, but 15x the epochs: too slow
    study.enqueue_trial({"train.epochs": 4, "model.head_hidden": 2048})   # too many parameters: never trained
    study.enqueue_trial({"train.epochs": 4, "model.head_hidden": 64})     # within both limits
    r = cli("ex09", "--study", sweep, "--out", out, "--workers", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(url)
    base, slow, big, ok = sorted(study.trials, key=lambda t: t.number)[:4]  # (the other worker may start a 5th)
    assert base.user_attrs["baseline"] and base.state == slow.state == ok.state == TrialState.COMPLETE
    assert base.constraints["wall_s"] == pytest.approx(1 / MAX_WALL_RATIO - 1)  # its own wall is the bar: ratio 1
    assert base.constraints["params"] < 0 and ok.constraints["params"] < 0 and ok.constraints["wall_s"] <= 0
    # The 60-epoch trial learned more, and took far longer than 3x the baseline: infeasible.
    assert slow.value > base.value and slow.constraints["wall_s"] > 0, (slow.value, base.value, slow.constraints)
    ratio = slow.user_attrs["projected_wall_s"] / base.user_attrs["projected_wall_s"]
    assert slow.constraints["wall_s"] == pytest.approx(ratio / MAX_WALL_RATIO - 1, rel=0.05)  # the baseline's end
    rec = read_run(next((out / f"trial-{slow.number:04d}" / "wandb").glob("offline-run-*")))  # W&B has them too
    assert rec["summary"]["trial/constraint/wall_s"] == pytest.approx(slow.constraints["wall_s"])
    assert rec["summary"]["trial/projected_wall_s"] == pytest.approx(slow.user_attrs["projected_wall_s"])
    assert big.state == TrialState.PRUNED and big.constraints["params"] > 0 and "params" in big.user_attrs["reason"]
    assert big.user_attrs.get("evals_run") is None and not (out / f"trial-{big.number:04d}").exists()
    best = study.best_trial
    feasible = [t for t in study.trials if t.state == TrialState.COMPLETE and max(t.constraints.values()) <= 0]
    assert best.value == max(t.value for t in feasible) and slow.value > best.value
    n_bad = sum(max(t.constraints.values(), default=0) > 0 for t in study.trials)

    r = cli("report", "--study", sweep, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    report = (out / "report.md").read_text()
    limits = f"wall_s <= {MAX_WALL_RATIO:g}x the baseline's, params <= 100000"
    assert f"## Best trial within the constraints ({limits})" in report
    assert f"Trial **{best.number}**" in report and f"{n_bad} are infeasible" in report, report
    assert (out / "study_cost.png").stat().st_size > 10_000

    r = cli("report", "--study", sweep, "--out", out, "--confirm", 2, "--seeds", "0", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    confirmed = json.loads((out / "confirm" / "confirm.json").read_text())
    assert sorted(c["name"] for c in confirmed["candidates"]) == ["preset", f"trial-{ok.number:04d}"]
    assert not (out / "confirm" / f"trial-{slow.number:04d}").exists()


@pytest.mark.slow  # ~10 s
def test_a_pruned_trial_carries_its_projected_wall_as_a_constraint(synthetic_data_dir, tmp_path):
    """A trial stopped after 2 of 60 epochs is judged on what the full run would have cost, not on 2 epochs."""
    from experiments.run import main
    from studies.search import create_or_load_study
    from studies.storage import open_storage

    sweep = write_sweep(tmp_path / "p.yaml", synthetic_data_dir, trials=3,
                        pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 1},
                        space={"train.epochs": {"type": "categorical", "choices": [2, 60]},
                               "train.lr": {"type": "categorical", "choices": [2e-3, 1e-9]}},
                        fixed={"train.ema_decay": 0.0}, constraints={"wall_s": {"max_ratio": 2.0}})
    out, url = tmp_path / "p", f"sqlite:///{tmp_path / 'p' / 'study.db'}"
    from common.config import apply_overrides
    from exercises import get_experiment
    s = load_sweep(sweep)
    study = create_or_load_study(s, open_storage(url), baseline_cfg=apply_overrides(
        get_experiment("ex09").make_config("quick"), dict(s.fixed)))
    study.enqueue_trial({"train.epochs": 60, "train.lr": 1e-9})  # learns nothing: pruned at the first rung
    assert main(["ex09", "--study", str(sweep), "--out", str(out), "--trials", "2"]) == 0
    base, pruned = load(url).trials
    assert base.state == TrialState.COMPLETE and pruned.state == TrialState.PRUNED, pruned.user_attrs
    assert pruned.user_attrs["evals_run"] < 60
    projected = pruned.user_attrs["projected_wall_s"]
    assert projected > 5 * pruned.user_attrs["wall_s"] / pruned.user_attrs["evals_run"]  # to 60 epochs, not 2
    assert pruned.constraints["wall_s"] == pytest.approx(projected / (2 * base.user_attrs["projected_wall_s"]) - 1)
    assert pruned.constraints["wall_s"] > 0


def test_constraints_are_checked_on_load(tmp_path, synthetic_data_dir):
    from common.errors import ConfigError

    cases = {"{wall_s: {max: -1}}": "constraints.wall_s.max=-1 must be a positive number",
             "{walltime: {max: 3}}": "unknown key 'walltime'",
             "{params: {max_ratio: 2}}": "constraints.params must be one of {max: NUMBER}",
             "[1, 2]": "constraints must be a mapping"}
    for text, message in cases.items():
        path = _constrained_sweep(tmp_path, synthetic_data_dir)
        path.write_text(path.read_text().split("constraints:")[0] + f"constraints: {text}\n")
        with pytest.raises(ConfigError, match="constraints") as e:
            load_sweep(path)
        assert message in str(e.value)
    path = _constrained_sweep(tmp_path, synthetic_data_dir, baseline=False)
    with pytest.raises(ConfigError, match="baseline: false; give {max: N} instead"):
        load_sweep(path)


def test_wall_projection_extrapolates_the_median_epoch(monkeypatch):
    from studies import constraints

    clock = iter([0.0, 5.0, 6.0, 9.0, 10.0])  # t0; then evaluations at 5 s (step 0), 6 s, 9 s (a slow one), 10 s
    monkeypatch.setattr(constraints.time, "perf_counter", lambda: next(clock))
    wall = constraints.WallProjection()
    for step in range(4):
        wall.tick(step)
    assert wall.projected(69) == pytest.approx(1.0 * 70)  # median of 1, 3, 1 s per epoch; the 5 s before: one-time
    assert constraints.pareto_front([(1, 5), (2, 4), (3, 7), (4, 7)], maximize=True) == [0, 2]
