"""A study's dir: where its storage (``study.db``), trial dirs, report and artifacts live. A dir is a study's when
this repo marked it so (:data:`STUDY_MARKER`), never because it holds a file with a common name: a user's folder
holding a ``report.md`` is not taken for one, and one study dir holds one study."""
from __future__ import annotations

from pathlib import Path

from common.errors import ConfigError, short
from common.files.marked_dir import check_marked_dir, is_sqlite, mark_dir
from common.run.run_files import is_run_dir
from studies.sweep import Sweep

STUDIES_DIR = Path("runs") / "studies"


def trial_dir(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / f"trial-{number:04d}"


def study_dir_of(sweep: Sweep, out: Path | None) -> Path:
    return (out or STUDIES_DIR / sweep.study).resolve()


STUDY_MARKER = ".i2dl-study.json"
"""Written into a study dir when a study first claims it (:mod:`common.files.marked_dir`), naming the study."""


def _made_before_markers(study_dir: Path) -> bool:
    """A study dir from before the marker: its ``study.db`` storage, or trial run dirs."""
    return is_sqlite(study_dir / "study.db") or any(is_run_dir(p) for p in study_dir.glob("trial-[0-9]*"))


def check_study_dir(study_dir: Path, study: str | None = None) -> None:
    """A study writes its storage, trial dirs and report only into a dir that is new, empty, or this study's own
    (one study per study dir). Never into the data dir, a project folder, or a folder holding someone's report.md."""
    marker = check_marked_dir(study_dir, STUDY_MARKER, "study dir", _made_before_markers)
    if marker is not None and study is not None and marker.get("study") != study:
        raise ConfigError(f"--out {study_dir} holds the study {short(marker.get('study'))}, and a study dir holds "
                          f"one study; give {study!r} another --out (nothing was touched)")


def claim_study_dir(study_dir: Path, study: str) -> None:
    """:func:`check_study_dir`, then mark the dir as ``study``'s (once)."""
    check_study_dir(study_dir, study)
    mark_dir(study_dir, STUDY_MARKER, {"written_by": "i2dl-lab study", "study": study})
