"""Grid workers take their cells one at a time. Between a worker's check that a cell is left
(:func:`studies.search.grid_cells_left`) and Optuna's ``GridSampler`` giving its new trial a grid id, another
worker can check too, see the same cell free and be handed a cell already running (Optuna says so: "multiple
workers may simultaneously pick up the same grid"; seen in CI, a 12-epoch cell trained twice). A lock file in the
study dir, held from the check until the trial has its cell (its objective starts), closes that window for the
workers of this machine; workers on other machines (a shared ``--storage``) can still collide, rarely."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Callable

from studies.search import grid_cells_left
from studies.sweep import Sweep

LOCK_NAME = ".grid-turn.lock"


class GridTurn:
    def __init__(self, study_dir: Path, study, sweep: Sweep):
        self.path = Path(study_dir) / LOCK_NAME
        self.study, self.sweep = study, sweep
        self._fd: int | None = None

    def take(self) -> bool:
        """Wait for this worker's turn; True with the turn held if a cell is left, else False (turn given back)."""
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, or by the kernel when the process dies
        self._fd = fd
        if grid_cells_left(self.study, self.sweep):
            return True
        self.give()
        return False

    def give(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def until_started(self, objective: Callable) -> Callable:
        """``objective`` that first gives the turn back: by then the sampler has given the trial its cell."""
        def started(trial):
            self.give()
            return objective(trial)
        return started
