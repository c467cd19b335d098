"""The training loop and the CLI on small synthetic data (seconds), plus one real-data run."""
import json
import os
import subprocess
import sys

import pytest
import torch

from common.errors import ConfigError
from common.plots import read_metrics
from ex09_keypoints.data import CourseDataset, load_keypoints
from ex09_keypoints.evaluate import course_score
from ex09_keypoints.saved import load_model
from ex09_keypoints.train import train
from helpers import REPO, synthetic_faces, tiny_config, write_course_csv
from wandb_records import read_run


def cli(*args, env_extra=None, check=True):
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def test_run_dir_contents_and_checkpoint_round_trip(synthetic_data_dir, tmp_path):
    summary = train(tiny_config(synthetic_data_dir), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "summary.json", "best.pt", "last.pt", "val_keypoints.png",
                 "curves.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "summary.json").read_text())
    for key in ("val/score", "val/rmse_px", "params", "epochs", "wall_s"):
        assert key in saved
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    # the checkpoint loads with weights_only=True and scores exactly what the run reported
    blob = torch.load(run / "best.pt", weights_only=True)
    assert blob["format"] == "i2dl-ex09-v1"
    model = load_model(run / "best.pt")
    val = load_keypoints(synthetic_data_dir)["val"]
    assert course_score(model, CourseDataset(val)) == pytest.approx(summary["val/score"], rel=1e-9)


def test_a_model_saved_before_the_shifted_views_still_predicts_without_them(tmp_path):
    """Models saved before ``model.tta_shift_px`` / ``tta_diagonals`` existed load with the values they were made
    with (0, False), not with today's defaults, so an old run's best.pt scores what its run recorded."""
    from ex09_keypoints.config import make_config
    from ex09_keypoints.models import build_model
    from ex09_keypoints.saved import save_best

    cfg = make_config("quick")
    cfg.model.widths, cfg.model.head_hidden = (8, 16), 16
    save_best(build_model(cfg.model), cfg, tmp_path / "new.pt")
    assert load_model(tmp_path / "new.pt").shifts == [(0, 0), (4, 0), (-4, 0), (0, 4), (0, -4)]
    blob = torch.load(tmp_path / "new.pt", weights_only=True)
    for key in ("tta_shift_px", "tta_diagonals", "members"):
        del blob["model_config"][key]
    torch.save(blob, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert old.shifts == [(0, 0)] and old.members == 1


def test_loss_falls_on_synthetic_data(synthetic_data_dir, tmp_path):
    train(tiny_config(synthetic_data_dir, **{"train.epochs": 8, "train.lr": 3e-3}), tmp_path / "r",
          progress=False)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] < 0.6 * rows[0]["train/loss"]


def test_wing_loss_at_known_points():
    """Feng et al. 2018: w ln(1 + |d|/eps) below w, |d| - C above, C = w - w ln(1 + w/eps): continuous at w."""
    import math

    from ex09_keypoints.train import wing_loss

    w, eps = 10.0, 2.0
    d = torch.tensor([0.0, 1.0, -2.0, 10.0, 15.0])
    per_point = [float(wing_loss(x.view(1), torch.zeros(1), w, eps)) for x in d]
    c = w - w * math.log(1 + w / eps)
    assert per_point == pytest.approx([0.0, w * math.log(1.5), w * math.log(2.0), 10.0 - c, 15.0 - c])
    assert w * math.log(1 + w / eps) == pytest.approx(10.0 - c), "the two pieces meet at |d| = w"
    assert float(wing_loss(d, torch.zeros(5), w, eps)) == pytest.approx(sum(per_point) / 5), "the mean"


def test_sparse_evaluations_then_every_epoch_on_the_plateau(synthetic_data_dir, tmp_path):
    """eval_every=3, eval_all_from=0.75 over 8 epochs: epochs 2 and 5, then every epoch from 6 (6 >= 0.75 * 8)."""
    from ex09_keypoints.config import is_eval_epoch
    from exercises import get_experiment

    cfg = tiny_config(synthetic_data_dir, **{"train.epochs": 8, "train.eval_every": 3, "train.eval_all_from": 0.75})
    assert [e for e in range(8) if is_eval_epoch(e, cfg.train)] == [2, 5, 6, 7]
    assert get_experiment("ex09").planned_evals(cfg) == 4
    train(cfg, tmp_path / "r", progress=False)
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [2, 5, 6, 7]


def test_swa_averages_the_evaluated_weights_of_each_epoch_from_swa_from(synthetic_data_dir, tmp_path):
    """train.swa_from=0.5 of 4 epochs: the average starts at epoch 2, where it holds one snapshot and so scores
    what the EMA scores; at epoch 3 it is the mean of two (BatchNorm statistics too), and best.pt keeps whichever
    candidate of any epoch scored highest."""
    from ex09_keypoints.config import make_config
    from ex09_keypoints.models import build_model
    from ex09_keypoints.train import make_swa

    cfg = make_config("quick")
    cfg.model.widths, cfg.model.head_hidden, cfg.train.swa_from, cfg.train.epochs = (8,), 4, 0.5, 4
    a, b = build_model(cfg.model), build_model(cfg.model)
    for m, v in ((a, 1.0), (b, 3.0)):
        for t in list(m.parameters()) + [m.state_dict()[k] for k in m.state_dict() if "running_mean" in k]:
            t.data.fill_(v)
    swa, start = make_swa(a, cfg.train)
    assert start == 2 and make_swa(a, make_config("quick").train) == (None, None)
    swa.update_parameters(a)
    swa.update_parameters(b)
    averaged = swa.module.state_dict()
    assert all(float(averaged[k].float().mean()) == 2.0 for k in averaged if "running_mean" in k or "weight" in k)

    summary = train(tiny_config(synthetic_data_dir, **{"train.epochs": 4, "train.swa_from": 0.5}), tmp_path / "r",
                    progress=False)
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert ["val/score_swa" in r for r in rows] == [False, False, True, True]
    assert rows[2]["val/score_swa"] == rows[2]["val/score"], "one snapshot: the EMA's weights themselves"
    assert rows[3]["val/score_swa"] != rows[3]["val/score"]
    best = max((r[k], r["epoch"], k) for r in rows for k in ("val/score", "val/score_swa") if k in r)
    blob = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    assert (blob["meta"]["val_score"], blob["meta"]["epoch"]) == best[:2]
    assert summary["best_weights"] == ("swa" if best[2] == "val/score_swa" else "ema")
    assert [r["lr"] for r in rows] == sorted(r["lr"] for r in rows)[::-1] and rows[-1]["lr"] < 0.1 * rows[0]["lr"]

    # swa_lr: the cosine reaches swa_lr * lr at swa_from (epoch 2) and holds it there
    train(tiny_config(synthetic_data_dir, **{"train.epochs": 4, "train.swa_from": 0.5, "train.swa_lr": 0.25,
                                             "train.warmup_epochs": 0.0}), tmp_path / "hold", progress=False)
    lrs = [r["lr"] for r in read_metrics(tmp_path / "hold" / "metrics.jsonl")]
    lr = tiny_config(synthetic_data_dir).train.lr
    assert lrs[0] > lrs[1] and lrs[1:] == pytest.approx([0.25 * lr] * 3)


def test_a_run_stopped_mid_average_resumes_with_its_average(synthetic_data_dir, tmp_path):
    """Stopped after epoch 2 with the weight average holding epochs 1-2, a resumed run adds epoch 3 to that average
    (not to a fresh one): the same val/score_swa and best.pt as the uninterrupted run."""
    class Stop(Exception):
        pass

    def stop_after_epoch_2(epoch, row):
        if epoch == 2:
            raise Stop

    overrides = {"train.epochs": 4, "train.swa_from": 0.25}
    whole = train(tiny_config(synthetic_data_dir, **overrides), tmp_path / "whole", progress=False)
    with pytest.raises(Stop):
        train(tiny_config(synthetic_data_dir, **overrides), tmp_path / "r", on_epoch=stop_after_epoch_2,
              progress=False)
    resumed = train(tiny_config(synthetic_data_dir, **overrides), tmp_path / "r", resume=tmp_path / "r",
                    progress=False)
    swa = [[r.get("val/score_swa") for r in read_metrics(tmp_path / d / "metrics.jsonl")] for d in ("whole", "r")]
    assert swa[0] == swa[1] and swa[0][3] is not None
    assert resumed["val/score"] == whole["val/score"]


@pytest.mark.slow  # 5 s; the rerun test checks identical figures in the fast loop
def test_same_seed_twice_gives_same_val_score(synthetic_data_dir, tmp_path):
    a = train(tiny_config(synthetic_data_dir), tmp_path / "a", progress=False)
    b = train(tiny_config(synthetic_data_dir), tmp_path / "b", progress=False)
    c = train(tiny_config(synthetic_data_dir, **{"run.seed": 1}), tmp_path / "c", progress=False)
    assert a["val/score"] == b["val/score"]
    assert a["val/score"] != c["val/score"]


def test_resume_continues_the_same_computation_in_the_same_dir(synthetic_data_dir, tmp_path):
    """Stopped after its first epoch and resumed, a run ends exactly where the uninterrupted run ends (every
    random stream restored: the data order, augmentation and dropout), one metrics.jsonl, one W&B run id."""
    whole = train(tiny_config(synthetic_data_dir, **{"train.epochs": 4, "train.swa_from": 0.25}), tmp_path / "whole",
                  progress=False)
    cfg = tiny_config(synthetic_data_dir, **{"train.epochs": 4, "train.swa_from": 0.25, "train.time_limit_s": 1e-9,
                                             "track.mode": "offline"})
    first = train(cfg, tmp_path / "r", progress=False)  # stops after its first epoch
    assert first["epochs"] == 1
    cfg.train.time_limit_s = 0.0
    second = train(cfg, tmp_path / "r", resume=tmp_path / "r", progress=False)
    assert second["epochs"] == 4 and second["val/score"] == whole["val/score"]
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    same = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    assert [r["val/score"] for r in rows] == [r["val/score"] for r in same]
    assert [r.get("val/score_swa") for r in rows] == [r.get("val/score_swa") for r in same] != [None] * 4
    ids = {read_run(p)["run"].get("id") for p in (tmp_path / "r" / "wandb").glob("offline-run-*")}
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["wandb"]["id"] == record["continues"]["wandb"]["id"] and len(ids) == 1
    # a different config is not the same computation
    cfg.train.lr *= 2
    with pytest.raises(ConfigError, match=r"other settings \(train\.lr\)"):
        train(cfg, tmp_path / "r", resume=tmp_path / "r", progress=False)


def test_wandb_offline_files_hold_config_and_metrics(synthetic_data_dir, tmp_path, capsys):
    cfg = tiny_config(synthetic_data_dir, **{"track.mode": "auto", "track.name": "wb-check"})
    train(cfg, tmp_path / "run", progress=False)
    assert "[tracking]" not in capsys.readouterr().err  # W&B worked: no init failure or dropped call
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    rec = read_run(runs[0])
    assert rec["run"]["name"] == "wb-check"
    assert rec["config"]["train"]["epochs"] == 3 and rec["config"]["model"]["widths"] == [16, 32]
    scores = [h["val/score"] for h in rec["history"] if "val/score" in h]
    logged = [json.loads(line)["val/score"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert scores == pytest.approx(logged)
    assert rec["summary"]["val/score"] > 0 and rec["exit_code"] == 0
    # the best model as an artifact with its figures, every val face in a table, the commit
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    model = next(a for a in rec["artifacts"] if a["type"] == "model")
    assert model["files"] == ["best.pt"] and "best" in model["aliases"]
    assert model["metadata"]["val/score"] == pytest.approx(summary["val/score"])
    table = next(h for h in rec["history"] if "val/faces/_type" in h)  # nested keys, joined with "/"
    assert table["val/faces/_type"] == "table-file" and table["val/faces/nrows"] == 32
    rows = json.loads((runs[0] / "files" / table["val/faces/path"]).read_text())
    assert rows["columns"] == ["face", "index", "rmse_px"] and all(r[2] > 0 for r in rows["data"])
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["run"]["commit"] == record["code"].get("commit", "")


def test_broken_wandb_never_stops_training(synthetic_data_dir, tmp_path, monkeypatch):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("simulated W&B outage")
    monkeypatch.setattr(wandb, "init", boom)
    summary = train(tiny_config(synthetic_data_dir, **{"track.mode": "online", "train.epochs": 1}),
                    tmp_path / "r", progress=False)
    assert summary["epochs"] == 1


def test_cli_help_and_bad_override(synthetic_data_dir):
    assert "--set" in cli("ex09", "--help").stdout
    bad = cli("ex09", "--set", "train.epoch=3", check=False)
    assert bad.returncode == 2 and "train.epochs" in bad.stderr and "unknown config key" in bad.stderr


@pytest.mark.slow  # ~12 s: two CLI processes (torch imports); the fast set keeps the in-process runs
def test_cli_trains_and_evaluates_a_csv(synthetic_data_dir, tmp_path):
    out = tmp_path / "run"
    cli("ex09", "--preset", "quick", "--data-dir", str(synthetic_data_dir), "--out", str(out), "--no-progress",
        "--set", "model.widths=[8,16]", "train.epochs=2", "train.batch_size=16", "track.mode=disabled")
    images, points = synthetic_faces(7, seed=11)
    csv = write_course_csv(tmp_path / "mine.csv", images, points)
    proc = cli("ex09", "--evaluate", str(out / "best.pt"), "--csv", str(csv))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n_images"] == 7 and result["score"] > 0 and result["rmse_px"] > 0
    assert "nose_tip" in proc.stdout


@pytest.mark.slow  # 6 s: two more interpreters
def test_evaluate_takes_test_time_settings_only(synthetic_data_dir, tmp_path):
    """The same weights without the shifted views at test time score otherwise; settings of the weights are
    refused."""
    train(tiny_config(synthetic_data_dir, **{"train.epochs": 2}), tmp_path / "run", progress=False)
    images, points = synthetic_faces(7, seed=11)
    csv = write_course_csv(tmp_path / "mine.csv", images, points)
    best = str(tmp_path / "run" / "best.pt")
    shifted = cli("ex09", "--evaluate", best, "--csv", str(csv))
    plain = cli("ex09", "--evaluate", best, "--csv", str(csv), "--set", "model.tta_shift_px=0")
    assert (json.loads(plain.stdout.strip().splitlines()[-1])["score"]
            != json.loads(shifted.stdout.strip().splitlines()[-1])["score"])
    bad = cli("ex09", "--evaluate", best, "--csv", str(csv), "--set", "model.widths=[4]", check=False)
    assert bad.returncode == 2 and "--set model.widths does not apply" in bad.stderr


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_preset_beats_pass_score_on_real_data(real_data, tmp_path):
    proc = cli("ex09", "--preset", "quick", "--data-dir", str(real_data), "--out", str(tmp_path / "q"),
               "--no-progress")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["val/score"] >= 100, result


def test_nan_loss_raises_and_closes_the_wandb_run(synthetic_data_dir, tmp_path):
    from common.training.loop import NonFiniteLossError

    cfg = tiny_config(synthetic_data_dir, **{"train.lr": 1e30, "train.grad_clip": 0.0, "train.epochs": 2,
                                             "track.mode": "offline"})
    with pytest.raises(NonFiniteLossError, match="train.lr"):
        train(cfg, tmp_path / "r", progress=False)
    rec = read_run(next((tmp_path / "r" / "wandb").glob("offline-run-*")))
    assert rec["exit_code"] == 1
