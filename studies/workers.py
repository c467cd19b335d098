"""Running a study: create it once, then run trials in this process (``--workers 1``) or in K worker
processes on this machine, each started as ``python -m experiments.run <ex> --study ... --worker-index i``.
Workers on other machines join by running the same command against the same ``--storage``.

``trials`` counts finished (complete + pruned) trials of the whole study, so re-running the same command
resumes it. A worker that was frozen for longer than the storage's grace period finds its trial taken over,
drops it and goes on.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from common.config import apply_overrides, split_override
from common.errors import ConfigError, short
from common.experiment import Experiment
from common.run import record
from common.run.signals import (
    Terminated,
    check_interrupted,
    die_with_parent,
    exit_code,
    interrupts_unwrapped,
    signal_name,
)
from exercises import get_experiment
from studies.constraints import check_supported
from studies.cores import check_workers, gpu_ids, threads_per_worker
from studies.grid_turn import GridTurn
from studies.objective import grace_s, make_objective, taken_over
from studies.search import (
    check_grid_cells,
    create_or_load_study,
    finished_count,
    load_study,
    make_pruner,
    make_sampler,
    params_of_config,
    print_summary,
    requeue_grid_cells,
)
from studies.space import baseline_params, check_choices
from studies.storage import (
    DEFAULT_MAX_RETRY,
    STORAGE_ENV,
    artifact_store,
    fail_dead_trials,
    lazy_optuna,
    open_storage,
    redact,
    storage_url,
)
from studies.study_dir import check_study_dir, claim_study_dir, study_dir_of
from studies.sweep import STUDY_NAME, Sweep, check_against_config, load_sweep, resolve_sweep_path


def open_sweep(name_or_file: str, experiment: str | None = None,
               study_name: str | None = None) -> tuple[Sweep, Experiment]:
    """The validated sweep and its experiment; ``experiment``: the subcommand it was run under; ``study_name``
    (``--study-name``): the study's name instead of the sweep's own (a new study of the same sweep)."""
    sweep = load_sweep(resolve_sweep_path(name_or_file))
    if study_name is not None:
        if not STUDY_NAME.fullmatch(study_name):
            raise ConfigError(f"--study-name {short(study_name)} is not a plain name (letters, digits, . _ -; it "
                              "names the study dir runs/studies/<name>)")
        sweep.study = study_name
    if experiment and sweep.experiment != experiment:
        raise ConfigError(f"{sweep.path} is a sweep of {sweep.experiment}; run it with "
                          + shlex.join(["python", "-m", "experiments.run", sweep.experiment, "--study", name_or_file]))
    exp = get_experiment(sweep.experiment)
    check_against_config(sweep, exp.make_config)
    check_supported(sweep.constraints, exp, str(sweep.path))
    if sweep.metric not in exp.metrics or (sweep.tie_break and sweep.tie_break["metric"] not in exp.metrics):
        bad = sweep.metric if sweep.metric not in exp.metrics else sweep.tie_break["metric"]
        raise ConfigError(f"{sweep.path}: metric {short(bad)} is not a figure a {exp.name} run reports to a study; "
                          f"choose one of {', '.join(exp.metrics)}")
    return sweep, exp


def check_shared_storage(url: str) -> None:
    """A storage every worker and every later run can open: an in-memory SQLite database would be a new, empty
    one in each process (the workers would not see the study, a resume would start over)."""
    if url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite://")
                                     or "mode=memory" in url):
        raise ConfigError(f"--storage {url}: an in-memory database lives and dies with one process, so the study "
                          "could not be resumed, reported or shared by workers; give a file (sqlite:///path/study.db) "
                          "or leave --storage out (a study.db in the study dir)")


def run_study(experiment: str, study: str, overrides: list[str], *, out: Path | None = None,
              storage: str | None = None, trials: int | None = None, timeout: float | None = None,
              workers: int = 1, worker_index: int | None = None, worker_threads: int | None = None,
              artifacts: Path | None = None, enqueue: list[Path] = (), study_name: str | None = None) -> int:
    """``--study``: create the study once, then run trials here (``workers=1``) or in K worker processes.
    ``overrides`` (``--set``, ``--data-dir``) apply to every trial, on top of the sweep's ``fixed``; ``enqueue``:
    configs to run first (:func:`studies.search.params_of_config`); ``study_name``: ``--study-name``."""
    check_workers(workers)
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials={trials} must be >= 1 (finished trials the whole study aims for)")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout={timeout} must be a positive number of seconds")
    sweep, exp = open_sweep(study, experiment, study_name)
    if overrides:
        given = dict(split_override(o) for o in overrides)
        searched = [key for key in given if key in {p.name for p in sweep.space}]
        if searched:
            raise ConfigError(f"--set {searched[0]}: {sweep.path} searches that key, so every trial sets it; drop "
                              "it from --set, or fix it in a copy of the sweep (its 'fixed' section, not 'space')")
        sweep.fixed = {**sweep.fixed, **given}
        check_against_config(sweep, exp.make_config)
    check_supported(sweep.constraints, exp, str(sweep.path))
    study_dir = study_dir_of(sweep, out)
    url = storage_url(storage, study_dir)
    check_shared_storage(url)
    artifacts = Path(artifacts or study_dir / "artifacts").resolve()
    if artifacts.exists() and not artifacts.is_dir():  # checked before the storage is created
        raise ConfigError(f"--artifacts {artifacts} is a file, not a folder; give a folder for the artifact store")
    trials = trials if trials is not None else sweep.trials
    timeout = timeout if timeout is not None else sweep.timeout_s
    if worker_index is not None:  # a worker started by the parent below (the study exists already)
        return run_worker(sweep, exp, url, study_dir, trials, timeout, worker_threads or 1, worker_index, artifacts)

    check_study_dir(study_dir, sweep.study)
    baseline = apply_overrides(exp.make_config(sweep.preset), dict(sweep.fixed))
    if sweep.baseline:
        check_choices(baseline_params(sweep.space, baseline), sweep.space,
                      f"{sweep.path}: the baseline trial (preset {sweep.preset!r} + fixed; or set baseline: false)")
    check_grid_cells(sweep, exp)
    queued = [params_of_config(sweep, exp, path) for path in enqueue]  # all checked before the study is touched
    store = open_storage(url, sweep.storage)
    optuna_study = create_or_load_study(sweep, store, baseline_cfg=baseline)
    claim_study_dir(study_dir, sweep.study)  # once the storage holds the study: a failed start marks nothing
    for path, params in zip(enqueue, queued):
        optuna_study.enqueue_trial(params, user_attrs={"enqueued": str(path)}, skip_if_exists=True)
    recovered = fail_dead_trials(optuna_study, store, sweep.storage.get("max_retry", DEFAULT_MAX_RETRY),
                                 grace_s(sweep))
    requeue_grid_cells(optuna_study, sweep)  # after the dead workers' trials are queued again
    threads = int(sweep.fixed.get("run.threads") or 0) or threads_per_worker(workers)  # the user's count wins
    print(f"[study] {sweep.study} ({sweep.experiment}, {sweep.direction} {sweep.metric}) in {redact(url)}; "
          f"dir {study_dir}; {workers} worker(s) x {threads} thread(s); target {trials or 'unlimited'} "
          f"finished trials" + (f"; re-queued trials {recovered} of dead workers" if recovered else ""),
          file=sys.stderr)
    if workers == 1:
        code = run_worker(sweep, exp, url, study_dir, trials, timeout, threads, 0, artifacts)
    else:
        def argv_for(i: int) -> list[str]:
            argv = [sys.executable, "-m", "experiments.run", sweep.experiment, "--study", str(sweep.path),
                    "--study-name", sweep.study, "--out", str(study_dir), "--worker-index", str(i),
                    "--worker-threads", str(threads), "--artifacts", str(artifacts)]
            argv += ["--trials", str(trials)] if trials is not None else []
            argv += ["--timeout", str(timeout)] if timeout is not None else []
            argv += ["--set", *overrides] if overrides else []
            return argv
        code = spawn_workers(argv_for, workers, url, threads)
    if code in (130, 143):
        print(f"[study] interrupted: the workers stopped and marked their running trials FAIL; finished trials are "
              f"kept. Resume with: {shlex.join(record.COMMAND or sys.argv)}", file=sys.stderr)
    print_summary(load_study(sweep, url), study_dir)
    print("report: " + shlex.join(["python", "-m", "experiments.run", "report", "--study", study,
                                   *(["--out", str(study_dir)] if out else [])]), file=sys.stderr)
    return code


class _QuietInterrupt(logging.Filter):
    """Optuna logs a trial ended by Ctrl-C as a failure with its whole traceback, then once more with its value;
    the worker's own one line says what happened, so both records are dropped."""

    def __init__(self):
        super().__init__()
        self.interrupted: set[str] = set()

    def filter(self, log: logging.LogRecord) -> bool:
        message = log.getMessage()
        if log.exc_info and issubclass(log.exc_info[0], KeyboardInterrupt):
            self.interrupted.add(message.split(" failed", 1)[0])  # "Trial 3"
            return False
        return not any(message.startswith(f"{trial} failed with value") for trial in self.interrupted)


