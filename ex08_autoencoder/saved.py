"""A saved ex08 model (each step's checkpoint, the final ``model.pt``): written and read beside the models, for
training, its steps, export and studies alike."""
from __future__ import annotations

from pathlib import Path

from common.config import changed_keys, from_dict, to_dict
from common.errors import ConfigError
from common.files import checkpoint
from ex08_autoencoder.config import AutoencoderConfig, ModelConfig
from ex08_autoencoder.models import Autoencoder, Classifier

CHECKPOINT_FORMAT = "i2dl-ex08-v1"
CHECKPOINT_OF = {"pretrain": "pretrain.pt", "transfer": "transfer.pt", "teacher": "teacher.pt", "student": "student.pt"}


def save_step(model, kind: str, cfg: AutoencoderConfig, path: Path, **meta) -> int:
    """A step's model: weights + the model config to rebuild it (loadable with ``weights_only=True``)."""
    return checkpoint.save_model(model, path, CHECKPOINT_FORMAT, to_dict(cfg.model), kind=kind, meta=meta)


def load_step(path: Path, kind: str, device="cpu", expect_model: ModelConfig | None = None):
    """Rebuild an ``autoencoder`` or ``classifier`` saved by :func:`save_step`; with ``expect_model``, refuse
    one saved with other model settings."""
    blob = checkpoint.load_model_blob(path, CHECKPOINT_FORMAT, f"an ex08 {kind} checkpoint", kind=kind)
    differ = changed_keys(blob["model_config"], to_dict(expect_model)) if expect_model else []
    if differ:
        raise ConfigError(f"{path} was trained with other model settings ({', '.join(differ)}); use the --preset "
                          "and --set it was trained with")
    model_cfg = from_dict(ModelConfig, blob["model_config"])
    model = checkpoint.build_checked(lambda: Autoencoder(model_cfg) if kind == "autoencoder" else Classifier(model_cfg),
                                     blob["state_dict"], path)
    return model.to(device)
