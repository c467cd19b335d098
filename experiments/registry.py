"""The experiments a study can search, as :class:`common.study.Experiment` adapters.

Each is a thin wrapper around the experiment's own config and training entry point (a trial is just a run
with overrides). Training modules import torch, so they are imported only when a trial runs.
"""
from __future__ import annotations

from common.study import Experiment


def _train_ex09(cfg, out_dir, **kwargs) -> dict:
    from ex09_keypoints.train import train

    return train(cfg, out_dir, **kwargs)


def _train_ex08(cfg, out_dir, **kwargs) -> dict:
    from ex08_autoencoder.recipes import run_recipe

    return run_recipe(cfg, out_dir, **kwargs)


def _ex09_evals(cfg) -> int:
    every = max(1, cfg.train.eval_every)
    return cfg.train.epochs // every + (1 if cfg.train.epochs % every else 0)


def _ex08_evals(cfg) -> int:  # val accuracy is reported by the classifier steps only
    return sum({"transfer": cfg.transfer.epochs, "teacher": cfg.teacher.epochs}.get(s, 0) for s in cfg.steps)


def get_experiment(name: str) -> Experiment:
    if name == "ex09":
        from ex09_keypoints.config import make_config
        return Experiment("ex09", make_config, _train_ex09, "train.threads", _ex09_evals)
    if name == "ex08":
        from ex08_autoencoder.config import make_config
        return Experiment("ex08", make_config, _train_ex08, "run.threads", _ex08_evals)
    from common.config import ConfigError
    raise ConfigError(f"unknown experiment {name!r}; choose ex08 or ex09")
