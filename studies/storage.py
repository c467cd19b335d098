"""Where a study lives: SQLite (the default, a file in the study dir), any SQLAlchemy URL (PostgreSQL when
workers on many machines share one study) or a journal file, ``journal:///abs/path.log`` or
``journal://results/studies/kp.log`` (relative to where the command runs: a study committed with the repo, that
any checkout resumes); how a password in a URL is hidden;
and how a dead worker's trial is failed and queued again.

RDB storages run with heartbeats and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (named
``RetryFailedTrialCallback`` before Optuna 4.9): a worker killed mid-trial has its trial marked FAIL (after
``grace_s``, or at once when a worker on the same host sees its process is gone) and the same parameters queued
again.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

from common.errors import ConfigError
from common.run.secrets import _credentials, redact, scrub

STORAGE_ENV = "I2DL_STUDY_STORAGE"  # how the parent hands the storage URL to its workers (never on argv: passwords)
DEFAULT_HEARTBEAT_S = 60
DEFAULT_GRACE_S = 180
DEFAULT_MAX_RETRY = 2


def lazy_optuna():
    """Import optuna (lazily: ~1 s). Heartbeats, grouped TPE and the retry callback are flagged experimental;
    we rely on them on purpose, so their warnings are silenced."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Optuna's INFO lines repeat every trial's whole parameter dict; the objective prints one line of its own.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(given: str | None, study_dir: Path) -> str:
    """``--storage``, else ``$I2DL_STUDY_STORAGE``, else an SQLite file in the study dir."""
    return given or os.environ.get(STORAGE_ENV) or default_storage(study_dir)


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"


