"""How fast a ``kp`` study runs on this machine: trials per hour with 1 and with 2 worker processes, and the
fraction of epochs the pruner saves. Each setting runs the real CLI on a fresh SQLite study for the same
wall-clock budget, on a short version of sweeps/kp.yaml (fewer epochs, a pruner that may act after 2):

    python -m experiments.run ex09 --study <short kp> --workers K --timeout S --out DIR

    python benchmarks/study_scaling.py [--data-dir D] [--budget-s 300] [--epochs 6] [--workers 1 2]

Trials differ in cost (the sampler picks different architectures), so trials/hour is a rate over whatever
the sampler proposed in the budget: compare settings on equal budgets, not single trials.
Last line: one JSON object.
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
sys.path.insert(0, str(REPO))


def short_sweep(path: Path, epochs: int) -> Path:
    import yaml

    spec = yaml.safe_load((REPO / "sweeps" / "kp.yaml").read_text())
    spec["fixed"] = {**spec.get("fixed", {}), "train.epochs": epochs}
    spec["pruner"] = {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 2}
    spec["trials"] = 1000  # the budget, not a trial count, ends each run
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(workers: int, sweep: Path, out: Path, budget_s: float, data_dir: str | None) -> dict:
    import optuna

    from studies.report import compute_stats
    from studies.storage import open_storage

    cmd = [sys.executable, "-m", "experiments.run", "ex09", "--study", str(sweep), "--workers", str(workers),
           "--timeout", str(budget_s), "--out", str(out)]
    cmd += ["--data-dir", data_dir] if data_dir else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    study = optuna.load_study(study_name="kp", storage=open_storage(f"sqlite:///{out / 'study.db'}"))
    stats = compute_stats(study)
    finished = stats["counts"]["complete"] + stats["counts"]["pruned"]
    best = study.best_value if stats["counts"]["complete"] else None
    print(f"{workers} worker(s): {finished} trials in {wall:.0f} s ({stats['counts']['complete']} complete, "
          f"{stats['counts']['pruned']} pruned), best {best}", file=sys.stderr)
    return {"workers": workers, "wall_s": wall, "finished_trials": finished,
            "trials_per_hour": finished / wall * 3600, "complete": stats["counts"]["complete"],
            "pruned": stats["counts"]["pruned"], "evals_run": stats["evals_run"], "evals_saved": stats["evals_saved"],
            "fraction_epochs_saved": stats["fraction_saved"], "best_val_score": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--budget-s", type=float, default=300.0, help="wall-clock budget per setting")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per trial")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="study-scaling-") as tmp:
        sweep = short_sweep(Path(tmp) / "kp-short.yaml", args.epochs)
        for k in args.workers:
            results[f"workers_{k}"] = run(k, sweep, Path(tmp) / f"w{k}", args.budget_s, args.data_dir)
    out = {"benchmark": "study_scaling", "cores": len(os.sched_getaffinity(0)), "epochs_per_trial": args.epochs,
           "budget_s": args.budget_s, **results}
    rates = [results[f"workers_{k}"]["trials_per_hour"] for k in args.workers]
    if len(rates) >= 2 and rates[0]:
        out["speedup"] = rates[-1] / rates[0]
    runs = list(results.values())
    run_, saved = sum(r["evals_run"] for r in runs), sum(r["evals_saved"] for r in runs)
    out["fraction_epochs_saved"] = saved / (run_ + saved) if run_ + saved else 0.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
