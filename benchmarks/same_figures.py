"""A refactor keeps every figure: the presets run on an earlier commit and on this checkout, one after the other on
this machine with the same threads, and every per-epoch row of ``metrics.jsonl`` (all keys but ``elapsed_s``)
and the summary's scores must be identical.

    python benchmarks/same_figures.py --base c1a18d9 [--data-dir D] [--runs quick default-10 ...] [--keep DIR]

The earlier commit is checked out into a temporary ``git worktree`` (removed after); each run is the CLI in a fresh
process with ``--no-progress --set track.mode=disabled run.threads=2``. Last line: one JSON object, with
``identical`` true only when every run matched, and the two trees' wall times and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHORT_EX08 = ["pretrain.epochs=3", "transfer.epochs=30", "teacher.epochs=2"]
RUNS = {  # name -> CLI arguments after "python -m experiments.run"
    "quick": ["ex09", "--preset", "quick"],
    "default-10": ["ex09", "--set", "train.epochs=10"],
    "default": ["ex09"],
    "leaderboard": ["ex08", "--preset", "leaderboard"],
    "pseudo-label": ["ex08", "--preset", "pseudo-label"],
    "leaderboard-short": ["ex08", "--preset", "leaderboard", "--set", *SHORT_EX08],
    "pseudo-label-short": ["ex08", "--preset", "pseudo-label", "--set", *SHORT_EX08],
}
SUMMARY_KEYS = ("val/score", "val/acc", "test100/acc", "test10k/acc", "best_epoch", "epochs")


def run(tree: Path, name: str, out: Path, data_dir: str | None) -> tuple[list[dict], dict, float]:
    args = RUNS[name]
    fixed = ["--no-progress", *(["--data-dir", str(Path(data_dir).resolve())] if data_dir else []), "--out", str(out)]
    sets = ["track.mode=disabled", "run.threads=2"]
    cmd = [sys.executable, "-m", "experiments.run", *args[:1], *fixed, *args[1:]]
    cmd += sets if "--set" in args else ["--set", *sets]
    # An empty ex08 step cache for each run: every step is computed, none taken from an earlier run.
    env = {**os.environ, "I2DL_STEP_CACHE_DIR": str(out.parent / f".step-cache-{name}")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)  # cwd first on sys.path
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {tree} failed:\n{proc.stderr[-3000:]}")
    rows = [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return rows, {k: summary[k] for k in SUMMARY_KEYS if k in summary}, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS),
                        default=["quick", "default-10", "leaderboard-short", "pseudo-label-short"])
    parser.add_argument("--keep", type=Path, default=None, help="keep the run dirs here (a new folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base_tree, root = Path(tmp) / "base", args.keep or Path(tmp) / "runs"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=REPO, check=True,
                       capture_output=True)
        try:
            results, walls = {}, {"base": 0.0, "here": 0.0}
            for name in args.runs:
                base = run(base_tree, name, root / "base" / name, args.data_dir)
                here = run(REPO, name, root / "here" / name, args.data_dir)
                walls["base"] += base[2]
                walls["here"] += here[2]
                results[name] = {"identical": base[:2] == here[:2], "rows": len(here[0]), "summary": here[1]}
                print(f"{name}: {'identical' if results[name]['identical'] else 'DIFFERENT'} "
                      f"({len(base[0])} / {len(here[0])} rows) {here[1]}", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, capture_output=True)
    print(json.dumps({"base": args.base, "identical": all(r["identical"] for r in results.values()),
                      "runs": results, "base_wall_s": walls["base"], "here_wall_s": walls["here"],
                      "here_vs_base": walls["here"] / walls["base"]}))


if __name__ == "__main__":
    main()
