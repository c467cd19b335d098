"""Optuna studies: a sweep file -> storage, sampler, pruner -> worker processes running trials.

A trial is just a run with overrides: the sweep's ``fixed`` and sampled values go through the same typed
config system as ``--set``, and the experiment's own ``train`` function runs it into ``<study dir>/trial-NNNN``
with one W&B run (group = study, name = ``<study>-<trial number>``). Every evaluation reports the sweep's
metric to the pruner; a NaN/inf loss or metric, an infeasible config or a model over the course's limits
prunes the trial with its reason, and the study goes on.

Storage: an embedded SQLite file ``<study dir>/study.db`` by default; any SQLAlchemy URL (PostgreSQL when
workers on many machines share one study) or ``journal:///path/to/file.log``. RDB storages run with
heartbeats and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (``RetryFailedTrialCallback`` before
Optuna 4.9): a worker killed mid-trial has its trial marked FAIL (after ``grace_s``, or at once when a worker
on the same host sees its process is gone) and the same parameters queued again; a worker that was merely
frozen that long drops the trial it lost and goes on. The study is created once, before any worker starts
(two workers creating it at once race), and ``trials`` counts finished (complete + pruned) trials of the
whole study, so re-running the same command resumes it.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from common.config import ConfigError, apply_overrides, get_value, set_value, to_dict
from common.sweep import Sweep, baseline_params, suggest

STORAGE_ENV = "I2DL_STUDY_STORAGE"  # how the parent hands the storage URL to its workers (never on argv: passwords)
DEFAULT_HEARTBEAT_S = 60
DEFAULT_GRACE_S = 180
DEFAULT_MAX_RETRY = 2


@dataclass
class Experiment:
    """What a study needs from an experiment; ``experiments/run.py`` builds one for ex08 and for ex09."""

    name: str
    make_config: Callable[[str], Any]
    """preset/recipe name -> a fresh config."""
    train: Callable[..., dict]
    """``train(cfg, out_dir, on_epoch=..., tracker=..., progress=...)`` -> summary dict holding the metric."""
    threads_key: str
    """Config key of the CPU thread count, set per worker so workers do not oversubscribe the cores."""
    planned_evals: Callable[[Any], int]
    """How many evaluations (pruner steps) a full run of ``cfg`` reports: the denominator of "saved"."""


def _optuna():
    """Import optuna (lazily: ~1 s). Heartbeats, grouped TPE and the retry callback are flagged experimental;
    we rely on them on purpose, so their warnings are silenced."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# --- storage, sampler, pruner ----------------------------------------------------------------------------------

def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"


