"""Several runs of one model config as one course model: their best weights become the members of a
``model.members`` ensemble (:class:`ex09_keypoints.models.Members`, the mean of their predictions inside
``forward``), so the course's loader runs it as it runs any of this repo's models. Refused, with the numbers,
past the course's 5M parameters or 20 MB."""
from __future__ import annotations

import statistics
from pathlib import Path

from common.config import changed_keys, from_dict
from common.errors import ConfigError
from common.files import checkpoint
from common.files.json_files import read_json
from common.limits import MAX_MODEL_BYTES, MAX_PARAMS, mb
from ex09_keypoints.config import ModelConfig
from ex09_keypoints.saved import CHECKPOINT_FORMAT, SAVED_BEFORE


def ensemble_model(run_dirs: list[Path]):
    """One :class:`KeypointModel` whose members are the runs' ``best.pt`` weights, in order."""
    from ex09_keypoints.models import build_model

    blobs = []
    for run in run_dirs:
        path = Path(run) / "best.pt"
        if not path.is_file():
            raise ConfigError(f"{run} has no best.pt: no epoch of that run finished; train (or --resume) it first")
        blobs.append((path, checkpoint.load_model_blob(path, CHECKPOINT_FORMAT, "an ex09 keypoint model (best.pt)")))
    first = {**SAVED_BEFORE, **blobs[0][1]["model_config"]}
    for path, blob in blobs[1:]:
        differ = changed_keys(first, {**SAVED_BEFORE, **blob["model_config"]}, prefix="model.")
        if differ:
            raise ConfigError(f"{path} is another model than {blobs[0][0]} ({', '.join(differ[:4])} differ); an "
                              "ensemble averages runs of one model config (e.g. the seeds of one --seeds dir)")
    each = int(first["members"])
    one = build_model(from_dict(ModelConfig, first))
    n_params = sum(p.numel() for p in one.parameters()) * len(blobs)
    n_bytes = sum(int(v.numel()) * v.element_size() for _, b in blobs for v in b["state_dict"].values())
    if n_params >= MAX_PARAMS or n_bytes >= MAX_MODEL_BYTES:
        raise ConfigError(f"{len(blobs)} runs of {n_params // len(blobs):,} parameters make {n_params:,} "
                          f"parameters and {mb(n_bytes)} of weights; the course takes fewer than {MAX_PARAMS:,} and "
                          f"less than {mb(MAX_MODEL_BYTES)}: ensemble fewer runs, or smaller models")
    cfg = from_dict(ModelConfig, {**first, "members": each * len(blobs)})
    state = {}
    for i, (_, blob) in enumerate(blobs):
        for key, value in blob["state_dict"].items():
            if each == 1:  # net.<x> -> net.nets.<i>.<x>
                state["net.nets." + str(i) + key[len("net"):]] = value
            else:  # net.nets.<j>.<x> -> net.nets.<i * each + j>.<x>
                j, rest = key[len("net.nets."):].split(".", 1)
                state[f"net.nets.{i * each + int(j)}.{rest}"] = value
    return checkpoint.build_checked(lambda: build_model(cfg), state, run_dirs[0]).eval()


def export_ensemble(cfg, run_dirs: list[Path], out_dir: Path) -> tuple[int, dict]:
    """The runs as one course model in ``out_dir`` (checked as every export is), its val score beside the
    members' own (their summaries)."""
    from ex09_keypoints.export import write_checked

    model = ensemble_model(run_dirs)
    code, result = write_checked(cfg, model, out_dir)
    scores = [(read_json(Path(r) / "summary.json") or {}).get("val/score") for r in run_dirs]
    if all(isinstance(s, (int, float)) for s in scores):
        result["members_val_score"] = scores
        result["members_mean_val_score"] = statistics.fmean(scores)
    result["members"] = [str(r) for r in run_dirs]
    return code, result

