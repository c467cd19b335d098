"""Careless and hostile input: nothing the user has is lost, no password leaks, and every mistake ends in one
line naming the file or flag and exit code 2 (130 for Ctrl-C), never a traceback."""
from __future__ import annotations

import gzip
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile

import pytest
import torch

from common.plots import read_metrics
from helpers import (
    REPO,
    ctrl_c_works,
    run_main,
    serve_dir,
    short_real_ex08_sets,
    snapshot,
    synthetic_faces,
    tiny_ex08_config,
    wait_for,
    write_course_csv,
)

TINY = ["--set", "model.widths=[8,16]", "model.head_hidden=16", "train.epochs=2", "train.batch_size=16",
        "train.eval_every=1", "run.threads=1", "track.mode=disabled"]
TINY_EX08 = ["--set", "model.hidden=[32]", "model.latent=8", "model.head_hidden=[16]", "pretrain.epochs=1",
             "pretrain.batch_size=64", "transfer.epochs=1", "transfer.samples_per_epoch=32", "teacher.epochs=1",
             "teacher.unlabeled_per_epoch=64", "teacher.unlabeled_batch=32", "data.max_unlabeled=128",
             "run.threads=1", "track.mode=disabled"]


def one_line_error(code: int, err: str, *words: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, f"not one line:\n{err}"
    for w in words:
        assert w in err, (w, err)


@pytest.fixture
def ex09_run(synthetic_data_dir, tmp_path_factory):
    """A finished tiny ex09 run (CLI, in process): its dir."""
    out = tmp_path_factory.mktemp("finished") / "run"
    from experiments.run import main
    assert main(["ex09", "--preset", "quick", "--data-dir", str(synthetic_data_dir), "--out", str(out),
                 "--no-progress", *TINY]) == 0
    return out


# --- data loss and leaks ----------------------------------------------------------------------------------------

def test_a_missing_val_csv_never_downloads_over_the_users_training_csv(tmp_path, monkeypatch, capsys):
    mine = write_course_csv(tmp_path / "data" / "facial_keypoints" / "training.csv", *synthetic_faces(4, seed=1))
    theirs = tmp_path / "serve"
    write_course_csv(theirs / "training.csv", *synthetic_faces(6, seed=2))
    write_course_csv(theirs / "val.csv", *synthetic_faces(3, seed=3))
    with zipfile.ZipFile(theirs / "facial_keypoints.zip", "w") as zf:
        zf.write(theirs / "training.csv", "training.csv")
        zf.write(theirs / "val.csv", "val.csv")
    before = snapshot(tmp_path / "data")
    with serve_dir(theirs) as (base, requested):
        monkeypatch.setenv("I2DL_KEYPOINTS_URL", f"{base}/facial_keypoints.zip")
        code, _, err = run_main(["ex09", "--data-dir", tmp_path / "data", "--out", tmp_path / "r", *TINY], capsys)
    one_line_error(code, err, str(mine.parent / "val.csv"), "is missing", "untouched")
    assert "training.csv is there" in err and requested == [], "nothing is downloaded"
    assert snapshot(tmp_path / "data") == before


def test_a_finished_run_is_never_overwritten(ex09_run, synthetic_data_dir, tmp_path, capsys):
    before = snapshot(ex09_run)
    code, _, err = run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", ex09_run, *TINY], capsys)
    one_line_error(code, err, f"--out {ex09_run} already holds a run", "--overwrite")
    assert snapshot(ex09_run) == before
    # bad data as well: the old run still stays as it was
    code, _, err = run_main(["ex09", "--data-dir", tmp_path / "empty", "--out", ex09_run, *TINY], capsys)
    assert code == 2 and snapshot(ex09_run) == before
    # --out naming a file
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    code, _, err = run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", note, *TINY], capsys)
    one_line_error(code, err, f"--out {note} is a file")
    assert note.read_text() == "mine"
    # said explicitly: replaced, one run in metrics.jsonl
    code, _, err = run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", ex09_run, "--overwrite", *TINY],
                            capsys)
    assert code == 0, err
    assert len((ex09_run / "metrics.jsonl").read_text().splitlines()) == 2


