"""Careless and hostile input, round 3 (issue 35): study dirs, tutorial dirs, locks, journals, caches and records
that cannot be turned against the user's files; every mistake one line and exit 2, before anything is touched.
Real files, symlinks, FIFOs, processes, signals, SQLite and Optuna journals."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers import REPO, ctrl_c_works, run_main, snapshot, synthetic_faces, wait_for, write_course_csv, write_sweep
from test_hostile_input import TINY, one_line_error


def ex09(data_dir, out, *more) -> list:
    return ["ex09", "--preset", "quick", "--data-dir", data_dir, "--out", out, "--no-progress", *TINY, *more]


@pytest.fixture(scope="module")
def _template(synthetic_data_dir, tmp_path_factory):
    from experiments.run import main

    out = tmp_path_factory.mktemp("template3") / "run"
    assert main([str(a) for a in ex09(synthetic_data_dir, out)]) == 0
    return out


@pytest.fixture
def finished_run(_template, tmp_path):
    return Path(shutil.copytree(_template, tmp_path / "run"))


def users_folder(path: Path, **files: str) -> dict:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return snapshot(path)


# --- 1, 2: a study or tutorial dir is recognised by what only this repo writes -------------------------------------

def test_a_folder_holding_a_report_md_is_not_taken_for_a_study_dir(synthetic_data_dir, tmp_path, capsys):
    notes = tmp_path / "notes"
    before = users_folder(notes, **{"report.md": "# my report", "thesis.tex": "\\chapter{mine}"})
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir)
    code, _, err = run_main(["ex09", "--study", sweep, "--out", notes], capsys)
    one_line_error(code, err, f"--out {notes} is not a study dir", "report.md")
    # the report with the storage elsewhere: it would have written report.md over the user's
    code, _, err = run_main(["report", "--study", sweep, "--out", notes, "--storage",
                             f"sqlite:///{tmp_path / 'elsewhere.db'}"], capsys)
    one_line_error(code, err, "is not a study dir")
    assert snapshot(notes) == before


def test_the_tutorial_writes_only_into_a_new_empty_or_its_own_dir(synthetic_data_dir, tmp_path, capsys):
    notes = tmp_path / "notes"
    before = users_folder(notes, **{"TUTORIAL.md": "# mine", "figures/norms.png": "not a png"})
    code, _, err = run_main(["tutorial", "--out", notes, "--data-dir", synthetic_data_dir, "--seeds", "0"], capsys)
    one_line_error(code, err, f"--out {notes} is not a tutorial dir", "TUTORIAL.md", "nothing was touched")
    assert snapshot(notes) == before
    # an override that leaves a grid cell invalid: refused before anything is written or trained
    fresh = tmp_path / "fresh"
    code, _, err = run_main(["tutorial", "--out", fresh, "--data-dir", synthetic_data_dir, "--seeds", "0",
                             "--set", "model.widths=[12,24]"], capsys)
    one_line_error(code, err, "model.norm=group", "norm_groups", "nothing was trained")
    assert not fresh.exists()


# --- 3: no symbolic link is followed for a file a run writes -----------------------------------------------------

def test_a_symlinked_lock_or_metrics_file_is_never_written_through(synthetic_data_dir, finished_run, tmp_path, capsys):
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("\\chapter{mine}")
    record = json.loads((finished_run / "run.json").read_text())
    (finished_run / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))
    summary = json.loads((finished_run / "summary.json").read_text())
    (finished_run / "summary.json").write_text(json.dumps({**summary, "epochs": 1}))  # one epoch left to go
    for name in (".lock", "metrics.jsonl"):
        (finished_run / name).unlink(missing_ok=True)
        (finished_run / name).symlink_to("../thesis.tex")
        code, _, err = run_main(["ex09", "--resume", finished_run, "--no-progress"], capsys)
        one_line_error(code, err, f"{finished_run / name} is a symbolic link", "nothing was written")
        assert thesis.read_text() == "\\chapter{mine}"
        (finished_run / name).unlink()
        if name == "metrics.jsonl":
            (finished_run / name).write_text("")


# --- 4: a journal whose last line was cut ------------------------------------------------------------------------

def test_a_journal_cut_by_a_killed_writer_is_repaired_before_appending_and_a_broken_one_refused(tmp_path, capsys):
    import optuna

    from common.errors import ConfigError
    from studies.storage import open_storage

    journal = tmp_path / "study.log"
    url = f"journal://{journal}"
    study = optuna.create_study(study_name="j", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    whole = journal.read_bytes()
    cut = b'{"op_code":5,"worker_id":"w","trial_id":2,"st'
    journal.write_bytes(whole + cut)  # a writer killed mid-line
    assert len(optuna.load_study(study_name="j", storage=open_storage(url)).trials) == 2  # readable, and repaired
    assert journal.read_bytes() == whole and (tmp_path / "study.log.cut").read_bytes() == cut
    assert "was cut by a killed writer" in capsys.readouterr().err
    again = optuna.load_study(study_name="j", storage=open_storage(url))
    again.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # appending after the repair
    assert len(optuna.load_study(study_name="j", storage=open_storage(url)).trials) == 3
    # the damage the old code did (appended after the cut line): refused naming the line, the file untouched
    lines = journal.read_bytes().split(b"\n")
    lines[3] = lines[3][:20] + lines[4]
    del lines[4]
    broken = b"\n".join(lines)
    journal.write_bytes(broken)
    with pytest.raises(ConfigError, match="line 4 is not a whole log entry"):
        open_storage(url)
    assert journal.read_bytes() == broken


# --- 5, 7: a step-cache entry never writes outside the run dir nor unpickles code --------------------------------

def _entry(cache: Path, digest: str, files: dict[str, bytes], figures=()) -> Path:
    entry = cache / digest
    entry.mkdir(parents=True)
    for name, data in files.items():
        (entry / Path(name).name).write_bytes(data)
    (entry / "result.json").write_text(json.dumps({"figures": list(figures)}))
    (entry / "rows.jsonl").write_text("")
    manifest = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    manifest["result.json"] = hashlib.sha256((entry / "result.json").read_bytes()).hexdigest()
    (entry / "manifest.json").write_text(json.dumps({"step": "pretrain", "files": manifest}))
    return entry


def test_a_cache_entry_naming_a_file_outside_the_run_dir_or_holding_code_is_dropped(tmp_path, monkeypatch, capsys):
    from ex08_autoencoder import step_cache

    cache = tmp_path / "cache"
    monkeypatch.setenv("I2DL_STEP_CACHE_DIR", str(cache))
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    thesis = tmp_path / "runs" / "thesis.tex"
    thesis.write_text("mine")
    planted = _entry(cache, "a" * 64, {"pretrain.pt": b"x", "../thesis.tex": b"theirs"}, figures=["../thesis.tex"])
    assert step_cache.restore("a" * 64, "pretrain", run_dir) is None
    assert thesis.read_text() == "mine" and not planted.exists() and list(run_dir.iterdir()) == []

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'PWNED'}",)
    poisoned = _entry(cache, "b" * 64, {"pretrain.pt": pickle.dumps({"state_dict": Payload()}, protocol=2)})
    capsys.readouterr()
    assert step_cache.restore("b" * 64, "pretrain", run_dir) is None
    err = capsys.readouterr().err
    assert str(poisoned) in err and "not plain tensors" in err and "training the step" in err
    assert not poisoned.exists() and not (tmp_path / "PWNED").exists() and list(run_dir.iterdir()) == []


# --- 6: every printed command line is shell-quoted -------------------------------------------------------------

def test_runs_prints_a_continue_line_that_is_safe_to_paste(finished_run, tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    hostile = root / "x;touch PWNED"
    finished_run.rename(hostile)
    record = json.loads((hostile / "run.json").read_text())
    (hostile / "run.json").write_text(json.dumps({**record, "status": "running"}))  # killed: no live lock
    code, out, _ = run_main(["runs", root], capsys)
    assert code == 0
    line = next(x for x in out.splitlines() if "continue it with:" in x).split("continue it with: ", 1)[1]
    assert shlex.split(line)[-2:] == ["--resume", str(hostile)]
    subprocess.run(["bash", "-c", line.replace("python", "true", 1)], cwd=tmp_path, check=True)
    assert not (tmp_path / "PWNED").exists()


# --- 8: a stopped holder of a step lock is named, the wait said again, the way out given --------------------------

def test_a_step_lock_held_by_a_stopped_run_names_it_and_is_taken_over_when_it_dies(tmp_path, monkeypatch, capsys):
    from ex08_autoencoder import step_cache

    monkeypatch.setenv("I2DL_STEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(step_cache, "WAIT_REPORT_S", 0.5)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ex08_autoencoder import step_cache\n"
                               "with step_cache.computing('c' * 64, 'pretrain'):\n"
                               "    print('held', flush=True); time.sleep(600)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "I2DL_STEP_CACHE_DIR": str(tmp_path / "cache")})
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGSTOP)
        got = threading.Event()

        def second():
            with step_cache.computing("c" * 64, "pretrain"):
                got.set()
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        time.sleep(1.5)
        assert not got.is_set(), "it waits while the holder lives"
        err = capsys.readouterr().err
        assert err.count("another run is computing this step") >= 2, "said again while it waits"
        assert f"process {holder.pid}" in err and "which is stopped" in err and "--no-cache" in err
        holder.kill()
        holder.wait()
        thread.join(10)
        assert got.is_set(), "the lock of a dead holder is taken over"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# --- tracebacks: one line naming the file, key or flag ---------------------------------------------------------

def test_json_and_yaml_nesting_bombs_are_one_line_and_runs_lists_the_other_runs(synthetic_data_dir, finished_run,
                                                                                 tmp_path, capsys):
    bomb = tmp_path / "config.json"
    bomb.write_text("[" * 200_000 + "]" * 200_000)
    code, _, err = run_main(["ex09", "--config", bomb, "--show-config"], capsys)
    one_line_error(code, err, str(bomb), "nested")
    code, _, err = run_main(["ex09", "--show-config", "--set", "model.widths=" + "[" * 60_000 + "]" * 60_000], capsys)
    one_line_error(code, err, "model.widths", "nested")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("study: s\nexperiment: ex09\nmetric: val/score\nspace: " + "[" * 2000 + "]" * 2000 + "\n")
    code, _, err = run_main(["ex09", "--study", sweep], capsys)
    one_line_error(code, err, str(sweep), "nested more than")
    other = tmp_path / "root" / "other"
    shutil.copytree(finished_run, other)
    (finished_run / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    shutil.move(finished_run, tmp_path / "root" / "bomb")
    code, out, err = run_main(["runs", tmp_path / "root"], capsys)
    assert code == 0 and "Traceback" not in err
    assert "unreadable (run.json)" in out and "other" in out and "complete" in out


def test_sweep_settings_and_choices_are_checked_before_anything_trains(synthetic_data_dir, finished_run, tmp_path,
                                                                       capsys):
    cases = [({"pruner": {"type": "hyperband", "min_resource": "eight"}}, "pruner.min_resource='eight'"),
             ({"sampler": {"type": "tpe", "seed": "zero"}}, "sampler.seed='zero'"),
             ({"sampler": {"type": "tpe", "constant_liar": 1}}, "true or false"),
             ({"metric": "val/scroe"}, "metric 'val/scroe' is not a figure"),
             ({"space": {"train.lr": {"type": "float", "low": 1e-3, "high": 2e-3, "step": 0.5}}},
              "is larger than the range"),
             ({"space": {"train.loss": {"type": "categorical", "choices": ["l1", "smooth_l1"]}}},
              "train.loss='mse' is not among the sweep's choices")]
    for i, (top, words) in enumerate(cases):
        sweep = write_sweep(tmp_path / f"s{i}.yaml", synthetic_data_dir, **top)
        code, _, err = run_main(["ex09", "--study", sweep, "--out", tmp_path / f"study{i}"], capsys)
        one_line_error(code, err, words)
        assert not (tmp_path / f"study{i}").exists(), "nothing written"
    sweep = write_sweep(tmp_path / "ok.yaml", synthetic_data_dir, baseline=False,
                        space={"train.loss": {"type": "categorical", "choices": ["l1", "smooth_l1"]}})
    code, _, err = run_main(["ex09", "--study", sweep, "--out", tmp_path / "q", "--enqueue", finished_run], capsys)
    one_line_error(code, err, f"--enqueue {finished_run / 'config.json'}", "train.loss='mse'")
    code, _, err = run_main(["ex09", "--study", sweep, "--out", tmp_path / "q", "--set", "train.loss=l1"], capsys)
    one_line_error(code, err, "--set train.loss", "searches that key")
    code, _, err = run_main(["ex09", "--study", sweep, "--out", tmp_path / "q", "--storage", "sqlite:///:memory:"],
                            capsys)
    one_line_error(code, err, "in-memory database")
    assert not (tmp_path / "q").exists()


def test_cli_edge_cases_are_one_line(synthetic_data_dir, finished_run, tmp_path, capsys):
    code, _, err = run_main(ex09(synthetic_data_dir, tmp_path / ("x" * 300)), capsys)
    one_line_error(code, err, "file name too long")
    code, _, err = run_main(["ex09", "--data-dir", "", "--show-config"], capsys)
    one_line_error(code, err, "--data-dir is empty")
    config = json.loads((finished_run / "config.json").read_text())
    config["train"]["batch_size"] = True
    (tmp_path / "bool.json").write_text(json.dumps(config))
    code, _, err = run_main(["ex09", "--config", tmp_path / "bool.json", "--show-config"], capsys)
    one_line_error(code, err, "train.batch_size: expected an integer, got True")
    record = json.loads((finished_run / "run.json").read_text())
    (finished_run / "run.json").write_text(json.dumps({**record, "code": {**record["code"], "commit": 12345}}))
    code, _, err = run_main(["rerun", finished_run, "--out", tmp_path / "again"], capsys)
    one_line_error(code, err, "code.commit", "is int")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "seeds.json").write_text(json.dumps({"seeds": [0, 1], "status": "running"}))
    code, _, err = run_main(["ex09", "--resume", seeds], capsys)
    one_line_error(code, err, "is a --seeds dir: add --seeds 0,1")
    csv = write_course_csv(tmp_path / "faces.csv", *synthetic_faces(2, seed=3))
    code, _, err = run_main(["ex09", "--evaluate", finished_run / "best.pt", "--csv", csv, "--seeds", "0,1"], capsys)
    one_line_error(code, err, "--seeds does not apply to --evaluate")
    code, _, err = run_main(["tutorial", "--out", tmp_path / "tut", "--ex08-run", finished_run,
                             "--data-dir", synthetic_data_dir], capsys)
    one_line_error(code, err, "is an ex09 run; give a finished ex08 run dir")
    assert not (tmp_path / "tut").exists()


def test_config_from_a_run_dir_or_a_stream(finished_run, tmp_path, capsys):
    code, out, err = run_main(["ex09", "--config", finished_run, "--show-config"], capsys)
    assert code == 0, err
    assert json.loads(out)["model"]["widths"] == [8, 16]
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes((finished_run / "config.json").read_bytes()))
    writer.start()
    code, out, err = run_main(["ex09", "--config", fifo, "--show-config"], capsys)
    writer.join(10)
    assert code == 0, err
    assert json.loads(out)["model"]["head_hidden"] == 16


def test_a_csv_with_a_duplicated_column_is_refused_and_a_quoted_one_is_read(tmp_path):
    from ex09_keypoints.data import KeypointsDataError, load_split

    images, points = synthetic_faces(3, seed=1)
    csv = write_course_csv(tmp_path / "faces.csv", images, points)
    header, *rows = csv.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([header + ",nose_tip_x", *[r + ",1.0" for r in rows]]) + "\n")
    with pytest.raises(KeypointsDataError, match="names column 'nose_tip_x' twice"):
        load_split(dup, use_cache=False)
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("\n".join(",".join(f'"{c}"' for c in line.split(",")) for line in [header, *rows]) + "\n")
    split, plain = load_split(quoted, use_cache=False), load_split(csv, use_cache=False)
    assert len(split) == 3 and (split.images == plain.images).all() and (split.keypoints == plain.keypoints).all()


def test_ex08_goes_on_without_a_step_cache_it_cannot_write(synthetic_mnist, tmp_path, monkeypatch, capsys):
    from ex08_autoencoder.train import train
    from helpers import tiny_ex08_config

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("I2DL_STEP_CACHE_DIR", str(blocker / "cache"))  # cannot be created: like a read-only dir
    summary = train(tiny_ex08_config(synthetic_mnist), tmp_path / "r", progress=False)
    assert "test10k/acc" in summary
    assert "cannot be written" in capsys.readouterr().err


# --- unclear: one study per dir, a study's settings are part of it, a confirmation's too --------------------------

@pytest.mark.slow  # a tiny study and its confirmation (~40 s)
def test_a_study_keeps_its_dir_sweep_and_settings_and_a_confirmation_its_settings(synthetic_data_dir, tmp_path,
                                                                                 capsys):
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir, trials=2)
    out = tmp_path / "study"
    code, _, err = run_main(["ex09", "--study", sweep, "--out", out], capsys)
    assert code == 0, err
    assert json.loads((out / ".i2dl-study.json").read_text())["study"] == "t"
    other = write_sweep(tmp_path / "other.yaml", synthetic_data_dir, study="other")
    code, _, err = run_main(["ex09", "--study", other, "--out", out], capsys)
    one_line_error(code, err, "holds the study 't'", "one study")
    code, _, err = run_main(["ex09", "--study", sweep, "--out", out, "--trials", "3", "--set", "train.epochs=4"],
                            capsys)
    one_line_error(code, err, "train.epochs=2 (now 4)", "--study-name")
    spec = yaml.safe_load(sweep.read_text())
    spec["space"]["train.lr"]["high"] = 8e-3
    sweep.write_text(yaml.safe_dump(spec))
    code, _, err = run_main(["ex09", "--study", sweep, "--out", out, "--trials", "3"], capsys)
    one_line_error(code, err, "changed since study 't' was created", "space")
    code, _, err = run_main(["ex09", "--study", sweep, "--study-name", "t2", "--out", tmp_path / "t2", "--trials", "1"],
                            capsys)
    assert code == 0, err
    spec["space"]["train.lr"]["high"] = 4e-3
    sweep.write_text(yaml.safe_dump(spec))
    code, _, err = run_main(["report", "--study", sweep, "--out", out, "--confirm", "1", "--seeds", "0",
                             "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_main(["report", "--study", sweep, "--out", out, "--confirm", "1", "--seeds", "0",
                             "--set", "train.epochs=1"], capsys)
    one_line_error(code, err, "was confirmed with train.epochs=2 (now 1)", "nothing was trained")
    code, _, err = run_main(["report", "--study", sweep, "--out", out, "--confirm", "1", "--seeds", "0,1",
                             "--no-progress"], capsys)
    assert code == 0, err
    assert "--resume" not in err and "seed 0: complete" in err and "seed 1 ->" in err
    assert json.loads((out / "confirm" / "preset" / "seeds.json").read_text())["seeds"] == [0, 1]


@pytest.mark.slow  # the tutorial in a fresh process, stopped as it draws its figures
def test_sigterm_to_the_tutorial_is_143_and_the_continue_line(synthetic_data_dir, tmp_path):
    out = tmp_path / "tut"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "tutorial", "--out", str(out), "--seeds", "0",
                             "--data-dir", str(synthetic_data_dir), "--no-progress"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works)
    try:
        wait_for(lambda: (out / "figures").is_dir() or proc.poll() is not None, 120, "the demonstration figures")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "the same command continues" in err
