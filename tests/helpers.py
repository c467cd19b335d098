"""Plain helpers the tests share (fixtures live in conftest.py): small synthetic data in the course's formats,
seconds-long configs, the real CLI in a fresh process, and sweeps/waits/checks for the study tests."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from ex09_keypoints.data import KEYPOINT_COLUMNS

REPO = Path(__file__).resolve().parents[1]

# A plausible mean face (pixels): the first row of the real training.csv, rounded.
MEAN_FACE = np.array([
    55.3, 33.0, 20.6, 38.6, 48.0, 34.0, 62.5, 32.8, 26.8, 38.4, 14.5, 38.4, 43.5, 18.3, 69.2, 22.8, 24.5, 22.8,
    7.8, 31.7, 33.5, 50.7, 58.1, 73.1, 26.8, 76.4, 39.1, 69.7, 41.3, 79.8]).reshape(15, 2)


def synthetic_faces(n: int, seed: int = 0):
    """``(images uint8 (n,96,96), keypoints px (n,15,2))``: a shifted/scaled template of 15 points, each drawn
    as a bright Gaussian blob on a dim noisy background, so the mapping image -> points is learnable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96] + 1.0  # the data's 1-based convention: pixel j is centred at j + 1
    images = np.empty((n, 96, 96), dtype=np.uint8)
    points = np.empty((n, 15, 2), dtype=np.float64)
    for i in range(n):
        scale = rng.uniform(0.85, 1.1)
        shift = rng.uniform(-6, 6, size=2)
        kp = (MEAN_FACE - 48) * scale + 48 + shift + rng.normal(0, 0.8, size=(15, 2))
        kp = np.clip(kp, 1, 95)
        img = rng.normal(40, 8, size=(96, 96))
        for x, y in kp:
            img += 180 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        points[i] = kp
    return images, points


