"""A training state on disk: everything the next epoch needs to compute exactly what an uninterrupted run computes.

One format for every loop (ex09's ``last.pt``, each ex08 step's ``<step>.state.pt``): the state of every object
the loop names (model, optimizer, scheduler, EMA, SWA, the loop's own random generators, ...), the global random
streams (torch, CUDA, numpy, python: dropout and mixup draw from them), the last finished epoch and the loop's
own record (the best evaluation so far, its weights when they are kept in memory, when the pass mark was
reached). It is written atomically (``weights_only``-loadable) by :func:`common.training.loop.fit`.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from common.errors import ConfigError
from common.files import checkpoint
from common.files.atomic import atomic_torch_save
from common.run.seed import rng_state, set_rng_state

FORMAT = checkpoint.STATE_FORMAT


def check_state(state: dict, kind: str, what) -> dict:
    """``state`` (loaded from the file ``what`` names) if it is a ``kind`` loop's training state ("ex09",
    "transfer", ...), checked before anything is loaded into a model."""
    if state.get("format") != FORMAT or state.get("kind") != kind:
        raise ConfigError(f"{what} is not a {kind} training state (format {state.get('format')!r}, "
                          f"kind {state.get('kind')!r}); delete it to train again from the start")
    return state


def read_state(path: Path, kind: str) -> dict:
    return check_state(checkpoint.load(path), kind, path)


def _get(obj):
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _set(obj, state) -> None:
    obj.set_state(state) if isinstance(obj, torch.Generator) else obj.load_state_dict(state)


class TrainingState:
    """The training state of one loop, kept in ``path`` (None: nowhere, e.g. a loop run on its own in a test).

    ``saved``: a state read back with :func:`read_state` to go on from (None: start from scratch).
    ``resume``: this continues an interrupted run (also without a saved state: it was killed before the first
    save), so the loop drops the metric rows it logged after the saved epoch.
    ``config``: the run's resolved config, saved with the state so that a resume can be checked against it.
    ``save_every_s``: write at most this often (0: after every evaluated epoch); a kill loses at most this much
    work, and an epoch much shorter than a save does not pay for one each time.
    """

    def __init__(self, path: Path | None, kind: str, *, saved: dict | None = None, resume: bool = False,
                 config: dict | None = None, save_every_s: float = 0.0):
        self.path, self.kind, self.saved, self.config = path, kind, saved, config
        self.resume = resume or saved is not None
        self.save_every_s, self._saved_at, self._objects = save_every_s, -float("inf"), {}

    @property
    def epoch(self) -> int:
        """The last epoch the saved state finished (-1: none, the loop starts from scratch)."""
        return self.saved["epoch"] if self.saved else -1

    def attach(self, objects: dict) -> dict | None:
        """Keep ``objects`` (name -> object with ``state_dict``, or a ``torch.Generator``; a None is skipped) for
        :meth:`save`; after a resume, load the saved state into them and the global random streams. Returns the
        loop's saved record, or None when starting from scratch."""
        self._objects = {k: v for k, v in objects.items() if v is not None}
        if self.saved is None:
            return None
        mismatched = sorted(set(self._objects) ^ set(self.saved["objects"]))
        if mismatched:
            raise ConfigError(f"{self.path} does not match this loop's training state ({', '.join(mismatched)}); "
                              "delete it to train again from the start")
        for name, obj in self._objects.items():
            _set(obj, self.saved["objects"][name])
        set_rng_state(self.saved["rng"])
        return self.saved["loop"]

    def save(self, epoch: int, loop: dict) -> None:
        """Write the state after ``epoch`` with the loop's record ``loop`` (unless one was written less than
        ``save_every_s`` ago)."""
        if self.path is None or time.monotonic() - self._saved_at < self.save_every_s:
            return
        atomic_torch_save({"format": FORMAT, "kind": self.kind, "config": self.config, "epoch": epoch,
                           "loop": loop, "rng": rng_state(),
                           "objects": {k: _get(v) for k, v in self._objects.items()}}, self.path)
        self._saved_at = time.monotonic()

    def finish(self) -> None:
        """The result is saved elsewhere now (an ex08 step's checkpoint): the training state is not needed."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
