"""ex08 as the CLI, the studies and the run tools see it (:class:`common.experiment.Experiment`). Light: the
training and export modules (torch) are imported when called."""
from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import ConfigError
from common.experiment import Experiment
from ex08_autoencoder.config import STEPS, AutoencoderConfig
from ex08_autoencoder.presets import PRESETS, make_config


def train(cfg, out_dir, **kwargs) -> dict:
    from ex08_autoencoder.train import train as train_steps

    return train_steps(cfg, out_dir, **kwargs)


def export(cfg, run_dir, out_dir) -> tuple[int, dict]:
    from ex08_autoencoder.export import export as export_classifier

    return export_classifier(cfg, run_dir, out_dir)


def planned_evals(cfg) -> int:
    """Val accuracy is reported by the classifier steps only."""
    return sum({"transfer": cfg.transfer.epochs, "teacher": cfg.teacher.epochs,
                "student": cfg.student.epochs}.get(s, 0) for s in cfg.steps)


def continue_flags(cfg, out_dir: Path) -> list[str] | None:
    """The flags that continue an interrupted run in ``out_dir`` (None: it holds nothing yet)."""
    return ["--resume", str(out_dir)] if (Path(out_dir) / "config.json").is_file() else None


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", dest="preset", choices=list(PRESETS), help=argparse.SUPPRESS)  # the old name
    p.add_argument("--step", default=None, choices=list(STEPS),
                   help="run only this step, from the previous step's checkpoint in --out (= --set only_step=...)")
    p.add_argument("--no-cache", action="store_true",
                   help="train every step, even one an earlier run computed exactly so (= --set cache_steps=false)")


def flag_overrides(args) -> dict:
    return {**({"only_step": args.step} if args.step else {}), **({"cache_steps": False} if args.no_cache else {})}


def check_flags(args, cfg, study: bool) -> None:
    """Refused before anything is touched: what contradicts running one step."""
    if study:
        if args.step:
            raise ConfigError("--step does not apply to --study: a trial runs the sweep's preset, all its steps")
        return
    step = cfg.only_step
    if step and args.out is None:
        raise ConfigError("--step needs --out DIR: the run dir holding the previous step's checkpoint")
    if step not in (None, "pretrain") and args.overwrite:
        raise ConfigError(f"--step {step} goes on from the earlier steps' checkpoints in --out, which --overwrite "
                          "would delete; drop --overwrite (nothing was touched)")
    if step and args.seeds:
        raise ConfigError("--seeds runs whole presets: drop --step")


def partial(cfg) -> str | None:
    return f"it ran one step (--step {cfg.only_step})" if cfg.only_step else None


EXPERIMENT = Experiment(
    name=AutoencoderConfig.experiment,
    summary="few-label MNIST: autoencoder pretraining -> transfer -> mean teacher",
    description="Train an ex08 preset (all its steps, or one with --step) into one run dir.",
    presets=tuple(PRESETS), make_config=make_config, train=train, export=export, ensemble=None,
    planned_evals=planned_evals, planned_epochs=planned_evals,  # every classifier epoch is evaluated
    continue_flags=continue_flags, headline=("preset", "val/acc", "test100/acc", "test10k/acc", "params", "wall_s"),
    metrics=("val/acc", "val/loss"),
    seed_keys=("run.seed", "data.split_seed"), example_overrides="teacher.epochs=10 model.hidden=[1024,512]",
    add_flags=add_flags, flag_overrides=flag_overrides, check_flags=check_flags, partial=partial)