def test_ex08_refuses_a_finished_run_dir_but_its_steps_continue_one(synthetic_mnist, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["ex08", "--data-dir", synthetic_mnist, "--out", out, "--no-progress", *TINY_EX08]
    assert run_main([*args[:1], "--step", "pretrain", *args[1:]], capsys)[0] == 0
    assert run_main([*args[:1], "--step", "transfer", *args[1:]], capsys)[0] == 0  # the user said so: --step
    before = snapshot(out)
    code, _, err = run_main(args, capsys)
    one_line_error(code, err, "already holds a run")
    assert snapshot(out) == before
    # a step on top of a checkpoint trained with other model settings
    code, _, err = run_main([*args[:1], "--step", "teacher", *args[1:], "model.latent=16"], capsys)
    one_line_error(code, err, "transfer.pt was trained with other model settings", "model.latent")


@pytest.mark.parametrize("url,secret", [
    ("postgresql+psycopg2://me:p@ss-w0rd@127.0.0.1:1/optuna", ("p@ss", "ss-w0rd", "w0rd")),
    ("postgresql+psycopg2://me:a/b@c:d@127.0.0.1:1/optuna", ("a/b", "b@c", "c:d")),
])
def test_no_part_of_a_password_is_ever_printed(url, secret, capsys):
    from studies.storage import redact

    assert not any(s in redact(url) for s in secret)
    code, out, err = run_main(["ex09", "--study", "kp", "--storage", url], capsys)
    one_line_error(code, err, "cannot open study storage postgresql+psycopg2://me:***@127.0.0.1:1/optuna")
    assert not any(s in out + err for s in secret)


# --- checkpoints ------------------------------------------------------------------------------------------------

def test_wrong_checkpoints_for_evaluate_and_resume(ex09_run, synthetic_mnist, synthetic_data_dir, tmp_path, capsys):
    csv = write_course_csv(tmp_path / "faces.csv", *synthetic_faces(3, seed=4))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((ex09_run / "best.pt").read_bytes()[:500])
    from ex08_autoencoder.train import train as train_ex08
    train_ex08(tiny_ex08_config(synthetic_mnist, **{"only_step": "pretrain"}), tmp_path / "ex08", progress=False)
    capsys.readouterr()
    cases = [
        (["--evaluate", tmp_path / "nothing.pt", "--csv", csv], "nothing.pt does not exist"),
        (["--evaluate", truncated, "--csv", csv], "truncated.pt is not a checkpoint this repo wrote"),
        (["--evaluate", tmp_path / "ex08" / "pretrain.pt", "--csv", csv], "'i2dl-ex08-v1'"),
        (["--evaluate", ex09_run / "last.pt", "--csv", csv], "continue it with --resume"),
        (["--evaluate", ex09_run, "--csv", csv], "is a directory, not a checkpoint"),
        (["--resume", ex09_run / "best.pt"], "is a saved model (best.pt); --resume wants a run dir or its last.pt"),
        (["--resume", truncated], "truncated.pt is not a checkpoint this repo wrote"),
        (["--resume", ex09_run / "last.pt", "--set", "model.widths=[8,24]"], "other settings (model.widths)"),
    ]
    for flags, words in cases:
        # an empty data dir: reaching the data would fail differently (and download): the file is checked first
        code, _, err = run_main(["ex09", "--preset", "quick", "--data-dir", tmp_path / "no-data", "--out",
                                 tmp_path / "x", *TINY, *flags], capsys)
        one_line_error(code, err, words)
        assert not (tmp_path / "no-data").exists()


# --- files that are not what they seem --------------------------------------------------------------------------

def _data_dir_with(tmp_path, name: str, content: bytes | None):
    root = tmp_path / name
    folder = root / "facial_keypoints"
    write_course_csv(folder / "val.csv", *synthetic_faces(3, seed=6))
    if content is None:
        (folder / "training.csv").mkdir()
    else:
        (folder / "training.csv").write_bytes(content)
    return root


def test_csvs_that_are_not_plain_utf8_csv(tmp_path, capsys):
    good = write_course_csv(tmp_path / "plain.csv", *synthetic_faces(20, seed=7)).read_bytes()
    latin1 = good.replace(b"Image", b"Im\xe4ge", 1)
    for name, content, words in (("gz", gzip.compress(good), "gzip-compressed"),
                                 ("latin1", latin1, "not UTF-8"),
                                 ("dir", None, "is a directory, not a CSV file")):
        root = _data_dir_with(tmp_path, name, content)
        code, _, err = run_main(["ex09", "--data-dir", root, "--out", tmp_path / f"r-{name}", *TINY], capsys)
        one_line_error(code, err, "training.csv", words)
    # a byte-order mark (Excel's "CSV UTF-8") is read as the same CSV
    root = _data_dir_with(tmp_path, "bom", b"\xef\xbb\xbf" + good)
    code, out, err = run_main(["ex09", "--data-dir", root, "--out", tmp_path / "r-bom", *TINY], capsys)
    assert code == 0, err
    code, _, err = run_main(["ex09", "--evaluate", tmp_path / "r-bom" / "best.pt", "--csv", tmp_path], capsys)
    one_line_error(code, err, f"{tmp_path} is a directory, not a CSV file")


def test_drop_bad_rows_is_one_line_with_the_rows_in_the_run_dir(tmp_path, capsys):
    images, points = synthetic_faces(60, seed=8)
    points[::3, 0, 0] = 200.0  # 20 keypoints outside the image
    root = tmp_path / "data"
    write_course_csv(root / "facial_keypoints" / "training.csv", images, points)
    write_course_csv(root / "facial_keypoints" / "val.csv", *synthetic_faces(8, seed=9))
    code, _, err = run_main(["ex09", "--data-dir", root, "--drop-bad-rows", "--out", tmp_path / "r",
                             "--no-progress", *TINY], capsys)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "dropped" in line]
    assert len(lines) == 1 and "dropped 20 bad row(s), kept 40" in lines[0]
    assert len((tmp_path / "r" / "dropped_rows.txt").read_text().splitlines()) == 20


