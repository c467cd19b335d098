"""One config, several seeds: each seed a normal run in ``OUT/seed-N/``, then ``OUT/seeds.json`` with the mean,
standard deviation, min and max of every headline figure. What a result should be reported as: one seed of
ex08's 100 val images moves 1 % per image, and thread count alone moves an ex09 score by several points."""
from __future__ import annotations

import copy
import json
import statistics
import sys
from pathlib import Path

from common.checkpoint import atomic_write_text
from common.config import ConfigError, apply_overrides
from common.rundir import check_out_dir


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> the seeds (argparse type: a bad value is a one-line usage error)."""
    import argparse

    try:
        if "-" in text.strip("-"):
            lo, hi = (int(v) for v in text.split("-", 1))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seeds as 0,1,2 or 0-4") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct seeds, e.g. 0,1,2")
    return seeds


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def run_seeds(exp, cfg, out: Path, seeds: list[int], progress: bool = True) -> dict:
    """Train ``cfg`` once per seed (the experiment's ``seed_keys`` all set to it: ex08 draws its labeled split
    from it too) into ``out/seed-N``; write and return ``seeds.json``."""
    out = Path(out)
    check_out_dir(out)
    runs = {}
    for seed in seeds:
        cfg_s = apply_overrides(copy.deepcopy(cfg), {key: seed for key in exp.seed_keys})
        print(f"[seeds] seed {seed} -> {out / f'seed-{seed}'}", file=sys.stderr, flush=True)
        runs[seed] = exp.train(cfg_s, out / f"seed-{seed}", progress=progress)
    keys = [k for k in exp.headline if all(isinstance(r.get(k), (int, float)) for r in runs.values())]
    if not keys:
        raise ConfigError(f"the runs in {out} report none of {', '.join(exp.headline)}")
    result = {"experiment": exp.name, "preset": cfg.preset, "seeds": seeds, "seed_keys": list(exp.seed_keys),
              "figures": {k: spread([float(runs[s][k]) for s in seeds]) for k in keys},
              "runs": {str(s): str(out / f"seed-{s}") for s in seeds}}
    atomic_write_text(out / "seeds.json", json.dumps(result, indent=2) + "\n")
    return result


def format_spread(result: dict) -> str:
    """One line: ``val/score 395.1 +- 7.3 (min 389.5, max 404.1)``, each headline figure."""
    return "  ".join(f"{k} {f['mean']:.4g} +- {f['sd']:.2g} (min {f['min']:.4g}, max {f['max']:.4g})"
                     for k, f in result["figures"].items() if k not in ("params",))
