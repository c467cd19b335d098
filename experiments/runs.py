"""The runs on disk, offline, from their run dirs alone: list them, compare two, run one again from its record.

    python -m experiments.run runs [DIR] [--json]        a table of the runs under DIR (default: runs/)
    python -m experiments.run runs --compare A B         the config keys and figures that differ
    python -m experiments.run rerun RUN_DIR [--out NEW] [--set ...]
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from common.config import apply_overrides, flatten, to_dict
from common.errors import ConfigError
from common.files.json_files import read_json
from common.run.record import code_state, commit_known, read_record
from exercises import experiment_of, load_run

FIGURES = ("val/score", "val/acc", "test10k/acc")


def _summary(run_dir: Path) -> dict:
    summary = read_json(Path(run_dir) / "summary.json")
    return summary if isinstance(summary, dict) else {}


def find_runs(root: Path) -> list[Path]:
    """Every run dir under ``root`` (a folder holding ``config.json`` and ``run.json``), oldest first."""
    found = [p.parent for p in Path(root).rglob("run.json") if (p.parent / "config.json").is_file()]
    return sorted(found, key=lambda p: (p / "run.json").stat().st_mtime)


def list_runs(root: Path) -> list[dict]:
    """One row per run dir; a run whose files cannot be read is listed and marked, never the end of the list."""
    from common.run.run_files import lock_holder

    rows = []
    for run_dir in find_runs(root):
        row = {"run": str(run_dir)}
        record, config = read_json(run_dir / "run.json"), read_json(run_dir / "config.json")
        broken = [name for name, d in (("run.json", record), ("config.json", config)) if not isinstance(d, dict)]
        if broken:
            rows.append({**row, "experiment": "?", "preset": None, "wall_s": None, "commit": "", "started": "",
                         "status": f"unreadable ({', '.join(broken)})"})
            continue
        summary = _summary(run_dir)
        code = record.get("code") if isinstance(record.get("code"), dict) else {}
        status = str(record.get("status", "?"))
        if status == "running" and not lock_holder(run_dir):  # its process is gone (killed): it can go on
            status = "interrupted"
        try:
            experiment = experiment_of(config, run_dir / "config.json").name
        except ConfigError:
            experiment = "?"
        rows.append({**row, "experiment": experiment,
                     "preset": config.get("preset"),
                     **{k: summary[k] for k in FIGURES if isinstance(summary.get(k), (int, float))},
                     "wall_s": summary.get("wall_s"), "commit": str(code.get("commit") or "")[:8]
                     + ("+dirty" if code.get("dirty") else ""), "started": str(record.get("started", "")),
                     "status": status})
    return rows


def print_runs(root: Path, as_json: bool = False) -> int:
    """A table of the runs under ``root`` (paths relative to it, whole); ``as_json``: the rows as one JSON list."""
    rows = list_runs(root)
    if as_json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no runs under {root}")
        return 0
    names = [str(Path(r["run"]).relative_to(root)) if Path(r["run"]).is_relative_to(root) else r["run"]
             for r in rows]
    width = max(len("run"), *map(len, names))
    print(f"{'run':{width}s} {'exp':4s} {'preset':11s} {'figure':>18s} {'wall':>7s} {'commit':14s} "
          f"{'started':19s} status")
    for name, r in zip(names, rows):
        figure = next((f"{k} {r[k]:.4g}" for k in FIGURES if k in r), "-")
        wall = f"{r['wall_s']:.0f} s" if isinstance(r.get("wall_s"), (int, float)) else "-"
        print(f"{name:{width}s} {r['experiment']:4s} {str(r['preset'])[:11]:11s} {figure:>18s} {wall:>7s} "
              f"{r['commit']:14s} {r['started'][:19]:19s} {r['status']}")
        if r["status"] == "interrupted":
            again = shlex.join(["python", "-m", "experiments.run", r["experiment"], "--resume", r["run"]])
            print(f"{'':{width}s}   continue it with: {again}")
    return 0


def compare(a: Path, b: Path) -> int:
    """The config keys and the summary figures in which two runs differ."""
    from common.config import changed_keys

    (_, cfg_a), (_, cfg_b) = load_run(a), load_run(b)
    keys = changed_keys(to_dict(cfg_a), to_dict(cfg_b), prefix="")
    flat_a, flat_b = flatten(to_dict(cfg_a)), flatten(to_dict(cfg_b))
    sa, sb = _summary(a), _summary(b)
    figures = [k for k in sorted(set(sa) | set(sb)) if "/" in k or k in ("params", "epochs", "wall_s")]
    print(f"A: {a}\nB: {b}")
    print("config keys that differ:" + ("" if keys else " none"))
    for k in keys:
        print(f"  {k:34s} {flat_a.get(k)!s:>22s}  {flat_b.get(k)!s:>22s}")
    print("figures:")
    for k in figures:
        va, vb = sa.get(k), sb.get(k)
        if isinstance(va, (int, float)) or isinstance(vb, (int, float)):
            print(f"  {k:34s} {_fmt(va):>22s}  {_fmt(vb):>22s}" + ("" if va == vb else "   differs"))
    print(json.dumps({"config": {k: [flat_a.get(k), flat_b.get(k)] for k in keys},
                      "figures": {k: [sa.get(k), sb.get(k)] for k in figures
                                  if not isinstance(sa.get(k), (dict, list))}}))
    return 0


def _code_name(state: dict) -> str:
    """``abc1234567`` or ``abc1234567 (dirty)``: a commit as a rerun's warning names it."""
    return f"{state.get('commit', '?')[:10]}{' (dirty)' if state.get('dirty') else ''}"