def test_places_that_cannot_be_written(synthetic_data_dir, capsys):
    code, _, err = run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", "/proc/i2dl-run", *TINY], capsys)
    one_line_error(code, err, "--out /proc/i2dl-run: cannot create it")
    for storage in ("sqlite:////proc/i2dl/study.db", "journal:///proc/i2dl/study.log"):
        code, _, err = run_main(["ex09", "--study", "kp", "--storage", storage], capsys)
        one_line_error(code, err, "cannot open study storage", "choose a writable place")


# --- config values that used to fail late -----------------------------------------------------------------------

@pytest.mark.parametrize("experiment,override,words", [
    ("ex09", "model.widths=[0]", "model.widths=[0] is out of range: it must be >= 1"),
    ("ex09", "model.kernel=0", "model.kernel=0 must be odd"),
    ("ex09", "train.eval_every=0", "train.eval_every=0 is out of range"),
    ("ex09", "train.lr=nan", "train.lr=nan must be a finite number"),
    ("ex09", "augment.scale=1.5", "augment.scale=1.5 is out of range"),
    ("ex09", "run.device=tpu", "run.device='tpu' is not a device"),
    ("ex08", "teacher.ema_decay=1.0", "teacher.ema_decay=1.0 is out of range: it must be (0, 1)"),
    ("ex08", "model.dropout=inf", "model.dropout=inf must be a finite number"),
    ("ex08", "pretrain.mask_ratio=1.5", "pretrain.mask_ratio=1.5 is out of range"),
    ("ex08", "teacher.strong.erase_p=2", "teacher.strong.erase_p=2.0 is out of range"),
    ("ex08", "data.per_class=5000", "data.per_class=5000 is out of range: it must be [1, 1800]"),
    ("ex08", "run.seed=-1", "run.seed=-1 must be in [0, 4000000]"),
])
def test_config_values_out_of_range_stop_before_the_run(experiment, override, words, tmp_path, capsys):
    code, _, err = run_main([experiment, "--out", tmp_path / "r", "--set", override], capsys)
    one_line_error(code, err, words)
    assert not (tmp_path / "r").exists()


