"""Confirm a study's winners: the best of many noisy trials is optimistic (the winner's curse), so the top-K
complete trials and the preset are trained again on the same seeds, at the full budget, and ranked by their
mean with the paired difference to the preset (seed by seed: the same seed shares data order and split).

``report --confirm K --seeds 0,1,2`` trains into ``<study dir>/confirm/<candidate>/seed-N/`` (each candidate a
``--seeds`` dir: an interrupted confirmation resumes where it stopped), then writes ``confirm.json``, the winner's
``best-config.json`` (the config the winner's first-seed run recorded: ``--config`` runs that confirmed run
again) and a section of ``report.md``. ``--workers K`` trains the candidates in K processes (whole candidates
each, ``cores / K`` threads), then ranks them here.
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
from pathlib import Path

from common.config import apply_overrides, save_config
from common.errors import ConfigError
from common.files.atomic import atomic_write_text
from common.files.json_files import read_json
from common.run.seeds import run_seeds, spread
from studies.constraints import is_feasible
from studies.search import portable


def candidates(study, sweep, experiment, k: int, overrides: list[str], threads: int = 0) -> dict:
    """``{name: (config, study value)}``: the preset (with the sweep's fixed values) and the top-``k`` complete
    trials within the sweep's constraints, with distinct parameters (a trial answered from another is that one),
    each with ``overrides`` on top and ``threads`` (0 = all cores: one run at a time) unless ``--set
    run.threads=N`` says otherwise."""
    from optuna.trial import TrialState

    base = apply_overrides(experiment.make_config(sweep.preset), dict(sweep.fixed))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
                and not t.user_attrs.get("baseline") and "duplicate_of" not in t.user_attrs and is_feasible(t)]
    if not complete:
        raise ConfigError(f"study {study.study_name} has no complete trial besides the preset to confirm"
                          + (" within its constraints" if sweep.constraints else ""))
    top = sorted(complete, key=lambda t: t.value, reverse=sweep.direction == "maximize")[:k]
    configs = {"preset": (base, None)}
    for t in top:
        configs[f"trial-{t.number:04d}"] = (apply_overrides(copy.deepcopy(base),
                                                           portable(t.user_attrs.get("overrides", {}))), t.value)
    for name, (cfg, _) in configs.items():
        cfg.run.threads = threads
        apply_overrides(cfg, overrides)
        cfg.track.group, cfg.track.name = sweep.study, f"{sweep.study}-confirm-{name}"
    return configs


def check_same_settings(configs: dict, root: Path) -> None:
    """An earlier confirmation in ``root`` is gone on with only under the settings it was trained with (``--set``
    on top of each candidate): refused, naming the keys, before anything trains, rather than its runs being
    reused as if they were this command's."""
    from common.config import RESUME_MAY_CHANGE, changed_keys, flatten, to_dict

    for name, (cfg, _) in configs.items():
        saved = read_json(root / name / "seeds.json")
        if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)):
            continue
        now = to_dict(cfg)
        differ = changed_keys(saved["config"], now, prefix="", ignore=(*RESUME_MAY_CHANGE, "run.threads"))
        if differ:
            old, new = flatten(saved["config"]), flatten(now)
            shown = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in differ[:4])
            raise ConfigError(f"{root / name} was confirmed with {shown}; give the --set of that confirmation, or "
                              f"move {root} away to confirm anew (nothing was trained)")


def _seeds_of(experiment, cfg, out: Path, seeds: list[int], progress: bool) -> dict:
    """A candidate's seeds: kept when complete (saying so), resumed when interrupted, else trained; a seed list
    that differs from an earlier confirmation's keeps the seeds both have and trains the others."""
    saved = read_json(out / "seeds.json")
    if isinstance(saved, dict) and saved.get("status") == "complete" and saved.get("seeds") == seeds:
        print(f"[confirm] {out.name}: seeds {','.join(map(str, seeds))} complete in {out}, kept", file=sys.stderr)
        return saved
    return run_seeds(experiment, cfg, out, seeds, progress=progress, resume=(out / "seeds.json").is_file(),
                     other_seeds=True)


def train_share(study, sweep, experiment, study_dir: Path, k: int, seeds: list[int], overrides: list[str],
                index: int, workers: int, threads: int) -> None:
    """A ``--workers`` process: train candidates ``index``, ``index + workers``, ... (the parent ranks them)."""
    configs = list(candidates(study, sweep, experiment, k, overrides, threads).items())
    for name, (cfg, _) in configs[index::workers]:
        print(f"[confirm] worker {index}: {name}, seeds {','.join(map(str, seeds))}", file=sys.stderr, flush=True)
        _seeds_of(experiment, cfg, Path(study_dir) / "confirm" / name, seeds, progress=False)


def train_in_workers(sweep, study_dir: Path, url: str, k: int, seeds: list[int], overrides: list[str],
                     workers: int) -> int:
    """Train the candidates in ``workers`` processes (``report ... --worker-index i``) and wait for them; returns
    the threads each used (the parent then ranks what they trained, keeping every run)."""
    from common.run.signals import Terminated
    from studies.cores import threads_per_worker
    from studies.workers import spawn_workers

    threads = threads_per_worker(workers)

    def argv_for(i: int) -> list[str]:
        return [sys.executable, "-m", "experiments.run", "report", "--study", str(sweep.path), "--study-name",
                sweep.study, "--out", str(study_dir),
                "--confirm", str(k), "--seeds", ",".join(map(str, seeds)), "--no-progress", "--workers", str(workers),
                "--worker-index", str(i), "--worker-threads", str(threads),
                *(["--set", *overrides] if overrides else [])]
    code = spawn_workers(argv_for, workers, url, threads)
    if code in (130, 143):  # the workers were interrupted: said as for one process (experiments/run.py)
        raise Terminated() if code == 143 else KeyboardInterrupt()
    if code:
        print("[confirm] a worker failed (its error is above); the runs that finished are kept: run the same "
              "command again to go on", file=sys.stderr)
        raise SystemExit(code)
    return threads


