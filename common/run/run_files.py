"""What a run dir may hold, how it is recognised, replaced and locked: the one place that decides what this repo
may delete.

``--overwrite`` (and a failed start, which the same command replaces) removes a folder only when this repo wrote
it, entry by entry: a run dir is recognised by its record (``run.json`` beside ``config.json``), a seeds dir by
``seeds.json`` beside ``seed-N`` run dirs, an export folder by its manifest (:mod:`common.files.owned_files`), and each
may hold only the files runs write. Anything else in it (a ``thesis.tex``, a ``src/``, a symlink) is named and
nothing is deleted. A process that writes a run dir holds an exclusive ``flock`` on its ``.lock`` file, so a
second process (a ``--resume`` of a run still training, an ``--overwrite`` of it) is refused naming the pid and
host; the kernel drops the lock when the process dies, however it dies.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import socket
from pathlib import Path

from common.errors import ConfigError
from common.files.json_files import read_json

RUN_FILES = {"config.json", "run.json", "metrics.jsonl", "summary.json", "best.pt", "last.pt", "code.patch",
             "split.json", "pretrain.pt", "transfer.pt", "teacher.pt", "model.pt", "dropped_rows.txt", ".lock",
             "log.txt"}
"""The files a run writes into its dir (both exercises)."""
RUN_PATTERNS = ("*.png", "*.state.pt", ".*.tmp")
"""... and the names it writes by pattern: figures, ex08's per-step training states, atomic writes' temp files."""
RUN_FOLDERS = {"wandb"}
"""Folders a run writes whose contents another library owns (W&B's offline run files)."""
LOCK = ".lock"
SUBMISSION = "submission"  # export's default folder inside a run dir (and its zip beside it)


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or any(fnmatch.fnmatch(name, p) for p in RUN_PATTERNS)


def is_run_dir(path: Path) -> bool:
    """A folder holding this repo's run record (``run.json`` with a status) beside a ``config.json``."""
    record = read_json(Path(path) / "run.json")
    return isinstance(record, dict) and isinstance(record.get("status"), str) and (Path(path) / "config.json").is_file()


def is_seeds_dir(path: Path) -> bool:
    seeds = read_json(Path(path) / "seeds.json")
    return isinstance(seeds, dict) and isinstance(seeds.get("seeds"), list)


def foreign_entries(path: Path) -> list[str]:
    """The entries of a run (or seeds) dir that no run wrote, as paths relative to it ('src/' for a folder)."""
    from common.files.owned_files import foreign_in_owned_folder

    path, foreign = Path(path), []
    seeds = is_seeds_dir(path)
    for entry in sorted(path.iterdir()):
        name = entry.name
        if entry.is_symlink():
            foreign.append(f"{name} (a symlink)")
        elif entry.is_dir() and name in RUN_FOLDERS:
            continue
        elif entry.is_dir() and name == SUBMISSION:
            foreign += [f"{name}/{f}" for f in foreign_in_owned_folder(entry)]
        elif entry.is_dir() and seeds and name.startswith("seed-") and is_run_dir(entry):
            foreign += [f"{name}/{f}" for f in foreign_entries(entry)]
        elif entry.is_dir():
            foreign.append(f"{name}/")
        elif name == f"{SUBMISSION}.zip":
            if not _exported_zip(path, entry):
                foreign.append(name)
        elif not (_is_run_file(name) or (seeds and name == "seeds.json")):
            foreign.append(name)
    return foreign


def _exported_zip(run_dir: Path, zip_path: Path) -> bool:
    """The zip beside ``submission/`` is export's when that folder's manifest lists it with these bytes."""
    from common.files.owned_files import read_manifest, sha256

    recorded = (read_manifest(Path(run_dir) / SUBMISSION) or {}).get(f"../{zip_path.name}")
    return recorded is not None and zip_path.is_file() and sha256(zip_path) == recorded


def check_replaceable(path: Path, flag: str = "--overwrite") -> None:
    """Refuse, naming why, to replace ``path`` unless it is missing, empty, or a run/seeds dir this repo wrote,
    holding only what runs write, and no process is writing it."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"{flag}: --out {path} is a symbolic link; give the folder itself (nothing was deleted)")
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"{flag}: --out {path} is a file, not a run dir; choose another --out (it is untouched)")
    if not any(path.iterdir()):
        return
    if not (is_run_dir(path) or is_seeds_dir(path)):
        raise ConfigError(f"{flag}: {path} is not a run dir this repo wrote (no run.json record beside config.json, "
                          "or seeds.json); nothing was deleted; choose another --out")
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"{flag}: {path} holds what no run wrote ({shown}); nothing was deleted; move those out "
                          "or choose another --out")
    for run_dir in [path, *sorted(p for p in path.glob("seed-*") if p.is_dir())]:
        holder = lock_holder(run_dir)
        if holder:
            raise ConfigError(f"{flag}: {run_dir} is being written by {holder}; stop it first (nothing was deleted)")


def remove_run_entries(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete what :func:`check_replaceable` accepted, entry by entry (never a whole tree blindly): the run files,
    W&B's folder, export's files, the seed dirs. Call :func:`check_replaceable` first."""
    from common.files.owned_files import remove_owned_folder

    path = Path(path)
    for entry in sorted(path.iterdir()):
        if entry.name in keep:
            continue
        if entry.is_dir() and entry.name in RUN_FOLDERS:
            shutil.rmtree(entry)
        elif entry.is_dir() and entry.name == SUBMISSION:
            remove_owned_folder(entry)
        elif entry.is_dir():  # a seed-N run dir (foreign folders were refused)
            remove_run_entries(entry)
            entry.rmdir()
        else:
            entry.unlink()


def is_failed_start(path: Path) -> bool:
    """A run that stopped before it saved anything (its data was missing, Ctrl-C while loading): the same
    command may replace it. True only for a run dir holding run files alone, no checkpoint, and no live writer."""
    path = Path(path)
    if not path.is_dir() or not is_run_dir(path) or lock_holder(path):
        return False
    record = read_json(path / "run.json")
    if record.get("status") not in ("failed", "interrupted", "running"):
        return False
    return not foreign_entries(path) and not any(p.suffix == ".pt" for p in path.iterdir())


# --- the lock ---------------------------------------------------------------------------------------------------

class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run dir>/.lock`` holding ``pid host``; released by
    :meth:`release` or by the kernel when the process ends (SIGKILL included)."""

    def __init__(self, run_dir: Path):
        import fcntl

        from common.files.nofollow import open_nofollow

        self.path = Path(run_dir) / LOCK
        self._fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(self._fd, 200, 0))
            os.close(self._fd)
            raise ConfigError(f"{run_dir} is being written by {holder}; wait for it to finish or stop it, "
                              "then try again") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _describe(content: bytes) -> str:
    pid, _, host = content.decode(errors="replace").strip().partition(" ")
    return f"process {pid or '?'} on {host or '?'}"


def lock_holder(run_dir: Path) -> str | None:
    """'process PID on HOST' while a live process holds ``run_dir``'s lock, else None."""
    import fcntl

    path = Path(run_dir) / LOCK
    if not path.is_file() or path.is_symlink():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return _describe(os.pread(fd, 200, 0))
    finally:
        os.close(fd)