def write_course_csv(path: Path, images, points, index_column: bool = False) -> Path:
    """Write rows in the course's format (30 keypoint columns in px, then Image)."""
    header = ([""] if index_column else []) + list(KEYPOINT_COLUMNS) + ["Image"]
    lines = [",".join(header)]
    for i, (img, kp) in enumerate(zip(images, points)):
        cells = ([str(i)] if index_column else []) + [f"{v:.4f}" for v in kp.reshape(-1)]
        cells.append(" ".join(map(str, img.reshape(-1).tolist())))
        lines.append(",".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def real_data_dir() -> Path | None:
    root = Path(os.environ.get("I2DL_DATA_DIR", REPO.parent / "shared" / "data"))
    return root if (root / "facial_keypoints" / "training.csv").is_file() else None


def tiny_config(data_dir: Path, **overrides):
    """A seconds-long ex09 config on the synthetic data."""
    from common.config import apply_overrides
    from ex09_keypoints.config import make_config

    cfg = make_config("quick")
    cfg.data.data_dir = str(data_dir)
    base = {"model.widths": [16, 32], "model.head_hidden": 32, "train.epochs": 3, "train.batch_size": 16,
            "train.ema_decay": 0.9, "run.threads": 1, "track.mode": "disabled"}
    base.update(overrides)
    return apply_overrides(cfg, base)


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as a gzipped IDX file (the MNIST format)."""
    import gzip

    magic = {3: 2051, 1: 2049}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def synthetic_digits(n: int, seed: int = 0):
    """``(images uint8 (n,28,28), labels (n,))``: ten fixed random stroke templates, shifted and noised, so a
    small MLP can learn them but not instantly."""
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 28, 28)) > 0.8) * 200.0
    labels = rng.integers(0, 10, size=n)
    images = templates[labels] + rng.normal(0, 30, size=(n, 28, 28))
    shifts = rng.integers(-1, 2, size=(n, 2))
    for i, (dy, dx) in enumerate(shifts):
        images[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def tiny_ex08_config(data_dir: Path, preset: str = "leaderboard", **overrides):
    """A seconds-long ex08 config on the synthetic digits."""
    from common.config import apply_overrides
    from ex08_autoencoder.presets import make_config

    cfg = make_config(preset)
    cfg.data.data_dir = str(data_dir)
    base = {"model.hidden": [64], "model.latent": 16, "model.head_hidden": [32], "pretrain.epochs": 2,
            "pretrain.batch_size": 64, "transfer.epochs": 3, "transfer.samples_per_epoch": 64,
            "teacher.epochs": 2, "teacher.unlabeled_per_epoch": 128, "teacher.unlabeled_batch": 64,
            "run.threads": 1, "track.mode": "disabled"}
    base.update(overrides)
    return apply_overrides(cfg, base)


def short_real_ex08_sets(**changes) -> list[str]:
    """``--set`` items of a short leaderboard run on real MNIST (6000 unlabeled images, a small model); keys
    with dots as ``**{"teacher.epochs": 2}``."""
    sets = {"data.max_unlabeled": 6000, "model.hidden": "[64]", "model.latent": 16, "model.head_hidden": "[32]",
            "pretrain.epochs": 2, "pretrain.batch_size": 128, "transfer.epochs": 3, "transfer.samples_per_epoch": 64,
            "teacher.epochs": 12, "teacher.unlabeled_per_epoch": 4000, "teacher.unlabeled_batch": 64,
            "run.threads": 1, "track.mode": "disabled", **changes}
    return [f"{key}={value}" for key, value in sets.items()]


def cli(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process (as a user, or a worker on another machine, would start it)."""
    return subprocess.run([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


# --- Optuna studies -------------------------------------------------------------------------------------------

def write_sweep(path: Path, data_dir: Path, *, fixed=None, space=None, **top) -> Path:
    """A seconds-per-trial ex09 sweep on the synthetic faces."""
    spec = {"study": "t", "experiment": "ex09", "preset": "quick", "metric": "val/score", "direction": "maximize",
            "trials": 3, "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
            "storage": {"heartbeat_s": 1, "grace_s": 4},  # short, yet past a loaded CI's stalls
            "fixed": {"data.data_dir": str(data_dir), "model.widths": [16, 32], "model.head_hidden": 32,
                      "train.epochs": 2, "train.batch_size": 16, "train.ema_decay": 0.9, "run.threads": 1,
                      "track.mode": "offline", **(fixed or {})},
            "space": space or {"depth": {"type": "int", "low": 1, "high": 2},
                               "model.widths": {"type": "list", "length": "depth",
                                                "item": {"type": "int", "low": 8, "high": 24, "step": 8}},
                               "train.lr": {"type": "float", "low": 1e-3, "high": 4e-3, "log": True}}}
    spec.update(top)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def write_ae_sweep(path: Path, data_dir: Path, **fixed) -> Path:
    """A seconds-per-trial ex08 sweep on the synthetic digits (256 unlabeled images)."""
    path.write_text(yaml.safe_dump({
        "study": "ae-tiny", "experiment": "ex08", "preset": "leaderboard", "metric": "val/acc", "trials": 2,
        "sampler": {"type": "random", "seed": 1}, "pruner": {"type": "none"},
        "fixed": {"data.data_dir": str(data_dir), "data.max_unlabeled": 256, "model.hidden": [64],
                  "model.latent": 16, "model.head_hidden": [16], "pretrain.epochs": 1, "pretrain.batch_size": 64,
                  "teacher.unlabeled_batch": 64, "run.threads": 1, "transfer.epochs": 3,
                  "transfer.samples_per_epoch": 64, "teacher.epochs": 2, "teacher.unlabeled_per_epoch": 256,
                  "track.mode": "offline", **fixed},
        "space": {"transfer.lr_head": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True}}}))
    return path


def load(url: str, name: str = "t"):
    """The study ``name`` in the storage at ``url``."""
    import optuna

    from studies.storage import open_storage
    return optuna.load_study(study_name=name, storage=open_storage(url))


def check_invariants(study, target: int) -> list:
    """Unique trial numbers, none left RUNNING, at least ``target`` finished; returns the finished ones."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "trial numbers must be unique"
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], "no trial may stay RUNNING"
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= target
    return finished


def wait_for(predicate, timeout_s: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def trials_of(url):
    try:
        return load(url).get_trials(deepcopy=False)
    except Exception:  # the study is not created yet
        return []


def retries_of(study, number: int) -> list[dict]:
    """Params of the trials queued to retry trial ``number``. The killed trial may itself be a retry (a worker
    stalled on a loaded machine can lose its trial to the heartbeat check): then ``failed_trial`` names the
    first of the chain, and ``retry_history`` lists them all."""
    return [t.params for t in study.trials if t.system_attrs.get("retry_history", [None])[-1] == number]


def ctrl_c_works() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: a test suite started in the background by a
    non-interactive shell inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when(args: list, ready, what: str, timeout_s: float = 90) -> tuple[int, str]:
    """Start the CLI with ``args``, send it SIGINT once ``ready()`` holds; returns (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works)
    try:
        wait_for(ready, 180, what)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


# --- hostile input ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def serve_dir(folder: Path):
    """An HTTP server on loopback serving ``folder``; yields its base URL and the list of paths requested."""
    import http.server
    import threading
    from functools import partial

    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()


def run_main(argv: list, capsys) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of the CLI's ``main(argv)`` in this process, whether it returns or exits."""
    from experiments.run import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def export(run_dir, capsys, *more) -> tuple[int, dict, str]:
    """``export RUN_DIR`` through the CLI in this process: (exit code, its JSON result, stderr)."""
    import json

    code, out, err = run_main(["export", run_dir, *more], capsys)
    return code, (json.loads(out.strip().splitlines()[-1]) if code in (0, 1) else {}), err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: to show nothing was overwritten."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
