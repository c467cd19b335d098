"""Handing in to the course: small models of each kind are trained, exported, and the export is loaded the way
the course loads it in a fresh interpreter that cannot import this repo."""
from __future__ import annotations

import json
import pickle
import zipfile

import pytest
import torch

from helpers import export, run_main, tiny_config, tiny_ex08_config

SMALL_EX09 = ["--preset", "quick", "--no-progress", "--set", "model.widths=[8,16]", "model.head_hidden=16",
              "train.epochs=2", "train.batch_size=16", "run.threads=1", "track.mode=disabled"]


def mechanics_hold(code: int, result: dict) -> bool:
    """Every check but the course's pass mark holds, and the exit code says whether the mark was reached (these
    tiny models are trained for seconds: most do not reach it)."""
    checks = {k: v for k, v in result["checks"].items() if k != "passes_the_course_mark"}
    return all(checks.values()) and code == (0 if result["passes"] else 1)


def test_an_ex09_model_exports_and_scores_as_evaluate_does(synthetic_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", run, *SMALL_EX09], capsys)[0] == 0
    code, result, err = export(run, capsys)
    assert mechanics_hold(code, result), err
    assert result["max_abs_diff"] <= 1e-5
    if not result["passes"]:
        assert f"does not pass: score {result['score']:.4g} is below the course's mark of 100" in err
    sub = run / "submission"
    assert (sub / "exercise_code" / "networks" / "keypoint_nn.py").is_file()
    assert (sub / "models" / "facial_keypoints.p").stat().st_size < 20e6
    with zipfile.ZipFile(run / "submission.zip") as zf:
        assert {"exercise_code/networks/keypoint_nn.py", "models/facial_keypoints.p"} <= set(zf.namelist())
    source = (sub / "exercise_code" / "networks" / "keypoint_nn.py").read_text()
    assert "from ex09_keypoints" not in source and "class KeypointModel(nn.Module)" in source
    # the course score of the export equals --evaluate's on the same CSV
    code, out, err = run_main(["ex09", "--evaluate", run / "best.pt", "--csv",
                               synthetic_data_dir / "facial_keypoints" / "val.csv"], capsys)
    assert code == 0, err
    assert result["score"] == pytest.approx(json.loads(out.strip().splitlines()[-1])["score"], abs=1e-3)


@pytest.mark.slow  # 8 s for both; the ex09 export stays in the fast loop
@pytest.mark.parametrize("preset", ["leaderboard", "case-study"])
def test_an_ex08_classifier_exports_with_the_runs_accuracies(preset, synthetic_mnist, tmp_path, capsys):
    from ex08_autoencoder.train import train

    run = tmp_path / preset
    summary = train(tiny_ex08_config(synthetic_mnist, preset), run, progress=False)
    code, result, err = export(run, capsys, "--data-dir", synthetic_mnist)
    assert mechanics_hold(code, result), err
    assert result["convolutions"] == 0 and result["max_abs_diff"] <= 1e-5
    assert result["test100_acc"] == pytest.approx(summary["test100/acc"], abs=1e-6)
    assert result["test10k_acc"] == pytest.approx(summary["test10k/acc"], abs=1e-6)
    with open(run / "submission" / "models" / "classifier_pytorch.p", "rb") as f:
        assert set(pickle.load(f)["classifier_pt1"]) == {"state_dict", "hparams", "encoder_hparam", "encoder_inputsize",
                                                        "encoder_latent_dim", "encoder_state_dict"}


@pytest.mark.slow  # 7.5 s: a fresh interpreter imports the export
def test_a_submission_that_needs_this_repo_fails_its_check(synthetic_data_dir, tmp_path, capsys):
    from common.course.submission import verify_submission
    from ex09_keypoints.train import train

    run = tmp_path / "run"
    train(tiny_config(synthetic_data_dir), run, progress=False)
    assert mechanics_hold(*export(run, capsys)[:2])
    source = run / "submission" / "exercise_code" / "networks" / "keypoint_nn.py"
    source.write_text(source.read_text() + "\nimport ex09_keypoints.data  # a leftover import of this repo\n")
    code, result = verify_submission(run / "submission", ["exercise_code/__init__.py",
                                                          "exercise_code/networks/__init__.py",
                                                          "exercise_code/networks/keypoint_nn.py",
                                                          "models/facial_keypoints.p"], {"exercise": "ex09",
                                                          "val_images": torch.zeros(1, 1, 96, 96, dtype=torch.uint8),
                                                          "val_targets": torch.zeros(1, 15, 2),
                                                          "expected": torch.zeros(1, 30)})
    assert code == 1 and result["checks"] == {"loads": False} and "course's server does not have" in result["error"]


@pytest.mark.slow  # 4 s: imports timm
def test_a_timm_backbone_is_refused_with_a_reason(synthetic_data_dir, tmp_path, capsys):
    from ex09_keypoints.train import train

    run = tmp_path / "timm"
    train(tiny_config(synthetic_data_dir, **{"model.arch": "timm:lcnet_050", "model.input_size": 32,
                                             "train.epochs": 1}), run, progress=False)
    code, _, err = export(run, capsys)
    assert code == 2 and err.count("\n") == 1 and "timm:lcnet_050 backbone" in err and "model.arch=cnn" in err


def test_bad_runs_to_export(synthetic_data_dir, synthetic_mnist, tmp_path, capsys):
    from common.config import to_dict
    from common.files.atomic import atomic_torch_save
    from ex08_autoencoder.train import train as train_ex08
    from ex09_keypoints.models import build_model

    code, _, err = export(tmp_path / "nothing", capsys)
    assert code == 2 and "is not a run dir (no config.json)" in err
    # a run that never finished an epoch
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    cfg = tiny_config(synthetic_data_dir)
    (unfinished / "config.json").write_text(json.dumps(to_dict(cfg)))
    code, _, err = export(unfinished, capsys)
    assert code == 2 and "has no best.pt" in err
    # an ex08 checkpoint where ex09's best.pt belongs
    train_ex08(tiny_ex08_config(synthetic_mnist, **{"only_step": "pretrain"}), tmp_path / "ex08", progress=False)
    (unfinished / "best.pt").write_bytes((tmp_path / "ex08" / "pretrain.pt").read_bytes())
    code, _, err = export(unfinished, capsys)
    assert code == 2 and "is not an ex09 keypoint model" in err and "i2dl-ex08-v1" in err
    # a model over the course's limits (9M parameters: a hand-made checkpoint; training would refuse to save it)
    cfg.model.head, cfg.model.head_hidden = "flatten", 16000
    big = build_model(cfg.model)
    atomic_torch_save({"format": "i2dl-ex09-v1", "model_config": to_dict(cfg.model), "state_dict": big.state_dict()},
                      unfinished / "best.pt")
    code, _, err = export(unfinished, capsys)
    assert code == 2 and "the course takes fewer than 5,000,000" in err
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
def test_the_default_ex09_model_exports_on_the_real_data(real_data, tmp_path, capsys):
    """A few epochs of the default architecture on the real faces: export, course score >= 100 (the pass mark)."""
    run = tmp_path / "default"
    assert run_main(["ex09", "--data-dir", real_data, "--out", run, "--no-progress", "--set", "train.epochs=12",
                     "track.mode=disabled"], capsys)[0] == 0
    code, result, err = export(run, capsys)
    assert code == 0, err
    assert result["passes"] and result["score"] >= 100 and all(result["checks"].values())
    assert result["score"] == pytest.approx(json.loads((run / "summary.json").read_text())["val/score"], abs=1e-3)


@pytest.mark.slow  # ~5 s each: a fresh interpreter imports every export
@pytest.mark.parametrize("knobs, has, lacks", [
    (["model.norm=group", "model.norm_groups=4"], "GroupNorm", "BatchNorm2d"),
    (["model.norm=layer"], "GroupNorm", "BatchNorm2d"),
    (["model.norm=instance"], "InstanceNorm2d", "BatchNorm2d"),
    (["model.norm=none"], "Conv2d", "BatchNorm2d"),
    (["model.conv_dropout=dropout", "model.dropout2d=0.2"], "Dropout", "Dropout2d"),
    (["model.arch=mlp", "model.mlp_widths=[32,16]", "model.head_dropout=0.1"], "BatchNorm1d", "Conv2d")])
def test_each_model_knob_trains_and_loads_with_the_course_loader(knobs, has, lacks, synthetic_data_dir, tmp_path,
                                                                 capsys):
    from ex09_keypoints.saved import load_model

    run = tmp_path / "run"
    argv = ["ex09", "--data-dir", synthetic_data_dir, "--out", run, *SMALL_EX09[:-1], "train.epochs=1", *knobs,
            SMALL_EX09[-1]]
    assert run_main(argv, capsys)[0] == 0
    kinds = {type(m).__name__ for m in load_model(run / "best.pt").modules()}
    assert has in kinds and lacks not in kinds, kinds
    code, result, err = export(run, capsys)
    assert mechanics_hold(code, result), err
    assert result["max_abs_diff"] <= 1e-5
