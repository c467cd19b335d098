"""Grid workers take their cells one at a time (studies/grid_turn.py): a worker that checks for a free cell while
another worker's new trial has not yet been given its cell waits for it, and then sees no cell left, instead of
being handed a cell that is already running (the race that trained a 12-epoch cell twice in CI)."""
from __future__ import annotations

import threading

import pytest

from helpers import write_sweep
from studies.grid_turn import GridTurn
from studies.search import make_sampler
from studies.sweep import load_sweep

optuna = pytest.importorskip("optuna")


def test_a_second_worker_waits_for_the_first_to_get_its_cell_then_finds_none_left(synthetic_data_dir, tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "g.yaml", synthetic_data_dir, sampler={"type": "grid", "seed": 0},
                                   trials=None, pruner={"type": "none"},
                                   space={"train.lr": {"type": "categorical", "choices": [1e-3]}}))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="g",
                                sampler=make_sampler(sweep.sampler, 0, sweep.space))
    first, second = GridTurn(tmp_path, study, sweep), GridTurn(tmp_path, study, sweep)
    assert first.take(), "the one cell is free"
    answer = []
    waiting = threading.Thread(target=lambda: answer.append(second.take()))
    waiting.start()
    waiting.join(timeout=1.0)
    assert waiting.is_alive() and not answer, "the second worker waits while the first holds its turn"
    trial = study.ask()  # what optimize() does before the objective starts: the sampler gives the trial its cell
    assert study.get_trials()[0].system_attrs["grid_id"] == 0
    first.until_started(lambda t: None)(trial)  # the objective starts: the turn is given back
    waiting.join(timeout=30)
    assert answer == [False], "then it finds the only cell taken, and stops instead of repeating it"
    assert first.take() is False  # and the turn is free again for anyone (given back when no cell is left)
