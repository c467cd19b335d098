"""A run directory: resolved config, ``metrics.jsonl`` (one JSON object per evaluation), ``summary.json``, and
the run record ``run.json``: whether the run is running, completed or failed (and why), and what made it.

Both exercises write the same files so runs, studies and reports read alike. A directory that already holds
something is never written into unless the caller says it continues that run (``reuse``: ``--resume``, ex08's
``--step``); the CLI's ``--overwrite`` removes an old run first (:func:`remove_run_dir`).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from common.checkpoint import atomic_write_text
from common.config import ConfigError, save_config


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    return Path(root) / f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(path: Path, reuse: bool = False) -> None:
    """Refuse, naming it, an ``--out`` that is a file, or a non-empty directory when not ``reuse``. (A ``wandb``
    folder alone does not count: a study trial opens its W&B run in the trial dir before training starts.)"""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a run directory; choose another --out (the file is untouched)")
    if not reuse and path.is_dir() and any(p.name != "wandb" for p in path.iterdir()):
        raise ConfigError(f"--out {path} already holds a run; choose a new --out, continue it (ex09 --resume, "
                          "ex08 --step), or replace it with --overwrite")


def remove_run_dir(path: Path) -> None:
    """``--overwrite``: delete an old run dir, and only a run dir (one holding ``config.json``, or the
    ``seeds.json`` of several seeds' runs)."""
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not any((path / name).is_file() for name in ("config.json", "seeds.json")):
        raise ConfigError(f"--overwrite: {path} is not a run dir (no config.json), so it is not deleted; "
                          "choose another --out")
    shutil.rmtree(path)


class RunDir:
    """Use as ``with RunDir(path, cfg) as run:``; the metrics file is closed however the block ends, and
    ``run.json`` records whether the block completed or failed (with the error)."""

    def __init__(self, path: str | Path, cfg=None, *, reuse: bool = False):
        self.path = Path(path)
        check_out_dir(self.path, reuse)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--out {self.path}: cannot create it ({e.strerror}); choose a writable place") from None
        # the record of the run this one continues (--resume, ex08 --step), if any
        self.previous = self._read_previous() if reuse else {}
        self._record = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **({"continues": self.previous} if self.previous else {})}
        self._write_record()
        if cfg is not None:
            save_config(cfg, self.path / "config.json")
        self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def log_metrics(self, row: dict) -> None:
        self._metrics.write(json.dumps(row) + "\n")

    def write_summary(self, summary: dict) -> Path:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")
        return self.path / "summary.json"

    def _read_previous(self) -> dict:
        try:
            previous = json.loads((self.path / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        previous.pop("continues", None)  # one level of history is enough to join the pieces
        return previous

    def keep_metrics(self, keep) -> None:
        """Drop the ``metrics.jsonl`` rows for which ``keep(row)`` is false (a resumed run's epochs after its
        last checkpoint: it computes them again)."""
        self._metrics.close()
        rows = [line for line in (self.path / "metrics.jsonl").read_text().splitlines() if line.strip()]
        atomic_write_text(self.path / "metrics.jsonl", "".join(f"{r}\n" for r in rows if keep(json.loads(r))))
        self._metrics = open(self.path / "metrics.jsonl", "a", buffering=1)

    def record(self, **fields) -> None:
        """Add ``fields`` to the run record (``run.json``, see :mod:`common.record`) and write it."""
        self._record.update(fields)
        self._write_record()

    def _write_record(self) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(self._record, indent=2) + "\n")

    def close(self, error: BaseException | None = None) -> None:
        if self._metrics.closed:
            return
        self._metrics.close()
        self._record.update(status="failed" if error is not None else "complete",
                            ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if error is not None:
            self._record["error"] = f"{type(error).__name__}: {error}"[:1000]
        self._write_record()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, _tb) -> None:
        self.close(exc)
