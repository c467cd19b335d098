"""Which search set-up finds more for the same compute: samplers and pruners for ``sweeps/kp.yaml``, on kp's own
space at a cheap per-trial budget (``--epochs`` per trial instead of 70, the pruner's rungs scaled alike), each set-up
run as a study until it has trained ``--budget`` epochs in all, on ``--seeds`` (the sampler's seed: the same
data, splits and run seeds everywhere):

    python benchmarks/search_setup.py --data-dir ../shared/data [--epochs 10] [--budget 100] [--seeds 0,1]
        [--setups tpe_hyperband tpe_sh random_sh] [--keep DIR]

Per set-up and seed: the best value reached within the budget, and the epochs trained when the baseline trial's
value (the preset's own, the study's first trial) was first passed (None: never). Trials run one at a time in
this process (2 threads): with one worker, TPE's ``constant_liar`` changes nothing, so the set-ups differ in how
they sample and prune. The last trial may overshoot the budget; its epochs count and are reported.
Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETUPS = {
    # kp.yaml's until 2026-12-05, with Hyperband's first rung at 1 epoch of --epochs (8 of 70 there).
    "tpe_hyperband": ({"type": "tpe", "n_startup_trials": 8, "multivariate": True, "group": True},
                      {"type": "hyperband", "min_resource": 1, "reduction_factor": 3}),
    # One bracket of asynchronous successive halving (every trial meets the same rungs, so TPE sees every
    # trial, not only its bracket's), TPE's random start-up sized to the few trials a cheap budget allows
    # (kp.yaml's since 2026-12-05, with its start-up at 8 of 40 trials).
    "tpe_sh": ({"type": "tpe", "n_startup_trials": 4, "multivariate": True, "group": True, "constant_liar": True},
               {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3}),
    # The control: does the sampler beat chance at this many trials?
    "random_sh": ({"type": "random"}, {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3}),
    # Optuna's Gaussian-process sampler (categorical and conditional parameters: sampled independently).
    "gp_sh": ({"type": "gp", "n_startup_trials": 4},
              {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3}),
}


def setup_sweep(name: str, seed: int, epochs: int):
    """kp.yaml with this set-up's sampler (seeded) and pruner, ``epochs`` per trial and no W&B."""
    from studies.sweep import load_sweep

    sweep = load_sweep(REPO / "sweeps" / "kp.yaml")
    sweep.sampler, sweep.pruner = (dict(s) for s in SETUPS[name])
    sweep.sampler = {**sweep.sampler, "seed": seed}
    sweep.fixed = {**sweep.fixed, "train.epochs": epochs, "track.mode": "disabled"}
    sweep.constraints = {}  # the set-ups are compared on what they find, not on cost
    sweep.study = f"{name}-seed{seed}"
    return sweep


def run_setup(name: str, seed: int, epochs: int, budget: int, root: Path, data_dir: str | None) -> dict:
    import optuna

    from common.config import apply_overrides
    from exercises import get_experiment
    from studies.objective import make_objective
    from studies.search import create_or_load_study
    from studies.storage import open_storage

    sweep = setup_sweep(name, seed, epochs)
    if data_dir:
        sweep.fixed["data.data_dir"] = data_dir
    exp = get_experiment("ex09")
    study_dir = root / sweep.study
    storage = open_storage(f"sqlite:///{study_dir / 'study.db'}", sweep.storage)
    study = create_or_load_study(sweep, storage, baseline_cfg=apply_overrides(exp.make_config(sweep.preset),
                                                                              dict(sweep.fixed)))
    objective = make_objective(sweep, exp, study_dir, threads=0)
    t0 = time.perf_counter()

    def epochs_so_far() -> int:
        return sum(int(t.user_attrs.get("evals_run", 0)) for t in study.get_trials(deepcopy=False))

    while epochs_so_far() < budget:  # a resumed (--keep) study goes on to the budget
        study.optimize(objective, n_trials=1, catch=(Exception,))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    baseline = next(t.value for t in trials if t.user_attrs.get("baseline"))
    spent, passed_at, best = 0, None, None
    for t in trials:  # in the order they ran (one at a time)
        spent += int(t.user_attrs.get("evals_run", 0))
        if t.state == optuna.trial.TrialState.COMPLETE:
            best = t.value if best is None else max(best, t.value)
            if passed_at is None and not t.user_attrs.get("baseline") and t.value > baseline:
                passed_at = spent
    return {"setup": name, "seed": seed, "best": best, "baseline": baseline, "epochs_trained": spent,
            "epochs_to_pass_baseline": passed_at, "trials": len(trials),
            "pruned": sum(t.state.name == "PRUNED" for t in trials), "wall_s": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of a full trial")
    parser.add_argument("--budget", type=int, default=100, help="epochs each study may train in all")
    parser.add_argument("--seeds", default="0,1", help="study (sampler) seeds")
    parser.add_argument("--setups", nargs="+", default=["tpe_hyperband", "tpe_sh", "random_sh"], choices=list(SETUPS))
    parser.add_argument("--keep", type=Path, default=None, help="keep (and resume) the studies here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name in args.setups:
            for seed in seeds:
                row = run_setup(name, seed, args.epochs, args.budget, root, args.data_dir)
                print(f"{name} seed {seed}: best {row['best']:.1f} (baseline {row['baseline']:.1f}), passed after "
                      f"{row['epochs_to_pass_baseline']} epochs; {row['trials']} trials, {row['pruned']} pruned, "
                      f"{row['epochs_trained']} epochs, {row['wall_s']:.0f} s", file=sys.stderr, flush=True)
                rows.append(row)
    summary = {}
    for name in args.setups:
        mine = [r for r in rows if r["setup"] == name]
        summary[name] = {"best_mean": statistics.fmean(r["best"] for r in mine),
                         "best": [r["best"] for r in mine],
                         "epochs_to_pass_baseline": [r["epochs_to_pass_baseline"] for r in mine],
                         "trials": [r["trials"] for r in mine]}
    print(f"{'set-up':10s} {'best (mean)':>11s}  per seed; epochs to pass the baseline", file=sys.stderr)
    for name, s in summary.items():
        print(f"{name:10s} {s['best_mean']:11.1f}  {s['best']}; {s['epochs_to_pass_baseline']}", file=sys.stderr)
    print(json.dumps({"epochs": args.epochs, "budget": args.budget, "seeds": seeds, "setups": summary,
                      "runs": rows}))


if __name__ == "__main__":
    main()
