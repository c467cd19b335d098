"""Hand a trained model in: a folder laid out like the course's exercise (``exercise_code/...`` sources,
``models/*.p`` pickled the way the course's ``save_model`` does) and a zip of it, then a check of that folder
in a fresh interpreter that can import only it and torch (``common/submission_check.py``)."""
from __future__ import annotations

import inspect
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common.checkpoint import MAX_PARAMS, atomic_write, atomic_write_text, count_params
from common.config import ConfigError

COURSE_MAX_BYTES = 20_000_000  # the course's "20 MB" is 20 * 1e6 bytes


def module_source(module, replace: dict[str, str] | None = None) -> str:
    """A module's source, each key of ``replace`` (which must occur exactly once) swapped for its value: how
    the repo's own model file becomes the submission's, with no second copy of the model to keep in step."""
    text = Path(inspect.getsourcefile(module)).read_text()
    for old, new in (replace or {}).items():
        if text.count(old) != 1:
            raise RuntimeError(f"{module.__name__}: expected {old!r} once in its source, found {text.count(old)}")
        text = text.replace(old, new)
    return text


def write_submission(out_dir: Path, sources: dict[str, str], pickle_name: str, obj, model) -> Path:
    """Write ``sources`` (path -> text, under ``out_dir``, with ``__init__.py`` in each package folder) and
    ``models/<pickle_name>``; refuse a model over the course's limits. Returns the zip beside ``out_dir``."""
    if count_params(model) >= MAX_PARAMS:
        raise ConfigError(f"the model has {count_params(model):,} parameters; the course takes fewer than "
                          f"{MAX_PARAMS:,}: train a smaller one")
    out_dir = Path(out_dir)
    for rel, text in sources.items():
        path = out_dir / rel
        for package in [p for p in path.relative_to(out_dir).parents if p != Path(".")]:
            (out_dir / package / "__init__.py").parent.mkdir(parents=True, exist_ok=True)
            (out_dir / package / "__init__.py").touch()
        atomic_write_text(path, text)
    weights = out_dir / "models" / pickle_name
    atomic_write(weights, lambda f: pickle.dump(obj, f, protocol=4))  # protocol 4, as the course's save_model
    size = weights.stat().st_size
    if size >= COURSE_MAX_BYTES:
        weights.unlink()
        raise ConfigError(f"the pickled model would be {size / 1e6:.1f} MB; the course takes less than 20 MB: "
                          "train a smaller one")
    return Path(shutil.make_archive(str(out_dir), "zip", root_dir=out_dir))


def verify_submission(out_dir: Path, inputs: dict) -> tuple[int, dict]:
    """Run the course-style check on ``out_dir`` in a fresh, isolated interpreter; ``inputs`` holds the data to
    score and this repo's predictions. Returns (exit code, the check's figures)."""
    import torch

    from common import submission_check

    with tempfile.TemporaryDirectory(prefix="submission-check-") as tmp:
        path = Path(tmp) / "inputs.pt"
        torch.save(inputs, path)
        proc = subprocess.run([sys.executable, "-I", inspect.getsourcefile(submission_check),
                               str(Path(out_dir).resolve()), str(path)], capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the submission check printed no result (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.returncode, json.loads(lines[-1])
