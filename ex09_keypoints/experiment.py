"""ex09 as the CLI, the studies and the run tools see it (:class:`common.experiment.Experiment`). Light: the
training, export and scoring modules (torch) are imported when called."""
from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import ConfigError
from common.experiment import Experiment
from ex09_keypoints.config import PRESETS, KeypointsConfig, is_eval_epoch, make_config


def train(cfg, out_dir, **kwargs) -> dict:
    from ex09_keypoints.train import train as train_keypoints

    return train_keypoints(cfg, out_dir, **kwargs)


def export(cfg, run_dir, out_dir) -> tuple[int, dict]:
    from ex09_keypoints.export import export as export_keypoints

    return export_keypoints(cfg, run_dir, out_dir)


def ensemble(cfg, run_dirs, out_dir) -> tuple[int, dict]:
    from ex09_keypoints.ensemble import export_ensemble

    return export_ensemble(cfg, run_dirs, out_dir)


def planned_evals(cfg) -> int:
    return sum(is_eval_epoch(e, cfg.train) for e in range(cfg.train.epochs))


def planned_epochs(cfg) -> int:
    return cfg.train.epochs


def model_tensors(cfg) -> tuple[int, int]:
    """The parameters and weight bytes (the state dict's tensors: what the saved model holds) of ``cfg``'s model,
    built on the meta device."""
    from common.files.checkpoint import count_params, on_meta
    from ex09_keypoints.models import build_model

    with on_meta():
        model = build_model(cfg.model)
    return count_params(model), sum(t.numel() * t.element_size() for t in model.state_dict().values())


def continue_flags(cfg, out_dir: Path) -> list[str] | None:
    """The flags that continue an interrupted run in ``out_dir``, or None when no epoch finished."""
    return ["--resume", str(out_dir)] if (Path(out_dir) / "last.pt").is_file() else None


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["audit"], default=None,
                   help="audit: out-of-fold errors of every training face, the worst drawn (--folds, --worst); "
                        "train with data.exclude=<the audit's CSV> to leave faces out")
    p.add_argument("--folds", type=int, default=5, help="audit: blocks of the training CSV, one short run each")
    p.add_argument("--worst", type=int, default=24, help="audit: how many of the worst faces to draw")
    p.add_argument("--drop-bad-rows", action="store_true",
                   help="skip invalid CSV rows and report how many (= --set data.drop_bad_rows=true)")
    p.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                   help="score this saved model (best.pt) instead of training; needs --csv")
    p.add_argument("--csv", type=Path, default=None, help="CSV in the course's format for --evaluate")


def flag_overrides(args) -> dict:
    return {"data.drop_bad_rows": True} if args.drop_bad_rows else {}


def command(args, cfg) -> int | None:
    """``--evaluate CHECKPOINT --csv FILE`` or ``audit`` instead of training."""
    if args.action == "audit":
        return run_audit(args, cfg)
    if args.evaluate is None:
        if args.csv is not None:
            raise ConfigError("--csv goes with --evaluate CHECKPOINT; add --evaluate or drop --csv")
        return None
    ignored = [flag for flag, given in (("--seeds", args.seeds), ("--resume", args.resume),
                                        ("--overwrite", args.overwrite)) if given]
    if ignored:
        raise ConfigError(f"{ignored[0]} does not apply to --evaluate (it scores one checkpoint on --csv and trains "
                          "nothing); drop it")
    from ex09_keypoints.score_csv import evaluate_csv

    return evaluate_csv(args, cfg)


def run_audit(args, cfg) -> int:
    import json
    import time

    from ex09_keypoints.audit import audit

    given = [flag for flag, value in (("--evaluate", args.evaluate), ("--seeds", args.seeds),
                                      ("--resume", args.resume), ("--overwrite", args.overwrite)) if value]
    if given:
        raise ConfigError(f"{given[0]} does not apply to audit; drop it")
    out = args.out or Path("runs") / f"ex09-audit-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = audit(cfg, out, args.folds, args.worst, progress=not args.no_progress)
    print(f"audit: {summary['csv']}; {summary['figure']}")
    print(f"out-of-fold error: mean {summary['mean_error_px']:.2f} px, median {summary['median_error_px']:.2f} px; "
          "worst: " + ", ".join(f"row {w['row']} {w['error_px']:.1f} px" for w in summary["worst"][:5]))
    print(json.dumps({k: summary[k] for k in ("folds", "faces", "mean_error_px", "median_error_px")}))
    return 0


def check_flags(args, cfg, study: bool) -> None:
    if study and args.action == "audit":
        raise ConfigError("audit does not apply to --study")
    if study and args.evaluate is not None:
        raise ConfigError("--evaluate does not apply to --study: score a trial's best.pt on its own")


EXPERIMENT = Experiment(
    name=KeypointsConfig.experiment, summary="facial keypoints: train (default) or --evaluate a checkpoint",
    description="Train the ex09 keypoint regressor, or score a saved model on a CSV.",
    presets=tuple(PRESETS), make_config=make_config, train=train, export=export, ensemble=ensemble,
    planned_evals=planned_evals, planned_epochs=planned_epochs, model_tensors=model_tensors,
    continue_flags=continue_flags, headline=("val/score", "val/rmse_px", "params", "epochs", "wall_s"),
    metrics=("val/score", "val/rmse_px"),
    example_overrides="train.epochs=30 model.widths=[32,64,128]", add_flags=add_flags,
    flag_overrides=flag_overrides, command=command, check_flags=check_flags)
