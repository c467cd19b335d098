"""An ex09 run's best model as the course's submission: ``exercise_code/networks/keypoint_nn.py`` (this repo's
``models.py`` itself, its one repo import replaced by the constants' values) and ``models/facial_keypoints.p``
(``{"state_dict", "hparams"}``, pickled as the course's ``save_model`` does), checked in a fresh interpreter."""
from __future__ import annotations

from pathlib import Path

import torch

from common.course.submission import check_against_record, module_source, verify_submission, write_submission
from common.errors import ConfigError
from ex09_keypoints import models
from ex09_keypoints.data import FLIP_PERMUTATION, IMAGE_SIZE, KEYPOINT_GRID_OFFSET, load_keypoints
from ex09_keypoints.evaluate import predict
from ex09_keypoints.saved import load_model

CONSTANTS_IMPORT = "from ex09_keypoints.data import FLIP_PERMUTATION, IMAGE_SIZE, KEYPOINT_GRID_OFFSET  # export: constants"  # noqa: E501


def export(cfg, run_dir: Path, out_dir: Path) -> tuple[int, dict]:
    """Write and check the submission of ``run_dir`` (trained with ``cfg``) in ``out_dir``."""
    best = Path(run_dir) / "best.pt"
    if not best.is_file():
        raise ConfigError(f"{run_dir} has no best.pt: no epoch of that run finished; train (or --resume) it first")
    model = load_model(best)
    check_against_record(run_dir, best, model)
    if model.hparams["arch"] not in ("cnn", "mlp"):
        raise ConfigError(f"{best} is a {model.hparams['arch']} backbone: the course's server has no timm, so it "
                          "cannot rebuild it; export a model trained with model.arch=cnn or mlp")
    return write_checked(cfg, model, out_dir)


def write_checked(cfg, model, out_dir: Path) -> tuple[int, dict]:
    """Write ``model`` as the course's submission in ``out_dir`` and check it in a fresh interpreter."""
    val = load_keypoints(cfg.data.data_dir, cfg.data.drop_bad_rows)["val"]  # checked before anything is written
    constants = (f"FLIP_PERMUTATION = {tuple(FLIP_PERMUTATION)!r}\nIMAGE_SIZE = {IMAGE_SIZE}\n"
                 f"KEYPOINT_GRID_OFFSET = {KEYPOINT_GRID_OFFSET!r}  # the data's 1-based pixel centres")
    source = module_source(models, {CONSTANTS_IMPORT: constants})
    state = {"state_dict": model.state_dict(), "hparams": model.hparams}
    zip_path, files = write_submission(out_dir, {"exercise_code/networks/keypoint_nn.py": source},
                                       "facial_keypoints.p", state, model)
    with torch.no_grad():
        expected = predict(model, val.images)
    code, result = verify_submission(out_dir, files, {"exercise": "ex09", "val_images": val.images,
                                                      "val_targets": val.keypoints,
                                                      "expected": expected.reshape(len(val), -1)})
    return code, {**result, "zip": str(zip_path), "files": files}
