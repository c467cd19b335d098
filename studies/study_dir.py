"""A study's dir: where its storage (``study.db``), trial dirs, report and artifacts live. A dir is a study's when
this repo marked it so (:data:`STUDY_MARKER`), never because it holds a file with a common name: a user's folder
holding a ``report.md`` is not taken for one, and one study dir holds one study."""
from __future__ import annotations

import json
from pathlib import Path

from common.errors import ConfigError, short
from common.files.json_files import read_json
from common.run.run_files import is_run_dir
from studies.sweep import Sweep

STUDIES_DIR = Path("runs") / "studies"


def study_dir_of(sweep: Sweep, out: Path | None) -> Path:
    return (out or STUDIES_DIR / sweep.study).resolve()


STUDY_MARKER = ".i2dl-study.json"
"""Written into a study dir when a study first claims it: how a study dir is recognised (with, for a study dir
made before the marker, its ``study.db``), never by a common file name such as ``report.md``."""
SQLITE_MAGIC = b"SQLite format 3\0"


def check_study_dir(study_dir: Path, study: str | None = None) -> None:
    """A study writes its storage, trial dirs and report only into a dir that is new, empty, or this study's own:
    one holding the marker this repo writes (naming ``study``: one study per study dir) or, made before the marker,
    a ``study.db`` storage. Never into the data dir, a project folder, or a folder holding someone's report.md."""
    if study_dir.is_symlink() or (study_dir.exists() and not study_dir.is_dir()):
        raise ConfigError(f"--out {study_dir} is a file or a symbolic link, not a study dir; choose another --out")
    if not study_dir.is_dir() or not any(study_dir.iterdir()):
        return
    marker = read_json(study_dir / STUDY_MARKER)
    if isinstance(marker, dict):
        if study is not None and marker.get("study") != study:
            raise ConfigError(f"--out {study_dir} holds the study {short(marker.get('study'))}, and a study dir holds "
                              f"one study; give {study!r} another --out (nothing was touched)")
        return
    try:
        with open(study_dir / "study.db", "rb") as db:
            if db.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                return
    except OSError:
        pass
    if any(is_run_dir(p) for p in study_dir.glob("trial-[0-9]*")):  # a study dir made before the marker
        return
    entries = sorted(p.name for p in study_dir.iterdir())
    raise ConfigError(f"--out {study_dir} is not a study dir (no {STUDY_MARKER} nor study.db; it holds "
                      f"{', '.join(entries[:5])}{' ...' if len(entries) > 5 else ''}); give a new or empty folder, or "
                      "the dir of this study (nothing was touched)")


def claim_study_dir(study_dir: Path, study: str) -> None:
    """:func:`check_study_dir`, then mark the dir as ``study``'s (once)."""
    from common.files.atomic import atomic_write_text

    check_study_dir(study_dir, study)
    if not isinstance(read_json(study_dir / STUDY_MARKER), dict):
        atomic_write_text(study_dir / STUDY_MARKER, json.dumps({"written_by": "i2dl-lab study", "study": study}) + "\n")
