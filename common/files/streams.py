"""Input that is not a regular file: a named pipe (FIFO) or a shell's ``<(zcat faces.csv.gz)``. Such a stream can
be read only once, so it is read whole into memory (sniffing its first bytes first would lose them), and a pipe
that nobody writes to is waited on for a bounded time with a line saying so, never forever."""
from __future__ import annotations

import os
import select
import stat
import sys
import time
from pathlib import Path

from common.errors import DataError

WAIT_ENV = "I2DL_STREAM_WAIT_S"
DEFAULT_WAIT_S = 60.0
MAX_BYTES = 4 << 30  # what a CSV of this course could be, with room


def is_stream(path: Path) -> bool:
    """A FIFO, a pipe or a character device (not a regular file, not a directory)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def read_stream(path: Path, wait_s: float | None = None) -> bytes:
    """All bytes of the stream at ``path``, read once. Waits at most ``wait_s`` (default ``$I2DL_STREAM_WAIT_S``,
    else 60 s) for the first byte; a :class:`DataError` naming the path if none comes."""
    if wait_s is None:
        try:
            wait_s = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
        except ValueError:
            raise DataError(f"${WAIT_ENV}={os.environ[WAIT_ENV]!r} is not a number of seconds") from None
    try:  # non-blocking open: a FIFO with no writer yet would block open() itself
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        deadline, said = time.monotonic() + wait_s, False
        while not poller.poll(200):
            if time.monotonic() > deadline:
                raise DataError(f"{path} is a pipe that nothing wrote to in {wait_s:.0f} s; start the program that "
                                "writes it, or give a regular file")
            if not said and time.monotonic() > deadline - wait_s + 2:
                print(f"[data] waiting for data on the pipe {path} (up to {wait_s:.0f} s)", file=sys.stderr)
                said = True
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:
                raise DataError(f"{path}: the stream is larger than {MAX_BYTES >> 30} GB; give a file")
    finally:
        os.close(fd)
