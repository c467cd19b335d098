"""Careless and hostile input, round 2 (issue 23): nothing is deleted that a run did not write, nothing is packed or
stored that is not ours, no orphan, no hang. Real files, processes, signals, FIFOs and file-size limits."""
from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from helpers import (
    REPO,
    cli,
    ctrl_c_works,
    export,
    run_main,
    snapshot,
    synthetic_faces,
    wait_for,
    write_course_csv,
    write_sweep,
)
from test_hostile_input import TINY, TINY_EX08, one_line_error


def ex09(data_dir, out, *more) -> list:
    return ["ex09", "--preset", "quick", "--data-dir", data_dir, "--out", out, "--no-progress", *TINY, *more]


@pytest.fixture(scope="module")
def _finished_template(synthetic_data_dir, tmp_path_factory):
    from experiments.run import main

    out = tmp_path_factory.mktemp("template") / "run"
    assert main([str(a) for a in ex09(synthetic_data_dir, out)]) == 0
    return out


@pytest.fixture
def finished_run(_finished_template, tmp_path):
    """A finished tiny ex09 run of this test's own (a copy: trained once per module)."""
    return Path(shutil.copytree(_finished_template, tmp_path / "run"))


def broken_data_dir(tmp_path):
    """A data dir whose training.csv has the wrong header: found, read, refused (no download is tried)."""
    root = tmp_path / "broken-data"
    (root / "facial_keypoints").mkdir(parents=True)
    for name in ("training.csv", "val.csv"):
        (root / "facial_keypoints" / name).write_text("a,b,c\n1,2,3\n")
    return root


# --- 1-3: --overwrite deletes only a run this repo wrote, and only after every check -----------------------------

def test_overwrite_never_deletes_a_folder_that_is_not_a_run(synthetic_data_dir, finished_run, tmp_path, capsys):
    project = tmp_path / "thesis"
    (project / "src").mkdir(parents=True)
    (project / "config.json").write_text("{}")
    (project / "thesis.tex").write_text("\\chapter{mine}")
    (project / "src" / "main.py").write_text("print('mine')")
    before = snapshot(project)
    code, _, err = run_main(ex09(synthetic_data_dir, project, "--overwrite"), capsys)
    one_line_error(code, err, f"{project} is not a run dir this repo wrote", "nothing was deleted")
    assert snapshot(project) == before
    # a real run dir with a file of the user's inside: refused, naming it
    (finished_run / "notes.txt").write_text("my notes")
    (finished_run / "analysis").mkdir()
    before = snapshot(finished_run)
    code, _, err = run_main(ex09(synthetic_data_dir, finished_run, "--overwrite"), capsys)
    one_line_error(code, err, "holds what no run wrote", "analysis/", "notes.txt", "nothing was deleted")
    assert snapshot(finished_run) == before
    # a symlinked --out: refused in one line, the target untouched
    link = tmp_path / "link"
    link.symlink_to(project, target_is_directory=True)
    code, _, err = run_main(ex09(synthetic_data_dir, link, "--overwrite"), capsys)
    one_line_error(code, err, "is a symbolic link")
    code, _, err = run_main(ex09(synthetic_data_dir, link), capsys)
    one_line_error(code, err, "is a symbolic link")
    assert snapshot(project) == snapshot(link) and (project / "thesis.tex").is_file()


