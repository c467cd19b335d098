"""An ex08 run's final classifier as the course's submission: ``exercise_code/models.py`` (this repo's
``models.py`` itself: it imports only torch and takes the course's ``Encoder(hparams, input_size, latent_dim)`` /
``Classifier(hparams, encoder)``) and ``models/classifier_pytorch.p`` (``{"classifier_pt1": {...}}``, pickled as
the course's ``save_model`` does), checked in a fresh interpreter on the run's own split."""
from __future__ import annotations

from pathlib import Path

from common.course.submission import check_against_record, module_source, verify_submission, write_submission
from common.errors import ConfigError
from ex08_autoencoder import models
from ex08_autoencoder.data import few_label_data, load_mnist
from ex08_autoencoder.evaluate import predict_logits
from ex08_autoencoder.saved import load_step


def export(cfg, run_dir: Path, out_dir: Path) -> tuple[int, dict]:
    """Write and check the submission of ``run_dir`` (trained with ``cfg``) in ``out_dir``."""
    final = Path(run_dir) / "model.pt"
    if not final.is_file():
        raise ConfigError(f"{run_dir} has no model.pt: the run has no finished classifier; run its transfer "
                          "(and teacher) steps first")
    model = load_step(final, "classifier").eval()
    check_against_record(run_dir, final, model, key="params_classifier")
    data = few_label_data(load_mnist(cfg.data.data_dir), cfg.data.split_seed, cfg.data.per_class)  # checked first
    state = {"classifier_pt1": {
        "state_dict": model.state_dict(), "hparams": model.hparams, "encoder_hparam": model.encoder.hparams,
        "encoder_inputsize": model.encoder.input_size, "encoder_latent_dim": model.encoder.latent_dim,
        "encoder_state_dict": model.encoder.state_dict()}}
    zip_path, files = write_submission(out_dir, {"exercise_code/models.py": module_source(models)},
                                       "classifier_pytorch.p", state, model)
    code, result = verify_submission(out_dir, files, {
        "exercise": "ex08", "val_images": data.val_x, "expected": predict_logits(model, data.val_x),
        "test100_images": data.test100_x, "test100_labels": data.test100_y,
        "test10k_images": data.test10k_x, "test10k_labels": data.test10k_y})
    return code, {**result, "zip": str(zip_path), "files": files}
