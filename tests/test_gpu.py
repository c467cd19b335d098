"""What only a GPU can show (marked ``cuda``: skipped without one), and the GPU check's dry mode on a CPU."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from helpers import REPO, run_main
from test_hostile_input import TINY


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["false", "true"])
def test_an_ex09_run_on_cuda_learns_and_its_model_loads_on_the_cpu(amp, synthetic_data_dir, tmp_path, capsys):
    from ex09_keypoints.saved import load_model

    out = tmp_path / f"amp-{amp}"
    code, _, err = run_main(["ex09", "--preset", "quick", "--data-dir", synthetic_data_dir, "--out", out,
                             "--no-progress", *TINY[:3], "train.epochs=6", *TINY[5:], "run.device=cuda",
                             f"run.amp={amp}"], capsys)
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    assert record["host"]["device"].startswith("cuda") and record["host"].get("gpu")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    model = load_model(out / "best.pt")  # on the CPU
    assert torch.isfinite(model(torch.rand(2, 1, 96, 96))).all()


@pytest.mark.cuda
def test_a_training_state_saved_on_cuda_resumes(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "r"
    args = ["ex09", "--preset", "quick", "--data-dir", synthetic_data_dir, "--out", out, "--no-progress", *TINY,
            "run.device=cuda"]
    assert run_main([*args, "train.time_limit_s=0.001"], capsys)[0] == 0  # stops after its first epoch
    code, _, err = run_main(["ex09", "--resume", out, "--no-progress"], capsys)
    assert code == 0 and "resumed at epoch" in err, err


def test_the_gpu_check_says_it_skipped_and_why_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run for minutes (run benchmarks/gpu_check.sh itself)")
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check: skipped: torch sees no CUDA device")
    assert json.loads(lines[-1])["skipped"].startswith("torch sees no CUDA device")