def rerun(run_dir: Path, out: Path | None, overrides: list[str], progress: bool = True) -> int:
    """Run ``run_dir``'s config again (same thread count) into a new dir; print both runs' figures side by
    side, warning when the code commit or a data file differs from the record."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    exp, cfg = load_run(run_dir)
    if exp.partial(cfg):
        raise ConfigError(f"{run_dir}: {exp.partial(cfg)}; rerun a run of the whole preset")
    if cfg.run.threads == 0:  # "all cores" then: the same number of threads now, or float sums differ
        cfg.run.threads = int(record["host"].get("threads") or 0)
    apply_overrides(cfg, overrides)
    out = Path(out) if out else run_dir.parent / f"{run_dir.name}-rerun-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.resolve() == run_dir.resolve():
        raise ConfigError(f"--out {out} is the run being rerun; a rerun never writes into the original run dir")
    warnings = []
    then, now = record["code"], code_state()
    if then.get("commit") != now.get("commit") or then.get("dirty") or now.get("dirty"):
        warnings.append(f"code: the run was made by {_code_name(then)}, this is {_code_name(now)}")
        if then.get("commit") and now.get("git") and not commit_known(then["commit"]):
            warnings.append(f"code: commit {then['commit'][:10]} is not in this repository (fetch it, or the figures "
                            "may differ for that reason alone)")
    for w in warnings:  # before training: the user may rather stop and fetch that commit
        print(f"warning: {w}", file=sys.stderr, flush=True)
    summary = exp.train(cfg, out, progress=progress)
    new_data = json.loads((out / "run.json").read_text()).get("data", {}).get("sha256", {})
    old_data = record.get("data", {}).get("sha256", {})
    changed = [Path(p).name for p in sorted(set(old_data) | set(new_data)) if old_data.get(p) != new_data.get(p)]
    if changed:
        warnings.append(f"data: {', '.join(changed)} differ from the record (another file, path or content)")
        print(f"warning: {warnings[-1]}", file=sys.stderr)
    original = _summary(run_dir)
    print(f"original {run_dir}\nrerun    {out}")
    rows = {k: [original.get(k), summary.get(k)] for k in exp.headline if k in summary}
    for k, (a, b) in rows.items():
        print(f"  {k:14s} {_fmt(a):>22s}  {_fmt(b):>22s}" + ("   identical" if a == b else ""))
    print(json.dumps({"original": str(run_dir), "rerun": str(out), "figures": rows, "warnings": warnings}))
    return 0


def _fmt(v) -> str:
    return f"{v:.10g}" if isinstance(v, float) else str(v)
