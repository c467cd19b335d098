"""One trial: the sweep's fixed and sampled values become config overrides (the same typed system as
``--set``), and the experiment's own ``train`` runs them into ``<study dir>/trial-NNNN`` with one W&B run
(group = study, name = ``<study>-<trial number>``). Every evaluation reports the sweep's metric to the pruner
(its step: the epochs trained, :class:`EpochsTrained`); a parameter set that already ran is answered from that
trial. A NaN/inf loss or metric, an infeasible config or a model over the course's limits prunes the trial with
its reason, and the study goes on."""
from __future__ import annotations

import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from common.config import apply_overrides, get_value, to_dict
from common.errors import ConfigError
from common.experiment import Experiment
from common.run.signals import signal_name
from studies.artifacts import upload_trial_artifacts
from studies.constraints import WallProjection, baseline_running, baseline_wall, model_costs, violations
from studies.space import suggest
from studies.storage import DEFAULT_GRACE_S, lazy_optuna
from studies.study_dir import trial_dir
from studies.sweep import Sweep


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


class EpochsTrained:
    """The pruner's step for a row: the epochs this trial has trained before it, over the training steps that
    report the metric (one step: the epoch itself; rows tagged with a ``step``: that step's epochs come after
    the earlier steps'), so that a pruner's ``min_resource`` and rungs are in epochs whatever the evaluation
    cadence."""

    def __init__(self):
        self.offset, self.step, self.last = 0, None, -1

    def __call__(self, epoch: int, row: dict) -> int:
        if row.get("step") != self.step:  # a new step starts after the last one's epochs
            self.offset, self.step = self.last + 1, row.get("step")
        self.last = self.offset + epoch
        return self.last


def trial_value(sweep: Sweep, figures: dict) -> float | None:
    """The sweep's metric in ``figures`` (a row or a summary), its tie-break added (``tie_break: {metric,
    weight}``); None where the metric is not reported (e.g. a pretraining step)."""
    if sweep.metric not in figures:
        return None
    value = float(figures[sweep.metric])
    if sweep.tie_break is not None and sweep.tie_break["metric"] in figures:
        value += float(sweep.tie_break["weight"]) * float(figures[sweep.tie_break["metric"]])
    return value


def twin_of(trial):
    """A finished trial (complete or pruned) with exactly this trial's parameters, or None: a sampler that proposes
    a point again (TPE does, in a categorical space), or an enqueued config that already ran."""
    from optuna.trial import TrialState

    done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return next((t for t in done if t.number != trial.number and t.params == trial.params), None)


