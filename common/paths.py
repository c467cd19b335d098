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
    """The data root: explicit argument, else $I2DL_DATA_DIR, else the default cache location."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("I2DL_DATA_DIR"):
        return Path(os.environ["I2DL_DATA_DIR"]).expanduser()
    return cache_dir() / "data"
