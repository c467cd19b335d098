"""Hand a trained model in: a folder laid out like the course's exercise (``exercise_code/...`` sources,
``models/*.p`` pickled the way the course's ``save_model`` does) and a zip of it, then a check of that folder
in a fresh interpreter that can import only it and torch (``common/course/submission_check.py``)."""
from __future__ import annotations

import inspect
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from common.errors import ConfigError
from common.files.atomic import atomic_write
from common.files.checkpoint import count_params
from common.files.owned_files import OwnedFolder
from common.limits import MAX_MODEL_BYTES, MAX_PARAMS, PASS_MARKS, mb


def module_source(module, replace: dict[str, str] | None = None) -> str:
    """A module's source, each key of ``replace`` (which must occur exactly once) swapped for its value: how
    the repo's own model file becomes the submission's, with no second copy of the model to keep in step."""
    text = Path(inspect.getsourcefile(module)).read_text()
    for old, new in (replace or {}).items():
        if text.count(old) != 1:
            raise RuntimeError(f"{module.__name__}: expected {old!r} once in its source, found {text.count(old)}")
        text = text.replace(old, new)
    return text


def check_against_record(run_dir: Path, checkpoint: Path, model, key: str = "params") -> None:
    """The model file must be the one the run made: its parameter count is the one ``summary.json`` recorded (a
    ``best.pt`` copied in from another run would be exported under this run's name). A run that did not finish
    recorded nothing to check against."""
    try:
        recorded = json.loads((Path(run_dir) / "summary.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):  # an interrupted run: its best.pt is all there is to go by
        return
    if isinstance(recorded, int) and recorded != count_params(model):
        raise ConfigError(f"{checkpoint} holds a model of {count_params(model):,} parameters, but the run recorded "
                          f"{recorded:,}: it was replaced by another model; export the run that made it")


def write_submission(out_dir: Path, sources: dict[str, str], pickle_name: str, obj, model) -> tuple[Path, list[str]]:
    """Write ``sources`` (path -> text, under ``out_dir``, with ``__init__.py`` in each package folder),
    ``models/<pickle_name>`` and the zip beside ``out_dir`` holding exactly those files; refuse a model over the
    course's limits. ``out_dir`` must be new or one export wrote (its manifest, :mod:`common.files.owned_files`, says
    so), and only files export wrote are replaced. Returns (the zip, the course's files in it)."""
    if count_params(model) >= MAX_PARAMS:
        raise ConfigError(f"the model has {count_params(model):,} parameters; the course takes fewer than "
                          f"{MAX_PARAMS:,}: train a smaller one")
    out_dir = Path(out_dir)
    blob = pickle.dumps(obj, protocol=4)  # protocol 4, as the course's save_model
    if len(blob) >= MAX_MODEL_BYTES:
        raise ConfigError(f"the pickled model would be {mb(len(blob))}; the course takes less than "
                          f"{mb(MAX_MODEL_BYTES)}: train a smaller one")
    files = {rel: text.encode() for rel, text in sources.items()}
    for rel in sources:
        for package in [p for p in Path(rel).parents if p != Path(".")]:
            files.setdefault(str(package / "__init__.py"), b"")
    files[f"models/{pickle_name}"] = blob
    zip_name = f"../{out_dir.name}.zip"
    folder = OwnedFolder(out_dir, "export", must_be_ours=True)
    folder.check([*files, zip_name])  # before anything is written
    for rel, data in sorted(files.items()):
        atomic_write(out_dir / rel, lambda f, data=data: f.write(data))
        folder.record(rel)
    names = sorted(files)

    def write_zip(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in names:
                zf.write(out_dir / rel, rel)
    atomic_write(folder.path(zip_name), write_zip)
    return folder.record(zip_name).resolve(), names


def verify_submission(out_dir: Path, files: list[str], inputs: dict) -> tuple[int, dict]:
    """Run the course-style check on ``files`` of ``out_dir`` in a fresh, isolated interpreter; ``inputs`` holds
    the data to score and this repo's predictions. Returns (exit code, the check's figures).

    Only the course's files are copied, into a new temp dir: nothing else in the folder (a planted ``torch.py``)
    can run, ``-I`` keeps the environment, the user's site-packages and the script's dir off ``sys.path``, and
    ``-B`` writes no ``__pycache__``."""
    import torch

    from common.course import submission_check
    with tempfile.TemporaryDirectory(prefix="submission-check-") as tmp:
        path, copy = Path(tmp) / "inputs.pt", Path(tmp) / "submission"
        torch.save({**inputs, "limits": {"max_params": MAX_PARAMS, "max_bytes": MAX_MODEL_BYTES,
                                         "pass_mark": PASS_MARKS[inputs["exercise"]]}}, path)
        for rel in files:
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(out_dir) / rel, copy / rel)
        proc = subprocess.run([sys.executable, "-I", "-B", inspect.getsourcefile(submission_check), str(copy),
                               str(path)], capture_output=True, text=True, timeout=1800, cwd=tmp)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the submission check printed no result (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.returncode, json.loads(lines[-1])
