"""A run directory: resolved config, ``metrics.jsonl`` (one JSON object per evaluation), ``summary.json``, and
the run record ``run.json``: whether the run is running, completed or failed (and why), and what made it.

Both exercises write the same files so runs, studies and reports read alike. A directory that already holds
something is never written into unless the caller says it continues that run (``reuse``: ``--resume``, ex08's
``--step``) or replaces it (``replace``: ``--overwrite``, which removes only what runs write:
:mod:`common.run.run_files`). A run that stopped before it saved anything is replaced by the same command. The
process writing a run dir holds its lock (:class:`common.run.run_files.RunLock`) until the run ends.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from common.config import save_config
from common.errors import ConfigError, describe_error
from common.files.atomic import atomic_write_text
from common.files.json_files import read_json
from common.files.nofollow import append_text
from common.run.run_files import LOCK, RunLock, check_replaceable, is_failed_start, remove_run_entries
from common.run.run_log import RunLog


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    return Path(root) / f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(path: Path, reuse: bool = False) -> None:
    """Refuse, naming it, an ``--out`` that is a file or a symlink, or a non-empty directory when not ``reuse``
    (a ``wandb`` folder alone does not count: a study trial opens its W&B run in the trial dir before training
    starts; nor does a failed start, which the run replaces)."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"--out {path} is a symbolic link; give the folder itself")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a run directory; choose another --out (the file is untouched)")
    if not reuse and path.is_dir() and any(p.name not in ("wandb", LOCK) for p in path.iterdir()) \
            and not is_failed_start(path):
        raise ConfigError(f"--out {path} already holds a run; choose a new --out, continue it (--resume {path}), "
                          "or replace it with --overwrite")


def run_status(path: Path) -> str | None:
    """The status in a run dir's ``run.json`` (running, complete, failed, interrupted), or None."""
    record = read_json(Path(path) / "run.json")
    return record.get("status") if isinstance(record, dict) else None


def check_not_complete(path: Path, finished) -> None:
    """``--resume`` of a run that finished all it planned would re-score it and rewrite its record: refuse.
    ``finished(summary) -> bool`` says whether its ``summary.json`` holds everything (a run stopped by its time
    limit completed, but may go on with a longer one)."""
    summary = read_json(Path(path) / "summary.json")
    if run_status(path) == "complete" and isinstance(summary, dict) and finished(summary):
        raise ConfigError(f"--resume {path}: that run is already complete (see its summary.json); start a new one "
                          "with another --out")


class RunDir:
    """Use as ``with RunDir(path, cfg) as run:``; the metrics file is closed however the block ends, and
    ``run.json`` records whether the block completed or failed (with the error)."""

    def __init__(self, path: str | Path, cfg=None, *, reuse: bool = False, replace: bool = False):
        self.path = Path(path)
        replace = replace or (not reuse and is_failed_start(self.path))
        if replace:
            check_replaceable(self.path)
        else:
            check_out_dir(self.path, reuse)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--out {self.path}: cannot create it ({e.strerror}); choose a writable place") from None
        self._lock = RunLock(self.path)  # a second process on this dir is refused here, naming this one
        replacing = replace and any(p.name != LOCK for p in self.path.iterdir())
        if replacing:
            remove_run_entries(self.path, keep=(LOCK,))
        try:
            self._log = RunLog(self.path)  # what the run says on stderr, kept in log.txt from here on
        except BaseException:
            self._lock.release()
            raise
        if replacing:
            print(f"[run] replaced the run in {self.path}", file=sys.stderr)
        # the record of the run this one continues (--resume, ex08 --step), if any
        self.previous = self._read_previous() if reuse else {}
        self._record = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **({"continues": self.previous} if self.previous else {})}
        self._write_record()
        if cfg is not None:
            save_config(cfg, self.path / "config.json")
        self._metrics = append_text(self.path / "metrics.jsonl")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def log_metrics(self, row: dict) -> None:
        self._metrics.write(json.dumps(row) + "\n")

    def metrics_rows(self) -> list[dict]:
        """The rows written to ``metrics.jsonl`` so far."""
        self._metrics.flush()
        return [json.loads(line) for line in (self.path / "metrics.jsonl").read_text().splitlines() if line.strip()]

    def write_summary(self, summary: dict) -> Path:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")
        return self.path / "summary.json"

    def _read_previous(self) -> dict:
        previous = read_json(self.path / "run.json")
        if not isinstance(previous, dict):
            return {}
        previous.pop("continues", None)  # one level of history is enough to join the pieces
        return previous

    def keep_metrics(self, keep) -> None:
        """Drop the ``metrics.jsonl`` rows for which ``keep(row)`` is false (a resumed run's epochs after its
        last checkpoint: it computes them again)."""
        self._metrics.close()
        rows = []
        for line in (self.path / "metrics.jsonl").read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a kill mid-write (or blank): dropped, its epoch comes again
                continue
        atomic_write_text(self.path / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in rows if isinstance(r, dict) and keep(r)))
        self._metrics = append_text(self.path / "metrics.jsonl")

    def record(self, **fields) -> None:
        """Add ``fields`` to the run record (``run.json``, see :mod:`common.run.record`) and write it."""
        self._record.update(fields)
        self._write_record()

    def _write_record(self) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(self._record, indent=2) + "\n")

    def close(self, error: BaseException | None = None) -> None:
        if self._metrics.closed:
            return
        self._metrics.close()
        status = ("complete" if error is None else "interrupted" if isinstance(error, KeyboardInterrupt)
                  else "failed")
        self._record.update(status=status, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if error is not None:
            self._record["error"] = describe_error(error)
        try:
            self._write_record()
        except OSError as e:  # a full disk: the error that caused it is the one to raise, not this one
            print(f"[run] could not update {self.path / 'run.json'}: {e.strerror}", file=sys.stderr)
        finally:
            self._log.close()
            self._lock.release()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, _tb) -> None:
        self.close(exc)

