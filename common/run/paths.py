"""Where data and caches live.

Data is found by, in order: an explicit ``--data-dir``, ``$I2DL_DATA_DIR``, or ``<cache dir>/data``.
Decoded tensors go to the cache dir (``$I2DL_CACHE_DIR``, else ``$XDG_CACHE_HOME/i2dl-lab``, else
``~/.cache/i2dl-lab``) and never into the data dir, which may be read-only (as ``../shared/data`` is).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("I2DL_CACHE_DIR"):
        return Path(os.environ["I2DL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "i2dl-lab"


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data root: explicit argument, else $I2DL_DATA_DIR, else the default cache location. A root that is
    a file, not a folder, is a :class:`DataError` naming where it came from."""
    from common.errors import DataError

    if explicit:
        path, said = Path(explicit).expanduser(), f"--data-dir {explicit}"
    elif os.environ.get("I2DL_DATA_DIR"):
        path, said = Path(os.environ["I2DL_DATA_DIR"]).expanduser(), f"$I2DL_DATA_DIR={os.environ['I2DL_DATA_DIR']}"
    else:
        path, said = cache_dir() / "data", f"the cache dir's data folder {cache_dir() / 'data'}"
    if path.exists() and not path.is_dir():
        raise DataError(f"{said} is a file, not a folder; point it at the folder holding the data")
    return path
