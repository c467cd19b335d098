"""Is ``--workers K`` faster than one worker on this machine, for the model a study actually trains? Times the
same short ex09 run (the default preset, ``--set train.epochs=N``) as one process with all cores' threads, then
as K processes at once with ``cores // K`` threads each, and prints the throughput in epochs per minute of both
and their ratio (> 1: the K workers finish more epochs in the same time). Each run is the real CLI in a fresh
process; its ``elapsed_s`` after the last epoch is the time (imports and data loading included alike).

    python benchmarks/workers_speed.py [--data-dir D] [--epochs 5] [--workers 2] [--preset default]

benchmarks/study_scaling.py measures trials/hour over a sampled space; this one holds the model fixed.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def start(out: Path, args, threads: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "experiments.run", "ex09", "--preset", args.preset, "--out", str(out),
            "--no-progress", "--set", f"train.epochs={args.epochs}", f"run.threads={threads}", "track.mode=disabled"]
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def seconds(proc: subprocess.Popen, out: Path) -> float:
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"run into {out} failed:\n{err[-2000:]}")
    from common.plots import read_metrics

    return float(read_metrics(out / "metrics.jsonl")[-1]["elapsed_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--preset", default="default")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        one = seconds(start(Path(tmp, "one"), args, cores), Path(tmp, "one"))
        procs = [(start(Path(tmp, f"w{i}"), args, threads), Path(tmp, f"w{i}")) for i in range(args.workers)]
        many = [seconds(p, out) for p, out in procs]
    one_rate = args.epochs / one * 60
    many_rate = args.workers * args.epochs / max(many) * 60
    print(f"1 process x {cores} threads: {args.epochs} epochs in {one:.1f} s ({one_rate:.1f} epochs/min)")
    print(f"{args.workers} processes x {threads} thread(s) at once: {args.epochs} epochs each in "
          + ", ".join(f"{s:.1f}" for s in many) + f" s ({many_rate:.1f} epochs/min together)")
    print(json.dumps({"benchmark": "workers_speed", "preset": args.preset, "epochs": args.epochs, "cores": cores,
                      "workers": args.workers, "one_process_s": round(one, 2), "workers_s": [round(s, 2) for s in many],
                      "epochs_per_min_one": round(one_rate, 2), "epochs_per_min_workers": round(many_rate, 2),
                      "workers_over_one": round(many_rate / one_rate, 3)}))


if __name__ == "__main__":
    main()