def retry_callback(max_retry: int = DEFAULT_MAX_RETRY):
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` (re-queue a dead worker's trial with the same parameters),
    also for a trial holding a value outside the sweep's ranges: the queued baseline may (the preset's own
    widths, say). Optuna refuses to re-create such a trial (``ValueError`` from ``create_trial``, raised inside
    ``fail_stale_trials``, which would crash the worker that found it), so it is queued as ``enqueue_trial``
    queues one: values in ``fixed_params``, suggested again when a worker picks it up."""
    lazy_optuna()
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


BUSY = "database is locked"
SQLITE_WAIT_S = 120  # workers queue up for SQLite's write lock this long; a report waits a few seconds only


def busy_error(url: str, waited_s: float) -> ConfigError:
    return ConfigError(f"study storage {redact(url)} is busy: another process has held its lock for {waited_s:.0f} s "
                       "(a study still writing it, or a sqlite3 shell); try again when it is done")


def open_storage(url: str, settings: dict | None = None, wait_s: float = SQLITE_WAIT_S):
    """``journal:///path`` -> JournalStorage on a file; anything else -> RDBStorage with heartbeats. ``wait_s``:
    how long an SQLite connection waits for the lock another process holds."""
    optuna = lazy_optuna()
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    from sqlalchemy.exc import SQLAlchemyError

    settings = settings or {}
    sqlite = url.startswith("sqlite")
    try:
        if url.startswith("journal://"):
            path = Path(url[len("journal://"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_journal(path)
            return _interrupt_safe(JournalStorage)(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        storage = _interrupt_safe(RDBStorage)(
            url,
            # SQLite: wait for the write lock (workers queue up) rather than fail with "database is locked".
            engine_kwargs={"connect_args": {"timeout": wait_s}} if sqlite else {"pool_pre_ping": True},
            heartbeat_interval=int(settings.get("heartbeat_s", DEFAULT_HEARTBEAT_S)),
            grace_period=int(settings.get("grace_s", DEFAULT_GRACE_S)),
            # RetryFailedTrialCallback (named RetryHeartbeatStaleTrialCallback since Optuna 4.9): re-queue a
            # stale trial's parameters.
            heartbeat_stale_trial_callback=retry_callback(settings.get("max_retry", DEFAULT_MAX_RETRY)),
        )
        if sqlite:
            _serialize_sqlite(storage.engine)
        return storage
    except ConfigError:
        raise
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError, ImportError, ValueError, OSError) as e:
        detail = scrub(" ".join(str(e).split("\n(Background on this error")[0].split()), url)
        if BUSY in detail:
            raise busy_error(url, wait_s) from None
        hint = ""
        if isinstance(e, ImportError) and url.startswith("postgres"):
            hint = "; PostgreSQL needs the postgres extra: pip install -e '.[postgres]'"
        elif (_credentials(url) or ("", "", ""))[2].count("@"):
            hint = "; a password holding '@' must be written %40 in the URL"
        elif isinstance(e, OSError):
            hint = "; choose a writable place (--storage or --out)"
        raise ConfigError(f"cannot open study storage {redact(url)}: {type(e).__name__}: {detail[:300]}{hint}"
                          ) from None


def repair_journal(path: Path) -> None:
    """Before a journal file is appended to: a last line cut by a killed writer (no newline) is moved out (into
    ``<file>.cut``), since Optuna appends after it and the joined line would leave the whole study unreadable
    (``JSONDecodeError``) from then on; a broken line before the last, which no repair can make sense of, is
    refused naming it. Done under Optuna's own journal lock, so no live writer is mid-line."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        lines = data.split(b"\n")
        cut = lines.pop()  # b"" when the file ends with a newline, as every whole write does
        for number, line in enumerate(lines, 1):
            try:
                json.loads(line)
            except (ValueError, RecursionError):
                raise ConfigError(f"journal {path}: line {number} is not a whole log entry (a cut write that was "
                                  "appended to, or an edit), so the study cannot be read past it; restore the "
                                  "file from a copy (nothing was written)") from None
        if cut:
            keep = data[:len(data) - len(cut)]
            from common.files.atomic import atomic_write

            atomic_write(path.with_name(path.name + ".cut"), lambda f: f.write(cut))
            with open(path, "r+b") as f:
                f.truncate(len(keep))
                os.fsync(f.fileno())
            print(f"[study] journal {path}: its last line (line {len(lines) + 1}, {len(cut)} bytes) was cut by a "
                  f"killed writer and never took effect; moved to {path.name}.cut before appending", file=sys.stderr)
    finally:
        lock.release()


@functools.cache
def _interrupt_safe(storage_class: type) -> type:
    """``storage_class`` with every method run under :func:`~common.run.signals.interrupts_deferred`: Ctrl-C or
    SIGTERM is raised when the storage call is over, never inside SQLAlchemy or a journal write, where it left
    SQLite's write lock held and the interrupted worker (and its parent) hung. A subclass, so Optuna treats it as
    the storage it is (``isinstance(storage, RDBStorage)`` decides its caching and heartbeats)."""
    from common.run.signals import interrupts_deferred

    def deferring(method):
        @functools.wraps(method)
        def call(*args, **kwargs):
            with interrupts_deferred():
                return method(*args, **kwargs)
        return call

    methods = {name: deferring(method) for klass in reversed(storage_class.__mro__)
               for name, method in vars(klass).items() if inspect.isfunction(method) and not name.startswith("__")}
    return type(storage_class.__name__, (storage_class,), methods)


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

    @event.listens_for(engine, "handle_error")
    def _finish_statement_on_interrupt(ctx):
        # A process without our signal handlers (a notebook, a user's script: Python's own KeyboardInterrupt,
        # which _interrupt_safe cannot hold back) may be interrupted inside a query: SQLAlchemy then closes the
        # connection without closing its cursor, and a SELECT left mid-rows keeps it alive as a zombie holding the
        # write lock taken above (workers then waited the full 120 s). Closing the cursor ends the statement.
        # (``ctx.cursor`` is never set in SQLAlchemy 2.0.)
        cursor = getattr(ctx.execution_context, "cursor", None)
        if cursor is not None and not isinstance(ctx.original_exception, Exception):
            cursor.close()

    engine.dispose()  # connections opened while creating the tables predate the hooks


def fail_dead_trials(study, storage, max_retry: int = DEFAULT_MAX_RETRY, grace_s: float = DEFAULT_GRACE_S
                     ) -> list[int]:
    """RUNNING trials whose worker is gone: mark them FAIL now and queue their parameters again. On this host, a
    worker whose process is gone (SIGKILL, power loss), at once rather than after the heartbeat's grace period.
    On a journal file, which has no heartbeat, also a trial of another host that has given no sign of life
    (``alive_at``: its start, then every evaluation) for :data:`JOURNAL_SILENCE_S` (or ``grace_s`` if longer;
    a pretraining step reports no metric for minutes, so the heartbeat's 3 minutes would take a live
    trial on a shared journal from its worker): a journal committed under
    ``results/studies/`` by a machine that is gone would otherwise keep its trial RUNNING forever. The
    re-queueing is the heartbeat's own callback, so retries look alike."""
    lazy_optuna()
    from optuna.storages import JournalStorage
    from optuna.trial import TrialState

    retry = retry_callback(max_retry)
    journal = isinstance(storage, JournalStorage)

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host:
            if not isinstance(pid, int) or _alive(pid):
                continue
        elif not (journal and _silent_for(t) > max(grace_s, JOURNAL_SILENCE_S)):
            continue
        # Study and Trial have no public way to end another process's trial; the storage API does (it is what
        # optuna.storages.fail_stale_trials uses for heartbeat storages), reached through its public methods.
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), t.number)
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            retry(study, storage.get_trial(trial_id))
            failed.append(t.number)
    return failed


JOURNAL_SILENCE_S = 1800


def _silent_for(trial) -> float:
    """Seconds since a trial's last sign of life: its ``alive_at`` (set by the objective), else its start."""
    alive_at = trial.user_attrs.get("alive_at")
    if not isinstance(alive_at, (int, float)):
        start = trial.datetime_start
        alive_at = start.timestamp() if start is not None else 0.0
    return time.time() - float(alive_at)


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


def artifact_store(path: Path):
    """Optuna's file-system artifact store at ``path`` (default ``<study dir>/artifacts``; a folder every
    machine mounts when workers on many machines share a study): trials' checkpoints and figures, reachable by
    ``report`` and optuna-dashboard (``--artifact-dir``) from any of them."""
    from optuna.artifacts import FileSystemArtifactStore

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--artifacts {path}: cannot create it ({e.strerror}); choose a writable place") from None
    return FileSystemArtifactStore(base_path=str(path))
