"""The run record (``run.json``): which command, code, packages, machine and data made a run, so a number can
be traced and made again (``python -m experiments.run rerun RUN_DIR``).

Written when the run starts and completed when it ends (:class:`common.run.rundir.RunDir`). Cheap by design: three
``git`` calls, package versions from their metadata, data files hashed once and then looked up by path, size
and modification time (a cache in the cache dir).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from common.run.device import core_count

REPO = Path(__file__).resolve().parents[2]  # common/run/record.py -> the checkout
COMMAND: list[str] | None = None
"""The command line that started this run, set by the CLI (``python -m experiments.run ...``); else sys.argv."""
PACKAGES = ("torch", "torchvision", "timm", "optuna", "wandb", "numpy", "scikit-learn", "scipy")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20,
                          check=True).stdout


def code_state(patch_path: Path | None = None, repo: Path = REPO) -> dict:
    """Commit, branch and dirty flag of this repo's checkout; when dirty, ``git diff HEAD`` goes to
    ``patch_path`` (files git does not track are listed, not copied). Outside a checkout it says so."""
    if not (Path(repo) / ".git").exists():
        try:  # an installed wheel: its version is what names the code
            version = metadata.version("i2dl-lab")
        except metadata.PackageNotFoundError:
            version = None
        return {"git": False, "reason": f"{repo} is not a git checkout (an installed package?)", "version": version}
    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
        branch = _git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
        status = _git(repo, "status", "--porcelain").splitlines()
    except (OSError, subprocess.SubprocessError) as e:
        return {"git": False, "reason": f"git failed: {type(e).__name__}: {str(e)[:200]}"}
    out = {"git": True, "commit": commit, "branch": branch, "dirty": bool(status)}
    if status:
        out["untracked"] = [line[3:] for line in status if line.startswith("??")]
        if patch_path is not None:
            from common.files.atomic import atomic_write_text

            atomic_write_text(patch_path, _git(repo, "diff", "HEAD", "--binary"))
            out["patch"] = Path(patch_path).name
    return out


def commit_known(commit: str, repo: Path = REPO) -> bool:
    """Whether ``commit`` is in this checkout's history (a run made elsewhere may name one it never had)."""
    try:
        _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def package_versions() -> dict:
    """Versions from the packages' metadata, and torch's build: a CPU and a CUDA wheel of one version
    (``2.14.1+cpu``, ``2.14.1+cu130``) compute differently, and so do cuDNN releases."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if "torch" in sys.modules:  # a run has imported it by now; never imported here just for the record
        import torch

        versions["torch_build"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                                   "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                                   else None}
    return versions


def host(threads: int, device) -> dict:
    """The machine: name, CPU model and cores, threads used; GPU name and CUDA version when one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {"name": platform.node(), "platform": platform.platform(), "cpu": cpu,
           "cores": core_count(),
           "threads": threads, "device": str(device)}
    if getattr(device, "type", None) == "cuda":
        import torch

        out.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return out


def sha256_files(paths: list[Path]) -> dict[str, str]:
    """``{path: sha256}``, each file hashed once per (path, size, mtime): a 50 MB CSV is not re-read every run."""
    from common.files.atomic import atomic_write_text
    from common.files.digest import sha256_file
    from common.run.paths import cache_dir

    cache_file = cache_dir() / "file-hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    out, changed = {}, False
    for path in map(Path, paths):
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in cache:
            cache[key], changed = sha256_file(path), True
        out[str(path)] = cache[key]
    if changed:
        try:
            atomic_write_text(cache_file, json.dumps(cache))
        except OSError:  # a read-only cache dir: hash again next time
            pass
    return out


def start_record(cfg, make_config, threads: int, device, patch_path: Path) -> dict:
    """What is known when a run starts: the command, its preset and the overrides on top of it (against
    ``make_config(preset)``), the code, the packages and the machine."""
    from common.config import diff_overrides
    from common.errors import ConfigError

    try:
        base = make_config(cfg.preset)
    except ConfigError:  # a config whose preset name was edited: every value counts as an override
        base = type(cfg)()
    command = COMMAND or [Path(sys.executable).name, *sys.argv]
    return {"command": command, "cwd": os.getcwd(), "preset": cfg.preset,
            "overrides": diff_overrides(base, cfg), "code": code_state(patch_path), "packages": package_versions(),
            "host": host(threads, device)}


def data_record(data_dir: Path, files: list[Path], **extra) -> dict:
    """The data a run read: the resolved data dir and each file's sha256 (``extra``: e.g. ex08's split digest)."""
    return {"dir": str(Path(data_dir).resolve()), "sha256": sha256_files(files), **extra}


def read_record(run_dir: Path) -> dict:
    """A run's ``run.json``; a missing, truncated or hand-broken one is an error naming the file and key."""
    from common.errors import ConfigError

    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no run.json record: it was not written by this project's runs")
    from common.files.json_files import read_json_dict

    record = read_json_dict(path, "run record")
    for key, kind in (("status", str), ("command", list), ("code", dict), ("host", dict)):
        if not isinstance(record.get(key), kind):
            raise ConfigError(f"{path}: key {key!r} is missing or not a {kind.__name__}; the record was edited "
                              "by hand or written by an older version")
    for key, kinds in (("commit", (str, type(None))), ("dirty", (bool, type(None))), ("git", (bool, type(None)))):
        if not isinstance(record["code"].get(key), kinds):
            raise ConfigError(f"{path}: key 'code.{key}' is {type(record['code'][key]).__name__}, not "
                              f"{' or '.join('null' if k is type(None) else k.__name__ for k in kinds)}; the record "
                              "was edited by hand")
    return record
