"""The CLI's one convention for usage errors: whatever the mistake (a flag, a missing companion flag, a config
key or value, a study that does not exist), the user gets exit code 2 and one line saying what to do."""
from __future__ import annotations

import pytest

from experiments.run import main
from helpers import run_main


@pytest.mark.parametrize("argv,words", [
    (["ex08", "--step", "transfer"], "--step needs --out DIR"),
    (["ex09", "--evaluate", "best.pt"], "--evaluate needs --csv FILE"),
    (["ex09", "--csv", "faces.csv"], "--csv goes with --evaluate"),
    (["report", "--study", "kp", "--out", "{tmp}/nowhere"], "no study storage at"),
    (["report", "--study", "kp", "--set", "train.epochs=1"], "apply to --retrain-best only"),
    (["ex09", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    (["ex08", "--recipe", "best"], "invalid choice: 'best'"),
    (["ex09", "--bogus"], "unrecognized arguments: --bogus"),
    (["ex09", "--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
    (["ex09", "--set", "train.epochs=many"], "train.epochs: expected an integer"),
    (["ex09", "--set", "run.threads=-1"], "run.threads=-1 must be >= 0"),
    (["ex08", "--set", "only_step=finetune"], "--step finetune is not a step of the leaderboard preset"),
    (["ex08", "--preset", "case-study", "--step", "teacher", "--out", "{tmp}/x"], "not a step of the case-study"),
    (["ex09", "--study", "kp", "--preset", "quick"], "--preset does not apply to --study"),
    (["ex09", "--study", "no-such-sweep"], "no sweep named 'no-such-sweep'"),
    (["ex08", "--study", "kp"], "is a sweep of ex09"),
])
def test_each_usage_error_is_one_line_and_exit_2(argv, words, tmp_path, capsys):
    code, _, err = run_main([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2, err
    assert err.strip().count("\n") == 0, f"more than one line:\n{err}"
    assert words in err


def test_help_and_show_config_exit_0(capsys):
    assert run_main(["ex09", "--help"], capsys)[0] == 0
    assert main(["ex08", "--preset", "case-study", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert '"preset": "case-study"' in out and '"run": {' in out


def test_a_flag_that_sets_false_reaches_the_config():
    """--no-cache is cache_steps=False: dropped as falsy, it never turned the step cache off (a benchmark timed a
    recipe's steps 1-2 at 0.03 s)."""
    import argparse

    from exercises import get_experiment
    from experiments.run import config_overrides

    args = argparse.Namespace(data_dir=None, step=None, no_cache=True, overrides=[])
    assert config_overrides(get_experiment("ex08"), args) == ["cache_steps=False"]
