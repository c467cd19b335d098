"""``RUN_DIR/log.txt``: what a run says on stderr (dropped rows, "time limit reached", warnings, the resume line),
kept beside its figures. While a run dir is open, ``sys.stderr`` is a tee: every write still reaches the terminal,
and the lines go to ``log.txt`` too, flushed as they come (a run killed with SIGKILL keeps what it said). A
progress bar's redraws (``\\r``) are not the run's messages and are left out."""
from __future__ import annotations

import sys
from pathlib import Path

LOG = "log.txt"


class _Tee:
    """``sys.stderr`` and the log file; what a progress bar writes (text holding ``\\r``, and the newline that ends
    its last redraw) goes to the terminal only."""

    def __init__(self, stream, log):
        self._stream, self._log, self._in_bar = stream, log, False

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        bar = "\r" in text or (self._in_bar and text == "\n")
        self._in_bar = "\r" in text
        if not bar and self._log is not None:
            try:
                self._log.write(text)
                self._log.flush()
            except (OSError, ValueError):  # a full disk or a closed file: the terminal still has it
                self._log = None
        return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


class RunLog:
    """Tee ``sys.stderr`` into ``run_dir/log.txt`` (appended: a resumed run's messages follow the first part's)
    until :meth:`close`."""

    def __init__(self, run_dir: Path):
        from common.files.nofollow import append_text

        self.path = Path(run_dir) / LOG
        self._file = append_text(self.path)
        self._previous = sys.stderr
        sys.stderr = self._tee = _Tee(self._previous, self._file)

    def close(self) -> None:
        if self._file is None:
            return
        if sys.stderr is self._tee:  # another tee installed after this one (a nested run) stays as it is
            sys.stderr = self._previous
        self._tee._log = None
        self._file.close()
        self._file = None
