"""Weights & Biases tracking that never crashes and never hangs a run.

The mode is decided here, not by wandb: ``disabled`` when asked; otherwise ``$WANDB_MODE`` if set; otherwise
``online`` only when an API key is configured (``$WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host),
else ``offline`` (files under ``<run dir>/wandb/offline-run-*``, ``wandb sync`` uploads them later).
Online init gets a short timeout and falls back to offline; every later call swallows and reports its error
once. wandb itself is imported lazily (it costs ~1 s) and the API key is never printed.
"""
from __future__ import annotations

import contextlib
import netrc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ONLINE_INIT_TIMEOUT_S = 20.0
# Offline, init waits only for wandb's local service process, never the network: on a loaded 2-core machine
# (the test suite's subprocesses beside it) that took more than the online 20 s and the run lost its W&B record
# (an offline file with no run in it), so the local waits get minutes, not seconds.
LOCAL_WAIT_S = 300.0


@dataclass
class TrackConfig:
    """The ``track`` section of every experiment's config."""

    mode: str = "auto"
    """W&B: ``auto`` (online if an API key is configured, else offline), ``online``, ``offline``, ``disabled``."""
    project: str = "i2dl-lab"
    """W&B project."""
    group: str | None = None
    """W&B group (a study sets it to the study name; ex08 default: the run dir's name, grouping its steps)."""
    name: str | None = None
    """W&B run name (default: the run dir's name; ex08 appends ``-<step>``)."""


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


_said: set[str] = set()  # what this process already told the user about W&B (each said once)
_server_answers: bool | None = None  # the probe's answer, found once per process
PROBE_TIMEOUT_S = 3.0


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        print(f"[tracking] {message}", file=sys.stderr)


def server_reachable() -> bool:
    """A TCP connection to the W&B server opens within a few seconds (asked once per process): with a key but no
    network, every run would otherwise wait wandb's whole init timeout before going offline."""
    global _server_answers
    if _server_answers is None:
        import socket
        from urllib.parse import urlsplit

        url = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
            _server_answers = True
        except OSError as e:
            _server_answers = False
            _say_once("unreachable", f"W&B server {url.hostname}:{port} is unreachable ({e.__class__.__name__}); "
                                     "logging offline for this process (wandb sync uploads the runs later)")
    return _server_answers


def _no_server() -> None:
    global _server_answers
    _server_answers = False


def decide_mode(requested: str = "auto") -> str:
    """``online``/``offline``/``disabled`` from the requested mode, $WANDB_MODE, whether a key exists and whether
    the server answers."""
    if requested not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"track.mode must be auto, online, offline or disabled, not {requested!r}")
    if requested == "disabled":
        return "disabled"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("disabled", "offline", "dryrun"):
        return "disabled" if env == "disabled" else "offline"
    if requested == "offline":
        return "offline"
    if not api_key_configured():
        if requested == "online":
            _say_once("no-key", "track.mode=online but no W&B API key is configured ($WANDB_API_KEY or wandb "
                                "login); logging offline")
        return "offline"
    return "online" if server_reachable() else "offline"


