"""Every result traceable and re-runnable: the run record, rerun, --config, --seeds, and the runs table."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from helpers import run_main, snapshot, synthetic_faces, tiny_ex08_config, write_course_csv

TINY = ["--preset", "quick", "--no-progress", "--set", "model.widths=[8,16]", "model.head_hidden=16",
        "train.epochs=2", "train.batch_size=16", "run.threads=1", "track.mode=disabled"]


def ex09_cli(data_dir, out, capsys, *more):
    code, out_text, err = run_main(["ex09", "--data-dir", data_dir, "--out", out, *TINY, *more], capsys)
    assert code == 0, err
    return json.loads(out_text.strip().splitlines()[-1])


def test_the_record_says_which_command_code_packages_machine_and_data(synthetic_data_dir, tmp_path, capsys):
    ex09_cli(synthetic_data_dir, tmp_path / "r", capsys, "train.lr=3e-3")
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["status"] == "complete" and record["ended"] >= record["started"]
    assert "--out" in record["command"] and record["preset"] == "quick"
    assert "train.lr=0.003" in record["overrides"] and "train.epochs=2" in record["overrides"]
    assert record["code"]["git"] in (True, False) and ("commit" in record["code"] or "reason" in record["code"])
    assert record["packages"]["torch"] and record["packages"]["python"]
    assert record["host"]["threads"] == 1 and record["host"]["cores"] >= 1 and record["host"]["device"] == "cpu"
    for name in ("training.csv", "val.csv"):
        path = synthetic_data_dir / "facial_keypoints" / name
        assert record["data"]["sha256"][str(path)] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_ex08_records_its_split(synthetic_mnist, tmp_path):
    from ex08_autoencoder.train import train

    train(tiny_ex08_config(synthetic_mnist, **{"only_step": "pretrain"}), tmp_path / "r", progress=False)
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    split = json.loads((tmp_path / "r" / "split.json").read_text())
    assert record["data"]["split_sha256"] == hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()
    assert len(record["data"]["sha256"]) == 4


def test_a_dirty_checkout_is_recorded_with_its_patch(tmp_path):
    from common.run.record import code_state

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    clean = code_state(tmp_path / "clean.patch", repo=repo)
    assert clean["git"] and not clean["dirty"] and len(clean["commit"]) == 40
    assert not (tmp_path / "clean.patch").exists()
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 1\n")
    dirty = code_state(tmp_path / "code.patch", repo=repo)
    assert dirty["dirty"] and dirty["untracked"] == ["new.py"] and dirty["patch"] == "code.patch"
    assert "-x = 1" in (tmp_path / "code.patch").read_text() and "+x = 2" in (tmp_path / "code.patch").read_text()
    outside = code_state(None, repo=tmp_path / "not-a-repo")
    assert outside["git"] is False and "not a git checkout" in outside["reason"]


def test_a_truncated_or_edited_record_is_named(synthetic_data_dir, tmp_path, capsys):
    ex09_cli(synthetic_data_dir, tmp_path / "r", capsys)
    record = tmp_path / "r" / "run.json"
    text = record.read_text()
    record.write_text(text[: len(text) // 2])
    code, _, err = run_main(["rerun", tmp_path / "r"], capsys)
    assert code == 2 and f"{record} is not valid JSON" in err
    data = json.loads(text)
    data["command"] = "python train.py"
    record.write_text(json.dumps(data))
    code, _, err = run_main(["rerun", tmp_path / "r"], capsys)
    assert code == 2 and "key 'command'" in err


@pytest.mark.slow  # 8 s of real-data training twice
@pytest.mark.realdata
def test_rerun_gives_identical_figures_on_a_tiny_real_run(real_data, tmp_path, capsys):
    original = tmp_path / "orig"
    first = ex09_cli(real_data, original, capsys, "train.epochs=1")
    before = snapshot(original)
    code, out, err = run_main(["rerun", original, "--no-progress"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["figures"]["val/score"] == [first["val/score"], first["val/score"]]
    assert "identical" in out and snapshot(original) == before, "a rerun never writes into the original"
    code, _, err = run_main(["rerun", original, "--out", original], capsys)
    assert code == 2 and "never writes into the original run dir" in err


@pytest.mark.slow  # 5 s; the rerun itself stays fast
def test_rerun_warns_when_the_data_changed_and_config_files_start_runs(synthetic_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data_dir, data)
    first = ex09_cli(data, tmp_path / "r", capsys)
    # --config: the saved config starts a run with the same figures
    code, out, err = run_main(["ex09", "--config", tmp_path / "r" / "config.json", "--out", tmp_path / "c",
                               "--no-progress"], capsys)
    assert code == 0, err and json.loads(out.strip().splitlines()[-1])["val/score"] == first["val/score"]
    code, _, err = run_main(["ex08", "--config", tmp_path / "r" / "config.json"], capsys)
    assert code == 2 and "is an ex09 config" in err
    write_course_csv(data / "facial_keypoints" / "val.csv", *synthetic_faces(32, seed=77))
    code, out, err = run_main(["rerun", tmp_path / "r", "--out", tmp_path / "again", "--no-progress"], capsys)
    assert code == 0 and "warning: data: val.csv differ from the record" in err


@pytest.mark.slow  # 5 s
def test_seeds_report_mean_and_spread_and_ex08_draws_a_split_per_seed(synthetic_data_dir, synthetic_mnist, tmp_path,
                                                                      capsys):
    out = tmp_path / "seeds"
    code, text, err = run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", out, *TINY, "--seeds", "0,1"],
                               capsys)
    assert code == 0, err
    seeds = json.loads((out / "seeds.json").read_text())
    scores = [json.loads((out / f"seed-{s}" / "summary.json").read_text())["val/score"] for s in (0, 1)]
    assert seeds["figures"]["val/score"]["values"] == scores and scores[0] != scores[1]
    assert seeds["figures"]["val/score"]["mean"] == pytest.approx(sum(scores) / 2)
    assert "+-" in text
    code, _, err = run_main(["ex09", "--seeds", "1,1"], capsys)
    assert code == 2 and "distinct seeds" in err
    cfg_dir = tmp_path / "ex08"
    from common.run.seeds import run_seeds
    from exercises import get_experiment

    run_seeds(get_experiment("ex08"), tiny_ex08_config(synthetic_mnist, **{"steps": ["pretrain"]}), cfg_dir, [0, 1],
              progress=False)
    splits = [json.loads((cfg_dir / f"seed-{s}" / "split.json").read_text())["train"] for s in (0, 1)]
    assert splits[0] != splits[1], "each seed draws its own labeled split"


def test_runs_lists_and_compares(synthetic_data_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    ex09_cli(synthetic_data_dir, root / "a", capsys)
    ex09_cli(synthetic_data_dir, root / "b", capsys, "train.lr=3e-3")
    code, out, _ = run_main(["runs", root], capsys)
    assert code == 0 and out.splitlines()[1].startswith("a ") and out.splitlines()[2].startswith("b ")
    code, out, _ = run_main(["runs", root, "--json"], capsys)
    rows = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and [r["run"] for r in rows] == [str(root / "a"), str(root / "b")]
    assert all(r["status"] == "complete" and r["experiment"] == "ex09" and "val/score" in r for r in rows)
    code, out, _ = run_main(["runs", "--compare", root / "a", root / "b"], capsys)
    diff = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and diff["config"] == {"train.lr": [0.002, 0.003]} and "val/score" in diff["figures"]
