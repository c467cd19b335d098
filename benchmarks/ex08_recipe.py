"""ex08 recipes end to end: wall time of each step and of the whole recipe, accuracy on the 100-image test and
on the full 10k MNIST test, for each preset. Each recipe runs as the user would run it, in a fresh process:

    python -m experiments.run ex08 --preset NAME --out DIR

    python benchmarks/ex08_recipe.py [--data-dir D] [--recipes leaderboard case-study pseudo-label] [--set ...]

Last line: one JSON object. ``<recipe>.teacher_improves`` says whether the teacher step (step 3) beats the
transfer step (step 2) on the 10k test; ``<recipe>.wall_vs_leaderboard`` is the recipe's process wall time over
the leaderboard preset's in the same benchmark run (the pseudo-label preset may take up to 2x).
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


def run_recipe(recipe: str, out: Path, data_dir: str | None, overrides: list[str]) -> dict:
    # --no-cache: every step trained, so a recipe that shares steps 1-2 with an earlier one is not timed short.
    cmd = [sys.executable, "-m", "experiments.run", "ex08", "--preset", recipe, "--out", str(out), "--no-progress",
           "--no-cache"]
    cmd += ["--data-dir", data_dir] if data_dir else []
    cmd += ["--set", *overrides] if overrides else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    print(proc.stdout.strip(), file=sys.stderr)
    summary = json.loads((out / "summary.json").read_text())
    result = {"process_wall_s": wall, "test100/acc": summary["test100/acc"], "test10k/acc": summary["test10k/acc"],
              "params_autoencoder": summary["params_autoencoder"], "params_classifier": summary["params_classifier"]}
    for step, r in summary["steps"].items():
        result[f"{step}_wall_s"] = r["wall_s"]
        for key in ("test100/acc", "test10k/acc", "val/acc", "test10k/probe_acc"):
            if key in r:
                result[f"{step}/{key}"] = r[key]
    if "teacher" in summary["steps"]:
        steps = summary["steps"]
        result["teacher_improves"] = steps["teacher"]["test10k/acc"] > steps["transfer"]["test10k/acc"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--recipes", nargs="+", default=["leaderboard", "case-study", "pseudo-label"])
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], help="overrides for every recipe")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run dirs here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for recipe in args.recipes:
            results[recipe] = run_recipe(recipe, root / recipe, args.data_dir, args.overrides)
            print(f"{recipe}: {json.dumps(results[recipe])}", file=sys.stderr)
    if "leaderboard" in results:
        for r in results.values():
            r["wall_vs_leaderboard"] = r["process_wall_s"] / results["leaderboard"]["process_wall_s"]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