def test_a_device_this_machine_lacks_and_a_batch_larger_than_the_data(synthetic_data_dir, tmp_path, capsys):
    import torch

    if not torch.cuda.is_available():
        code, _, err = run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", tmp_path / "c", *TINY,
                                 "run.device=cuda"], capsys)
        one_line_error(code, err, "run.device=cuda: this machine has no CUDA device")
    code, _, err = run_main(["ex09", "--data-dir", synthetic_data_dir, "--out", tmp_path / "b", *TINY,
                             "train.batch_size=500"], capsys)
    one_line_error(code, err, "train.batch_size=500 is larger than the 96 training images")
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["status"] == "failed" and "train.batch_size=500" in record["error"]


def test_missing_psycopg2_names_the_extra(tmp_path):
    blocker = tmp_path / "site" / "psycopg2"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named psycopg2')\n")
    r = subprocess.run([sys.executable, "-m", "experiments.run", "ex09", "--study", "kp", "--storage",
                        "postgresql+psycopg2://me:pw@127.0.0.1:1/optuna"], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, timeout=120)
    one_line_error(r.returncode, r.stderr, "pip install -e '.[postgres]'")


# --- Ctrl-C, help, file modes -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_prints_one_line_with_the_resume_command_that_works(synthetic_data_dir, tmp_path):
    out = tmp_path / "r"
    argv = [sys.executable, "-m", "experiments.run", "ex09", "--preset", "quick", "--data-dir",
            str(synthetic_data_dir), "--out", str(out), "--no-progress", *TINY[:-2], "train.epochs=200",
            "run.threads=1", "track.mode=disabled"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_works)
    try:
        wait_for(lambda: (out / "last.pt").is_file(), 180, "a finished epoch")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    one_line_error(proc.returncode, err, "interrupted", f"--resume {out}", exit_code=130)
    # The printed command continues the same run dir after its last saved epoch (for one more epoch here: a
    # time limit, which a resumed run may change, stops it after the next one). The interrupt may land after an
    # epoch's row is logged and before its state is saved: then that epoch comes again, its row replaced.
    done = torch.load(out / "last.pt", weights_only=True)["epoch"] + 1
    command = shlex.split(err.split("continue it with: ", 1)[1])
    assert command[:3] == ["python", "-m", "experiments.run"]
    resumed = subprocess.run([sys.executable, *command[1:], "--set", "train.time_limit_s=1e-9"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = [r["epoch"] for r in read_metrics(out / "metrics.jsonl")]
    assert epochs == list(range(done + 1)), "the same run dir goes on where it stopped"


def test_each_exercise_help_shows_its_own_keys(capsys):
    for experiment, own, other in (("ex08", "model.hidden", "model.widths"), ("ex09", "model.widths", "model.hidden")):
        code, out, _ = run_main([experiment, "--help"], capsys)
        assert code == 0 and own in out and other not in out


def test_written_files_get_the_users_normal_mode(ex09_run):
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "summary.json", "best.pt", "last.pt", "run.json"):
        assert (ex09_run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    shutil.rmtree(ex09_run / "wandb", ignore_errors=True)


def test_an_interrupted_ex08_run_is_continued_with_resume(synthetic_mnist, tmp_path):
    from ex08_autoencoder.experiment import continue_flags
    from ex08_autoencoder.train import train as train_ex08

    cfg = tiny_ex08_config(synthetic_mnist)
    assert continue_flags(cfg, tmp_path / "r") is None, "nothing there yet"
    train_ex08(tiny_ex08_config(synthetic_mnist, **{"only_step": "pretrain"}), tmp_path / "r", progress=False)
    assert continue_flags(cfg, tmp_path / "r") == ["--resume", str(tmp_path / "r")]


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_uninterrupted_figures(synthetic_data_dir, tmp_path):
    """SIGKILL mid-training (no chance to clean up), then --resume RUN_DIR: the same dir goes on and ends with
    exactly the figures of a run that was never interrupted (CPU, one thread both times)."""
    from ex09_keypoints.train import train
    from helpers import tiny_config

    overrides = {"train.epochs": 8, "model.widths": [8, 16], "model.head_hidden": 16}
    whole = train(tiny_config(synthetic_data_dir, **overrides), tmp_path / "whole", progress=False)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "experiments.run", "ex09", "--preset", "quick", "--data-dir",
            str(synthetic_data_dir), "--out", str(out), "--no-progress", "--set", "model.widths=[8,16]",
            "model.head_hidden=16", "train.epochs=8", "train.batch_size=16", "train.ema_decay=0.9",
            "run.threads=1", "track.mode=disabled"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "metrics.jsonl").is_file() and
                 len((out / "metrics.jsonl").read_text().splitlines()) >= 3, 180, "three finished epochs")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "summary.json").exists(), "it was killed before the end"
    resumed = subprocess.run([*argv[:3], "ex09", "--resume", str(out)], cwd=REPO, capture_output=True, text=True,
                             timeout=300)  # bare: the run dir's config.json says the rest
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val/score"] == whole["val/score"] and summary["epochs"] == 8
    epochs = [r["epoch"] for r in read_metrics(out / "metrics.jsonl")]
    assert epochs == list(range(8))


