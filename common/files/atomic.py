"""Files written atomically: a temp file beside the target, fsynced, then renamed over it, so a killed process
never leaves a half-written file, and a Ctrl-C or SIGTERM during the write lands after it."""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path


def _file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give (0666 less the umask): mkstemp's 0600 would leave every
    file the project writes private to its owner."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C (SIGINT) or SIGTERM that arrives inside the block and deliver it right after. A
    KeyboardInterrupt raised inside ``torch.save`` makes its zip writer's ``__exit__`` fail ("unexpected pos") and
    that error replaces the interrupt: the run then died with a traceback instead of its one-line "continue it
    with" message (seen in CI). Python only runs signal handlers in the main thread, so elsewhere this does
    nothing; nor for a signal whose handler was not set from Python (``getsignal`` is None: it could not be put
    back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):  # re-deliver to what handled it before: an exception, ignored, the default
            signal.raise_signal(s)


def atomic_write(path: Path, write) -> None:
    """``write(f)`` into a temp file beside ``path``, then rename it over ``path``: never a half-written file,
    and a Ctrl-C during the write lands after it (:func:`_ctrl_c_deferred`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _ctrl_c_deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _file_mode())
            with os.fdopen(fd, "wb") as f:
                out = _WriteErrors(f)
                try:
                    write(out)
                except Exception as e:
                    if out.error is not None:  # the disk's own words ("No space left"), not the writer's
                        raise OSError(out.error.errno, out.error.strerror, str(path)) from e
                    raise
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            if e.filename is None or e.filename == tmp:  # name the file the user knows, not the temp file
                raise OSError(e.errno, e.strerror, str(path)) from e
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _WriteErrors:
    """A file that remembers the OSError of a failed write: torch's zip writer reports a full disk as
    "unexpected pos", losing the ENOSPC that a user can act on."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    atomic_write(Path(path), lambda f: torch.save(obj, f))
