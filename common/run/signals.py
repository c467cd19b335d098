"""SIGTERM (what ``timeout``, Slurm and Kubernetes send) ends a run or a study exactly as Ctrl-C does: it is raised
as :class:`Terminated`, a ``KeyboardInterrupt``, so every path that finishes cleanly on Ctrl-C (the run record,
the trial marked FAIL, the one-line resume command) does so on SIGTERM too; the exit code is 128 + the signal
(130 for SIGINT, 143 for SIGTERM). A study's worker processes also stop when their parent dies
(:func:`die_with_parent`)."""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process gets SIGTERM."""

    signum = signal.SIGTERM
    signal_name = "SIGTERM"


# The interrupts our handlers raised. Python runs a signal handler at the next bytecode boundary, which may be
# inside a weakref or garbage-collector callback; an exception raised there is printed ("Exception ignored
# in ...") and dropped, and the process goes on as if nothing came (a study worker trained on for minutes after
# its parent forwarded Ctrl-C, seen in CI). Long loops call :func:`check_interrupted` to raise it again.
_raised: list[KeyboardInterrupt] = []


def exit_code(interrupt: BaseException) -> int:
    """128 + the signal that interrupted us: 130 (Ctrl-C) or 143 (SIGTERM). The interrupt is handled now."""
    _raised.clear()
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


def check_interrupted() -> None:
    """Raise again an interrupt that a callback swallowed (see ``_raised``); nothing when none came.

    Call it where a loop can stop cleanly (after an epoch, between polls): a handled interrupt has already
    ended the loop (and :func:`exit_code` forgot it), so one still pending here was swallowed."""
    if _raised:
        raise _raised.pop()


def interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The interrupt one of our handlers raised that ``error`` wraps (its cause or context, at any depth), else
    None. Python wraps what a handler raises while a class is being built (``__set_name__``: a RuntimeError) into
    another exception: a SIGTERM that landed while matplotlib imported its classes ended the tutorial with
    exit 1 and a traceback instead of 143 and its continue line (seen in CI)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt) and any(error is r for r in _raised):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def interrupts_unwrapped():
    """Inside it, an exception that wraps our interrupt (:func:`interrupt_behind`) is raised as that interrupt,
    so the ``except KeyboardInterrupt`` around it keeps what finished and prints how to go on."""
    try:
        yield
    except Exception as e:
        interrupt = interrupt_behind(e)
        if interrupt is None:
            raise
        raise interrupt.with_traceback(interrupt.__traceback__) from None


def signal_name(interrupt: BaseException) -> str:
    return getattr(interrupt, "signal_name", "Ctrl-C")


# How deep the main thread is in code that a raised interrupt would leave in a broken state (a study storage's
# transaction: see :func:`interrupts_deferred`), and the signals that came meanwhile.
_defer_depth = 0
_deferred: list[int] = []


@contextmanager
def interrupts_deferred():
    """Inside it (on the main thread, where Python runs signal handlers), SIGINT and SIGTERM are held, and raised
    when the outermost such block ends, never inside it. What it guards: a study storage's calls
    (``studies.storage``)."""
    # An interrupt raised inside SQLAlchemy leaves its session's transaction open (Optuna's session scope rolls
    # back on ``Exception`` only), holding SQLite's write lock: the worker could not mark its trial FAIL and it,
    # and its parent waiting on it, hung (CI: test_interrupting_the_parent_stops_its_workers_cleanly). Two
    # processes writing one SQLite study, Ctrl-C'd at random moments, hung in 11 of 150 tries before this, 0 of
    # 150 after (benchmarks/study_interrupts.py).
    global _defer_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
        if not _defer_depth and _deferred:
            _raise_interrupt(signal.SIGTERM if signal.SIGTERM in _deferred else signal.SIGINT)


def _raise_interrupt(signum: int):
    _deferred.clear()
    _raised.append(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())
    raise _raised[-1]


def _on_signal(signum, frame):
    if signum == signal.SIGTERM:
        # Once: a second SIGTERM (a parent forwarding the one its process group got too) must not cut short the
        # clean-up the first one started (marking a trial FAIL, writing the run record).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _defer_depth:
        _deferred.append(signum)
    else:
        _raise_interrupt(signum)


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (where Python runs signal handlers), and
    SIGINT a KeyboardInterrupt that :func:`check_interrupted` can raise again. A SIGINT that the process was
    started with ignored (a background job of a shell) stays ignored."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_signal)


def die_with_parent(parent_pid: int):
    """A ``preexec_fn`` for a worker: the kernel sends it SIGTERM when its parent dies (Linux ``prctl``
    PR_SET_PDEATHSIG), and a parent already gone by then ends it at once. Elsewhere it does nothing."""
    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell starts us with SIGINT ignored
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(143)
    return preexec