@pytest.mark.slow
def test_a_sigkilled_ex08_run_resumes_inside_its_step_to_the_uninterrupted_figures(real_mnist, tmp_path):
    """ex08 killed with SIGKILL in the middle of its teacher step, then --resume RUN_DIR: pretrain and transfer
    are kept, the teacher goes on after its last saved epoch, and the run ends with exactly the figures of a
    run that was never interrupted (CPU, one thread both times). Real MNIST: the CLI checks its md5 sums."""
    from common.config import apply_overrides
    from ex08_autoencoder.presets import make_config
    from ex08_autoencoder.train import train as train_ex08

    sets = short_real_ex08_sets(cache_steps="false")  # the killed run trains its steps, not a cache lookup
    whole = train_ex08(apply_overrides(make_config("leaderboard"), [f"data.data_dir={real_mnist}", *sets]),
                       tmp_path / "whole", progress=False)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "experiments.run", "ex08", "--data-dir", str(real_mnist), "--out", str(out),
            "--no-progress", "--set", *sets]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def teacher_epochs():
        lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").is_file() else []
        return sum(json.loads(line)["step"] == "teacher" for line in lines)
    try:
        wait_for(lambda: teacher_epochs() >= 3, 240, "three finished teacher epochs")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = teacher_epochs()
    assert 3 <= killed_at < 12 and not (out / "teacher.pt").exists(), "killed inside the teacher step"
    resumed = subprocess.run([*argv[:3], "ex08", "--resume", str(out)], cwd=REPO, capture_output=True, text=True,
                             timeout=300)  # bare: the run dir's config.json says the rest
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "teacher from epoch " in resumed.stderr and "teacher from epoch 0" not in resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test10k/acc"] == whole["test10k/acc"] and summary["val/acc"] == whole["val/acc"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [(r["step"], r["epoch"]) for r in rows] == [(s, e) for s, n in (("pretrain", 2), ("transfer", 3),
                                                                           ("teacher", 12)) for e in range(n)]