def test_contradictory_flags_are_refused_before_anything_is_touched(synthetic_data_dir, synthetic_mnist, finished_run,
                                                                    tmp_path, capsys):
    before = snapshot(finished_run)
    code, _, err = run_main(["ex09", "--resume", finished_run, "--overwrite", *TINY], capsys)
    one_line_error(code, err, "--overwrite and --resume contradict each other")
    assert snapshot(finished_run) == before
    out = tmp_path / "ex08"
    args = ["ex08", "--data-dir", synthetic_mnist, "--out", out, "--no-progress", *TINY_EX08]
    assert run_main([*args[:1], "--step", "pretrain", *args[1:]], capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run_main([*args[:1], "--step", "transfer", "--overwrite", *args[1:]], capsys)
    one_line_error(code, err, "--step transfer goes on from the earlier steps' checkpoints", "drop --overwrite")
    assert snapshot(out) == before and (out / "pretrain.pt").is_file()


def test_overwrite_with_a_mistyped_data_dir_keeps_the_old_run(synthetic_data_dir, finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    code, _, err = run_main(ex09(broken_data_dir(tmp_path), finished_run, "--overwrite"), capsys)
    one_line_error(code, err, "header lacks column(s)")
    assert snapshot(finished_run) == before
    # everything checks out: replaced, one run's rows in metrics.jsonl, the lock file kept
    code, _, err = run_main(ex09(synthetic_data_dir, finished_run, "--overwrite"), capsys)
    assert code == 0, err
    assert len((finished_run / "metrics.jsonl").read_text().splitlines()) == 2


# --- 4: report replaces only the files it fetched ---------------------------------------------------------------

@pytest.mark.slow  # a study, a fresh interpreter per export, or a second training
def test_report_replaces_only_the_files_it_fetched(synthetic_data_dir, tmp_path, capsys):
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir, trials=1, fixed={"track.mode": "disabled"})
    study_dir = tmp_path / "study"
    code, _, err = run_main(["ex09", "--study", sweep, "--out", study_dir], capsys)
    assert code == 0, err
    assert run_main(["report", "--study", sweep, "--out", study_dir], capsys)[0] == 0
    best = study_dir / "best-trial"
    assert (best / "best.pt").is_file() and (best / ".i2dl-files.json").is_file()
    (best / "notes.md").write_text("what I think of trial 0")
    (best / "submission").mkdir()
    (best / "submission" / "keypoint_nn.py").write_text("# my export")
    (best / "summary.json").write_text('{"mine": true}')  # the user edited a fetched file: it is theirs now
    code, _, err = run_main(["report", "--study", sweep, "--out", study_dir], capsys)
    assert code == 0, err
    assert "summary.json exists and is changed since it was written" in err
    assert (best / "notes.md").read_text() == "what I think of trial 0"
    assert (best / "submission" / "keypoint_nn.py").read_text() == "# my export"
    assert json.loads((best / "summary.json").read_text()) == {"mine": True}
    assert (best / "best.pt").is_file(), "its own files are fetched again"


# --- 5-6: export writes a folder of its own, zips only the course's files, runs no foreign code ----------------

COURSE_FILES = ["exercise_code/__init__.py", "exercise_code/networks/__init__.py",
                "exercise_code/networks/keypoint_nn.py", "models/facial_keypoints.p"]


def test_export_into_a_folder_it_did_not_write_is_refused(finished_run, tmp_path, capsys):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (home / ".netrc").write_text("machine api.wandb.ai password secret")
    (home / "exercise_code" / "networks").mkdir(parents=True)
    (home / "exercise_code" / "networks" / "keypoint_nn.py").write_text("# my own model")
    before = snapshot(home)
    code, _, err = export(finished_run, capsys, "--out", home)
    one_line_error(code, err, f"{home} already exists and was not written by it", "nothing was written")
    assert snapshot(home) == before and not (tmp_path / "home.zip").exists()
    # a new folder, but the user's own zip of the same name beside it
    (tmp_path / "sub.zip").write_bytes(b"my zip")
    code, _, err = export(finished_run, capsys, "--out", tmp_path / "sub")
    one_line_error(code, err, "sub.zip exists and is not written by this repo")
    assert (tmp_path / "sub.zip").read_bytes() == b"my zip"


@pytest.mark.slow  # a study, a fresh interpreter per export, or a second training
def test_the_zip_holds_exactly_the_course_files_and_a_planted_torch_py_never_runs(finished_run, tmp_path, capsys):
    sub = tmp_path / "sub"
    code, result, err = export(finished_run, capsys, "--out", sub)
    assert code in (0, 1) and result["checks"]["same_predictions"], err
    assert result["files"] == COURSE_FILES
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == COURSE_FILES
    assert not list(sub.rglob("__pycache__")), "the check ran on a copy: nothing was compiled into the folder"
    # foreign code planted in the export folder (and at its root) must not run during the check
    marker = tmp_path / "pwned"
    for where in (sub, sub / "exercise_code"):
        (where / "torch.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(0)\n")
    (sub / "notes.md").write_text("mine")
    code, result, err = export(finished_run, capsys, "--out", sub)  # export's own folder: written again
    assert code in (0, 1) and result["checks"]["same_predictions"] and "error" not in result, err
    assert not marker.exists(), "a torch.py in the submission folder ran"
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == COURSE_FILES, "nothing of the user's is packed"
    assert (sub / "notes.md").read_text() == "mine"


@pytest.mark.slow  # a study, a fresh interpreter per export, or a second training
def test_export_says_a_model_below_the_pass_mark_does_not_pass(synthetic_data_dir, tmp_path, capsys):
    run = tmp_path / "bad"
    code, _, err = run_main(ex09(synthetic_data_dir, run, "train.lr=1e-9", "train.epochs=1"), capsys)
    assert code == 0, err
    code, result, err = export(run, capsys)
    assert code == 1 and not result["passes"] and not result["checks"]["passes_the_course_mark"]
    assert f"does not pass: score {result['score']:.4g} is below the course's mark of 100" in err


def test_export_of_a_swapped_best_pt_and_a_config_that_does_not_fit_its_weights(synthetic_data_dir, finished_run,
                                                                                 tmp_path, capsys):
    import torch

    other = tmp_path / "other"
    code, _, err = run_main(ex09(synthetic_data_dir, other, "model.widths=[16,32]", "model.head_hidden=32"), capsys)
    assert code == 0, err
    shutil.copyfile(other / "best.pt", finished_run / "best.pt")
    code, _, err = export(finished_run, capsys)
    one_line_error(code, err, "it was replaced by another model", "but the run recorded")
    # --evaluate of a checkpoint whose config was edited to widths nobody can allocate: checked before building
    blob = torch.load(other / "best.pt", weights_only=True)
    blob["model_config"]["widths"] = [200000, 400000]
    torch.save(blob, tmp_path / "edited.pt")
    csv = write_course_csv(tmp_path / "faces.csv", *synthetic_faces(3, seed=4))
    t0 = time.monotonic()
    code, _, err = run_main(["ex09", "--evaluate", tmp_path / "edited.pt", "--csv", csv], capsys)
    one_line_error(code, err, "its model config does not match its weights")
    assert time.monotonic() - t0 < 30


# --- 7-8: secrets and unsafe pickles ------------------------------------------------------------------------------

@pytest.mark.slow  # 20 s: a study in a fresh process, as a user starts it
def test_a_storage_password_is_in_no_file_a_study_writes(synthetic_data_dir, tmp_path):
    secret = "hunter2-Zq9"
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir, trials=1)  # W&B offline: its files are searched
    study_dir = tmp_path / "study"
    url = f"sqlite:///{study_dir / 'study.db'}?password={secret}"
    r = cli("ex09", "--study", sweep, "--out", study_dir, "--storage", url)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    # one line of ours per trial, no Optuna INFO line repeating its parameter dict
    assert r.stderr.count("[study] trial 0 (worker 0): complete val/score") == 1 and "[I 20" not in r.stderr
    written = [p for p in study_dir.rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in written) and any("wandb" in p.parts for p in written)
    assert any(p.parent.name == "artifacts" or "artifacts" in p.parts for p in written)
    leaks = [str(p) for p in written if secret.encode() in p.read_bytes()]
    assert leaks == []
    record = json.loads(next(study_dir.glob("trial-*/run.json")).read_text())
    assert "password=***" in " ".join(record["command"])


