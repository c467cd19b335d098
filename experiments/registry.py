"""The experiments, as the CLI and a study see them. Both exercises expose the same pieces (a preset -> config
function, and ``train(cfg, out_dir, *, resume, on_epoch, tracker, progress) -> summary``), so an entry here is
only a name, those two, how many evaluations a full run reports, and which summary figures to print.
Training modules import torch, so they are imported only when something trains.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Experiment:
    name: str
    make_config: Callable[[str], Any]
    """preset name -> a fresh config."""
    train: Callable[..., dict]
    """``train(cfg, out_dir, on_epoch=..., tracker=..., progress=...)`` -> summary dict holding the metric."""
    planned_evals: Callable[[Any], int]
    """How many evaluations (pruner steps) a full run of ``cfg`` reports: the denominator of "saved"."""
    headline: tuple[str, ...]
    """The summary keys a finished run prints (its last line is them as one JSON object)."""
    continue_flags: Callable[[Any, Any], list[str] | None]
    """``(cfg, out_dir)`` -> the flags that continue an interrupted run there (None: nothing to continue)."""
    seed_keys: tuple[str, ...]
    """The config keys ``--seeds`` sets to each seed (ex08's labeled split is drawn per seed too)."""
    export: Callable[[Any, Any, Any], tuple[int, dict]]
    """``(cfg, run_dir, out_dir)`` -> (exit code, figures): the run's model as the course's submission, checked."""


def _lazy(module: str, name: str) -> Callable:
    """``module.name``, imported at its first call: the training modules import torch (~3 s)."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    return call


def _ex09_evals(cfg) -> int:
    from ex09_keypoints.config import is_eval_epoch

    return sum(is_eval_epoch(e, cfg.train) for e in range(cfg.train.epochs))


def _ex08_evals(cfg) -> int:  # val accuracy is reported by the classifier steps only
    return sum({"transfer": cfg.transfer.epochs, "teacher": cfg.teacher.epochs}.get(s, 0) for s in cfg.steps)


def get_experiment(name: str) -> Experiment:
    if name == "ex09":
        from ex09_keypoints.config import make_config
        return Experiment("ex09", make_config, _lazy("ex09_keypoints.train", "train"), _ex09_evals,
                          ("val/score", "val/rmse_px", "params", "epochs", "wall_s"),
                          _lazy("ex09_keypoints.train", "continue_flags"), ("run.seed",),
                          _lazy("ex09_keypoints.export", "export"))
    if name == "ex08":
        from ex08_autoencoder.config import make_config
        return Experiment("ex08", make_config, _lazy("ex08_autoencoder.train", "train"), _ex08_evals,
                          ("preset", "val/acc", "test100/acc", "test10k/acc", "params", "wall_s"),
                          _lazy("ex08_autoencoder.train", "continue_flags"), ("run.seed", "data.split_seed"),
                          _lazy("ex08_autoencoder.export", "export"))
    from common.config import ConfigError
    raise ConfigError(f"unknown experiment {name!r}; choose ex08 or ex09")


def _read_config(path: Path) -> tuple[str, dict]:
    from common.config import ConfigError

    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); it was edited or truncated") from None
    name = "ex08" if "teacher" in data else "ex09" if "train" in data else None
    if not isinstance(data, dict) or name is None:
        raise ConfigError(f"{path} is neither an ex08 nor an ex09 config")
    return name, data


def config_from_file(exp: Experiment, path: Path):
    """A saved config (``config.json``) as ``exp``'s config; a foreign or broken file names the file and key."""
    from common.config import ConfigError, from_dict

    name, data = _read_config(Path(path))
    if name != exp.name:
        raise ConfigError(f"{path} is an {name} config; run it with python -m experiments.run {name} --config ...")
    try:
        cfg = from_dict(type(exp.make_config()), data)
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg


def load_run(run_dir: Path) -> tuple[Experiment, Any]:
    """The experiment and the config a run dir was trained with (from its ``config.json``)."""
    from common.config import ConfigError

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run dir (no config.json); give the folder a run wrote")
    exp = get_experiment(_read_config(path)[0])
    return exp, config_from_file(exp, path)
