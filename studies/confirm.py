"""Confirm a study's winners: the best of many noisy trials is optimistic (the winner's curse), so the top-K
complete trials and the preset are trained again on the same seeds, at the full budget, and ranked by their
mean with the paired difference to the preset (seed by seed: the same seed shares data order and split).

``report --confirm K --seeds 0,1,2`` trains into ``<study dir>/confirm/<candidate>/seed-N/`` (each candidate a
``--seeds`` dir: an interrupted confirmation resumes where it stopped), then writes ``confirm.json``, the winner's
``best-config.json`` (``--config`` runs it as it is; with the first seed it reproduces that confirmed run) and a
section of ``report.md``.
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


def candidates(study, sweep, experiment, k: int, overrides: list[str]) -> dict:
    """``{name: config}``: the preset (with the sweep's fixed values) and the top-``k`` complete trials with
    distinct parameters (a trial answered from another is that one), each with ``overrides`` on top."""
    from optuna.trial import TrialState

    base = apply_overrides(experiment.make_config(sweep.preset), dict(sweep.fixed))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
                and not t.user_attrs.get("baseline") and "duplicate_of" not in t.user_attrs]
    if not complete:
        raise ConfigError(f"study {study.study_name} has no complete trial besides the preset to confirm")
    top = sorted(complete, key=lambda t: t.value, reverse=sweep.direction == "maximize")[:k]
    configs = {"preset": (base, None)}
    for t in top:
        configs[f"trial-{t.number:04d}"] = (apply_overrides(copy.deepcopy(base), t.user_attrs.get("overrides", {})),
                                            t.value)
    for name, (cfg, _) in configs.items():
        cfg.run.threads = 0  # one run at a time: all cores, unless --set run.threads=N says otherwise
        apply_overrides(cfg, overrides)
        cfg.track.group, cfg.track.name = sweep.study, f"{sweep.study}-confirm-{name}"
    return configs


def _seeds_of(experiment, cfg, out: Path, seeds: list[int], progress: bool) -> dict:
    """A candidate's seeds: kept when complete, resumed when interrupted, else trained."""
    saved = read_json(out / "seeds.json")
    if isinstance(saved, dict) and saved.get("status") == "complete" and saved.get("seeds") == seeds:
        return saved
    return run_seeds(experiment, cfg, out, seeds, progress=progress, resume=(out / "seeds.json").is_file())


def confirm(study, sweep, experiment, study_dir: Path, k: int, seeds: list[int], overrides: list[str],
            progress: bool = True) -> dict:
    """Train and rank the candidates; write ``confirm.json`` and ``best-config.json``; returns the result."""
    metric, sign = sweep.metric, 1 if sweep.direction == "maximize" else -1
    root = Path(study_dir) / "confirm"
    configs = candidates(study, sweep, experiment, k, overrides)
    rows = []
    for name, (cfg, study_value) in configs.items():
        print(f"[confirm] {name}: seeds {','.join(map(str, seeds))} -> {root / name}", file=sys.stderr, flush=True)
        result = _seeds_of(experiment, cfg, root / name, seeds, progress)
        if metric not in result["figures"]:
            raise ConfigError(f"the runs in {root / name} report no {metric}")
        rows.append({"name": name, "study_value": study_value, **result["figures"][metric],
                     "figures": {key: f["mean"] for key, f in result["figures"].items()}, "config": cfg})
    preset = rows[0]["values"]
    for row in rows:
        row["paired_diff"] = spread([a - b for a, b in zip(row["values"], preset)])
    rows.sort(key=lambda r: sign * r["mean"], reverse=True)
    winner = rows[0]
    diff = winner["paired_diff"]
    beats = winner["name"] != "preset" and len(seeds) > 1 and sign * diff["mean"] > diff["sd"]
    curse = None if winner["study_value"] is None else winner["study_value"] - winner["mean"]
    # with the first seed: what `--config best-config.json` runs is that confirmed run again
    save_config(apply_overrides(copy.deepcopy(winner["config"]), {key: seeds[0] for key in experiment.seed_keys}),
                root / "best-config.json")
    verdict = (f"{winner['name']} {'beats' if beats else 'does not beat'} the preset by more than the paired sd: "
               f"{metric} {winner['mean']:.4g} +- {winner['sd']:.2g} against {statistics.fmean(preset):.4g}, paired "
               f"{diff['mean']:+.4g} +- {diff['sd']:.2g} over seeds {','.join(map(str, seeds))}"
               + (f"; the study's value of it was {curse:+.4g} above its confirmed mean" if curse is not None else ""))
    out = {"metric": metric, "direction": sweep.direction, "seeds": seeds, "winner": winner["name"],
           "beats_preset": beats, "winners_curse": curse, "verdict": verdict,
           "candidates": [{k: v for k, v in r.items() if k != "config"} for r in rows]}
    atomic_write_text(root / "confirm.json", json.dumps(out, indent=2) + "\n")
    return out


def confirm_lines(study_dir: Path) -> list[str]:
    """The confirmation's section of ``report.md`` (nothing before one ran)."""
    result = read_json(Path(study_dir) / "confirm" / "confirm.json")
    if not isinstance(result, dict):
        return []
    metric = result["metric"]
    lines = ["## Confirmation on fresh runs", "", result["verdict"] + ".", "",
             f"| candidate | study's value | {metric} mean +- sd | paired vs preset | per seed |",
             "|---|---|---|---|---|"]
    for r in result["candidates"]:
        study_value = "" if r["study_value"] is None else f"{r['study_value']:.4g}"
        lines.append(f"| {r['name']} | {study_value} | {r['mean']:.4g} +- {r['sd']:.2g} | "
                     f"{r['paired_diff']['mean']:+.4g} +- {r['paired_diff']['sd']:.2g} | "
                     + ", ".join(f"{v:.4g}" for v in r["values"]) + " |")
    return lines + ["", "The winner's config: `confirm/best-config.json` (`--config` runs it).", ""]