def make_objective(sweep: Sweep, experiment: Experiment, study_dir: Path, threads: int,
                   worker: int = 0, artifacts=None) -> Callable:
    """The Optuna objective: overrides -> config -> ``experiment.train`` with a pruning hook and a W&B run."""
    optuna = lazy_optuna()

    from optuna.exceptions import UpdateFinishedTrialError

    from common.files.checkpoint import ModelTooLargeError
    from common.run.tracking import Tracker

    def objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", worker)
        # A journal has no heartbeat: this stamp, renewed at each evaluation, lets a worker on another machine tell
        # a trial whose machine is gone (storage.fail_dead_trials).
        trial.set_user_attr("alive_at", time.time())
        overrides = {**sweep.fixed, **suggest(trial, sweep.space)}
        cfg = experiment.make_config(sweep.preset)
        try:
            apply_overrides(cfg, overrides)
        except ConfigError as e:  # a sampled combination the config rejects: skip it, say why
            trial.set_user_attr("reason", f"infeasible config: {e}")
            raise optuna.TrialPruned(f"infeasible config: {e}") from None
        # Typed values as the config holds them: what --retrain-best and the report reuse.
        trial.set_user_attr("overrides", {k: _jsonable(get_value(cfg, k)) for k in overrides})
        twin = twin_of(trial)
        if twin is not None:  # answered from it, not trained again
            objective.last = (trial.number, True)
            trial.set_user_attr("duplicate_of", twin.number)
            if twin.state.name == "PRUNED":
                reason = f"the same parameters as trial {twin.number}, which was pruned"
                trial.set_user_attr("reason", reason)
                print(f"[study] trial {trial.number} (worker {worker}): pruned ({reason})", file=sys.stderr)
                raise optuna.TrialPruned(reason)
            for step, value in sorted(twin.intermediate_values.items()):  # what the pruner would have seen
                trial.report(value, step)
            for key, value in twin.constraints.items():  # the same config costs the same
                trial.set_constraint(key, value)
            print(f"[study] trial {trial.number} (worker {worker}): {sweep.metric} {twin.value:.4g}, answered from "
                  f"trial {twin.number} (the same parameters)", file=sys.stderr, flush=True)
            return twin.value
        costs = model_costs(experiment, cfg) if {"params", "size_mb"} & set(sweep.constraints) else {}
        trial.set_user_attr("costs", costs)
        over = {k: v for k, v in violations(sweep.constraints, costs, None).items() if v > 0}
        if over:  # known before training: not worth an epoch
            for key, value in over.items():
                trial.set_constraint(key, value)
            reason = "over the sweep's constraints: " + ", ".join(f"{k} {costs[k]:.4g}" for k in over)
            trial.set_user_attr("reason", reason)
            print(f"[study] trial {trial.number} (worker {worker}): pruned untrained ({reason})", file=sys.stderr)
            raise optuna.TrialPruned(reason)
        if not int(sweep.fixed.get("run.threads") or 0):  # a thread count the user fixed wins
            cfg.run.threads = threads
        name = f"{sweep.study}-{trial.number}"
        cfg.track.group, cfg.track.name = sweep.study, name
        planned = experiment.planned_evals(cfg)
        trial.set_user_attr("planned_evals", planned)
        run_dir = trial_dir(study_dir, trial.number)
        tracker = Tracker(cfg.track.project, {"trial": {"number": trial.number, "params": trial.params,
                                                        "study": sweep.study}, **to_dict(cfg)},
                          run_dir, cfg.track.mode, name=name, group=sweep.study,
                          job_type=f"{experiment.name}-trial", tags=[sweep.study])
        evals, epochs_trained, wall = 0, EpochsTrained(), WallProjection()
        last_step = experiment.planned_epochs(cfg) - 1

        def on_epoch(epoch: int, row: dict) -> None:
            nonlocal evals
            value = trial_value(sweep, row)
            if value is None:
                return  # e.g. a pretraining step reports a reconstruction loss, not the metric
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"{sweep.metric} is {value} at epoch {epoch}")
            step = epochs_trained(epoch, row)
            trial.report(value, step)
            evals += 1
            wall.tick(step)
            trial.set_user_attr("evals_run", evals)
            trial.set_user_attr("alive_at", time.time())
            if sweep.constraints:  # the baseline's is every other trial's bar while it runs
                trial.set_user_attr("projected_wall_s", wall.projected(last_step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruner stopped it after {evals} of {planned} evaluations "
                                         f"({sweep.metric} {value:.4g} at epoch {epoch})")

        state, value, reason, constraint_values = "failed", None, None, {}
        try:
            summary = experiment.train(cfg, run_dir, on_epoch=on_epoch, tracker=tracker, progress=False)
            value = trial_value(sweep, summary)
            if value is None:
                raise KeyError(f"the run's summary has no {sweep.metric}")
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"final {sweep.metric} is {value}")
            state = "complete"
            return value
        except optuna.TrialPruned as e:
            state, reason = "pruned", str(e)
            raise
        except ModelTooLargeError as e:  # the sampled model breaks the course's limits (a ConfigError: first)
            state, reason = "pruned", f"infeasible model: {e}"
            raise optuna.TrialPruned(reason) from None
        except ConfigError as e:  # a combination only the run itself can find out about (a batch > the data)
            state, reason = "pruned", f"infeasible config: {e}"
            raise optuna.TrialPruned(reason) from None
        except FloatingPointError as e:  # a diverged run (NaN/inf loss)
            state, reason = "pruned", f"non-finite loss: {e}"
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM
            reason = f"interrupted ({signal_name(e)})"
            raise
        except UpdateFinishedTrialError:
            # Another worker found this trial's heartbeat stale (this process stalled for longer than grace_s:
            # a suspended machine, an unreachable database) and marked it FAIL; its parameters are queued again.
            state, reason = "taken over", (f"taken over: marked FAIL by another worker after a heartbeat gap "
                                           f"> {grace_s(sweep)} s")
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            raise
        finally:
            # The worker loop asks: did this trial end without an error of its own? (If the storage then says
            # FAIL, another worker took it over.)
            objective.last = (trial.number, state != "failed")
            elapsed = time.perf_counter() - t0
            attrs = {"wall_s": elapsed, "evals_run": evals, **({"reason": reason} if reason else {})}
            if artifacts is not None and state in ("complete", "pruned"):
                try:
                    attrs["artifacts"] = upload_trial_artifacts(trial, run_dir, artifacts)
                except Exception as e:  # the store is a convenience: a full disk must not fail a finished trial
                    print(f"[study] trial {trial.number}: artifacts not stored: {type(e).__name__}: {e}",
                          file=sys.stderr)
            try:
                for key, val in attrs.items():
                    trial.set_user_attr(key, val)
                if sweep.constraints and state in ("complete", "pruned"):
                    constraint_values = set_constraints(trial, sweep.constraints,
                                                        {**costs, "wall_s": wall.projected(last_step)})
            except UpdateFinishedTrialError:
                pass  # taken over (above): the trial is no longer this worker's to write
            shown = f" {sweep.metric} {value:.4g}" if value is not None else f" ({reason})" if reason else ""
            print(f"[study] trial {trial.number} (worker {worker}): {state}{shown}, {evals} evaluations, "
                  f"{elapsed:.0f} s", file=sys.stderr, flush=True)
            tracker.summary({"trial/state": state, "trial/value": value, "trial/reason": reason or "",
                             "trial/wall_s": elapsed, "trial/evals_run": evals,
                             **({"trial/projected_wall_s": wall.projected(last_step) or 0.0,
                                 **{f"trial/constraint/{k}": v for k, v in constraint_values.items()}}
                                if sweep.constraints else {})})
            tracker.finish(exit_code=0 if state != "failed" else 1)

    objective.last = None  # (number, ended without an error of its own) of the latest trial
    return objective


