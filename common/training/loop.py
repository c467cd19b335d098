"""The epoch loop every training step runs: ex09's training and each of ex08's three steps.

A step supplies two functions and the objects that make up its state::

    fitted = fit("ex08 transfer", c.epochs, train_epoch=..., evaluate=..., objects={"model": model, ...}, ...)

``train_epoch(epoch) -> row`` trains one epoch and returns its training figures (one device sync);
``evaluate(epoch) -> (metrics, candidates)`` scores the weights on val and offers the weights that could be kept
as the best (:class:`Candidate`: the EMA and the SWA average, say). The loop owns everything around them, the
same way for every step: the epoch range (a resumed run starts after the last saved epoch, with every object and
random stream put back), the progress bar, the non-finite check, the evaluation cadence and the time limit,
best selection, the training-state checkpoint (:mod:`common.training.training_state`), logging to ``metrics.jsonl`` and
W&B, the pass-mark time, and ``on_epoch`` (where a study's pruner may stop the run).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from common.run.progress import EpochBar
from common.run.signals import check_interrupted
from common.run.timing import since_process_start
from common.training.training_state import TrainingState


class NonFiniteLossError(FloatingPointError):
    """Training diverged (NaN/inf loss); a study prunes such a trial."""


@dataclass
class Candidate:
    """Weights an evaluation could keep as the best."""

    module: Any
    """The model holding them (what ``keep_best`` saves)."""
    rank: tuple
    """Higher is better; a later element breaks ties of the earlier ones (ex08: accuracy, then -loss)."""
    record: dict
    """The figures the best record keeps for them (``{"val/score": 512.3}``); the progress bar shows the first."""
    weights: str = "model"
    """Which weights they are: "model", "ema", "swa", "teacher"."""


@dataclass
class Fitted:
    """What :func:`fit` ends with."""

    best: dict
    """The best evaluation: ``epoch``, ``weights``, ``rank`` and the candidate's ``record``."""
    best_weights: Any
    """What ``keep_best`` returned for it (weights kept in memory), or None."""
    epochs_run: int
    time_to_pass: float | None
    """Seconds since the process started when ``pass_mark`` was first reached, or None."""


def _not_finite(row: dict) -> tuple[str, float] | None:
    return next(((k, v) for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)), None)


def fit(name: str, epochs: int, *, train_epoch: Callable[[int], dict],
        evaluate: Callable[[int], tuple[dict, list[Candidate]]], objects: dict, state: TrainingState,
        keep_best: Callable[[Candidate, dict], Any], run, tracker, hint: str, step: str | None = None,
        eval_epoch: Callable[[int], bool] | None = None, deadline: float | None = None,
        pass_mark: tuple[str, float] | None = None, on_epoch: Callable[[int, dict], None] | None = None,
        progress: bool = True, show: tuple[str, ...] = ()) -> Fitted:
    """Run epochs ``state.epoch + 1 .. epochs - 1`` of a step called ``name`` (the bar's label, errors' prefix).

    ``objects``: what the training state saves and a resume loads back (None entries are skipped).
    ``keep_best(candidate, best)``: called when ``candidate`` beats every earlier evaluation; it saves the
    weights (a file) or returns a copy to keep in memory and in the training state.
    ``run``/``tracker``: the run dir (``metrics.jsonl``) and the W&B run. ``step``: the ex08 step the rows are
    tagged with (its W&B keys are prefixed by it). ``hint``: what to do when the loss is not finite.
    ``eval_epoch(epoch)``: whether to evaluate after it (default: every epoch); ``deadline``: a
    ``time.perf_counter()`` after which the loop evaluates, saves and stops. ``pass_mark``: (metric, value)
    whose first reaching is timed. ``on_epoch(epoch, row)``: after each evaluation, once everything is saved.
    ``show``: the row's figures on the progress bar.
    """
    loop = state.attach(objects) or {"best": None, "best_weights": None, "time_to_pass": None}
    start = state.epoch + 1
    if state.resume:  # the rows of epochs after the saved state were lost with it: they come again
        run.keep_metrics(lambda row: row.get("step") != step or row["epoch"] < start)
    if state.saved is not None:
        print(f"[{name}] resumed at epoch {start}", file=sys.stderr)
    best, best_weights, time_to_pass = loop["best"], loop["best_weights"], loop["time_to_pass"]
    epochs_run = start
    bar = EpochBar(range(start, epochs), f"{name} epochs", progress)
    for epoch in bar:
        row = {"epoch": epoch, **train_epoch(epoch)}
        check_interrupted()  # a Ctrl-C that landed in a callback and was dropped (common.run.signals)
        bad = _not_finite(row)
        if bad is not None:
            raise NonFiniteLossError(f"{name} epoch {epoch}: {bad[0]} is {bad[1]}; {hint}")
        epochs_run = epoch + 1
        out_of_time = deadline is not None and time.perf_counter() > deadline
        if not (eval_epoch is None or eval_epoch(epoch) or out_of_time):
            continue
        metrics, candidates = evaluate(epoch)
        row.update(metrics)
        tagged = {"step": step, **row} if step else row
        elapsed = since_process_start()
        run.log_metrics({**tagged, "elapsed_s": elapsed})
        if step:  # no explicit W&B step: a study's trial logs all steps into one run, where epochs restart
            tracker.log({f"{step}/{k}": v for k, v in row.items()})
        else:
            tracker.log(row, step=epoch)
        if time_to_pass is None and pass_mark is not None and row[pass_mark[0]] >= pass_mark[1]:
            time_to_pass = elapsed
        top = max(candidates, key=lambda c: c.rank)  # the first of equals
        if best is None or tuple(top.rank) > tuple(best["rank"]):
            best = {"epoch": epoch, "weights": top.weights, "rank": list(top.rank), **top.record}
            best_weights = keep_best(top, best)
        state.save(epoch, {"best": best, "best_weights": best_weights, "time_to_pass": time_to_pass})
        bar.set_postfix(**{k.rsplit("/", 1)[-1]: f"{row[k]:.4g}" for k in show},
                        best=f"{best[next(iter(top.record))]:.4g}")
        if on_epoch is not None:
            on_epoch(epoch, tagged)
        if out_of_time:
            print(f"[{name}] time limit reached after epoch {epoch}", file=sys.stderr)
            break
    if best is None:
        raise RuntimeError(f"[{name}] no epoch was evaluated (epochs={epochs}, starting at {start})")
    return Fitted(best, best_weights, epochs_run, time_to_pass)
