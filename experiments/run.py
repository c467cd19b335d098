"""``python -m experiments.run {ex08,ex09,report} ... [--set key=value ...] [--out DIR]``

Parse -> config (preset, then overrides) -> dispatch: one run, or an Optuna study (``--study kp``) whose
trials are runs with overrides, or a study's ``report``. Heavy imports (torch, wandb, optuna) happen only
after the arguments are known to be valid, so ``--help`` and bad flags answer instantly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

STUDIES_DIR = Path("runs") / "studies"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set model.widths=[32,64,128] train.epochs=30")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<experiment>-<time>)")
    p.add_argument("--data-dir", default=None, help="data root (default: $I2DL_DATA_DIR, else the cache dir)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")


def _add_study(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Optuna study (instead of one run)")
    g.add_argument("--study", default=None, metavar="NAME|FILE",
                   help="search the space of sweeps/NAME.yaml (or a sweep file); --out is then the study dir "
                        f"(default: {STUDIES_DIR}/<study>) and --set applies to every trial")
    g.add_argument("--trials", type=int, default=None,
                   help="finished (complete + pruned) trials the whole study aims for (default: the sweep's)")
    g.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage: an SQLAlchemy URL (postgresql://user:pw@host/db for many machines) or "
                        "journal:///path/file.log (default: $I2DL_STUDY_STORAGE, else sqlite in the study dir)")
    g.add_argument("--workers", type=int, default=1, metavar="K",
                   help="worker processes on this machine, sharing the cores (and GPUs round-robin)")
    g.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="{ex08,ex09,report}")
    from ex08_autoencoder.config import RECIPES, STEPS  # light: dataclasses only, no torch

    p = sub.add_parser("ex08", help="few-label MNIST: autoencoder pretraining -> transfer -> mean teacher",
                       description="Run an ex08 recipe (all its steps, or one with --step) into one run dir.")
    p.add_argument("--recipe", default="leaderboard", choices=list(RECIPES), help="which recipe (default: %(default)s)")
    p.add_argument("--step", default=None, choices=list(STEPS),
                   help="run only this step, from the previous step's checkpoint in --out")
    _add_common(p)
    _add_study(p)

    p = sub.add_parser("ex09", help="facial keypoints: train (default) or --evaluate a checkpoint",
                       description="Train the ex09 keypoint regressor, or score a saved model on a CSV.")
    p.add_argument("--preset", default="default", help="named starting config (default, quick)")
    _add_common(p)
    p.add_argument("--drop-bad-rows", action="store_true", help="skip invalid CSV rows (reports how many)")
    p.add_argument("--resume", type=Path, default=None, help="continue from a run's last.pt")
    p.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                   help="score this saved model (best.pt) instead of training; needs --csv")
    p.add_argument("--csv", type=Path, default=None, help="CSV in the course's format for --evaluate")
    _add_study(p)

    p = sub.add_parser("report", help="summarise an Optuna study: Markdown + PNGs in the study dir",
                       description="Write report.md and PNGs (history, importances, intermediate values) for a "
                                   "study; --retrain-best retrains the best trial's config as a normal run.")
    p.add_argument("--study", required=True, metavar="NAME|FILE", help="the sweep the study came from (e.g. kp)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="the study's storage (default: $I2DL_STUDY_STORAGE, else sqlite in the study dir)")
    p.add_argument("--out", type=Path, default=None, help=f"the study dir (default: {STUDIES_DIR}/<study>)")
    p.add_argument("--retrain-best", action="store_true",
                   help="retrain the best trial's config (plus --set) into <study dir>/best-retrain")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="with --retrain-best: overrides on top of the best config, e.g. train.epochs=70")
    p.add_argument("--data-dir", default=None, help="data root for --retrain-best")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return parser


def resolve_config(args):
    from common.config import apply_overrides
    from ex09_keypoints.config import make_config

    cfg = make_config(args.preset)
    apply_overrides(cfg, args.overrides)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    if getattr(args, "drop_bad_rows", False):
        cfg.data.drop_bad_rows = True
    cfg.validate()
    return cfg


def run_ex08(args) -> int:
    if args.study:
        return run_study(args)
    from common.config import apply_overrides, to_dict
    from common.rundir import default_run_dir
    from ex08_autoencoder.config import make_config

    cfg = make_config(args.recipe)
    apply_overrides(cfg, args.overrides)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    cfg.validate()
    if args.show_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if args.step is not None and args.out is None:
        raise SystemExit("--step needs --out DIR: the run dir holding the previous step's checkpoint")
    from ex08_autoencoder.recipes import param_report, run_recipe

    print(f"[ex08] recipe {cfg.recipe}: {param_report(cfg)}", flush=True)
    out = args.out or default_run_dir(f"ex08-{cfg.recipe}")
    summary = run_recipe(cfg, out, only_step=args.step, progress=not args.no_progress)
    print(f"run dir: {out}")
    for step, r in summary["steps"].items():
        accs = "  ".join(f"{k} {r[k]:.2%}" for k in ("probe_test10k_acc", "val_acc", "test100_acc", "test10k_acc")
                         if k in r)
        print(f"  {step:9s} {r['wall_s']:6.0f} s  {accs}")
    keys = ("recipe", "test100_acc", "test10k_acc", "val_acc", "params", "wall_s")
    print(json.dumps({k: summary[k] for k in keys if k in summary}
                     | {f"{s}_wall_s": r["wall_s"] for s, r in summary["steps"].items()}))
    return 0


def run_ex09(args) -> int:
    if args.study:
        return run_study(args)
    from common.config import to_dict
    from common.rundir import default_run_dir

    cfg = resolve_config(args)
    if args.show_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if args.evaluate is not None:
        return evaluate_ex09(args, cfg)
    from ex09_keypoints.train import train

    out = args.out or default_run_dir("ex09")
    summary = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(f"run dir: {out}")
    print(f"val score (course, batch size 1): {summary['val_score']:.1f}   RMSE {summary['val_rmse_px']:.2f} px   "
          f"params {summary['params']:,}   {summary['epochs']} epochs in {summary['wall_s']:.0f} s")
    print(json.dumps({k: summary[k] for k in ("val_score", "val_rmse_px", "params", "epochs", "wall_s")}))
    return 0


def evaluate_ex09(args, cfg) -> int:
    if args.csv is None:
        raise SystemExit("--evaluate needs --csv FILE (a CSV in the course's format)")
    from ex09_keypoints.data import CourseDataset, load_split
    from ex09_keypoints.evaluate import course_score, evaluate_split
    from ex09_keypoints.train import load_model

    model = load_model(args.evaluate)
    split = load_split(args.csv, cfg.data.drop_bad_rows)
    score = course_score(model, CourseDataset(split))
    detail = evaluate_split(model, split)
    print(f"{args.csv}: {len(split)} images" + (f" ({split.dropped} bad rows dropped)" if split.dropped else ""))
    print(f"score (course, batch size 1): {score:.2f}   RMSE {detail['rmse_px']:.3f} px")
    for name, err in detail["rmse_px_per_keypoint"].items():
        print(f"  {name:26s} {err:6.2f} px")
    print(json.dumps({"score": score, "rmse_px": detail["rmse_px"], "n_images": len(split),
                      "dropped_rows": split.dropped, "rmse_px_per_keypoint": detail["rmse_px_per_keypoint"]}))
    return 0


def _open_sweep(name_or_file: str, experiment: str | None = None):
    """The validated sweep and its experiment adapter; ``experiment``: the subcommand it was run under."""
    from common.config import ConfigError
    from common.sweep import check_against_config, load_sweep, resolve_sweep_path
    from experiments.registry import get_experiment

    sweep = load_sweep(resolve_sweep_path(name_or_file))
    if experiment and sweep.experiment != experiment:
        raise ConfigError(f"{sweep.path} is a sweep of {sweep.experiment}; run it with "
                          f"python -m experiments.run {sweep.experiment} --study {name_or_file}")
    exp = get_experiment(sweep.experiment)
    check_against_config(sweep, exp.make_config)
    return sweep, exp


def _storage_url(args, study_dir: Path) -> str:
    from common.study import STORAGE_ENV, default_storage

    return args.storage or os.environ.get(STORAGE_ENV) or default_storage(study_dir)


def run_study(args) -> int:
    """``--study``: create the study once, then run trials here (``--workers 1``) or in K worker processes."""
    from common.config import ConfigError, apply_overrides, split_override
    from common.sweep import check_against_config
    from common.study import (DEFAULT_MAX_RETRY, create_or_load_study, fail_dead_local_trials, load_study,
                              open_storage, print_summary, redact, run_worker, spawn_workers, threads_per_worker)

    if args.workers < 1:
        raise ConfigError(f"--workers={args.workers} must be >= 1")
    ignored = [flag for flag, given in (("--preset", getattr(args, "preset", "default") != "default"),
                                        ("--recipe", getattr(args, "recipe", "leaderboard") != "leaderboard"),
                                        ("--step", getattr(args, "step", None)), ("--resume", getattr(args, "resume", None)),
                                        ("--evaluate", getattr(args, "evaluate", None))) if given]
    if ignored:
        raise ConfigError(f"{ignored[0]} does not apply to --study: the sweep file's 'preset' and 'fixed' "
                          "settings (or --set, for every trial) decide what each trial runs")
    sweep, exp = _open_sweep(args.study, args.experiment)
    cli_fixed = dict(split_override(o) for o in args.overrides)
    if cli_fixed:  # --set applies to every trial, on top of the sweep's fixed overrides
        sweep.fixed = {**sweep.fixed, **cli_fixed}
        check_against_config(sweep, exp.make_config)
    study_dir = (args.out or STUDIES_DIR / sweep.study).resolve()
    url = _storage_url(args, study_dir)
    trials = args.trials if args.trials is not None else sweep.trials
    timeout = args.timeout if args.timeout is not None else sweep.timeout_s
    if args.worker_index is not None:  # a worker started by the parent below (the study exists already)
        return run_worker(sweep, exp, url, study_dir, trials, timeout, args.worker_threads or 1,
                          args.worker_index, args.data_dir)

    baseline = apply_overrides(exp.make_config(sweep.preset), dict(sweep.fixed))
    study = create_or_load_study(sweep, open_storage(url, sweep.storage), baseline_cfg=baseline)
    recovered = fail_dead_local_trials(study, sweep.storage.get("max_retry", DEFAULT_MAX_RETRY))
    threads = threads_per_worker(args.workers)
    threads = int(sweep.fixed.get(exp.threads_key) or 0) or threads  # a thread count fixed by the user wins
    print(f"[study] {sweep.study} ({sweep.experiment}, {sweep.direction} {sweep.metric}) in {redact(url)}; "
          f"dir {study_dir}; {args.workers} worker(s) x {threads} thread(s); target {trials or 'unlimited'} "
          f"finished trials" + (f"; re-queued trials {recovered} of dead workers" if recovered else ""),
          file=sys.stderr)
    if args.workers == 1:
        code = run_worker(sweep, exp, url, study_dir, trials, timeout, threads, 0, args.data_dir)
    else:
        def argv_for(i: int) -> list[str]:
            argv = [sys.executable, "-m", "experiments.run", sweep.experiment, "--study", str(sweep.path),
                    "--out", str(study_dir), "--worker-index", str(i), "--worker-threads", str(threads)]
            argv += ["--trials", str(trials)] if trials is not None else []
            argv += ["--timeout", str(timeout)] if timeout is not None else []
            argv += ["--data-dir", args.data_dir] if args.data_dir else []
            argv += ["--set", *args.overrides] if args.overrides else []
            return argv
        code = spawn_workers(argv_for, args.workers, url, threads)
    print_summary(load_study(sweep, url), study_dir)
    print(f"report: python -m experiments.run report --study {args.study}"
          + (f" --out {study_dir}" if args.out else ""), file=sys.stderr)
    return code


def run_report(args) -> int:
    from common.study import load_study
    from common.study_report import retrain_best, write_report

    sweep, exp = _open_sweep(args.study)
    study_dir = (args.out or STUDIES_DIR / sweep.study).resolve()
    url = _storage_url(args, study_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise SystemExit(f"no study storage at {url[len('sqlite:///'):]}: run the study first, or pass "
                         "--out/--storage where it lives")
    study = load_study(sweep, url)
    report = write_report(study, study_dir)
    print(f"report: {report}")
    for png in sorted(study_dir.glob("study_*.png")):
        print(f"figure: {png}")
    if args.retrain_best:
        summary = retrain_best(study, sweep, exp, study_dir / "best-retrain", args.overrides, args.data_dir,
                               progress=not args.no_progress)
        print(json.dumps({k: summary.get(k) for k in (sweep.metric, "params", "epochs", "wall_s") if k in summary}))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from common.config import ConfigError

    try:
        return {"ex08": run_ex08, "ex09": run_ex09, "report": run_report}[args.experiment](args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad data files: MnistDataError, KeypointsDataError name the file and the fix
        if type(e).__name__ not in ("MnistDataError", "KeypointsDataError"):
            raise
        print(f"data error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
