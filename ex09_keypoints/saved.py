"""A saved keypoint model (``best.pt``) and a run's training state (``last.pt``, read back here): beside the
model, for training, ``--evaluate``, export and studies alike (none of them needs the training loop to load one)."""
from __future__ import annotations

from pathlib import Path

from common.config import check_resumable, from_dict, to_dict
from common.errors import ConfigError
from common.files import checkpoint
from common.training.training_state import check_state
from ex09_keypoints.config import KeypointsConfig, ModelConfig
from ex09_keypoints.models import KeypointModel, build_model

CHECKPOINT_FORMAT = "i2dl-ex09-v1"  # best.pt: a model
STATE_KIND = "ex09"  # last.pt: the whole training state, for --resume (common.training.training_state)


def save_best(model: KeypointModel, cfg: KeypointsConfig, path: Path, **meta) -> int:
    """The submitted artefact: weights + the model config to rebuild it (loadable with weights_only=True)."""
    return checkpoint.save_model(model, path, CHECKPOINT_FORMAT, to_dict(cfg.model), config=to_dict(cfg), meta=meta)


SAVED_BEFORE = {"tta_shift_px": 0, "tta_diagonals": False, "members": 1}
"""Model fields added after models were saved, with the value those models were made with."""
TEST_TIME_KEYS = ("model.flip_tta", "model.tta_shift_px", "model.tta_diagonals")
"""Model settings that change how a trained model predicts, not its weights (``--evaluate --set`` takes them)."""


def load_model(path: str | Path, device="cpu", test_time: dict | None = None) -> KeypointModel:
    """Rebuild a saved keypoint model (weights_only load; no pickled code); ``test_time``: other values for the
    :data:`TEST_TIME_KEYS` settings (e.g. ``{"tta_shift_px": 0}``)."""
    blob = checkpoint.load_model_blob(path, CHECKPOINT_FORMAT, "an ex09 keypoint model (best.pt)")
    # A model saved before a field existed predicts as it did then, not with today's default for it.
    model_cfg = from_dict(ModelConfig, {**SAVED_BEFORE, **blob["model_config"]})
    for key, value in (test_time or {}).items():
        setattr(model_cfg, key, value)
    model = checkpoint.build_checked(lambda: build_model(model_cfg), blob["state_dict"], path)
    return model.to(device).eval()


def load_training_state(path: str | Path, cfg: KeypointsConfig) -> dict:
    """A run's ``last.pt`` (or the run dir holding it), checked before anything is loaded: the right kind of
    file, saved by a run with the same config as ``cfg`` (else it would not go on with the same computation)."""
    path = Path(path) / "last.pt" if Path(path).is_dir() else Path(path)
    state = checkpoint.load(path)
    if state.get("format") == CHECKPOINT_FORMAT:
        raise ConfigError(f"--resume {path} is a saved model (best.pt); --resume wants a run dir or its last.pt")
    check_state(state, STATE_KIND, f"--resume {path}")
    check_resumable(state["config"], cfg, path)
    return state
