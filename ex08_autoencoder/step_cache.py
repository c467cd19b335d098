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


@contextmanager
def computing(digest: str | None, step: str):
    """Held while this run restores or trains the step ``digest`` (None: no cache, nothing held). A second run
    asking for the same digest meanwhile waits, then finds the first run's entry instead of training the step
    too. An exclusive ``flock``: the OS drops it when its process dies, so a killed run never leaves it taken."""
    if digest is None:
        yield
        return
    import fcntl

    locks = root() / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / digest, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[ex08] {step}: another run is computing this step; waiting to take it from the step cache",
                  file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the handle releases the lock


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
    tmp.mkdir(parents=True)
    for f in _files(run_dir, step, result):
        shutil.copy2(f, tmp / f.name)
    kept = {**result, "figures": [Path(f).name for f in result.get("figures", [])]}
    atomic_write_text(tmp / "result.json", json.dumps(kept) + "\n")
    atomic_write_text(tmp / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    manifest = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
    atomic_write_text(tmp / MANIFEST, json.dumps({"step": step, "files": manifest}) + "\n")
    try:
        tmp.rename(entry)
    except OSError:  # another run stored it first
        shutil.rmtree(tmp, ignore_errors=True)


def _intact(entry: Path, step: str) -> dict | None:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        files = manifest["files"]
        if manifest["step"] != step or CHECKPOINT_OF[step] not in files:
            return None
        if any(sha256_file(entry / name) != sha for name, sha in files.items()):
            return None
        return json.loads((entry / "result.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def restore(digest: str, step: str, run_dir: Path) -> tuple[dict, list[dict]] | None:
    """The step's result and metric rows, its checkpoint and figures copied into ``run_dir``; None when there is
    no entry, or a damaged one (then deleted: the step is trained again and stored anew)."""
    entry = root() / digest
    if not entry.is_dir():
        return None
    result = _intact(entry, step)
    if result is None:
        print(f"[ex08] {step}: the cached entry {entry} does not match its manifest; deleted, training the step",
              file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    for name in [CHECKPOINT_OF[step], *result.get("figures", [])]:
        shutil.copy2(entry / name, Path(run_dir) / name)
    result["figures"] = [str(Path(run_dir) / name) for name in result.get("figures", [])]
    rows = [json.loads(line) for line in (entry / "rows.jsonl").read_text().splitlines()]
    return result, rows
