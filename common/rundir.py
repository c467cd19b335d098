"""A run directory: resolved config, ``metrics.jsonl`` (one JSON object per evaluation), ``summary.json``.

Both exercises write the same files so runs, studies and reports read alike.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from common.checkpoint import atomic_write_text
from common.config import save_config


def default_run_dir(experiment: str, root: str | Path = "runs") -> Path:
    return Path(root) / f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """Use as ``with RunDir(path, cfg) as run:``; the metrics file is closed however the block ends."""

    def __init__(self, path: str | Path, cfg=None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
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

    def close(self) -> None:
        self._metrics.close()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
