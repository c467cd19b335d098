"""``python -m experiments.run {ex08,ex09} ... [--set key=value ...] [--out DIR]``

Parse -> config (preset, then overrides) -> dispatch. Heavy imports (torch, wandb) happen only after the
arguments are known to be valid, so ``--help`` and bad flags answer instantly.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. --set model.widths=[32,64,128] train.epochs=30")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<experiment>-<time>)")
    p.add_argument("--data-dir", default=None, help="data root (default: $I2DL_DATA_DIR, else the cache dir)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="{ex08,ex09}")
    from ex08_autoencoder.config import RECIPES, STEPS  # light: dataclasses only, no torch

    p = sub.add_parser("ex08", help="few-label MNIST: autoencoder pretraining -> transfer -> mean teacher",
                       description="Run an ex08 recipe (all its steps, or one with --step) into one run dir.")
    p.add_argument("--recipe", default="leaderboard", choices=list(RECIPES), help="which recipe (default: %(default)s)")
    p.add_argument("--step", default=None, choices=list(STEPS),
                   help="run only this step, from the previous step's checkpoint in --out")
    _add_common(p)

    p = sub.add_parser("ex09", help="facial keypoints: train (default) or --evaluate a checkpoint",
                       description="Train the ex09 keypoint regressor, or score a saved model on a CSV.")
    p.add_argument("--preset", default="default", help="named starting config (default, quick)")
    _add_common(p)
    p.add_argument("--drop-bad-rows", action="store_true", help="skip invalid CSV rows (reports how many)")
    p.add_argument("--resume", type=Path, default=None, help="continue from a run's last.pt")
    p.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                   help="score this saved model (best.pt) instead of training; needs --csv")
    p.add_argument("--csv", type=Path, default=None, help="CSV in the course's format for --evaluate")
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from common.config import ConfigError

    try:
        return {"ex08": run_ex08, "ex09": run_ex09}[args.experiment](args)
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
