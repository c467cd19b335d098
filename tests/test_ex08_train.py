"""ex08 presets end to end: steps alone equal the whole preset, outputs, W&B runs, CLI errors, real-data learning."""
import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from common.config import apply_overrides
from common.errors import ConfigError
from common.plots import read_metrics
from ex08_autoencoder import train as ex08_train
from ex08_autoencoder.presets import make_config
from ex08_autoencoder.train import train
from experiments.run import main
from helpers import REPO, short_real_ex08_sets, tiny_ex08_config, wait_for
from wandb_records import read_run

STEPS_RUN = make_config("leaderboard").steps
"""The steps these tests' (leaderboard) runs take: not the noisy-student preset's self-training step."""


def only(cfg, step: str):
    """The config with ``only_step`` set, as the CLI's ``--step`` sets it."""
    return apply_overrides(cfg, {"only_step": step})


@pytest.mark.slow  # 7 s: the preset twice
def test_steps_run_alone_equal_the_whole_preset(synthetic_mnist, tmp_path):
    """Resume between steps: pretrain, transfer, teacher in three invocations (each loading the previous
    step's checkpoint from the run dir) give exactly the whole preset's teacher."""
    whole = train(tiny_ex08_config(synthetic_mnist), tmp_path / "whole", progress=False)
    for step in ("pretrain", "transfer", "teacher"):
        stepwise = train(only(tiny_ex08_config(synthetic_mnist), step), tmp_path / "steps", progress=False)
    a = torch.load(tmp_path / "whole" / "teacher.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "steps" / "teacher.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert set(stepwise["steps"]) == {"pretrain", "transfer", "teacher"}
    assert stepwise["test10k/acc"] == whole["test10k/acc"]


def test_run_dir_outputs_and_summary(synthetic_mnist, tmp_path):
    summary = train(tiny_ex08_config(synthetic_mnist), tmp_path / "r", progress=False)
    run = tmp_path / "r"
    for name in ("config.json", "split.json", "metrics.jsonl", "summary.json", "pretrain.pt", "transfer.pt",
                 "teacher.pt", "model.pt", "reconstructions.png", "latent_pca.png", "confusion_teacher.png",
                 "curves.png"):
        assert (run / name).is_file(), name
    for key in ("test100/acc", "test10k/acc", "params", "wall_s"):
        assert key in summary
    assert all(summary["steps"][s]["wall_s"] > 0 for s in ("pretrain", "transfer", "teacher"))
    assert summary["model_bytes"] < 20 * 2**20 and summary["params"] < 5_000_000
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == len(split["val"]) == len(split["test"]) == 100
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
    assert steps == ["pretrain"] * 2 + ["transfer"] * 3 + ["teacher"] * 2


def test_step_needs_the_previous_checkpoint(synthetic_mnist, tmp_path):
    with pytest.raises(ConfigError, match=r"pretrain\.pt is missing: run the 'pretrain' step first"):
        train(only(tiny_ex08_config(synthetic_mnist), "transfer"), tmp_path / "empty", progress=False)
    with pytest.raises(ConfigError, match="choose one of pretrain, transfer"):
        train(only(tiny_ex08_config(synthetic_mnist, "case-study"), "teacher"), tmp_path / "c", progress=False)


def test_a_pretrain_batch_larger_than_the_unlabeled_pool_is_refused(synthetic_mnist, tmp_path):
    cfg = tiny_ex08_config(synthetic_mnist, **{"data.max_unlabeled": 100, "pretrain.batch_size": 128})
    with pytest.raises(ConfigError, match=r"pretrain\.batch_size=128 is larger than the 100 unlabeled images"):
        train(cfg, tmp_path / "r", progress=False)


def test_a_changed_split_seed_is_refused_in_the_same_run_dir(synthetic_mnist, tmp_path):
    train(only(tiny_ex08_config(synthetic_mnist), "pretrain"), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="different few-label split"):
        train(only(tiny_ex08_config(synthetic_mnist, **{"data.split_seed": 1}), "transfer"), tmp_path / "r",
              progress=False)


@pytest.mark.slow  # 4.5 s; in-step resume stays in the fast loop
def test_a_resumed_step_continues_its_wandb_run(synthetic_mnist, tmp_path):
    """The step that was interrupted goes on in the same W&B run (offline: a second folder with its id, which
    ``wandb sync`` joins); the record keeps each step's run."""
    cfg = tiny_ex08_config(synthetic_mnist, **{"track.mode": "offline"})

    def stop(epoch, row):
        if row["step"] == "transfer" and epoch == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", on_epoch=stop, progress=False)
    train(cfg, tmp_path / "r", resume=tmp_path / "r", progress=False)
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["wandb"]["transfer"]["id"] == record["continues"]["wandb"]["transfer"]["id"]
    runs = [read_run(p)["run"] for p in (tmp_path / "r" / "wandb").glob("offline-run-*")]
    ids = {step: {r["id"] for r in runs if r["name"] == f"r-{step}"} for step in STEPS_RUN}
    assert ids["transfer"] == {record["wandb"]["transfer"]["id"]} and all(len(v) == 1 for v in ids.values())
    assert sum(r["name"] == "r-transfer" for r in runs) == 2, "two pieces of one run"


@pytest.mark.slow  # 3 s
def test_one_wandb_run_per_step_grouped(synthetic_mnist, tmp_path):
    cfg = tiny_ex08_config(synthetic_mnist, **{"track.mode": "offline"})
    train(cfg, tmp_path / "grp", progress=False)
    records = [read_run(p) for p in sorted((tmp_path / "grp" / "wandb").glob("offline-run-*"))]
    assert sorted(r["run"]["name"] for r in records) == ["grp-pretrain", "grp-teacher", "grp-transfer"]
    assert {r["run"]["group"] for r in records} == {"grp"} and all(r["exit_code"] == 0 for r in records)
    teacher = next(r for r in records if r["run"]["name"] == "grp-teacher")
    accs = [h["teacher/val/acc"] for h in teacher["history"] if "teacher/val/acc" in h]
    logged = [r["val/acc"] for r in read_metrics(tmp_path / "grp" / "metrics.jsonl") if r["step"] == "teacher"]
    assert accs == pytest.approx(logged) and "teacher/test10k/acc" in teacher["summary"]
    # the step's model as an artifact, the 10k-test confusion matrix and a table of misclassified digits
    model = next(a for a in teacher["artifacts"] if a["type"] == "model")
    assert model["files"] == ["teacher.pt"]
    assert model["metadata"]["test10k/acc"] == teacher["summary"]["teacher/test10k/acc"]
    keys = {k for h in teacher["history"] for k in h}
    assert {"teacher/test10k/confusion_table/_type", "teacher/test10k/misclassified/_type"} <= keys
    assert teacher["config"]["teacher"]["ema_decay"] == 0.995


def test_nan_loss_stops_with_a_hint_and_closes_the_wandb_run(synthetic_mnist, tmp_path):
    cfg = tiny_ex08_config(synthetic_mnist, **{"track.mode": "offline", "pretrain.lr": 1e30})
    with pytest.raises(FloatingPointError, match="pretrain.lr"):
        train(cfg, tmp_path / "nan", progress=False)
    assert read_run(next((tmp_path / "nan" / "wandb").glob("offline-run-*")))["exit_code"] == 1


def test_cli_bad_choices_list_the_valid_ones(capsys):
    for argv, expect in ((["ex08", "--recipe", "best"], "leaderboard"), (["ex08", "--step", "finetune"], "teacher")):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2 and expect in capsys.readouterr().err
    assert main(["ex08", "--set", "teacher.ema=0.9"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'teacher.ema'" in err and "teacher.ema_decay" in err
    assert main(["ex08", "--set", "model.norm=group"]) == 2
    assert "choose one of layer, batch" in capsys.readouterr().err


def test_cli_case_study_prints_the_seed_parameter_counts(synthetic_mnist, tmp_path, capsys):
    overrides = ["pretrain.epochs=1", "transfer.epochs=1", "run.threads=1", "track.mode=disabled"]
    assert main(["ex08", "--preset", "case-study", "--data-dir", str(synthetic_mnist), "--out", str(tmp_path / "cs"),
                 "--no-progress", "--set", *overrides]) == 0
    out, err = capsys.readouterr()
    assert "autoencoder params: 0.824M" in err and "classifier params: 0.591M" in err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["preset"] == "case-study" and 0 <= result["test10k/acc"] <= 1
    assert "  transfer" in out and "  teacher" not in out, "the case study has no teacher step"


@pytest.mark.slow
@pytest.mark.realdata
def test_each_step_learns_on_real_mnist(real_mnist, tmp_path, capsys):
    """Short real runs, step by step through the CLI: the AE's loss falls and its features beat chance by far,
    transfer lifts the 10k-test accuracy above the linear probe's, the teacher keeps it while its supervised
    loss falls. (That the full teacher step *improves* on transfer is what benchmarks/ex08_recipe.py shows.)"""
    out = tmp_path / "real"
    common = ["ex08", "--data-dir", str(real_mnist), "--out", str(out), "--no-progress", "--set",
              "data.max_unlabeled=12000", "pretrain.epochs=3", "transfer.epochs=15", "teacher.epochs=3",
              "teacher.unlabeled_per_epoch=6000", "teacher.ramp_epochs=1", "track.mode=disabled"]
    for step in ("pretrain", "transfer", "teacher"):
        assert main([*common[:1], "--step", step, *common[1:]]) == 0
    capsys.readouterr()
    rows = read_metrics(out / "metrics.jsonl")
    pre = [r for r in rows if r["step"] == "pretrain"]
    teach = [r for r in rows if r["step"] == "teacher"]
    assert pre[-1]["train/loss"] < pre[0]["train/loss"] and pre[-1]["val/loss"] < pre[0]["val/loss"]
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert steps["pretrain"]["test10k/probe_acc"] > 0.6
    assert steps["transfer"]["test10k/acc"] > max(0.8, steps["pretrain"]["test10k/probe_acc"])
    assert steps["teacher"]["test10k/acc"] >= steps["transfer"]["test10k/acc"] - 0.005
    assert teach[-1]["train/supervised_loss"] < teach[0]["train/supervised_loss"]


@pytest.mark.slow
@pytest.mark.realdata
def test_the_pseudo_label_preset_learns_on_real_mnist(real_mnist, tmp_path, capsys):
    """The pseudo-label preset on a short real budget: as the teacher gets better, more of its pseudo-labels
    pass the confidence bar, and the submitted teacher beats the transfer step it started from by over a point."""
    out = tmp_path / "pl"
    assert main(["ex08", "--preset", "pseudo-label", "--data-dir", str(real_mnist), "--out", str(out),
                 "--no-progress", "--set", "data.max_unlabeled=12000", "pretrain.epochs=3", "transfer.epochs=15",
                 "teacher.epochs=8", "teacher.unlabeled_per_epoch=6000", "teacher.ramp_epochs=1",
                 "track.mode=disabled"]) == 0
    capsys.readouterr()
    rows = read_metrics(out / "metrics.jsonl")
    teach = [r for r in rows if r["step"] == "teacher"]
    # measured: 6.7 % -> 9.5 % of the unlabeled images past the bar over these 8 short epochs (~90 % after the
    # preset's 30 full ones; 4 epochs only reached 7.5 %), the supervised loss 0.50 -> 0.46, the 10k test 85.9 %
    # (transfer) -> 88.8 %
    assert teach[-1]["train/pseudo_label_rate"] > teach[0]["train/pseudo_label_rate"] + 0.01
    assert teach[-1]["train/supervised_loss"] < teach[0]["train/supervised_loss"]
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert steps["teacher"]["test10k/acc"] > steps["transfer"]["test10k/acc"] + 0.01


@pytest.mark.parametrize("stop_in", [pytest.param(step, marks=pytest.mark.slow)  # ~5 s each
                                     for step in ("pretrain", "transfer", "teacher")])
def test_an_interrupted_run_resumes_inside_its_step_to_exactly_the_same_model(synthetic_mnist, tmp_path, stop_in,
                                                                             monkeypatch):
    """Stopped in the middle of a step, then --resume: finished steps are kept, the interrupted one goes on
    after its last saved epoch (not from its start), and the teacher ends bit for bit where the uninterrupted
    run's does. (A real SIGKILL: tests/test_hostile_input.py.)"""
    monkeypatch.setattr(ex08_train, "SAVE_EVERY_S", 0.0)  # a state after every epoch of these tiny steps
    # teacher.align's running class mean is part of the teacher step's state, and VAT draws from its generator
    epochs = {"pretrain.epochs": 4, "transfer.epochs": 4, "teacher.epochs": 4, "teacher.align": True,
              "teacher.vat_weight": 0.5, "cache_steps": False}  # the second run trains, not a cache lookup
    whole = train(tiny_ex08_config(synthetic_mnist, **epochs), tmp_path / "whole", progress=False)
    seen = []

    def stop(epoch, row):
        seen.append((row["step"], epoch))
        if row["step"] == stop_in and epoch == 2:
            raise KeyboardInterrupt  # after epoch 2 is logged and saved (on_epoch comes last: common.training.loop)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_ex08_config(synthetic_mnist, **epochs), tmp_path / "r", on_epoch=stop, progress=False)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "interrupted"
    assert (tmp_path / "r" / f"{stop_in}.state.pt").is_file()
    seen.clear()
    resumed = train(tiny_ex08_config(synthetic_mnist, **epochs), tmp_path / "r", resume=tmp_path / "r",
                    on_epoch=lambda epoch, row: seen.append((row["step"], epoch)), progress=False)
    later = STEPS_RUN[STEPS_RUN.index(stop_in) + 1:]
    assert seen == [(stop_in, 3)] + [(s, e) for s in later for e in range(4)], "went on inside the step"
    assert resumed["test10k/acc"] == whole["test10k/acc"]
    a = torch.load(tmp_path / "whole" / "teacher.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "r" / "teacher.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [(r["step"], r["epoch"]) for r in rows] == [(s, e) for s in STEPS_RUN for e in range(4)], "no row twice"
    assert not list((tmp_path / "r").glob("*.state.pt")), "a finished step's training state is deleted"


@pytest.mark.slow  # ~8 s on a slow 2-core machine: keeps make test-fast under 2 minutes there
def test_steps_an_earlier_run_computed_come_from_the_cache_bit_for_bit(synthetic_mnist, tmp_path, capsys):
    """The same config again: every step from the cache (the record says which), the figures to the last bit, in
    a fraction of the time. A changed teacher key trains the teacher only; a changed pretrain key all three; an
    entry whose files no longer match its manifest is deleted and rebuilt, never used."""
    from ex08_autoencoder import step_cache

    def run(name, **overrides):
        summary = train(tiny_ex08_config(synthetic_mnist, **overrides), tmp_path / name, progress=False)
        record = json.loads((tmp_path / name / "run.json").read_text())
        return summary, record.get("cached_steps", {})

    def rows(name):
        return [{k: v for k, v in r.items() if k != "elapsed_s"}
                for r in read_metrics(tmp_path / name / "metrics.jsonl")]

    first, cached = run("first")
    assert cached == {}
    again, cached = run("again")
    assert list(cached) == list(STEPS_RUN) and "from the step cache" in capsys.readouterr().err
    assert again["test10k/acc"] == first["test10k/acc"] and again["val/acc"] == first["val/acc"]
    assert rows("again") == rows("first")
    for step in STEPS_RUN:
        a = torch.load(tmp_path / "first" / f"{step}.pt", weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "again" / f"{step}.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert again["steps"][step]["wall_s"] < first["steps"][step]["wall_s"]
    _, cached = run("teacher-changed", **{"teacher.lr": 1e-4})
    assert list(cached) == ["pretrain", "transfer"]
    _, cached = run("pretrain-changed", **{"pretrain.lr": 1e-4})
    assert cached == {}
    # a damaged entry: found by its manifest, deleted, the step trained and stored again
    entry = next(p for p in step_cache.root().glob("[!.]*") if json.loads((p / "manifest.json").read_text())["step"]
                 == "pretrain" and (p / "rows.jsonl").read_text() == "".join(
                     json.dumps(r) + "\n" for r in read_metrics(tmp_path / "first" / "metrics.jsonl")
                     if r["step"] == "pretrain"))
    (entry / "pretrain.pt").write_bytes(b"not a checkpoint")
    repaired, cached = run("repaired")
    assert list(cached) == ["transfer", "teacher"] and "does not match its manifest" in capsys.readouterr().err
    assert repaired["test10k/acc"] == first["test10k/acc"]
    assert step_cache._intact(entry, "pretrain") is not None, "stored anew"
    _, cached = run("off", cache_steps=False)
    assert cached == {}


@pytest.mark.slow
@pytest.mark.realdata
def test_a_run_wanting_a_step_another_run_is_computing_waits_and_takes_it_from_the_cache(real_mnist, tmp_path,
                                                                                          monkeypatch):
    """Two runs starting at once (a study's two workers) train a shared step once: while the test holds the
    pretrain step's lock, as a run computing it would, a second run (a real CLI process) waits; once the entry
    is in its cache and the lock is free, the waiting run takes pretrain from the cache and trains the rest."""
    from ex08_autoencoder import step_cache

    sets = short_real_ex08_sets(**{"teacher.epochs": 2, "teacher.unlabeled_per_epoch": 2000})
    monkeypatch.setenv("I2DL_STEP_CACHE_DIR", str(tmp_path / "computed"))  # the entry the "other run" makes
    first = train(apply_overrides(make_config("leaderboard"), [f"data.data_dir={real_mnist}", *sets]),
                  tmp_path / "first", progress=False)
    entry = next(p for p in step_cache.root().glob("[!.]*")
                 if json.loads((p / "manifest.json").read_text())["step"] == "pretrain")
    cache = tmp_path / "shared-cache"
    (cache / step_cache.LOCKS).mkdir(parents=True)
    out, err = tmp_path / "second", tmp_path / "second.err"
    with open(cache / step_cache.LOCKS / entry.name, "a") as lock, open(err, "w") as err_file:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another run is computing pretrain"
        proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "ex08", "--data-dir", str(real_mnist),
                                 "--out", str(out), "--no-progress", "--set", *sets], cwd=REPO,
                                env={**os.environ, "I2DL_STEP_CACHE_DIR": str(cache)},
                                stdout=subprocess.DEVNULL, stderr=err_file)
        try:
            wait_for(lambda: "another run is computing" in err.read_text() or proc.poll() is not None, 120,
                     "the second run to wait for pretrain")
            assert proc.poll() is None and "pretrain: another run is computing this step" in err.read_text(), \
                err.read_text()[-2000:]
            shutil.copytree(entry, cache / entry.name)  # the other run's entry lands, then it lets go
            fcntl.flock(lock, fcntl.LOCK_UN)
            assert proc.wait(timeout=300) == 0, err.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    record = json.loads((out / "run.json").read_text())
    assert list(record["cached_steps"]) == ["pretrain"], "pretrain from the cache; transfer and teacher trained"
    second = json.loads((out / "summary.json").read_text())
    assert second["test10k/acc"] == first["test10k/acc"] and second["val/acc"] == first["val/acc"]