def confirm(study, sweep, experiment, study_dir: Path, k: int, seeds: list[int], overrides: list[str],
            progress: bool = True, workers: int = 1, url: str | None = None) -> dict:
    """Train (what is not complete yet, in ``workers`` processes sharing the study at ``url``) and rank the
    candidates; write ``confirm.json`` and ``best-config.json``; returns the result."""
    from exercises import load_run

    metric, sign = sweep.metric, 1 if sweep.direction == "maximize" else -1
    root = Path(study_dir) / "confirm"
    check_same_settings(candidates(study, sweep, experiment, k, overrides), root)
    threads = train_in_workers(sweep, study_dir, url, k, seeds, overrides, workers) if workers > 1 else 0
    configs = candidates(study, sweep, experiment, k, overrides, threads)
    rows = []
    for name, (cfg, study_value) in configs.items():
        print(f"[confirm] {name}: seeds {','.join(map(str, seeds))} -> {root / name}", file=sys.stderr, flush=True)
        result = _seeds_of(experiment, cfg, root / name, seeds, progress)
        if metric not in result["figures"]:
            raise ConfigError(f"the runs in {root / name} report no {metric}")
        rows.append({"name": name, "study_value": study_value, **result["figures"][metric],
                     "figures": {key: f["mean"] for key, f in result["figures"].items()}})
    ranked = rank(rows, metric, sign, seeds)
    # what the winner's first seed ran (its threads too): `--config best-config.json` makes that run again
    save_config(load_run(root / ranked["winner"] / f"seed-{seeds[0]}")[1], root / "best-config.json")
    out = {"metric": metric, "direction": sweep.direction, "seeds": seeds, **ranked, "candidates": rows}
    atomic_write_text(root / "confirm.json", json.dumps(out, indent=2) + "\n")
    return out


def rank(rows: list[dict], metric: str, sign: int, seeds: list[int]) -> dict:
    """Sort ``rows`` (the preset's first: ``name``, ``values`` per seed, ``mean``, ``sd``, ``study_value``,
    ``figures``) best first in place, each with its ``paired_diff`` to the preset; returns the winner and the
    verdict, which is about the best candidate that is not the preset (also when the preset ranks first)."""
    preset_row = rows[0]
    preset = preset_row["values"]
    for row in rows:
        row["paired_diff"] = spread([a - b for a, b in zip(row["values"], preset)])
    rows.sort(key=lambda r: sign * r["mean"], reverse=True)
    winner = rows[0]
    challenger = next((r for r in rows if r is not preset_row), preset_row)
    diff = challenger["paired_diff"]
    beats = challenger is winner and winner is not preset_row and len(seeds) > 1 and sign * diff["mean"] > diff["sd"]
    curse = None if challenger["study_value"] is None else challenger["study_value"] - challenger["mean"]
    walls = challenger["figures"].get("wall_s"), preset_row["figures"].get("wall_s")
    verdict = (("the preset ranks first; " if winner is preset_row and challenger is not preset_row else "")
               + f"{challenger['name']} {'beats' if beats else 'does not beat'} the preset by more than the paired "
               f"sd: {metric} {challenger['mean']:.4g} +- {challenger['sd']:.2g} against "
               f"{statistics.fmean(preset):.4g}, paired {diff['mean']:+.4g} +- {diff['sd']:.2g} over seeds "
               + ",".join(map(str, seeds))
               + (f", at {walls[0] / walls[1]:.2f}x the preset's wall time" if all(walls) else "")
               + (f"; the study's value of it {'overstated' if sign * curse > 0 else 'understated'} its confirmed "
                  f"mean by {abs(curse):.4g}" if curse is not None else ""))
    return {"winner": winner["name"], "preset_wall_s": walls[1], "beats_preset": beats, "winners_curse": curse,
            "verdict": verdict}


def confirm_lines(study_dir: Path) -> list[str]:
    """The confirmation's section of ``report.md`` (nothing before one ran)."""
    result = read_json(Path(study_dir) / "confirm" / "confirm.json")
    if not isinstance(result, dict):
        return []
    metric = result["metric"]
    lines = ["## Confirmation on fresh runs", "", result["verdict"] + ".", "",
             f"| candidate | study's value | {metric} mean +- sd | paired vs preset | per seed | wall s (x preset) |",
             "|---|---|---|---|---|---|"]
    preset_wall = result.get("preset_wall_s")
    for r in result["candidates"]:
        study_value = "" if r["study_value"] is None else f"{r['study_value']:.4g}"
        wall = r["figures"].get("wall_s")
        wall = "" if wall is None else f"{wall:.0f}" + (f" ({wall / preset_wall:.2f}x)" if preset_wall else "")
        lines.append(f"| {r['name']} | {study_value} | {r['mean']:.4g} +- {r['sd']:.2g} | "
                     f"{r['paired_diff']['mean']:+.4g} +- {r['paired_diff']['sd']:.2g} | "
                     + ", ".join(f"{v:.4g}" for v in r["values"]) + f" | {wall} |")
    return lines + ["", "The winner's config: `confirm/best-config.json` (`--config` runs it).", ""]