def run_worker(sweep: Sweep, experiment: Experiment, url: str, study_dir: Path, trials: int | None,
               timeout_s: float | None, threads: int, worker: int = 0, artifacts: Path | None = None) -> int:
    """Run trials in this process until the study has ``trials`` finished ones, or ``timeout_s`` passes.
    Returns a process exit code (130 after Ctrl-C)."""
    optuna = lazy_optuna()
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    logging.getLogger("optuna.study._optimize").addFilter(_QuietInterrupt())
    storage = open_storage(url, sweep.storage)
    study = optuna.load_study(study_name=sweep.study, storage=storage, pruner=make_pruner(sweep.pruner))
    # Seeds differ per worker and per resume, so nobody re-proposes the points already tried (a grid keeps its one
    # seed: make_sampler).
    study.sampler = make_sampler(sweep.sampler, len(study.get_trials(deepcopy=False)) + 7919 * worker, sweep.space)
    callbacks = [MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED))] if trials else []
    store = artifact_store(artifacts) if artifacts is not None else None
    objective = make_objective(sweep, experiment, study_dir, threads, worker, store)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    grid = sweep.sampler["type"] == "grid"
    turn = GridTurn(study_dir, study, sweep) if grid else None
    while True:
        remaining = None if trials is None else trials - finished_count(study)
        time_left = None if deadline is None else deadline - time.monotonic()
        if (remaining is not None and remaining <= 0) or (time_left is not None and time_left <= 0):
            return 0
        if turn and not turn.take():  # every cell has started: a new trial would repeat one
            return 0
        try:  # a grid worker takes one cell at a time, in its turn (studies/grid_turn.py)
            with interrupts_unwrapped():
                study.optimize(turn.until_started(objective) if turn else objective, timeout=time_left,
                               n_trials=1 if grid else remaining, callbacks=callbacks, gc_after_trial=True)
            if not grid and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):  # none queued: done
                return 0
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (common.run.signals)
            print(f"[study] worker {worker}: interrupted ({signal_name(e)}); its running trial is marked FAIL. "
                  "Re-run the same command to resume.", file=sys.stderr)
            return exit_code(e)
        except Exception:
            number = taken_over(study, objective)
            if number is None:
                raise
            print(f"[study] worker {worker}: trial {number} was marked FAIL by another worker (no heartbeat "
                  f"for > {grace_s(sweep)} s) and re-queued; going on with the next trial", file=sys.stderr)
        finally:
            turn and turn.give()


