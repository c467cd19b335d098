"""A study kept as a journal file committed with the repo (``results/studies/``) resumes from a fresh clone on
another machine: the finished trials stay, a trial the gone machine left RUNNING is failed and queued again, and
the report reads the file (studies.storage)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import write_sweep

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

JOURNAL = "journal://results/studies/t.log"  # relative: wherever the checkout is


def _run(cwd, *args):
    return subprocess.run([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "I2DL_STUDY_STORAGE": ""})


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True)


def _load(path):
    from studies.storage import open_storage

    return optuna.load_study(study_name="t", storage=open_storage(f"journal:///{path}"))


@pytest.mark.slow  # ~25 s: two short studies in fresh processes, a git clone between them
def test_a_journal_study_committed_under_results_resumes_from_a_fresh_clone(synthetic_data_dir, tmp_path):
    from studies.space import suggest
    from studies.sweep import load_sweep

    origin, clone = tmp_path / "origin", tmp_path / "clone"
    origin.mkdir()
    write_sweep(origin / "t.yaml", synthetic_data_dir, pruner={"type": "none"})
    r = _run(origin, "ex09", "--study", "t.yaml", "--storage", JOURNAL, "--trials", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    journal = origin / "results" / "studies" / "t.log"
    finished = {t.number: t.value for t in _load(journal).trials}
    assert len(finished) == 2 and all(v is not None for v in finished.values())
    # The machine that ran it also started a trial and was then lost: RUNNING in the file, silent for an hour.
    study = _load(journal)
    left = study.ask()
    suggest(left, load_sweep(origin / "t.yaml").space)
    for key, value in {"host": "a-machine-that-is-gone", "pid": 1, "alive_at": time.time() - 3600}.items():
        left.set_user_attr(key, value)
    assert (origin / "runs").is_dir()  # trial dirs stay with the machine (runs/ is not committed)
    _git(origin, "init", "-q")
    _git(origin, "add", "t.yaml", "results/studies/t.log")
    _git(origin, "commit", "-qm", "a study")
    _git(tmp_path, "clone", "-q", str(origin), str(clone))
    assert not (clone / "runs").exists() and (clone / "results" / "studies" / "t.log").is_file()

    r = _run(clone, "ex09", "--study", "t.yaml", "--storage", JOURNAL, "--trials", 3)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"re-queued trials [{left.number}] of dead workers" in r.stderr
    study = _load(clone / "results" / "studies" / "t.log")
    by_number = {t.number: t for t in study.trials}
    assert {n: by_number[n].value for n in finished} == finished  # the other machine's trials, kept
    assert by_number[left.number].state == TrialState.FAIL
    params = by_number[left.number].params
    assert params, "the lost trial had drawn its parameters"
    retried = [t for t in study.trials if t.number > left.number and t.params == params]
    assert retried and retried[0].state == TrialState.COMPLETE, [(t.number, t.state, t.params) for t in study.trials]
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3

    r = _run(clone, "report", "--study", "t.yaml", "--storage", JOURNAL)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (clone / "runs" / "studies" / "t" / "report.md").read_text()
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    if best.number in finished:  # its checkpoint is in the other machine's artifact store: said, not a crash
        assert "is not in" in r.stderr and "--retrain-best" in r.stderr, r.stderr
    assert f"Trial **{best.number}**" in report and "4 trials: 3 complete, 1 fail" in report
    assert "password" not in journal.read_text().lower()
    json.loads((clone / "results" / "studies" / "t.log").read_text().splitlines()[-1])  # whole lines only