class Pwn:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_a_pickle_with_code_is_refused_and_never_loaded_unsafely(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    torch.save({"format": "i2dl-ex09-v1", "model_config": {}, "state_dict": {}, "x": Pwn()}, tmp_path / "evil.pt")
    csv = write_course_csv(tmp_path / "faces.csv", *synthetic_faces(3, seed=4))
    for argv in (["ex09", "--evaluate", tmp_path / "evil.pt", "--csv", csv],
                 ["ex09", "--resume", tmp_path / "evil.pt"]):
        code, _, err = run_main(argv, capsys)
        one_line_error(code, err, "evil.pt is not a checkpoint this repo wrote", "never loaded here")
        assert "weights_only" not in err and "unsafe" not in err.lower()
    assert not (tmp_path / "pwned-by-pickle").exists()


# --- 9: SIGTERM does what Ctrl-C does; no orphans ---------------------------------------------------------------

def popen(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "experiments.run", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works, **kw)


LONG = ["train.epochs=400", "train.eval_every=1"]


@pytest.mark.slow
def test_sigterm_ends_a_single_run_like_ctrl_c(synthetic_data_dir, tmp_path):
    out = tmp_path / "r"
    proc = popen(ex09(synthetic_data_dir, out, *LONG))
    try:
        wait_for(lambda: (out / "last.pt").is_file(), 180, "a first checkpoint")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert lines and "interrupted (SIGTERM)" in lines[0] and f"--resume {out}" in lines[0] and "Traceback" not in err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and "SIGTERM" in record["error"]


def _worker_pids(err_lines: list[str]) -> list[int]:
    return [int(line.split("pid ")[1].split(",")[0]) for line in err_lines if "] worker " in line and ": pid " in line]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _long_two_worker_study(data_dir, tmp_path):
    """A study whose trials train for minutes, started with 2 workers: (study dir, the parent, its stderr lines
    as they come)."""
    sweep = write_sweep(tmp_path / "t.yaml", data_dir, trials=6, fixed={"train.epochs": 300, "track.mode": "disabled"},
                        pruner={"type": "none"})
    study_dir, lines = tmp_path / "study", []
    proc = popen(["ex09", "--study", sweep, "--out", study_dir, "--workers", "2"])
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return study_dir, proc, lines


@pytest.mark.slow
def test_sigterm_to_a_study_parent_stops_its_workers_and_marks_their_trials(synthetic_data_dir, tmp_path):
    import optuna

    study_dir, proc, lines = _long_two_worker_study(synthetic_data_dir, tmp_path)
    try:
        wait_for(lambda: len(list(study_dir.glob("trial-*/last.pt"))) >= 2, 240, "both workers training")
        pids = _worker_pids(lines)
        assert len(pids) == 2
        proc.send_signal(signal.SIGTERM)  # to the parent alone, as `timeout` does
        proc.wait(timeout=120)
    finally:
        proc.kill()
    time.sleep(0.5)
    err = "".join(lines)
    assert proc.returncode == 143, err
    assert not [p for p in pids if _alive(p)], "a worker outlived its parent"
    assert "Resume with:" in err and "Traceback" not in err
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}")
    trials = optuna.load_study(study_name="t", storage=storage).get_trials(deepcopy=False)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert len(failed) >= 2 and all(t.user_attrs.get("reason") == "interrupted (SIGTERM)" for t in failed)


