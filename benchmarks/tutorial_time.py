"""How long does ``python -m experiments.run tutorial`` take here? Times the whole tutorial (a fresh ``--out``,
the real CLI in a fresh process) and, first, the baseline every timing in RESULTS.md sits beside: 5 epochs of
the default ex09 preset alone. Prints both and their ratio (the tutorial in units of that baseline travels
between machines that differ in speed); the aim is <= 40 minutes on 2 cores with 3 seeds.

    python benchmarks/tutorial_time.py [--data-dir D] [--seeds 0,1,2] [--workers 2] [--budget quick] [--keep DIR]

Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "experiments.run", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--keep", type=Path, default=None, help="write the tutorial here (new dir) instead of a temp dir")
    args = ap.parse_args()
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = timed(["ex09", "--out", str(Path(tmp, "baseline")), "--no-progress", *data, "--set",
                          "train.epochs=5", "track.mode=disabled"])
        out = args.keep or Path(tmp, "tutorial")
        tutorial = timed(["tutorial", "--seeds", args.seeds, "--workers", str(args.workers), "--budget",
                          args.budget, "--out", str(out), "--no-progress", *data])
    print(f"baseline (5 default ex09 epochs): {baseline:.1f} s; tutorial (seeds {args.seeds}, {args.workers} "
          f"workers, {args.budget}): {tutorial:.0f} s = {tutorial / 60:.1f} min = {tutorial / baseline:.1f} baselines")
    print(json.dumps({"benchmark": "tutorial_time", "seeds": args.seeds, "workers": args.workers,
                      "budget": args.budget, "baseline_s": round(baseline, 1), "tutorial_s": round(tutorial, 1),
                      "tutorial_over_baseline": round(tutorial / baseline, 2), "aim_s": 2400,
                      "within_aim": tutorial <= 2400}))


if __name__ == "__main__":
    main()
