"""Opening a file this repo writes in place (a lock, an appended log) without following a symbolic link: a link
planted in a run dir (``.lock -> ../thesis.tex``) would otherwise have the user's file truncated and written over.
Files replaced whole go through :mod:`common.files.atomic`, whose rename replaces a link rather than following it."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from common.errors import ConfigError


def open_nofollow(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW)``; a symbolic link at ``path`` is a :class:`ConfigError` naming it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{path} is a symbolic link, which this repo never writes through (it would overwrite "
                              f"{os.readlink(path)!r}); remove the link and try again (nothing was written)") from None
        raise


def append_text(path: Path, buffering: int = 1):
    """A text file opened for appending, never through a symbolic link (``metrics.jsonl``, ``log.txt``)."""
    fd = open_nofollow(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return open(fd, "a", buffering=buffering)
