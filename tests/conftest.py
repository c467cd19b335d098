"""Shared fixtures: an isolated cache dir, offline W&B, and small synthetic data in the course's CSV format."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import REPO, real_data_dir, synthetic_digits, synthetic_faces, write_course_csv, write_idx_gz


@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory):
    """No test writes into ~/.cache or talks to W&B's servers."""
    os.environ["I2DL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("WANDB_API_KEY", None)
    # Optuna's log handler keeps the stderr it first saw: imported inside a capsys test, it would write to that
    # test's closed stream ever after.
    import optuna  # noqa: F401
    yield


@pytest.fixture(autouse=True)
def _own_step_cache(tmp_path, monkeypatch):
    """Each test its own ex08 step cache (its runs, CLI children included, share it): one test's steps are never
    another's."""
    monkeypatch.setenv("I2DL_STEP_CACHE_DIR", str(tmp_path / "step-cache"))


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data root with facial_keypoints/{training,val}.csv of 96 + 32 synthetic faces."""
    root = tmp_path_factory.mktemp("data")
    images, points = synthetic_faces(128, seed=1)
    write_course_csv(root / "facial_keypoints" / "training.csv", images[:96], points[:96])
    write_course_csv(root / "facial_keypoints" / "val.csv", images[96:], points[96:])
    return root


@pytest.fixture
def real_data() -> Path:
    root = real_data_dir()
    if root is None:
        pytest.skip("real keypoint data absent: set I2DL_DATA_DIR to a folder holding facial_keypoints/"
                    "{training,val}.csv (CI uses ../shared/data)")
    return root


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
    from common.files.download import md5sum
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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, saying why, on a machine without a CUDA GPU (CI, every 2-core machine)."""
    marked = [item for item in items if "cuda" in item.keywords]
    if not marked:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA GPU here (torch.cuda.is_available() is False); "
                                       "benchmarks/gpu_check.sh runs these where one is lent")
        for item in marked:
            item.add_marker(skip)