@pytest.mark.slow
def test_workers_stop_by_themselves_when_their_parent_dies(synthetic_data_dir, tmp_path):
    study_dir, proc, lines = _long_two_worker_study(synthetic_data_dir, tmp_path)
    try:
        wait_for(lambda: len(_worker_pids(lines)) == 2 and list(study_dir.glob("trial-*/last.pt")), 240,
                 "workers training")
        pids = _worker_pids(lines)
        proc.kill()  # SIGKILL: the parent gets no chance to stop them
        proc.wait()
        wait_for(lambda: not [p for p in pids if _alive(p)], 60, "the workers to stop on their own")
    finally:
        for pid in _worker_pids(lines):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- 10: YAML bombs -----------------------------------------------------------------------------------------------

def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, prev in zip("bcdefghi", "abcdefgh"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nexperiment: ex09\nmetric: val/score\nspace: *i\n")
    assert bomb.stat().st_size < 1000
    t0 = time.monotonic()
    code, _, err = run_main(["ex09", "--study", bomb], capsys)
    one_line_error(code, err, f"{bomb}: line 1: YAML anchors and aliases")
    assert time.monotonic() - t0 < 5 and len(err) < 500
    # a huge value quoted in a message is cut to a line
    huge = tmp_path / "huge.yaml"
    huge.write_text(f"experiment: ex09\nmetric: val/score\ndirection: {'x' * 200_000}\nspace: {{}}\n")
    code, _, err = run_main(["ex09", "--study", huge], capsys)
    one_line_error(code, err, "direction=")
    assert len(err) < 1000


# --- 11: CSVs from pipes ---------------------------------------------------------------------------------------

def _writer(path, data: bytes, delay: float = 0.0):
    def write():
        time.sleep(delay)
        with open(path, "wb") as f:
            f.write(data)
    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def test_evaluate_reads_a_fifo_and_a_pipe_once_and_never_hangs(finished_run, tmp_path, capsys, monkeypatch):
    csv = write_course_csv(tmp_path / "faces.csv", *synthetic_faces(40, seed=4))  # > 8 KB: a sniff would show
    code, out, err = run_main(["ex09", "--evaluate", finished_run / "best.pt", "--csv", csv], capsys)
    assert code == 0, err
    expected = json.loads(out.strip().splitlines()[-1])
    fifo = tmp_path / "faces.fifo"
    os.mkfifo(fifo)
    _writer(fifo, csv.read_bytes(), delay=0.5)
    code, out, err = run_main(["ex09", "--evaluate", finished_run / "best.pt", "--csv", fifo], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["score"] == expected["score"]
    # what a shell's <(zcat faces.csv.gz) gives: /dev/fd/N, a pipe
    read_end, write_end = os.pipe()
    threading.Thread(target=lambda: (os.write(write_end, csv.read_bytes()), os.close(write_end)), daemon=True).start()
    try:
        code, out, err = run_main(["ex09", "--evaluate", finished_run / "best.pt", "--csv", f"/dev/fd/{read_end}"],
                                  capsys)
    finally:
        os.close(read_end)
    assert code == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    assert got["n_images"] == 40 and got["score"] == expected["score"]
    # a FIFO nobody writes to: one line after the wait, not a hang
    monkeypatch.setenv("I2DL_STREAM_WAIT_S", "1")
    silent = tmp_path / "silent.fifo"
    os.mkfifo(silent)
    t0 = time.monotonic()
    code, _, err = run_main(["ex09", "--evaluate", finished_run / "best.pt", "--csv", silent], capsys)
    assert code == 2 and "is a pipe that nothing wrote to in 1 s" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 15


# --- 12: a busy study storage ----------------------------------------------------------------------------------

def test_report_says_within_seconds_that_the_storage_is_busy(synthetic_data_dir, tmp_path, capsys, monkeypatch):
    import optuna

    from studies import report

    monkeypatch.setattr(report, "REPORT_WAIT_S", 1.0)
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir)
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    db = study_dir / "study.db"
    optuna.create_study(study_name="t", storage=f"sqlite:///{db}")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        code, _, err = run_main(["report", "--study", sweep, "--out", study_dir], capsys)
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    one_line_error(code, err, "is busy: another process has held its lock")
    assert took < 30


# --- 13: one process per run dir ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_process_on_a_run_dir_is_refused_naming_the_first(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "r"
    proc = popen(ex09(synthetic_data_dir, out, *LONG))
    try:
        wait_for(lambda: (out / "last.pt").is_file(), 180, "a first checkpoint")
        before = {p: (out / p).stat().st_mtime_ns for p in ("config.json",)}
        code, _, err = run_main(["ex09", "--resume", out, "--no-progress"], capsys)
        one_line_error(code, err, f"is being written by process {proc.pid} on ")
        code, _, err = run_main(ex09(synthetic_data_dir, out, *LONG, "--overwrite"), capsys)
        one_line_error(code, err, f"is being written by process {proc.pid}", "nothing was deleted")
        assert {p: (out / p).stat().st_mtime_ns for p in before} == before
        code, out_text, _ = run_main(["runs", tmp_path, "--json"], capsys)
        assert json.loads(out_text.splitlines()[-1])[0]["status"] == "running"
    finally:
        proc.kill()
        proc.wait()
    code, out_text, _ = run_main(["runs", tmp_path, "--json"], capsys)
    assert json.loads(out_text.splitlines()[-1])[0]["status"] == "interrupted", "killed: its lock went with it"


# --- the bullets: resumable seeds, full disks, cut lines, finished runs, failed starts ---------------------------

@pytest.mark.slow
def test_ctrl_c_during_seeds_is_resumed_keeping_the_finished_seeds(synthetic_data_dir, tmp_path):
    out = tmp_path / "seeds"
    args = ["ex09", "--preset", "quick", "--data-dir", synthetic_data_dir, "--out", out, "--no-progress",
            "--seeds", "0,1", *TINY, "train.epochs=40"]
    proc = popen(args)
    try:
        wait_for(lambda: (out / "seed-0" / "summary.json").is_file() and (out / "seed-1" / "last.pt").is_file(),
                 300, "seed 0 done and seed 1 training")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    line = next(line for line in err.splitlines() if line.startswith("interrupted"))
    assert f"--resume {out}" in line and "--seeds 0,1" in line
    kept = (out / "seed-0" / "summary.json").read_bytes()
    again = shlex.split(line.split("continue it with: ", 1)[1])[3:]  # after "python -m experiments.run"
    r = cli(*again)
    assert r.returncode == 0, r.stderr
    assert "seed 0: complete" in r.stderr and "seed 1 -> " in r.stderr and "(resumed)" in r.stderr
    assert (out / "seed-0" / "summary.json").read_bytes() == kept
    seeds = json.loads((out / "seeds.json").read_text())
    assert seeds["status"] == "complete" and seeds["figures"]["val/score"]["values"][0] == \
        json.loads(kept)["val/score"]


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_record_says_so_and_a_full_cache_is_only_a_warning(synthetic_data_dir,
                                                                                             tmp_path):
    def limited(limit):  # RLIMIT_FSIZE: a write past `limit` bytes fails with EFBIG, as a full disk does
        def preexec():
            ctrl_c_works()
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        return preexec

    cache = tmp_path / "cache"
    env = {**os.environ, "I2DL_CACHE_DIR": str(cache)}
    # the decoded-CSV cache (~1 MB) cannot be written, the tiny model (~60 KB) can: a warning, and the run goes on
    small = subprocess.run([sys.executable, "-m", "experiments.run",
                            *map(str, ex09(synthetic_data_dir, tmp_path / "a"))],
                           cwd=REPO, capture_output=True, text=True, env=env, preexec_fn=limited(400_000))
    assert small.returncode == 0, small.stderr
    assert small.stderr.count("cannot write the cache") == 1 and "going on without it" in small.stderr
    # a model too large for the limit: one line naming the file and the error, the record keeps the real cause
    big = subprocess.run([sys.executable, "-m", "experiments.run",
                          *map(str, ex09(synthetic_data_dir, tmp_path / "b", "model.widths=[32,64]",
                                         "model.head_hidden=256"))],
                         cwd=REPO, capture_output=True, text=True, env=env, preexec_fn=limited(400_000))
    assert big.returncode == 2, big.stderr
    last = big.stderr.strip().splitlines()[-1]
    assert "Traceback" not in big.stderr and last.startswith("error: cannot write ") and "File too large" in last
    assert "best.pt" in last or "last.pt" in last
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["status"] == "failed" and "File too large" in record["error"]
    assert "unexpected pos" not in record["error"]


def test_resume_drops_a_metrics_line_cut_by_a_kill_and_refuses_a_finished_run(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run_main(ex09(synthetic_data_dir, out, "train.epochs=3", "train.time_limit_s=1e-9"), capsys)
    assert code == 0, err
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "train/loss": 0.0')  # what a SIGKILL mid-write leaves
    code, _, err = run_main(["ex09", "--resume", out, "--no-progress", "--set", "train.time_limit_s=0"], capsys)
    assert code == 0, err  # the run's own config (from its dir), with a wall-clock limit that lets it finish
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    before = snapshot(out)
    code, _, err = run_main(["ex09", "--resume", out, "--no-progress"], capsys)
    one_line_error(code, err, "that run is already complete")
    assert snapshot(out) == before


def test_a_failed_start_is_replaced_by_the_same_command(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run_main(ex09(synthetic_data_dir, out, "train.batch_size=500"), capsys)
    one_line_error(code, err, "larger than the 96 training images")
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    code, _, err = run_main(ex09(synthetic_data_dir, out), capsys)  # fixed: the same command, no --overwrite
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    # bad data leaves nothing behind at all
    code, _, err = run_main(ex09(broken_data_dir(tmp_path), tmp_path / "never"), capsys)
    assert code == 2 and not (tmp_path / "never").exists()


# --- downloads, study dirs, reruns, runs ----------------------------------------------------------------------

def test_a_captive_portal_page_or_a_partial_archive_leaves_the_data_dir_as_it_was(tmp_path, monkeypatch, capsys):
    from helpers import serve_dir

    serve = tmp_path / "serve"
    serve.mkdir()
    (serve / "portal.zip").write_text("<!DOCTYPE html><html><body>Please log in to the Wi-Fi</body></html>")
    write_course_csv(serve / "training.csv", *synthetic_faces(4, seed=1))
    with zipfile.ZipFile(serve / "partial.zip", "w") as zf:
        zf.write(serve / "training.csv", "training.csv")  # no val.csv
    data = tmp_path / "data"
    with serve_dir(serve) as (base, _):
        for name, words in (("portal.zip", "is an HTML page"), ("partial.zip", "does not contain ['val.csv']")):
            monkeypatch.setenv("I2DL_KEYPOINTS_URL", f"{base}/{name}")
            monkeypatch.setenv("I2DL_CACHE_DIR", str(tmp_path / f"cache-{name}"))
            code, _, err = run_main(ex09(data, tmp_path / "r"), capsys)
            assert code == 2 and words in err, err
            assert not (data / "facial_keypoints").exists(), "no folder, no half set of files left"


def test_a_study_dir_is_new_empty_or_a_study_dir(synthetic_data_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir)
    before = snapshot(mine)
    code, _, err = run_main(["ex09", "--study", sweep, "--out", mine], capsys)
    one_line_error(code, err, f"--out {mine} is not a study dir", "thesis.tex")
    code, _, err = run_main(["ex09", "--study", sweep, "--out", synthetic_data_dir], capsys)
    one_line_error(code, err, "is not a study dir")
    assert snapshot(mine) == before and not (synthetic_data_dir / "study.db").exists()
    bad_name = tmp_path / "n.yaml"
    bad_name.write_text(sweep.read_text().replace("study: t", "study: ../../etc/x"))
    code, _, err = run_main(["ex09", "--study", bad_name], capsys)
    one_line_error(code, err, "study: '../../etc/x' is not a plain name")


@pytest.mark.slow  # a study, a fresh interpreter per export, or a second training
def test_rerun_of_an_unknown_commit_warns_before_training(finished_run, tmp_path, capsys):
    record = json.loads((finished_run / "run.json").read_text())
    record["code"] = {**record["code"], "git": True, "commit": "0" * 40}
    (finished_run / "run.json").write_text(json.dumps(record))
    code, _, err = run_main(["rerun", finished_run, "--out", tmp_path / "again", "--no-progress"], capsys)
    assert code == 0, err
    lines = err.splitlines()
    warning = next(i for i, line in enumerate(lines) if "commit 0000000000 is not in this repository" in line)
    started = next(i for i, line in enumerate(lines) if "replacing" in line or line.startswith("[")) \
        if any(line.startswith("[") for line in lines) else len(lines)
    assert warning < started, "the warning comes before the run starts"


def test_runs_lists_the_readable_runs_and_marks_an_unreadable_one(finished_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    (broken / "config.json").write_text('{"train": ')
    code, out, err = run_main(["runs", tmp_path], capsys)
    assert code == 0 and "Traceback" not in err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"broken", "run"} and "unreadable" in rows["broken"] and rows["run"].endswith("complete")
    assert not out.strip().splitlines()[-1].startswith("[")


def test_wandb_with_a_key_but_no_network_goes_offline_at_once_saying_so_once(tmp_path, monkeypatch, capsys):
    import socket

    from common.run import tracking
    with socket.socket() as s:  # a loopback port nobody listens on: connection refused, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(tracking, "_said", set())
    monkeypatch.setattr(tracking, "_server_answers", None)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    assert [tracking.decide_mode("auto") for _ in range(3)] == ["offline"] * 3
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err
    assert err.count("[tracking]") == 1 and "unreachable" in err and "x" * 40 not in err
    # online asked for without a key: offline, said in one line
    monkeypatch.setattr(tracking, "_said", set())
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc either
    assert tracking.decide_mode("online") == "offline" and tracking.decide_mode("online") == "offline"
    err = capsys.readouterr().err
    assert err.count("[tracking]") == 1 and "no W&B API key" in err


def test_the_finished_progress_bar_is_printed_once(synthetic_data_dir, tmp_path, capsys):
    argv = [a for a in ex09(synthetic_data_dir, tmp_path / "r", "train.epochs=3") if a != "--no-progress"]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    frames = err.replace("\r", "\n").splitlines()
    assert sum("ex09 epochs: 100%" in f for f in frames) == 1 and any("3/3" in f and "best=" in f for f in frames)


def test_top_level_help_has_no_docstring_markup(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "``" not in out and "{<exercise>,report,dashboard" in out


@pytest.mark.slow  # a fresh interpreter checks the export
def test_overwrite_replaces_a_run_with_its_export_but_not_a_user_zip(synthetic_data_dir, finished_run, capsys):
    assert export(finished_run, capsys)[0] in (0, 1)
    (finished_run / "submission.zip").write_bytes(b"the user's own zip now")
    code, _, err = run_main(ex09(synthetic_data_dir, finished_run, "--overwrite"), capsys)
    one_line_error(code, err, "holds what no run wrote (submission.zip)")
    (finished_run / "submission.zip").unlink()
    assert export(finished_run, capsys)[0] in (0, 1)  # export's own zip again: replaced with the run
    code, _, err = run_main(ex09(synthetic_data_dir, finished_run, "--overwrite"), capsys)
    assert code == 0, err
    assert not (finished_run / "submission").exists() and not (finished_run / "submission.zip").exists()


def test_study_flags_and_data_locations_out_of_range_are_one_line_and_touch_nothing(synthetic_data_dir, tmp_path,
                                                                                     capsys, monkeypatch):
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    out = tmp_path / "study"
    t0 = time.monotonic()
    for flags, words in ((["--trials", "0"], "--trials=0 must be >= 1"),
                         (["--timeout", "-5"], "--timeout=-5.0 must be a positive number"),
                         (["--workers", "99999"], "--workers=99999 must be between 1 and"),
                         (["--artifacts", a_file], "is a file, not a folder")):
        code, _, err = run_main(["ex09", "--study", sweep, "--out", out, *flags], capsys)
        one_line_error(code, err, words)
        assert not out.exists(), f"{flags}: nothing is created before the flags are checked"
    assert time.monotonic() - t0 < 20, "refused at once: no worker was started"
    monkeypatch.setenv("I2DL_DATA_DIR", str(a_file))
    code, _, err = run_main(["ex09", "--out", tmp_path / "r", *TINY], capsys)
    one_line_error(code, err, f"$I2DL_DATA_DIR={a_file} is a file, not a folder")
    code, _, err = run_main(["ex09", "--data-dir", a_file, "--out", tmp_path / "r", *TINY], capsys)
    one_line_error(code, err, f"--data-dir {a_file} is a file, not a folder")
    # a cache dir that is a file: the cache is optional, so the run goes on, saying so once
    monkeypatch.delenv("I2DL_DATA_DIR")
    monkeypatch.setenv("I2DL_CACHE_DIR", str(a_file))
    code, _, err = run_main(ex09(synthetic_data_dir, tmp_path / "r2", "train.epochs=1"), capsys)
    assert code == 0, err
    assert err.count("cannot write the cache") == 1 and a_file.read_text() == "not a folder"


def test_a_config_for_a_huge_model_is_refused_before_anything_is_allocated(synthetic_data_dir, synthetic_mnist,
                                                                           tmp_path, capsys):
    t0 = time.monotonic()
    code, _, err = run_main(ex09(synthetic_data_dir, tmp_path / "r", "model.widths=[100000,100000]"), capsys)
    one_line_error(code, err, "the course allows fewer than 5,000,000")
    code, _, err = run_main(["ex08", "--data-dir", synthetic_mnist, "--out", tmp_path / "r8", *TINY_EX08,
                             "model.hidden=[200000]"], capsys)
    one_line_error(code, err, "the course allows fewer than 5,000,000")
    assert time.monotonic() - t0 < 30 and not (tmp_path / "r").exists() and not (tmp_path / "r8").exists()
    code, _, err = run_main(["ex09", "--seeds", "0-100000"], capsys)
    one_line_error(code, err, "100001 seeds, each a whole run; give at most 100")