def redact(url: str) -> str:
    """The storage URL with any password hidden (for printing)."""
    if "://" not in url or "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def retry_callback(max_retry: int = DEFAULT_MAX_RETRY):
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` (re-queue a dead worker's trial with the same parameters),
    also for a trial holding a value outside the sweep's ranges: the queued baseline may (the preset's own
    widths, say). Optuna refuses to re-create such a trial (``ValueError`` from ``create_trial``, raised inside
    ``fail_stale_trials``, which would crash the worker that found it), so it is queued as ``enqueue_trial``
    queues one: values in ``fixed_params``, suggested again when a worker picks it up."""
    _optuna()
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
        def __call__(self, study, trial) -> None:
            attrs = json.loads(json.dumps(trial.system_attrs))  # a copy: the parent appends to retry_history
            try:
                super().__call__(study, trial)
            except ValueError:
                trial.system_attrs = {**attrs, "fixed_params": dict(trial.params)}
                trial.params, trial.distributions = {}, {}
                super().__call__(study, trial)

    return RetryStaleTrial(max_retry=max_retry)


def open_storage(url: str, settings: dict | None = None):
    """``journal:///path`` -> JournalStorage on a file; anything else -> RDBStorage with heartbeats."""
    optuna = _optuna()
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    from sqlalchemy.exc import SQLAlchemyError

    settings = settings or {}
    if url.startswith("journal://"):
        path = Path(url[len("journal://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    sqlite = url.startswith("sqlite")
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = RDBStorage(
            url,
            # SQLite: wait for the write lock (workers queue up) rather than fail with "database is locked".
            engine_kwargs={"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True},
            heartbeat_interval=int(settings.get("heartbeat_s", DEFAULT_HEARTBEAT_S)),
            grace_period=int(settings.get("grace_s", DEFAULT_GRACE_S)),
            # RetryFailedTrialCallback (named RetryHeartbeatStaleTrialCallback since Optuna 4.9): re-queue a
            # stale trial's parameters.
            heartbeat_stale_trial_callback=retry_callback(settings.get("max_retry", DEFAULT_MAX_RETRY)),
        )
        if sqlite:
            _serialize_sqlite(storage.engine)
        return storage
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError, ImportError, ValueError) as e:
        detail = str(e).split("\n(Background on this error")[0].replace(url, redact(url))
        raise ConfigError(f"cannot open study storage {redact(url)}: {type(e).__name__}: {detail[:400]}") from None


def _serialize_sqlite(engine) -> None:
    """SQLite has no ``SELECT ... FOR UPDATE``: two worker processes could both read the same WAITING trial
    (the queued baseline, a retry) and both run it; the slower one then fails with "Cannot tell a COMPLETE
    trial" (seen here with 2 workers). Taking the write lock at BEGIN (``BEGIN IMMEDIATE``, SQLAlchemy's
    recipe for SQLite transactions) makes Optuna's read-check-write of a trial's state atomic."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite must not BEGIN on its own; the hook below does

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while creating the tables predate the hooks


def make_sampler(spec: dict, seed_offset: int = 0):
    """TPE (seeded by default), random or CMA-ES. ``seed_offset`` keeps workers (and resumed runs) from
    proposing the same points: each gets ``seed + offset``."""
    optuna = _optuna()

    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if kwargs.get("seed") is not None:
        kwargs["seed"] = int(kwargs["seed"]) + seed_offset
    kind = spec["type"]
    if kind == "random":
        return optuna.samplers.RandomSampler(**kwargs)
    if kind == "cmaes":  # numeric spaces; categorical/conditional parameters fall back to independent sampling
        return optuna.samplers.CmaEsSampler(warn_independent_sampling=False, **kwargs)
    return optuna.samplers.TPESampler(**kwargs)


def make_pruner(spec: dict):
    optuna = _optuna()

    kwargs = {k: v for k, v in spec.items() if k != "type"}
    kind = spec["type"]
    if kind == "median":
        return optuna.pruners.MedianPruner(**kwargs)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**kwargs)
    return optuna.pruners.NopPruner()


def create_or_load_study(sweep: Sweep, storage, seed_offset: int = 0, baseline_cfg=None):
    """Create the study if it does not exist (call this once, before workers start), else load it. A new study
    gets ``baseline_cfg`` (the preset + fixed overrides) queued as its first trial when the sweep asks."""
    optuna = _optuna()

    study = optuna.create_study(study_name=sweep.study, storage=storage, direction=sweep.direction,
                                load_if_exists=True, sampler=make_sampler(sweep.sampler, seed_offset),
                                pruner=make_pruner(sweep.pruner))
    attrs = study.user_attrs
    if "experiment" not in attrs:
        study.set_user_attr("experiment", sweep.experiment)
        study.set_user_attr("metric", sweep.metric)
        study.set_user_attr("sweep_yaml", sweep.text)
        if sweep.baseline and baseline_cfg is not None:
            study.enqueue_trial(baseline_params(sweep.space, baseline_cfg), user_attrs={"baseline": True})
    elif attrs["experiment"] != sweep.experiment or attrs.get("metric") != sweep.metric:
        raise ConfigError(f"study {sweep.study!r} in this storage searches {attrs['experiment']}/{attrs.get('metric')}, "
                          f"but {sweep.path} says {sweep.experiment}/{sweep.metric}; use another storage or study name")
    if study.direction.name.lower() != sweep.direction:
        raise ConfigError(f"study {sweep.study!r} was created to {study.direction.name.lower()}, "
                          f"but {sweep.path} says {sweep.direction}")
    return study


def load_study(sweep: Sweep, url: str):
    """An existing study (for reports and summaries); a clear error when the storage does not hold it."""
    optuna = _optuna()
    try:
        return optuna.load_study(study_name=sweep.study, storage=open_storage(url, sweep.storage))
    except KeyError:
        raise ConfigError(f"no study named {sweep.study!r} in {redact(url)}: run it first "
                          f"(python -m experiments.run {sweep.experiment} --study ...)") from None


def state_counts(study) -> dict[str, int]:
    """Trials by state, e.g. ``{"complete": 12, "pruned": 14, "fail": 0, ...}`` (every state, zeros included)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}


def finished_count(study) -> int:
    counts = state_counts(study)
    return counts["complete"] + counts["pruned"]


def fail_dead_local_trials(study, max_retry: int = DEFAULT_MAX_RETRY) -> list[int]:
    """RUNNING trials whose worker ran on this host and is gone (SIGKILL, power loss): mark them FAIL now and
    queue their parameters again, rather than waiting for the heartbeat's grace period (or forever, on a journal
    file, which has no heartbeat). The re-queueing is the heartbeat's own callback, so retries look alike."""
    _optuna()
    from optuna.trial import TrialState

    retry = retry_callback(max_retry)

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or _alive(pid):
            continue
        # The storage API is the only way to end another process's trial (optuna.storages.fail_stale_trials
        # does the same for heartbeat storages).
        if study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
            retry(study, study._storage.get_trial(t._trial_id))
            failed.append(t.number)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child (killed, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --- one trial -------------------------------------------------------------------------------------------------

def trial_dir(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / f"trial-{number:04d}"


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def make_objective(sweep: Sweep, experiment: Experiment, study_dir: Path, threads: int,
                   data_dir: str | None = None, worker: int = 0) -> Callable:
    """The Optuna objective: overrides -> config -> ``experiment.train`` with a pruning hook and a W&B run."""
    optuna = _optuna()

    from optuna.exceptions import UpdateFinishedTrialError

    from common.checkpoint import ModelTooLargeError
    from common.tracking import Tracker

    def objective(trial: optuna.Trial) -> float:
        t0 = time.perf_counter()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", worker)
        overrides = {**sweep.fixed, **suggest(trial, sweep.space)}
        cfg = experiment.make_config(sweep.preset)
        try:
            apply_overrides(cfg, overrides)
        except ConfigError as e:  # a sampled combination the config rejects: skip it, say why
            trial.set_user_attr("reason", f"infeasible config: {e}")
            raise optuna.TrialPruned(f"infeasible config: {e}") from None
        # Typed values as the config holds them: what --retrain-best and the report reuse.
        trial.set_user_attr("overrides", {k: _jsonable(get_value(cfg, k)) for k in overrides})
        if not int(sweep.fixed.get(experiment.threads_key) or 0):  # a thread count the user fixed wins
            set_value(cfg, experiment.threads_key, threads)
        if data_dir:
            cfg.data.data_dir = data_dir
        name = f"{sweep.study}-{trial.number}"
        cfg.track.group, cfg.track.name = sweep.study, name
        planned = experiment.planned_evals(cfg)
        trial.set_user_attr("planned_evals", planned)
        run_dir = trial_dir(study_dir, trial.number)
        tracker = Tracker(cfg.track.project, {"trial": {"number": trial.number, "params": trial.params,
                                                        "study": sweep.study}, **to_dict(cfg)},
                          run_dir, cfg.track.mode, name=name, group=sweep.study,
                          job_type=f"{experiment.name}-trial", tags=[sweep.study])
        evals = 0

        def on_epoch(epoch: int, row: dict) -> None:
            nonlocal evals
            if sweep.metric not in row:
                return  # e.g. ex08's pretraining epochs report a reconstruction loss, not the metric
            value = row[sweep.metric]
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"{sweep.metric} is {value} at epoch {epoch}")
            trial.report(value, evals)
            evals += 1
            trial.set_user_attr("evals_run", evals)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruner stopped it after {evals} of {planned} evaluations "
                                         f"({sweep.metric} {value:.4g} at epoch {epoch})")

        state, value, reason = "failed", None, None
        try:
            summary = experiment.train(cfg, run_dir, on_epoch=on_epoch, tracker=tracker, progress=False)
            value = float(summary[sweep.metric])
            if not math.isfinite(value):
                raise optuna.TrialPruned(f"final {sweep.metric} is {value}")
            state = "complete"
            return value
        except optuna.TrialPruned as e:
            state, reason = "pruned", str(e)
            raise
        except ConfigError as e:  # a combination only the run itself can find out about (a batch > the data)
            state, reason = "pruned", f"infeasible config: {e}"
            raise optuna.TrialPruned(reason) from None
        except FloatingPointError as e:  # NonFiniteLossError (ex09), a NaN loss (ex08)
            state, reason = "pruned", f"non-finite loss: {e}"
            raise optuna.TrialPruned(reason) from None
        except ModelTooLargeError as e:  # the sampled model breaks the course's limits (5M params, 20 MB)
            state, reason = "pruned", f"infeasible model: {e}"
            raise optuna.TrialPruned(reason) from None
        except KeyboardInterrupt:
            reason = "interrupted (Ctrl-C)"
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
            objective.last = (trial._trial_id, trial.number, state != "failed")
            wall = time.perf_counter() - t0
            attrs = {"wall_s": wall, "evals_run": evals, **({"reason": reason} if reason else {})}
            try:
                for key, val in attrs.items():
                    trial.set_user_attr(key, val)
            except UpdateFinishedTrialError:
                pass  # taken over (above): the trial is no longer this worker's to write
            tracker.summary({"trial/state": state, "trial/value": value, "trial/reason": reason or "",
                             "trial/wall_s": wall, "trial/evals_run": evals})
            tracker.finish(exit_code=0 if state != "failed" else 1)

    objective.last = None  # (trial id, number, ended without an error of its own) of the latest trial
    return objective


def taken_over(study, objective) -> int | None:
    """The number of this worker's latest trial if another worker marked it FAIL under its feet (its heartbeat
    was stale: the worker stalled for longer than grace_s), else None. Optuna's optimize() stops with an error
    when it cannot record such a trial's result; the worker itself is fine and can go on."""
    from optuna.trial import TrialState

    if objective.last is None:
        return None
    trial_id, number, ended_cleanly = objective.last
    objective.last = None
    return number if ended_cleanly and study._storage.get_trial(trial_id).state == TrialState.FAIL else None


def grace_s(sweep: Sweep) -> int:
    return int(sweep.storage.get("grace_s", DEFAULT_GRACE_S))


# --- workers ---------------------------------------------------------------------------------------------------

def run_worker(sweep: Sweep, experiment: Experiment, storage_url: str, study_dir: Path, trials: int | None,
               timeout_s: float | None, threads: int, worker: int = 0, data_dir: str | None = None) -> int:
    """Run trials in this process until the study has ``trials`` finished ones, or ``timeout_s`` passes.
    Returns a process exit code (130 after Ctrl-C)."""
    optuna = _optuna()
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    storage = open_storage(storage_url, sweep.storage)
    study = optuna.load_study(study_name=sweep.study, storage=storage, pruner=make_pruner(sweep.pruner))
    # Seeds differ per worker and per resume, so nobody re-proposes the points already tried.
    study.sampler = make_sampler(sweep.sampler, len(study.get_trials(deepcopy=False)) + 7919 * worker)
    callbacks = [MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED))] if trials else []
    objective = make_objective(sweep, experiment, study_dir, threads, data_dir, worker)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        remaining = None if trials is None else trials - finished_count(study)
        time_left = None if deadline is None else deadline - time.monotonic()
        if (remaining is not None and remaining <= 0) or (time_left is not None and time_left <= 0):
            return 0
        try:
            study.optimize(objective, n_trials=remaining, timeout=time_left, callbacks=callbacks,
                           gc_after_trial=True)
            return 0
        except KeyboardInterrupt:
            print(f"[study] worker {worker}: interrupted; its running trial is marked FAIL. "
                  "Re-run the same command to resume.", file=sys.stderr)
            return 130
        except Exception:
            number = taken_over(study, objective)
            if number is None:
                raise
            print(f"[study] worker {worker}: trial {number} was marked FAIL by another worker (no heartbeat "
                  f"for > {grace_s(sweep)} s) and re-queued; going on with the next trial", file=sys.stderr)


def gpu_ids() -> list[str]:
    """GPUs to share among workers: $CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists, else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def threads_per_worker(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def spawn_workers(argv_for: Callable[[int], list[str]], workers: int, storage_url: str, threads: int) -> int:
    """Start ``workers`` processes (``argv_for(i)``), GPUs shared round-robin, and wait for all of them.
    Ctrl-C reaches them (same process group, or forwarded here); each marks its running trial and exits."""
    gpus = gpu_ids()
    procs = []
    for i in range(workers):
        env = dict(os.environ, **{STORAGE_ENV: storage_url, "OMP_NUM_THREADS": str(threads),
                                  "MKL_NUM_THREADS": str(threads)})
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        procs.append(subprocess.Popen(argv_for(i), env=env))
        print(f"[study] worker {i}: pid {procs[-1].pid}, {threads} thread(s)"
              + (f", GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""), file=sys.stderr)
    codes = []
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # From a terminal the workers got the same SIGINT and are marking their trials: give them time, and
        # forward it only to those still running (the parent alone was signalled, e.g. kill -INT).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        return 130
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, c in bad:
        print(f"[study] worker {i} exited with code {c}", file=sys.stderr)
    return 130 if any(c == 130 for _, c in bad) else (1 if bad else 0)


def study_summary(study) -> dict:
    """Counts by state and the best trial, for printing after a run (the report has the details)."""
    counts = state_counts(study)
    out: dict[str, Any] = {"study": study.study_name, "trials": sum(counts.values()),
                           **{k: v for k, v in counts.items() if v}}
    if counts.get("complete"):
        best = study.best_trial
        out.update(best_trial=best.number, best_value=best.value, best_params=best.params)
    return out


def print_summary(study, study_dir: Path) -> dict:
    """Print counts, the best trial and its run dir; the last line is one JSON object."""
    s = study_summary(study)
    print(f"study {s['study']}: {s['trials']} trials ("
          + ", ".join(f"{s[k]} {k}" for k in ("complete", "pruned", "fail", "running", "waiting") if k in s) + ")")
    if "best_value" in s:
        print(f"best: trial {s['best_trial']}  value {s['best_value']:.4g}  params {json.dumps(s['best_params'])}")
        print(f"  run dir: {trial_dir(study_dir, s['best_trial'])}")
    print(json.dumps(s))
    return s
