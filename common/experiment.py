"""What an exercise declares about itself, so the CLI, the studies and the run tools stay generic: each exercise
package has one ``experiment.py`` holding ``EXPERIMENT = Experiment(name=..., ...)`` (by keyword), and the
table in :mod:`exercises` lists those modules. Nothing here imports torch: declarations are read to build the
CLI, and the heavy functions they name import their modules when called."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Experiment:
    name: str
    """The subcommand and the name in ``config.json``, sweeps and records (``ex09``)."""
    summary: str
    """One line for ``--help``: what the exercise is."""
    description: str
    """The subcommand's ``--help`` description."""
    presets: tuple[str, ...]
    """Its named starting configs, the default first."""
    make_config: Callable[..., Any]
    """``make_config(preset=<default>)`` -> a fresh config (a dataclass with ``validate()``)."""
    train: Callable[..., dict]
    """``train(cfg, out_dir, *, resume, overwrite, on_epoch, tracker, progress)`` -> the summary dict."""
    export: Callable[[Any, Any, Any], tuple[int, dict]]
    """``(cfg, run_dir, out_dir)`` -> (exit code, figures): the run's model as the course's submission, checked."""
    ensemble: Callable[[Any, list, Any], tuple[int, dict]] | None
    """``(cfg, run_dirs, out_dir)`` -> (exit code, figures): several runs of one config (a ``--seeds`` dir's) as
    one course model averaging their predictions, checked as ``export`` is; None: the exercise offers none."""
    planned_evals: Callable[[Any], int]
    """How many evaluations (pruner steps) a full run of ``cfg`` reports: the denominator of "saved"."""
    planned_epochs: Callable[[Any], int]
    """How many epochs a full run of ``cfg`` trains in the steps that report the metric (the pruner's last step
    + 1): what a trial's projected wall time (:mod:`studies.constraints`) extrapolates to."""
    continue_flags: Callable[[Any, Any], list[str] | None]
    """``(cfg, out_dir)`` -> the flags that continue an interrupted run there (None: nothing to continue)."""
    headline: tuple[str, ...]
    """The summary keys a finished run prints (its last line is them as one JSON object)."""
    metrics: tuple[str, ...] = ()
    """The val figures a run reports every evaluation and in its summary: what a sweep may optimise (its
    ``metric`` and ``tie_break``), checked before anything trains."""
    seed_keys: tuple[str, ...] = ("run.seed",)
    """The config keys ``--seeds`` sets to each seed."""
    example_overrides: str = ""
    """An example for ``--set``'s help."""
    add_flags: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    """Adds the exercise's own flags to its subcommand (ex09's ``--evaluate``, ex08's ``--step``)."""
    flag_overrides: Callable[[argparse.Namespace], dict] = lambda args: {}
    """Those flags that are config values, as ``{key: value}`` overrides (``--step S`` -> ``only_step=S``)."""
    command: Callable[[argparse.Namespace, Any], int | None] = lambda args, cfg: None
    """The exercise's own command instead of training (ex09's ``--evaluate``): an exit code, or None to train."""
    check_flags: Callable[[argparse.Namespace, Any, bool], None] = lambda args, cfg, study: None
    """``(args, cfg, study)``: refuses (a ConfigError) flags that contradict each other or do not apply to a study
    (``cfg`` is None then), before anything is touched."""
    partial: Callable[[Any], str | None] = lambda cfg: None
    """Why a run of ``cfg`` is only part of a preset (ex08's one step), else None: ``rerun`` refuses those."""
    model_tensors: Callable[[Any], tuple[int, int]] | None = None
    """``cfg`` -> (parameters, bytes of its weights) of the model it builds, without allocating it; None: the
    exercise cannot say (a sweep's params/size_mb constraints are then refused)."""
