"""ex09's v3 knobs (issue 37): the soft-argmax heatmap head, the loss schedule, photometric augmentation. Each
builds, trains on the real faces and exports a folder the course's loader runs with torch alone; the pieces they
are made of do what they say."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.plots import read_metrics
from helpers import export, run_main, synthetic_faces

KNOBS = {
    "soft_argmax": ["model.head=soft_argmax", "train.heatmap_reg=0.1"],
    "loss_schedule": ["train.loss=smooth_l1", "train.mse_from=0.5"],
    "photometric": ["augment.gamma=0.3", "augment.noise=0.03", "augment.sharpen_p=0.3", "augment.blur_p=0.2",
                    "augment.erase_p=0.2"],
    "residual_se_blurpool": ["model.residual=true", "model.se_ratio=0.25", "model.downsample=blurpool"],
}


@pytest.mark.slow  # a short real-data run and a fresh interpreter per knob (~15 s each)
@pytest.mark.realdata
@pytest.mark.parametrize("knob", list(KNOBS))
def test_each_knob_trains_on_the_real_faces_and_exports(knob, real_data, tmp_path, capsys):
    run = tmp_path / knob
    code, out, err = run_main(["ex09", "--preset", "quick", "--data-dir", real_data, "--out", run, "--no-progress",
                               "--set", "model.widths=[16,32]", "model.head_hidden=64", "train.epochs=2",
                               "run.threads=2", "track.mode=disabled", *KNOBS[knob]], capsys)
    assert code == 0, err
    losses = [r["train/loss"] for r in read_metrics(run / "metrics.jsonl")]
    assert losses[-1] < losses[0], f"it learns: {losses}"
    code, result, err = export(run, capsys)
    assert "error" not in result and result["max_abs_diff"] <= 1e-5, err  # loaded as the course does, same outputs
    assert all(ok for check, ok in result["checks"].items() if check != "passes_the_course_mark"), result["checks"]
    assert result["params"] < 5e6 and result["size_mb"] < 20


def test_the_soft_argmax_head_reads_a_peaked_heatmap_as_its_cell_centre():
    from ex09_keypoints.data import KEYPOINT_GRID_OFFSET
    from ex09_keypoints.models import SoftArgmaxHead

    head = SoftArgmaxHead(channels=15, size=24)
    with torch.no_grad():
        head.logits.weight.copy_(torch.eye(15)[:, :, None, None] * 50.0)  # channel k -> heatmap k, sharply
        head.logits.bias.zero_()
    features = torch.zeros(1, 15, 24, 24)
    features[0, 3, 5, 17] = 1.0  # keypoint 3 peaks at row 5, column 17
    points = head(features).view(15, 2)
    cell = lambda j: ((j + 0.5) * 4 - 48) / 48 + KEYPOINT_GRID_OFFSET  # noqa: E731  (96 / 24 = 4 px a cell)
    assert points[3].tolist() == pytest.approx([cell(17), cell(5)], abs=1e-4)
    assert head.variance[0, 3].max() < 1e-4, "a peaked heatmap has almost no spread"
    assert points[0].tolist() == pytest.approx([KEYPOINT_GRID_OFFSET, KEYPOINT_GRID_OFFSET], abs=1e-4), \
        "a flat heatmap reads as the image's centre"


def test_the_loss_schedule_switches_to_mse_at_its_fraction():
    from types import SimpleNamespace

    from ex09_keypoints.train import regression_loss

    pred, target = torch.zeros(2, 15, 2), torch.full((2, 15, 2), 0.5)
    cfg = SimpleNamespace(loss="l1", smooth_l1_beta=0.02)
    assert regression_loss(pred, target, cfg).item() == pytest.approx(0.5)
    assert regression_loss(pred, target, cfg, mse=True).item() == pytest.approx(0.25)


def test_photometric_knobs_change_pixels_only_within_range_and_leave_points():
    from common.training.augment import AffineAugment, augment_batch

    images, points = synthetic_faces(16, seed=2)
    x = torch.as_tensor(images, dtype=torch.float32)[:, None] / 255.0
    y = torch.as_tensor(points, dtype=torch.float32).view(-1, 15, 2) / 48.0 - 1.0
    still = dict(flip=False, rotate_deg=0, scale=0, shift=0, brightness=0, contrast=0)
    plain, p0 = augment_batch(x, y, AffineAugment(**still), generator=torch.Generator().manual_seed(0))
    for knob in ({"gamma": 0.5}, {"noise": 0.05}, {"sharpen_p": 1.0, "sharpen_amount": 2.0}):
        out, p1 = augment_batch(x, y, AffineAugment(**still, **knob), generator=torch.Generator().manual_seed(0))
        assert torch.equal(p1, p0), f"{knob}: points unaffected"
        assert 0 <= out.min() and out.max() <= 1 and not torch.allclose(out, plain), knob
    gamma = AffineAugment(**still, gamma=1.0)
    out, _ = augment_batch(x, y, gamma, generator=torch.Generator().manual_seed(1))
    ratio = torch.log(out.clamp_min(1e-3)) / torch.log(plain.clamp(1e-3, 0.999))  # = the gamma of each image
    g = ratio[(plain > 0.05) & (plain < 0.95)]
    assert 1 / 2 - 1e-3 <= g.min() and g.max() <= 2 + 1e-3 and not math.isclose(g.min(), g.max())


@pytest.mark.slow  # two seeds, a fresh interpreter checks the export (~20 s)
def test_a_seeds_dir_exports_as_one_averaging_model_within_the_limits(synthetic_data_dir, tmp_path, capsys):
    import shutil

    seeds = tmp_path / "seeds"
    small = ["--preset", "quick", "--data-dir", synthetic_data_dir, "--no-progress", "--set", "model.widths=[8,16]",
             "model.head_hidden=16", "train.epochs=2", "train.batch_size=16", "run.threads=1", "track.mode=disabled"]
    code, _, err = run_main(["ex09", "--out", seeds, "--seeds", "0,1", *small], capsys)
    assert code == 0, err
    code, result, err = export(seeds, capsys)
    assert result["max_abs_diff"] <= 1e-5 and "error" not in result, err
    assert result["members"] == [str(seeds / "seed-0"), str(seeds / "seed-1")]
    assert len(result["members_val_score"]) == 2 and result["members_mean_val_score"] > 0
    import pickle
    with open(seeds / "submission" / "models" / "facial_keypoints.p", "rb") as f:
        assert pickle.load(f)["hparams"]["members"] == 2
    code, _, err = run_main(["export", seeds / "seed-0", seeds / "seed-1"], capsys)
    assert code == 2 and "give --out DIR" in err
    # an ensemble past the course's limits: refused with the numbers, nothing written
    big = tmp_path / "big"
    code, _, err = run_main(["ex09", "--out", big, *small, "model.head=flatten", "model.head_hidden=4096",
                            "train.epochs=1"], capsys)
    assert code == 0, err
    copies = [shutil.copytree(big, tmp_path / f"big-{i}") for i in range(3)]
    code, _, err = run_main(["export", *copies, "--out", tmp_path / "too-big"], capsys)
    assert code == 2 and "parameters" in err and "the course takes fewer than 5,000,000" in err, err
    assert not (tmp_path / "too-big").exists()


@pytest.mark.slow  # four short runs on 160 synthetic faces (~30 s)
def test_the_audit_finds_planted_wrong_labels_and_exclude_trains_without_them(tmp_path, capsys):
    import csv

    import numpy as np

    from helpers import write_course_csv

    images, points = synthetic_faces(160, seed=5)
    planted = [17, 66, 121]  # 0-based rows whose labels are wrong: the points of another face, shifted
    wrong = points.copy()
    for i in planted:
        wrong[i] = np.clip(points[(i + 80) % 160] + [14.0, -12.0], 1, 95)
    data = tmp_path / "data"
    write_course_csv(data / "facial_keypoints" / "training.csv", images, wrong)
    write_course_csv(data / "facial_keypoints" / "val.csv", *synthetic_faces(4, seed=6))
    (data / "facial_keypoints" / "val.csv").write_text("this is not read by the audit\n")
    out = tmp_path / "audit"
    code, stdout, err = run_main(["ex09", "audit", "--folds", "4", "--worst", "6", "--preset", "quick",
                                  "--data-dir", data, "--out", out, "--no-progress", "--set", "model.widths=[16,32]",
                                  "model.head_hidden=64", "train.epochs=40", "train.batch_size=16",
                                  "train.ema_decay=0.9", "run.threads=2", "track.mode=disabled"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((out / "audit.csv").open()))
    assert len(rows) == 160 and {int(r["row"]) - 1 for r in rows[:3]} == set(planted), rows[:5]
    assert (out / "audit_worst.png").stat().st_size > 10_000
    # training with data.exclude=<the audit's CSV, cut to its 3 worst rows> leaves exactly those faces out
    flagged = tmp_path / "flagged.csv"
    flagged.write_text("".join((out / "audit.csv").read_text().splitlines(keepends=True)[:4]))
    (data / "facial_keypoints" / "val.csv").unlink()
    write_course_csv(data / "facial_keypoints" / "val.csv", *synthetic_faces(8, seed=6))
    code, _, err = run_main(["ex09", "--preset", "quick", "--data-dir", data, "--out", tmp_path / "run",
                             "--no-progress", "--set", "model.widths=[8,16]", "model.head_hidden=16", "train.epochs=1",
                             "run.threads=1", "track.mode=disabled", f"data.exclude={flagged}"], capsys)
    assert code == 0, err
    assert "training.csv: left out 3 face(s) listed in data.exclude" in err
    assert str(flagged) in __import__("json").loads((tmp_path / "run" / "run.json").read_text())["data"]["sha256"]


def test_blurpool_moves_less_than_maxpool_when_the_face_moves_a_pixel():
    """Anti-aliasing's point (Zhang 2019): a one-pixel shift changes max-pooled features far more than blurred
    ones; a constant map stays constant."""
    from ex09_keypoints.models import BlurPool

    torch.manual_seed(0)
    x = torch.rand(4, 8, 24, 24)
    moved = torch.roll(x, 1, dims=-1)
    maxpool, blurpool = torch.nn.MaxPool2d(2), torch.nn.Sequential(torch.nn.MaxPool2d(2, stride=1), BlurPool(8))
    change = {name: ((f(x) - f(moved)).norm() / f(x).norm()).item() for name, f in
              (("max", maxpool), ("blur", blurpool))}
    assert blurpool(x).shape == maxpool(x).shape == (4, 8, 12, 12)
    assert change["blur"] < 0.5 * change["max"], change
    assert torch.allclose(blurpool(torch.ones(1, 8, 24, 24)), torch.ones(1, 8, 12, 12))


def test_residual_and_squeeze_excite_blocks_and_plain_checkpoints_keep_their_keys():
    from common.config import apply_overrides
    from common.errors import ConfigError
    from ex09_keypoints.config import make_config
    from ex09_keypoints.models import Residual, SqueezeExcite, build_model

    plain = build_model(make_config().model)
    assert "net.features.0.weight" in plain.state_dict(), "a plain CNN keeps the flat layout old checkpoints have"
    cfg = apply_overrides(make_config(), {"model.residual": True, "model.se_ratio": 0.25})
    model = build_model(cfg.model)
    blocks = [m for m in model.modules() if isinstance(m, Residual)]
    assert len(blocks) == 3 and len([m for m in model.modules() if isinstance(m, SqueezeExcite)]) == 3
    assert model.eval()(torch.rand(2, 1, 96, 96)).shape == (2, 30)
    x = torch.rand(2, 16, 24, 24)
    with torch.no_grad():  # a residual block whose body outputs zero passes its input through (then ReLU)
        for p in blocks[0].body.parameters():
            p.zero_()
        assert torch.allclose(blocks[0].eval()(x), F.relu(blocks[0].skip(x)))
    with pytest.raises(ConfigError, match="model.residual=true needs model.downsample=maxpool or blurpool"):
        apply_overrides(make_config(), {"model.residual": True, "model.downsample": "stride"})
