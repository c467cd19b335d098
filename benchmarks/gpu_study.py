"""K study workers sharing one GPU: trials/hour and GPU utilisation for 1, 2 and 4 workers on a short kp study.

Each setting runs ``python -m experiments.run ex09 --study <short kp> --workers K`` on a fresh SQLite study for
the same wall budget; meanwhile ``nvidia-smi`` is sampled every second for utilisation and memory in use. Every
worker is one process on the same GPU (``CUDA_VISIBLE_DEVICES`` round-robin over one GPU), each with its own
CUDA context (~0.5 GB) and the model/data of its trial; small kp models leave the GPU mostly idle in one
process, so K > 1 fills the gaps while one worker is on the CPU (evaluation, checkpoints, W&B).

    python benchmarks/gpu_study.py [--data-dir D] [--budget-s 300] [--epochs 6] [--workers 1 2 4]

On a machine without CUDA it prints one JSON line saying it skipped, and why. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from study_scaling import run, short_sweep  # same folder: the CPU benchmark's study runner


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


class GpuSampler(threading.Thread):
    """Samples utilisation (%) and memory used (MiB) of GPU 0 every ``every_s`` until stopped."""

    def __init__(self, every_s: float = 1.0):
        super().__init__(daemon=True)
        self.every_s, self.samples, self._stop_event = every_s, [], threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            try:
                line = subprocess.run(["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                      timeout=10, check=True).stdout.strip()
                util, mem = (float(v) for v in line.split(","))
                self.samples.append((util, mem))
            except (OSError, subprocess.SubprocessError, ValueError):
                continue

    def stop(self) -> dict:
        self._stop_event.set()
        self.join()
        if not self.samples:
            return {"gpu_util_mean_pct": None, "gpu_mem_max_mib": None}
        utils = [u for u, _ in self.samples]
        return {"gpu_util_mean_pct": sum(utils) / len(utils), "gpu_mem_max_mib": max(m for _, m in self.samples),
                "gpu_samples": len(self.samples)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--budget-s", type=float, default=300.0, help="wall-clock budget per setting")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per trial")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    name = gpu_name()
    if name is None:
        print(json.dumps({"benchmark": "gpu_study", "skipped": "no CUDA GPU: nvidia-smi is missing or lists none"}))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu-study-") as tmp:
        sweep = short_sweep(Path(tmp) / "kp-short.yaml", args.epochs)
        for k in args.workers:
            sampler = GpuSampler()
            sampler.start()
            results[f"workers_{k}"] = {**run(k, sweep, Path(tmp) / f"w{k}", args.budget_s, args.data_dir),
                                       **sampler.stop()}
            print(f"workers {k}: {json.dumps(results[f'workers_{k}'])}", file=sys.stderr)
    out = {"benchmark": "gpu_study", "gpu": name, "epochs_per_trial": args.epochs, "budget_s": args.budget_s,
           **results}
    base = results[f"workers_{args.workers[0]}"]["trials_per_hour"]
    out["speedup_vs_first"] = {k: r["trials_per_hour"] / base if base else None for k, r in results.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