class Tracker:
    """One W&B run. All methods are safe to call whatever happened to wandb."""

    def __init__(self, project: str, config: dict, run_dir: str | Path, mode: str = "auto",
                 name: str | None = None, group: str | None = None, job_type: str | None = None,
                 tags: list[str] | None = None, run_id: str | None = None):
        self.run = None
        self.mode = decide_mode(mode)
        self._warned = False
        self._run_dir = Path(run_dir)
        if self.mode == "disabled":
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            import wandb
        except Exception as e:  # not installed / broken install: train anyway
            self._warn(f"wandb unavailable ({e.__class__.__name__}); tracking disabled")
            self.mode = "disabled"
            return
        kwargs = dict(project=project, config=config, dir=str(run_dir), name=name, group=group,
                      job_type=job_type, tags=tags, reinit="finish_previous")
        if run_id:  # a resumed run continues its W&B run (offline: a second folder with the same id)
            kwargs.update(id=run_id, resume="allow")
        for mode in ([self.mode, "offline"] if self.mode == "online" else [self.mode]):
            try:
                # Git capture on: the run's page shows the commit (the run record has it too, with the diff).
                settings = wandb.Settings(init_timeout=ONLINE_INIT_TIMEOUT_S if mode == "online" else LOCAL_WAIT_S,
                                          x_service_wait=LOCAL_WAIT_S, silent=True, console="off",
                                          x_disable_stats=True, disable_git=False, save_code=False)
                self.run = wandb.init(mode=mode, settings=settings, **kwargs)
                self.mode = mode
                break
            except Exception as e:  # includes wandb's init timeout; never print the key
                self._warn(f"wandb init ({mode}) failed: {e.__class__.__name__}: {str(e)[:200]}", force=True)
                if mode == "online":  # later runs of this process go offline at once
                    _no_server()
        if self.run is None:
            self.mode = "disabled"

    def _warn(self, msg: str, force: bool = False) -> None:
        if force or not self._warned:
            print(f"[tracking] {msg}", file=sys.stderr)
            self._warned = True

    def _safe(self, fn, *args, **kwargs) -> Any:
        if self.run is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            self._warn(f"wandb call failed, continuing without it: {e.__class__.__name__}: {str(e)[:200]}")
            return None

    def define_metric(self, name: str, summary: str | None = None, step_metric: str | None = None) -> None:
        self._safe(lambda: self.run.define_metric(name, summary=summary, step_metric=step_metric))

    def log(self, metrics: dict, step: int | None = None) -> None:
        self._safe(lambda: self.run.log(metrics, step=step))

    def log_image(self, key: str, path: str | Path, step: int | None = None) -> None:
        def _log():
            import wandb
            self.run.log({key: wandb.Image(str(path))}, step=step)
        self._safe(_log)

    def log_model(self, path: str | Path, name: str, metadata: dict, aliases=("best",)) -> None:
        """The checkpoint as a W&B model artifact (``wandb sync`` uploads it with an offline run)."""
        def _log():
            import wandb
            art = wandb.Artifact(_artifact_name(name), type="model", metadata=metadata)
            art.add_file(str(path), name=Path(path).name)
            self.run.log_artifact(art, aliases=list(aliases))
        self._safe(_log)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """A W&B table (sortable in the UI); numpy image cells (HxW or HxWx3 uint8) become images."""
        def _log():
            import numpy as np
            import wandb
            data = [[wandb.Image(c) if isinstance(c, np.ndarray) else c for c in row] for row in rows]
            self.run.log({key: wandb.Table(columns=columns, data=data)})
        self._safe(_log)

    def log_confusion(self, key: str, y_true: list[int], y_pred: list[int], class_names: list[str]) -> None:
        def _log():
            import wandb
            self.run.log({key: wandb.plot.confusion_matrix(y_true=y_true, preds=y_pred, class_names=class_names)})
        self._safe(_log)

    def summary(self, values: dict) -> None:
        self._safe(lambda: self.run.summary.update(values))

    def info(self) -> dict:
        """Where this W&B run is (for the run record): mode, id, name, and its local folder."""
        if self.run is None:
            return {"mode": self.mode}
        return self._safe(lambda: {"mode": self.mode, "id": self.run.id, "name": self.run.name,
                                   "dir": str(Path(self.run.dir).parent)}) or {"mode": self.mode}

    def finish(self, exit_code: int = 0) -> None:
        from common.run.run_log import LOG

        if (self._run_dir / LOG).is_file():  # the run's own messages (common.run.run_log), as the run dir has them
            self._safe(lambda: self.run.save(str(self._run_dir / LOG), base_path=str(self._run_dir), policy="now"))
        self._safe(lambda: self.run.finish(exit_code=exit_code))
        self.run = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, *_) -> None:
        """A block left by an exception (NaN, a pruner, Ctrl-C) closes the run as failed (exit code 1)."""
        self.finish(exit_code=1 if exc_type is not None else 0)


def _artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def open_tracker(track: TrackConfig, config: dict, run_dir: Path, given: "Tracker | None" = None, *,
                 name: str, job_type: str, group: str | None = None, run_id: str | None = None):
    """``with open_tracker(...) as tracker:``: the caller's tracker when ``given`` (a study trial logs every
    step into its one run and finishes it itself), else a new W&B run that the block closes."""
    if given is not None:
        return contextlib.nullcontext(given)
    return Tracker(track.project, config, run_dir, track.mode, name=name, group=group or track.group,
                   job_type=job_type, run_id=run_id)