BASELINE_WAIT_S = 60


def set_constraints(trial, constraints: dict, measured: dict) -> dict[str, float]:
    """Set the trial's constraint values (once, as it ends: Optuna keeps the first value set), against the
    baseline trial's projected wall for a ratio limit (this trial's own, if it is the baseline); returns them."""
    own = measured.get("wall_s")
    if trial.user_attrs.get("baseline"):
        reference = own
    else:  # a trial that ends before the running baseline's first evaluation (pruned early) waits for it, a little
        deadline = time.monotonic() + (BASELINE_WAIT_S if "max_ratio" in constraints.get("wall_s", {}) else 0)
        while ((reference := baseline_wall(trial.study)) is None and baseline_running(trial.study)
               and time.monotonic() < deadline):
            time.sleep(1)
    values = violations(constraints, measured, reference)
    for key, value in values.items():
        trial.set_constraint(key, value)
    return values


def taken_over(study, objective) -> int | None:
    """The number of this worker's latest trial if another worker marked it FAIL under its feet (its heartbeat
    was stale: the worker stalled for longer than grace_s), else None. Optuna's optimize() stops with an error
    when it cannot record such a trial's result; the worker itself is fine and can go on."""
    from optuna.trial import TrialState

    if objective.last is None:
        return None
    number, ended_cleanly = objective.last
    objective.last = None
    if not ended_cleanly:
        return None
    (mine,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    return number if mine.state == TrialState.FAIL else None


def grace_s(sweep: Sweep) -> int:
    return int(sweep.storage.get("grace_s", DEFAULT_GRACE_S))
