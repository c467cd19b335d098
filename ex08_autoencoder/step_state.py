"""Resume inside an ex08 step: the running step's whole training state, saved as its epochs finish.

``<run dir>/<step>.state.pt`` holds what the next epoch needs to compute exactly what an uninterrupted run
computes: the model, optimizer, scheduler and teacher (EMA) states, the step's random generators, the global
RNGs (torch, numpy, python: dropout and mixup draw from them), the best epoch so far and its weights. It is
replaced atomically after an epoch (at most every ``SAVE_EVERY_S`` seconds), and deleted once the step's
checkpoint holds the result.

A training loop uses it in two calls::

    start, best, best_state = state.attach(model=model, optimizer=optimizer, generator=generator, ...)
    for epoch in range(start, epochs):
        ...
        state.save(epoch, best, best_state)

``attach`` loads a saved state into the objects (or leaves them as they are) and says where to go on.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from common import checkpoint
from common.atomic import atomic_torch_save
from common.errors import ConfigError
from common.seed import rng_state, set_rng_state

STATE_FORMAT = "i2dl-ex08-step-state-v1"
SAVE_EVERY_S = 5.0
"""A save of the leaderboard preset's teacher state (28.7 MB) takes ~0.07 s; the transfer step's epochs take
~0.3 s, so saving after every one would add ~25 % to that step. A kill loses at most these seconds of work."""


def state_path(run_dir: Path, step: str) -> Path:
    return Path(run_dir) / f"{step}.state.pt"


def _get(obj):
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _set(obj, state) -> None:
    obj.set_state(state) if isinstance(obj, torch.Generator) else obj.load_state_dict(state)


class StepState:
    """The per-epoch state of one step in ``path`` (None: keep nothing, e.g. a loop called on its own).
    ``resume``: go on from the state saved there, if any."""

    def __init__(self, path: Path | None = None, step: str = "", resume: bool = False):
        self.path, self.step, self._objects, self._saved_at = path, step, {}, -float("inf")
        self.saved = self._load() if resume and path is not None and path.is_file() else None

    @property
    def epoch(self) -> int:
        """The last epoch the saved state finished (-1: none, the step starts from scratch)."""
        return self.saved["epoch"] if self.saved else -1

    def _load(self) -> dict:
        state = checkpoint.load(self.path)
        if state.get("format") != STATE_FORMAT or state.get("step") != self.step:
            raise ConfigError(f"{self.path} is not the {self.step} step's training state (format "
                              f"{state.get('format')!r}, step {state.get('step')!r}); delete it to rerun the step")
        return state

    def attach(self, **objects) -> tuple[int, dict | None, dict | None]:
        """Keep ``objects`` (a None, e.g. no scheduler, is skipped) for :meth:`save`; after a resume, load the
        saved state into them. Returns (first epoch to run, best row so far, its weights)."""
        self._objects = {k: v for k, v in objects.items() if v is not None}
        if self.saved is None:
            return 0, None, None
        missing = sorted(set(self._objects) ^ set(self.saved["objects"]))
        if missing:
            raise ConfigError(f"{self.path} does not match this step's training state ({', '.join(missing)}); "
                              "delete it to rerun the step")
        for name, obj in self._objects.items():
            _set(obj, self.saved["objects"][name])
        set_rng_state(self.saved["rng"])
        return self.saved["epoch"] + 1, self.saved["best"], self.saved["best_state"]

    def save(self, epoch: int, best: dict | None, best_state: dict | None) -> None:
        if self.path is None or time.monotonic() - self._saved_at < SAVE_EVERY_S:
            return
        atomic_torch_save({"format": STATE_FORMAT, "step": self.step, "epoch": epoch, "best": best,
                                      "best_state": best_state, "rng": rng_state(),
                                      "objects": {k: _get(v) for k, v in self._objects.items()}}, self.path)
        self._saved_at = time.monotonic()

    def finish(self) -> None:
        """The step's checkpoint holds the result now: its training state is no longer needed."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
