"""The table of exercises: each row is a package's ``experiment`` module (its ``EXPERIMENT`` declaration,
:class:`common.experiment.Experiment`). The CLI (``experiments/``) and the studies (``studies/``) know the
exercises only through this table; adding one is a new package and one line here."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.experiment import Experiment
from common.files.json_files import read_json_dict

EXERCISES = {
    "ex09": "ex09_keypoints.experiment",
    "ex08": "ex08_autoencoder.experiment",
}


def names() -> list[str]:
    return list(EXERCISES)


def get_experiment(name: str) -> Experiment:
    if name not in EXERCISES:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXERCISES)}")
    return importlib.import_module(EXERCISES[name]).EXPERIMENT


def all_experiments() -> list[Experiment]:
    return [get_experiment(name) for name in EXERCISES]


def experiment_of(data: dict, path: Path | str = "config") -> Experiment:
    """The exercise a saved config belongs to: its ``experiment`` key, or (a config saved before that key) the one
    exercise whose config accepts all its keys."""
    if "experiment" in data:
        return get_experiment(str(data["experiment"]))
    from common.config import flat_keys, flatten

    keys = set(flatten({k: v for k, v in data.items()}))
    fits = [e for e in all_experiments() if keys <= set(flat_keys(e.make_config()))]
    if len(fits) != 1:
        raise ConfigError(f"{path} is not a config of {' or '.join(EXERCISES)} (no 'experiment' key, and its keys "
                          "fit " + ("none" if not fits else "several") + " of them)")
    return fits[0]


def config_from_file(exp: Experiment, path: Path, preset: str | None = None):
    """A saved or hand-written config (``config.json``, or YAML) as ``exp``'s config; a foreign or broken file
    names the file and key. A partial file is laid over its ``preset`` key's config (else ``preset``, else the
    exercise's default): keys it does not give keep that preset's values."""
    from common.config import apply_dict

    path = Path(path)
    data = read_json_dict(path, "config", yaml_too=True)
    found = experiment_of(data, path) if "experiment" in data else exp  # a partial file: its keys are checked below
    if found.name != exp.name:
        raise ConfigError(f"{path} is an {found.name} config; run it with python -m experiments.run {found.name} "
                          "--config ...")
    if preset and data.get("preset") not in (None, preset):
        raise ConfigError(f"{path} says preset {data['preset']!r} and --preset says {preset!r}; give one")
    try:
        cfg = apply_dict(exp.make_config(data.get("preset") or preset or exp.presets[0]),
                         {k: v for k, v in data.items() if k != "experiment"})
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg


def load_run(run_dir: Path) -> tuple[Experiment, Any]:
    """The experiment and the config a run dir was trained with (from its ``config.json``)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run dir (no config.json); give the folder a run wrote")
    exp = experiment_of(read_json_dict(path, "config"), path)
    return exp, config_from_file(exp, path)
