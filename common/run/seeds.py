"""One config, several seeds: each seed a normal run in ``OUT/seed-N/``, then ``OUT/seeds.json`` with the mean,
standard deviation, min and max of every headline figure. What a result should be reported as: one seed of
a 100-image val accuracy moves 1 % per image, and thread count alone moves a keypoint score by several points."""
from __future__ import annotations

import copy
import json
import statistics
import sys
from pathlib import Path

from common.config import apply_overrides, check_resumable, to_dict
from common.errors import ConfigError
from common.files.atomic import atomic_write_text
from common.files.json_files import read_json
from common.run.run_files import is_run_dir, is_seeds_dir
from common.run.rundir import check_out_dir, run_status

MAX_SEEDS = 100


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
    if len(seeds) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{text!r} is {len(seeds)} seeds, each a whole run; give at most {MAX_SEEDS}")
    return seeds


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def run_seeds(exp, cfg, out: Path, seeds: list[int], progress: bool = True, overwrite: bool = False,
              resume: bool = False, other_seeds: bool = False) -> dict:
    """Train ``cfg`` once per seed (the experiment's ``seed_keys`` all set to it: a few-label exercise draws its
    labeled split from it too) into ``out/seed-N``; write and return ``seeds.json``.

    ``seeds.json`` is written first (status running) so the folder is known as a seeds dir. ``resume``: go on in
    ``out``: finished seeds are kept, an interrupted one is resumed, the rest are trained. ``overwrite``: each
    seed's dir is replaced when its turn comes, after that run's own checks (the CLI checked ``out`` is ours).
    ``other_seeds`` (a confirmation asked for more seeds): ``resume`` with seeds other than ``out``'s, even when
    those are complete; the seeds both lists share are kept."""
    out = Path(out)
    plan = {"experiment": exp.name, "preset": cfg.preset, "seeds": seeds, "seed_keys": list(exp.seed_keys),
            "config": to_dict(cfg), "status": "running"}
    if resume:
        _check_same_plan(out, plan, cfg, other_seeds)
    elif not overwrite:
        check_out_dir(out)
    elif is_run_dir(out):  # replacing one run by several seeds' runs would mix the two in one folder
        raise ConfigError(f"--seeds --overwrite: {out} holds a single run, not a --seeds run; choose another --out "
                          "(nothing was deleted)")
    atomic_write_text(out / "seeds.json", json.dumps(plan, indent=2) + "\n")
    runs = {}
    for seed in seeds:
        cfg_s = apply_overrides(copy.deepcopy(cfg), {key: seed for key in exp.seed_keys})
        seed_dir = out / f"seed-{seed}"
        done = read_json(seed_dir / "summary.json") if resume and run_status(seed_dir) == "complete" else None
        if isinstance(done, dict):
            print(f"[seeds] seed {seed}: complete in {seed_dir}, kept", file=sys.stderr, flush=True)
            runs[seed] = done
            continue
        go_on = resume and seed_dir.is_dir() and exp.continue_flags(cfg_s, seed_dir) is not None
        print(f"[seeds] seed {seed} -> {seed_dir}" + (" (resumed)" if go_on else ""), file=sys.stderr, flush=True)
        runs[seed] = exp.train(cfg_s, seed_dir, resume=seed_dir if go_on else None, overwrite=overwrite,
                               progress=progress)
    keys = [k for k in exp.headline if all(isinstance(r.get(k), (int, float)) for r in runs.values())]
    if not keys:
        raise ConfigError(f"the runs in {out} report none of {', '.join(exp.headline)}")
    result = {**{k: v for k, v in plan.items() if k != "config"}, "status": "complete",
              "figures": {k: spread([float(runs[s][k]) for s in seeds]) for k in keys},
              "runs": {str(s): str(out / f"seed-{s}") for s in seeds}, "config": plan["config"]}
    atomic_write_text(out / "seeds.json", json.dumps(result, indent=2) + "\n")
    return result


def _check_same_plan(out: Path, plan: dict, cfg, other_seeds: bool = False) -> None:
    """``--resume OUT --seeds ...`` goes on only with the seeds (unless ``other_seeds``) and the config that OUT
    was started with."""
    if not is_seeds_dir(out):
        raise ConfigError(f"--resume {out} with --seeds: {out / 'seeds.json'} is missing or unreadable, so {out} "
                          "is not a seeds dir; give the --out of the --seeds run")
    saved = read_json(out / "seeds.json")
    if other_seeds:
        if isinstance(saved.get("config"), dict):
            check_resumable(saved["config"], cfg, out)
        return
    if saved.get("seeds") != plan["seeds"]:
        raise ConfigError(f"--resume {out}: it was started with --seeds {','.join(map(str, saved['seeds']))}; "
                          "give the same seeds")
    if saved.get("status") == "complete":
        raise ConfigError(f"--resume {out}: those seeds are already complete (see {out / 'seeds.json'})")
    if isinstance(saved.get("config"), dict):
        check_resumable(saved["config"], cfg, out)


def format_spread(result: dict) -> str:
    """One line: ``val/score 395.1 +- 7.3 (min 389.5, max 404.1)``, each headline figure."""
    return "  ".join(f"{k} {f['mean']:.4g} +- {f['sd']:.2g} (min {f['min']:.4g}, max {f['max']:.4g})"
                     for k, f in result["figures"].items() if k not in ("params",))
