"""The repo as a package people install (issue 36): the wheel holds everything the CLI needs and runs from any
directory as ``i2dl``; a study in a browser (optuna-dashboard over HTTP); every run's messages in ``log.txt``;
configs people write (YAML, partial) and the keys' docs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import urllib.request

import pytest

from helpers import REPO, ctrl_c_works, run_main, wait_for, write_sweep
from test_hostile_input import TINY


def _clean_env(**extra) -> dict:
    """The environment without anything that puts the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, **extra}


@pytest.mark.slow  # builds the wheel, a fresh venv, a 1-epoch run and a 2-trial study from it (~1 min)
def test_the_wheel_runs_from_an_empty_dir_without_the_checkout(synthetic_data_dir, tmp_path):
    import shutil

    source, dist = tmp_path / "source", tmp_path / "dist"  # built from a copy: setuptools writes build/ in-tree
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "runs", "build", "dist",
                                                                "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("i2dl_lab-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    # the installed dependencies (torch, optuna, ...) are reused; this checkout is not (a path in a .pth file is
    # added as it is: the editable install's own .pth files in that folder are not processed)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _clean_env(I2DL_DATA_DIR=str(synthetic_data_dir))
    i2dl = str(venv / "bin" / "i2dl")

    def run(*args, timeout=600):
        done = subprocess.run([i2dl, *map(str, args)], cwd=empty, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    where = subprocess.run([str(py), "-c", "import experiments, sweeps; print(experiments.__file__, sweeps.__file__)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where and str(site) in where, where
    assert "dashboard" in run("--help").stdout
    assert "train.lr = " in run("ex09", "--show-config", "--docs").stdout
    run("ex09", "--preset", "quick", "--out", "r", "--no-progress", *TINY[:3], "train.epochs=1", *TINY[5:])
    assert json.loads((empty / "r" / "run.json").read_text())["code"]["version"] == "0.1.0"
    run("ex09", "--study", "kp", "--trials", "2", "--out", "kp", "--set", "train.epochs=1", "run.threads=1",
        "track.mode=disabled")
    report = run("report", "--study", "kp", "--out", "kp")
    assert (empty / "kp" / "report.md").is_file() and "report:" in report.stdout


@pytest.mark.slow  # a tiny study, then the real dashboard server in a fresh process
def test_the_dashboard_serves_the_study_and_its_trials_over_http(synthetic_data_dir, tmp_path, capsys):
    pytest.importorskip("optuna_dashboard", reason="the dashboard extra is not installed")
    sweep = write_sweep(tmp_path / "t.yaml", synthetic_data_dir, trials=2)
    out = tmp_path / "study"
    code, _, err = run_main(["ex09", "--study", sweep, "--out", out], capsys)
    assert code == 0, err
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "dashboard", "--study", str(sweep), "--out",
                             str(out), "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ctrl_c_works)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/dashboard/studies/" in url, proc.stderr.read()
        base = url.split("/dashboard/")[0]
        studies = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=30).read())["study_summaries"]
        assert [s["study_name"] for s in studies] == ["t"]
        detail = json.loads(urllib.request.urlopen(f"{base}/api/studies/{studies[0]['study_id']}", timeout=30).read())
        assert len(detail["trials"]) == 2 and {t["state"] for t in detail["trials"]} <= {"Complete", "Pruned"}
        assert urllib.request.urlopen(url, timeout=30).status == 200  # the page itself
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # a run in a fresh process, killed with SIGKILL
def test_log_txt_keeps_what_a_run_said_when_it_is_killed(synthetic_data_dir, tmp_path):
    data = tmp_path / "data"
    (data / "facial_keypoints").mkdir(parents=True)
    for name in ("training.csv", "val.csv"):
        text = (synthetic_data_dir / "facial_keypoints" / name).read_text()
        (data / "facial_keypoints" / name).write_text(text + ("1,2,3\n" if name == "training.csv" else ""))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", "ex09", "--preset", "quick", "--data-dir",
                             str(data), "--out", str(out), "--drop-bad-rows", *TINY[:3], "train.epochs=500",
                             *TINY[5:]], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / "last.pt").is_file() or proc.poll() is not None, 180, "the first epoch")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (out / "log.txt").read_text()
    assert "training.csv: dropped 1 bad row(s)" in log
    assert "\r" not in log and "ep/s" not in log and "it/s" not in log, "no progress bar redraws"


def test_log_txt_goes_to_wandb_and_a_progress_bar_is_left_out(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(["ex09", "--preset", "quick", "--data-dir", synthetic_data_dir, "--out", out,
                             *TINY[:-1], "track.mode=offline", "train.time_limit_s=0.001"], capsys)
    assert code == 0, err
    log = (out / "log.txt").read_text()
    assert "time limit reached" in log and "time limit reached" in err
    assert "\r" not in log
    uploaded = list((out / "wandb").glob("offline-run-*/files/log.txt"))
    assert uploaded and "time limit reached" in uploaded[0].read_text()


def test_a_partial_yaml_config_takes_its_presets_other_values(tmp_path, capsys):
    partial = tmp_path / "mine.yaml"
    partial.write_text("# my settings\npreset: quick\ntrain:\n  epochs: 3\nmodel:\n  widths: [8, 16]\n")
    code, out, err = run_main(["ex09", "--config", partial, "--show-config"], capsys)
    assert code == 0, err
    cfg = json.loads(out)
    code, out, _ = run_main(["ex09", "--preset", "quick", "--show-config"], capsys)
    quick = json.loads(out)
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["widths"] == [8, 16]
    assert {k: v for k, v in cfg["train"].items() if k != "epochs"} == \
        {k: v for k, v in quick["train"].items() if k != "epochs"}
    (tmp_path / "bad.yaml").write_text("train:\n  epochz: 3\n")
    code, _, err = run_main(["ex09", "--config", tmp_path / "bad.yaml", "--show-config"], capsys)
    assert code == 2 and "unknown config key 'train.epochz'" in err and err.count("\n") == 1
    code, out, err = run_main(["ex09", "--config", partial, "--show-config", "--docs"], capsys)
    assert code == 0 and "train.epochs = 3  (int)" in out
    assert "model.widths = [8,16]" in out and "Output channels of each conv block" in out