def spawn_workers(argv_for: Callable[[int], list[str]], workers: int, url: str, threads: int) -> int:
    """Start ``workers`` processes (``argv_for(i)``), GPUs shared round-robin, and wait for all of them.
    Ctrl-C reaches them (same process group, or forwarded here); each marks its running trial and exits."""
    gpus = gpu_ids()
    procs = []
    for i in range(workers):
        env = dict(os.environ, **{STORAGE_ENV: url, "OMP_NUM_THREADS": str(threads),
                                  "MKL_NUM_THREADS": str(threads)})
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        procs.append(subprocess.Popen(argv_for(i), env=env, preexec_fn=die_with_parent(os.getpid())))
        print(f"[study] worker {i}: pid {procs[-1].pid}, {threads} thread(s)"
              + (f", GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ""), file=sys.stderr)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
            check_interrupted()  # a Ctrl-C that landed in a callback and was dropped (common.run.signals)
        codes = [p.returncode for p in procs]
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):
            # SIGTERM (timeout, Slurm, Kubernetes) often reaches the parent alone: pass it on at once (a worker
            # that got it too ignores the second one, common.run.signals).
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        else:
            # From a terminal the workers got the same SIGINT and are marking their trials: give them time, and
            # forward it only to those still running (the parent alone was signalled, e.g. kill -INT).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.2)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:  # a worker stuck in its clean-up: no orphan outlives us
                p.kill()
                p.wait()
        return exit_code(e)
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, c in bad:
        print(f"[study] worker {i} exited with code {c}", file=sys.stderr)
    interrupted = [c for _, c in bad if c in (130, 143)]
    return interrupted[0] if interrupted else (1 if bad else 0)
