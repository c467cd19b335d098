"""ex08 steps computed once: a finished step is kept in the cache dir and taken from there by any later run that
would compute exactly the same thing (an ``ae`` study over the teacher step trains only the teacher per trial;
``--seeds`` and ``rerun`` reuse the steps they share).

An entry is content-addressed: its name is the sha256 of everything that decides what the step computes (the
step's config section, the model, the data settings and the split's digest, the seed and numerics settings, the
thread count and device, torch's build, the source of the code, the earlier steps' digests and
:data:`FORMAT`). It holds the step's checkpoint, its result, its metric rows and figures, and a manifest of
their sha256s; an entry whose files do not match its manifest is deleted and the step trained again, never used.
``--no-cache`` (``cache_steps=false``) turns the cache off. Two runs that want the same step at once (the
two workers of a study starting together) do not both train it: the second waits for the first's entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from common.config import to_dict
from common.errors import ConfigError
from common.files.atomic import atomic_write_text
from common.files.digest import sha256_file
from common.run.paths import cache_dir
from ex08_autoencoder.saved import CHECKPOINT_OF

FORMAT = 1
"""Bump when what an entry holds, or how a step is computed outside the hashed source, changes."""
MANIFEST = "manifest.json"
LOCKS = ".locks"
"""The folder of the per-digest lock files (kept: deleting one that another run holds open would split the lock)."""
_CODE = ("ex08_autoencoder", "common")


def root() -> Path:
    """``$I2DL_STEP_CACHE_DIR``, else ``ex08-steps`` in the cache dir."""
    return Path(os.environ["I2DL_STEP_CACHE_DIR"]) if os.environ.get("I2DL_STEP_CACHE_DIR") else \
        cache_dir() / "ex08-steps"


def code_digest() -> str:
    """The sha256 of every source file of the packages a step runs (a changed line anywhere: a new entry)."""
    repo = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for package in _CODE for p in (repo / package).rglob("*.py")):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def step_digests(cfg, split_sha256: str, threads: int, device, code: str) -> dict[str, str]:
    """Each step's digest; a step's includes the one before it, so a change to step 1 renews steps 1-3."""
    import torch

    config = to_dict(cfg)
    common = {"format": FORMAT, "model": config["model"], "split": split_sha256, "code": code,
              "data": {k: v for k, v in config["data"].items() if k != "data_dir"},
              "run": {k: config["run"][k] for k in ("seed", "amp", "deterministic")},
              "threads": threads, "device": str(device), "torch": torch.__version__}
    digests, earlier = {}, None
    for step in cfg.steps:
        blob = json.dumps({**common, "step": step, "section": config[step], "earlier": earlier}, sort_keys=True)
        digests[step] = earlier = hashlib.sha256(blob.encode()).hexdigest()
    return digests


def available() -> bool:
    """Whether the cache dir can be written; if not (read-only, not a folder), say so once and go on without it:
    the cache only saves time, a run never needs it."""
    try:
        (root() / LOCKS).mkdir(parents=True, exist_ok=True)
        probe = root() / LOCKS / f".probe.{os.getpid()}"
        probe.touch()
        probe.unlink()
        return True
    except OSError as e:
        print(f"[ex08] the step cache {root()} cannot be written ({e.strerror}); going on without it (every step "
              "is trained; --no-cache says so without this warning, I2DL_STEP_CACHE_DIR moves it)", file=sys.stderr)
        return False


WAIT_REPORT_S = 60.0
"""How often a run waiting for another run's step says so again (with the holder's pid, host and state)."""


@contextmanager
def computing(digest: str | None, step: str):
    """Held while this run restores or trains the step ``digest`` (None: no cache, nothing held). A second run
    asking for the same digest meanwhile waits, then finds the first run's entry instead of training the step
    too. An exclusive ``flock``: the OS drops it when its process dies, so a killed run never leaves it taken
    (its lock is taken over at once). The holder writes ``pid host since`` into the lock file, so a run that
    waits on a stopped or hung one can name it (:func:`_wait`)."""
    if digest is None:
        yield
        return
    import fcntl
    import socket
    import time

    from common.files.nofollow import open_nofollow

    (root() / LOCKS).mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(root() / LOCKS / digest, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait(fd, step)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _wait(fd: int, step: str) -> None:
    """Wait for the lock on ``fd``, saying every :data:`WAIT_REPORT_S` who holds it, since when, and whether that
    process is stopped (SIGSTOP: it will never let go by itself), with the two ways out."""
    import fcntl
    import time

    said = -WAIT_REPORT_S
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if waited - said >= WAIT_REPORT_S:
            said = waited
            print(f"[ex08] {step}: another run is computing this step ({_holder(os.pread(fd, 300, 0))}); waiting to "
                  f"take it from the step cache ({waited / 60:.0f} min so far; run with --no-cache to train it here "
                  "instead)", file=sys.stderr, flush=True)
        time.sleep(0.5)


def _holder(content: bytes) -> str:
    """'process PID on HOST since T' (+ 'which is stopped ...' when it is this host's and stopped)."""
    import socket

    pid, host, since = (content.decode(errors="replace").split() + ["?", "?", "?"])[:3]
    text = f"process {pid} on {host} (since {since})"
    if host == socket.gethostname() and pid.isdigit():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            state = ""
        if state in ("T", "t"):
            text += f", which is stopped (kill -CONT {pid} lets it go on)"
    return text


def _files(run_dir: Path, step: str, result: dict) -> list[Path]:
    return [Path(run_dir) / CHECKPOINT_OF[step], *(Path(f) for f in result.get("figures", []))]


def store(digest: str, step: str, run_dir: Path, result: dict, rows: list[dict]) -> None:
    """Keep a finished step: written into a temp folder beside the entry, then renamed into place (a kill leaves
    no half entry; two runs storing one entry at once keep the first)."""
    entry = root() / digest
    if entry.is_dir():
        return
    tmp = root() / f".{digest}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # ours: a temp folder of this process id, from a killed store
    try:
        tmp.mkdir(parents=True)
        for f in _files(run_dir, step, result):
            shutil.copy2(f, tmp / f.name)
        kept = {**result, "figures": [Path(f).name for f in result.get("figures", [])]}
        atomic_write_text(tmp / "result.json", json.dumps(kept) + "\n")
        atomic_write_text(tmp / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        manifest = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        atomic_write_text(tmp / MANIFEST, json.dumps({"step": step, "files": manifest}) + "\n")
    except OSError as e:  # a full or read-only cache: the run has its step, only the cache misses it
        print(f"[ex08] {step}: not kept in the step cache ({e.strerror}); the run goes on", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        tmp.rename(entry)
    except OSError:  # another run stored it first
        shutil.rmtree(tmp, ignore_errors=True)


def _plain(name) -> bool:
    """A file name an entry may hold: one plain component (no folder, no ``..``, not hidden)."""
    return isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..") \
        and not name.startswith(".") and "\\" not in name


def _intact(entry: Path, step: str) -> dict | None:
    """The entry's result when its manifest is well-formed and every file matches it; else None. A name that is
    not a plain file name (``../thesis.tex``) makes the entry damaged: a cache dir shared with others must not be a
    way to write outside the run dir."""
    from common.files.json_files import read_json

    manifest, result = read_json(entry / MANIFEST), read_json(entry / "result.json")
    if not (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) and isinstance(result, dict)):
        return None
    files = manifest["files"]
    figures = result.get("figures", [])
    if manifest.get("step") != step or CHECKPOINT_OF[step] not in files or not isinstance(figures, list) \
            or not all(_plain(n) for n in [*files, *figures]) or not set(figures) <= set(files):
        return None
    try:
        if any((entry / name).is_symlink() or sha256_file(entry / name) != sha for name, sha in files.items()):
            return None
    except OSError:
        return None
    return result


def _drop(entry: Path, step: str, why: str) -> None:
    print(f"[ex08] {step}: the cached entry {entry} {why}; deleted, training the step", file=sys.stderr)
    shutil.rmtree(entry, ignore_errors=True)


def restore(digest: str, step: str, run_dir: Path) -> tuple[dict, list[dict]] | None:
    """The step's result and metric rows, its checkpoint and figures copied into ``run_dir``; None when there is
    no entry, or a damaged one (then deleted: the step is trained again and stored anew). A checkpoint that is
    more than plain tensors (a pickle with code) counts as damaged: it is never unpickled, and never copied."""
    from common.files.atomic import atomic_write
    from common.files.checkpoint import load
    from common.files.json_files import loads

    entry = root() / digest
    if entry.is_symlink() or not entry.is_dir():
        return None
    result = _intact(entry, step)
    if result is None:
        _drop(entry, step, "does not match its manifest")
        return None
    try:
        load(entry / CHECKPOINT_OF[step])
    except ConfigError:
        _drop(entry, step, f"holds a {CHECKPOINT_OF[step]} that is not plain tensors (never loaded)")
        return None
    try:
        rows = [loads(line, str(entry / "rows.jsonl"))
                for line in (entry / "rows.jsonl").read_text(errors="replace").splitlines()]
    except (ConfigError, OSError):
        _drop(entry, step, "has a broken rows.jsonl")
        return None
    for name in [CHECKPOINT_OF[step], *result.get("figures", [])]:
        # written beside, then renamed: a symbolic link planted in the run dir is replaced, never followed
        atomic_write(Path(run_dir) / name, lambda f, src=entry / name: f.write(src.read_bytes()))
    result["figures"] = [str(Path(run_dir) / name) for name in result.get("figures", [])]
    return result, rows
