"""Shared fixtures: an isolated cache dir, offline W&B, and small synthetic data in the course's CSV format."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ex09_keypoints.data import KEYPOINT_COLUMNS  # noqa: E402

# A plausible mean face (pixels): the first row of the real training.csv, rounded.
MEAN_FACE = np.array([
    55.3, 33.0, 20.6, 38.6, 48.0, 34.0, 62.5, 32.8, 26.8, 38.4, 14.5, 38.4, 43.5, 18.3, 69.2, 22.8, 24.5, 22.8,
    7.8, 31.7, 33.5, 50.7, 58.1, 73.1, 26.8, 76.4, 39.1, 69.7, 41.3, 79.8]).reshape(15, 2)


@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory):
    """No test writes into ~/.cache or talks to W&B's servers."""
    os.environ["I2DL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("WANDB_API_KEY", None)
    yield


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


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data root with facial_keypoints/{training,val}.csv of 96 + 32 synthetic faces."""
    root = tmp_path_factory.mktemp("data")
    images, points = synthetic_faces(128, seed=1)
    write_course_csv(root / "facial_keypoints" / "training.csv", images[:96], points[:96])
    write_course_csv(root / "facial_keypoints" / "val.csv", images[96:], points[96:])
    return root


def real_data_dir() -> Path | None:
    root = Path(os.environ.get("I2DL_DATA_DIR", REPO.parent / "shared" / "data"))
    return root if (root / "facial_keypoints" / "training.csv").is_file() else None


@pytest.fixture
def real_data() -> Path:
    root = real_data_dir()
    if root is None:
        pytest.skip("real keypoint data absent: set I2DL_DATA_DIR to a folder holding facial_keypoints/"
                    "{training,val}.csv (CI uses ../shared/data)")
    return root


def tiny_config(data_dir: Path, **overrides):
    """A seconds-long ex09 config on the synthetic data."""
    from common.config import apply_overrides
    from ex09_keypoints.config import make_config

    cfg = make_config("quick")
    cfg.data.data_dir = str(data_dir)
    base = {"model.widths": [16, 32], "model.head_hidden": 32, "train.epochs": 3, "train.batch_size": 16,
            "train.ema_decay": 0.9, "train.threads": 1, "track.mode": "disabled"}
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


@pytest.fixture(scope="session")
def synthetic_mnist_dir(tmp_path_factory) -> Path:
    """A data root with MNIST/raw/ holding four small synthetic IDX files (900 train, 200 test)."""
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    (tr_x, tr_y), (te_x, te_y) = synthetic_digits(900, 1), synthetic_digits(200, 2)
    write_idx_gz(raw / "train-images-idx3-ubyte.gz", tr_x)
    write_idx_gz(raw / "train-labels-idx1-ubyte.gz", tr_y)
    write_idx_gz(raw / "t10k-images-idx3-ubyte.gz", te_x)
    write_idx_gz(raw / "t10k-labels-idx1-ubyte.gz", te_y)
    return root


@pytest.fixture
def synthetic_mnist(synthetic_mnist_dir, monkeypatch) -> Path:
    """The synthetic MNIST root, with the md5 table pointed at its files (the real md5s are the originals')."""
    from common.download import md5sum
    from ex08_autoencoder import data

    raw = synthetic_mnist_dir / "MNIST" / "raw"
    monkeypatch.setattr(data, "FILES", {k: (name, md5sum(raw / name)) for k, (name, _) in data.FILES.items()})
    return synthetic_mnist_dir


@pytest.fixture
def real_mnist() -> Path:
    root = Path(os.environ.get("I2DL_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("real MNIST absent: set I2DL_DATA_DIR to a folder holding MNIST/raw/*.gz "
                    "(CI uses ../shared/data)")
    return root


def tiny_ex08_config(data_dir: Path, recipe: str = "leaderboard", **overrides):
    """A seconds-long ex08 config on the synthetic digits."""
    from common.config import apply_overrides
    from ex08_autoencoder.config import make_config

    cfg = make_config(recipe)
    cfg.data.data_dir = str(data_dir)
    base = {"model.hidden": [64], "model.latent": 16, "model.head_hidden": [32], "pretrain.epochs": 2,
            "pretrain.batch_size": 64, "transfer.epochs": 3, "transfer.samples_per_epoch": 64,
            "teacher.epochs": 2, "teacher.unlabeled_per_epoch": 128, "teacher.unlabeled_batch": 64,
            "run.threads": 1, "track.mode": "disabled"}
    base.update(overrides)
    return apply_overrides(cfg, base)


def _postgres_bindir() -> Path | None:
    import glob
    import shutil

    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(dirs[-1]).parent if dirs else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port (its own data and socket dir), with a database
    ``optuna``; stopped and removed after the session. Skips when PostgreSQL is not installed or will not start."""
    import shutil
    import socket
    import subprocess
    import tempfile

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
                    ".ci/run installs it with apt-get install -y postgresql")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed: pip install -e '.[postgres]'")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="i2dl-pg-"))  # under /tmp: the server user must reach it
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the 'postgres' user
        if not shutil.which("runuser"):
            pytest.skip("running as root and runuser is missing: cannot start PostgreSQL as a normal user")
        try:
            import pwd
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = base / "data", base / "server.log"

    def run(*cmd, timeout=120):
        return subprocess.run(as_user + [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)

    r = run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    if r.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    r = run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start",
            "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=50")
    if r.returncode != 0:
        detail = log.read_text()[-300:] if log.exists() else r.stderr[-300:]
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {detail.strip()}")
    try:
        r = run(bindir / "psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-c", "CREATE DATABASE optuna")
        assert r.returncode == 0, r.stderr
        # A password in the URL (ignored under trust auth) lets tests check it is never printed.
        yield f"postgresql+psycopg2://postgres:s3cret-pw@127.0.0.1:{port}/optuna"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
