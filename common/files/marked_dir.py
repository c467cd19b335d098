"""A folder this repo writes many files into (a study dir, the tutorial's dir) is recognised by a marker file it
writes there first, never by a common file name (a user's folder holding a ``report.md`` is not a study dir): it
writes only into a folder that is new, empty, marked by it, or (made before markers) recognised by ``legacy``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from common.errors import ConfigError
from common.files.json_files import read_json


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` is an SQLite database (its header), e.g. a study's ``study.db``."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\0"
    except OSError:
        return False


def check_marked_dir(folder: Path, marker: str, what: str, legacy: Callable[[Path], bool] = lambda p: False,
                     flag: str = "--out") -> dict | None:
    """The marker's content when ``folder`` is marked; None when it is missing or empty, or ``legacy(folder)``;
    else a :class:`ConfigError` naming what it holds (nothing is touched)."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"{flag} {folder} is a file or a symbolic link, not a {what}; choose another {flag}")
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    content = read_json(folder / marker)
    if isinstance(content, dict):
        return content
    if legacy(folder):
        return None
    entries = sorted(p.name for p in folder.iterdir())
    raise ConfigError(f"{flag} {folder} is not a {what} (no {marker}; it holds {', '.join(entries[:5])}"
                      f"{' ...' if len(entries) > 5 else ''}); give a new or empty folder, or one a {what} was "
                      "written into (nothing was touched)")


def mark_dir(folder: Path, marker: str, content: dict) -> None:
    """Write the marker (once: a marked folder keeps its first one)."""
    from common.files.atomic import atomic_write_text

    if not isinstance(read_json(Path(folder) / marker), dict):
        atomic_write_text(Path(folder) / marker, json.dumps(content) + "\n")
