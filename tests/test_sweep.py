"""Sweep files and the Optuna pieces built from them: validation that names the bad key, conditional and list
parameters, the baseline round trip, samplers and pruners, storage URLs and their passwords."""
from __future__ import annotations

import re

import pytest
import yaml

from common.errors import ConfigError
from helpers import write_sweep
from studies.space import baseline_params, suggest
from studies.sweep import SWEEPS_DIR, load_sweep

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize("name,experiment,params", [("kp", "ex09", 10), ("ae", "ex08", 10),
                                                    ("ae-teacher", "ex08", 8), ("tutorial-mlp", "ex09", 2),
                                                    ("tutorial-norms", "ex09", 3), ("tutorial-dropout", "ex09", 3)])
def test_shipped_sweeps_are_valid_against_their_configs(name, experiment, params):
    from exercises import get_experiment

    sweep = load_sweep(SWEEPS_DIR / f"{name}.yaml", get_experiment(experiment).make_config)
    assert sweep.experiment == experiment and sweep.study == name and len(sweep.space) >= params


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
    (lambda s: s["space"]["model.widths"].update(items=[{"type": "int", "low": 8, "high": 16},
                                                        {"type": "int", "low": 8, "high": 16}]), "give 'item'"),
    (lambda s: s["space"]["model.widths"].update(items=[{"type": "int", "low": 8, "high": 16}]) or
     s["space"]["model.widths"].pop("item"), "expected a list of at least 2 specs"),
    (lambda s: s.update(sampler={"type": "bayes"}), "sampler.type='bayes'"),
    (lambda s: s.update(sampler={"type": "grid"}), "space.model.widths: a grid sweep takes categorical or int"),
    (lambda s: s.update(sampler={"type": "grid"}, space={"train.lr": s["space"]["train.lr"]}),
     "space.train.lr: a grid sweep takes categorical or int parameters only (this one is float with log)"),
    (lambda s: s.update(pruner={"type": "median", "patience": 3}), "unknown key 'patience'"),
    (lambda s: s.update(trials=0), "trials=0 must be a positive integer"),
])
def test_bad_sweeps_name_the_bad_key(tmp_path, mutate, message):
    from exercises import get_experiment

    path = write_sweep(tmp_path / "s.yaml", tmp_path)
    spec = yaml.safe_load(path.read_text())
    mutate(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ConfigError, match=re.escape(message)):
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
    assert "known: ae, ae-teacher, kp" in capsys.readouterr().err
    ex08_sweep = write_sweep(tmp_path / "x.yaml", tmp_path)
    assert main(["ex08", "--study", str(ex08_sweep)]) == 2
    assert "is a sweep of ex09" in capsys.readouterr().err


def test_conditional_and_list_parameters_and_the_baseline_round_trip(tmp_path):
    from ex09_keypoints.config import make_config

    sweep = load_sweep(SWEEPS_DIR / "kp.yaml")  # its widths: a range per block
    cnn = dict(baseline_params(sweep.space, make_config("default")))
    assert cnn["depth"] == 3 and [cnn[f"model.widths[{i}]"] for i in range(3)] == [32, 80, 192]
    overrides = suggest(optuna.trial.FixedTrial(cnn), sweep.space)
    cfg = make_config("default")
    assert overrides["model.widths"] == cfg.model.widths and overrides["train.lr"] == cfg.train.lr
    assert overrides["train.swa_from"] == cfg.train.swa_from == 0.0
    assert "depth" not in overrides  # a helper, not a config key
    items = sweep.space[[p.name for p in sweep.space].index("model.widths")].spec["items"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):  # each position samples from its own range
        widths = suggest(study.ask(), sweep.space)["model.widths"]
        assert all(items[i]["low"] <= w <= items[i]["high"] for i, w in enumerate(widths)), widths
    space = {"model.arch": {"type": "categorical", "choices": ["cnn", "timm:lcnet_050"]},
             "depth": {"type": "int", "low": 1, "high": 2, "when": {"model.arch": "cnn"}},
             "model.widths": {"type": "list", "length": "depth", "item": {"type": "int", "low": 8, "high": 24},
                              "when": {"model.arch": "cnn"}},
             "model.kernel": {"type": "categorical", "choices": [3, 5], "when": {"model.arch": "cnn"}},
             "train.lr": {"type": "float", "low": 1e-3, "high": 4e-3, "log": True}}
    conditional = load_sweep(write_sweep(tmp_path / "c.yaml", tmp_path, space=space))
    overrides = suggest(optuna.trial.FixedTrial({"model.arch": "timm:lcnet_050", "train.lr": 2e-3}), conditional.space)
    assert overrides == {"model.arch": "timm:lcnet_050", "train.lr": 2e-3}, "widths and kernel: conditional on cnn"


@pytest.mark.parametrize("sampler,pruner,classes", [
    ({"type": "tpe", "seed": 3, "multivariate": True}, {"type": "median", "n_warmup_steps": 2},
     ("TPESampler", "MedianPruner")),
    ({"type": "random", "seed": 3}, {"type": "hyperband", "min_resource": 1, "max_resource": 12}, ("RandomSampler",
                                                                                                 "HyperbandPruner")),
    ({"type": "cmaes", "seed": 3}, {"type": "none"}, ("CmaEsSampler", "NopPruner")),
])
def test_samplers_and_pruners_from_the_sweep(tmp_path, sampler, pruner, classes):
    from studies.search import make_pruner, make_sampler

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
    from studies.storage import redact

    assert "hunter2" not in redact("postgresql+psycopg2://me:hunter2@db.example:5432/optuna")
    assert redact("postgresql+psycopg2://me:hunter2@db.example:5432/optuna").endswith("@db.example:5432/optuna")
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
def test_every_shipped_sweep_holds_its_own_baseline(name):
    """The baseline trial (the preset + fixed) must be a point of the space: Optuna runs an enqueued value outside
    a range anyway (with a warning) and TPE then learns from a point it can never sample again. Catches a default
    changed without its sweep."""
    from common.config import apply_overrides
    from exercises import get_experiment

    sweep = load_sweep(SWEEPS_DIR / f"{name}.yaml")
    if not sweep.baseline:
        pytest.skip(f"{name}.yaml runs no baseline trial")
    exp = get_experiment(sweep.experiment)
    params = baseline_params(sweep.space, apply_overrides(exp.make_config(sweep.preset), dict(sweep.fixed)))
    specs = {p.name: p.spec for p in sweep.space if p.type != "list"}
    for p in sweep.space:
        if p.type == "list":
            items = p.spec.get("items") or [p.spec["item"]] * 64
            specs.update({f"{p.name}[{i}]": item for i, item in enumerate(items)})
    for key, value in params.items():
        spec = specs[key]
        if spec["type"] == "categorical":
            assert value in spec["choices"], (key, value)
        else:
            assert spec["low"] <= value <= spec["high"], (key, value, spec)
            if spec.get("step"):
                assert (value - spec["low"]) % spec["step"] == pytest.approx(0, abs=1e-9), (key, value, spec)
