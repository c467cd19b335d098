"""A sweep's cost limits as Optuna constraints: a trial may score well and still be no use if it trains for twice
the preset's time or breaks a size budget. The sweep says::

    constraints:
      wall_s: {max_ratio: 1.1}   # of the baseline trial's (the preset's own) projected wall; or {max: 300} seconds
      params: {max: 2000000}     # parameters of the trial's model
      size_mb: {max: 8}          # its weights in MB (1e6 bytes; float32 tensors, as the course's model file holds)

Each limit becomes one Optuna constraint (``trial.set_constraint``; feasible when <= 0), set once when the trial
ends, complete or pruned, as ``measured / limit - 1``: relative excesses, so that seconds and parameters weigh
alike where TPE sums a trial's violations. TPE and the GP sampler read them from the trial (Optuna 5) and steer
away from infeasible regions; ``study.best_trial`` is the best feasible trial.

A trial's wall is *projected* (:class:`WallProjection`): its median seconds per epoch between evaluations times
the epochs a full run trains. So a trial pruned after 8 of 70 epochs is judged on what it would have cost, one
slow epoch (the other worker starting a trial, a neighbour's evaluation) moves the median little, and the
one-time costs before the first epoch ends (imports, data, warm-up: paid by a process's first trial, which is
the baseline) are left out: they made a tiny baseline look slower than a 60-epoch trial (a flaky test). A ratio
limit compares against the baseline trial's projection, timed in the same study with the same workers and threads
(two workers on 2 cores slow every trial alike; a lone run's time would not be a fair bar). Params and size are
known before training: a trial over them is pruned at once, untrained.
"""
from __future__ import annotations

import math
import statistics
import time

from common.errors import ConfigError, short

LIMITS = {"wall_s": {"max", "max_ratio"}, "params": {"max"}, "size_mb": {"max"}}
"""Each constraint and the ways its limit may be given."""


def parse_constraints(raw, where: str, baseline: bool) -> dict[str, dict]:
    """The sweep's ``constraints`` section, checked: ``{name: {"max": x} | {"max_ratio": r}}``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: constraints must be a mapping of {', '.join(LIMITS)} -> {{max: N}}")
    out = {}
    for name, spec in raw.items():
        if name not in LIMITS:
            raise ConfigError(f"{where}: constraints: unknown key {short(name)}; valid keys: {', '.join(LIMITS)}")
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in LIMITS[name]):
            raise ConfigError(f"{where}: constraints.{name} must be one of "
                              + " or ".join(f"{{{k}: NUMBER}}" for k in sorted(LIMITS[name])))
        (kind, value), = spec.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: constraints.{name}.{kind}={short(value)} must be a positive number")
        if kind == "max_ratio" and not baseline:
            raise ConfigError(f"{where}: constraints.{name}.max_ratio compares with the baseline trial (the "
                              "preset's own values), but the sweep has baseline: false; give {max: N} instead")
        out[name] = {kind: float(value)}
    return out


class WallProjection:
    """A trial's projected wall time from its evaluations: ``tick(step)`` after each one (``step``: epochs trained,
    0-based, as the pruner sees it); ``projected(last_step)``: the median seconds per epoch between evaluations
    times the ``last_step + 1`` epochs of a full run (one evaluation only: its seconds per epoch so far)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.first: tuple[int, float] | None = None  # (step, seconds) of the first evaluation
        self.last: tuple[int, float] | None = None
        self.rates: list[float] = []  # seconds per epoch between consecutive evaluations

    def tick(self, step: int) -> None:
        now = time.perf_counter() - self.t0
        if self.first is None:
            self.first = (step, now)
        elif step > self.last[0]:
            self.rates.append((now - self.last[1]) / (step - self.last[0]))
        self.last = (step, now)

    def projected(self, last_step: int) -> float | None:
        if self.first is None:
            return None
        step, seconds = self.first
        rate = statistics.median(self.rates) if self.rates else seconds / (step + 1)
        return rate * (last_step + 1)


def model_costs(experiment, cfg) -> dict[str, float]:
    """``{"params": n, "size_mb": MB}`` of the model ``cfg`` builds (on PyTorch's meta device: no memory, no
    random draws), where the experiment can say (``Experiment.model_tensors``); else ``{}``."""
    if experiment.model_tensors is None:
        return {}
    params, n_bytes = experiment.model_tensors(cfg)
    return {"params": float(params), "size_mb": n_bytes / 1e6}


def check_supported(constraints: dict, experiment, where: str) -> None:
    """A params or size limit needs an experiment that can count its model's tensors."""
    if experiment.model_tensors is None and ({"params", "size_mb"} & set(constraints)):
        raise ConfigError(f"{where}: constraints on params/size_mb need the experiment to count its model "
                          f"({experiment.name} does not); keep wall_s only")


def violations(constraints: dict, measured: dict[str, float], baseline_wall_s: float | None) -> dict[str, float]:
    """``{name: measured / limit - 1}`` for the limits whose measure is known (<= 0: within it)."""
    out = {}
    for name, spec in constraints.items():
        value = measured.get(name)
        limit = spec.get("max")
        if "max_ratio" in spec:
            limit = None if baseline_wall_s is None else spec["max_ratio"] * baseline_wall_s
        if value is not None and limit:
            out[name] = value / limit - 1.0
    return out


def baseline_wall(study) -> float | None:
    """The baseline trial's projected wall (its latest, while it still runs), or None before it evaluated."""
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("baseline") and "projected_wall_s" in t.user_attrs:
            return float(t.user_attrs["projected_wall_s"])
    return None


def baseline_running(study) -> bool:
    """Whether the baseline trial is queued or running (its projected wall may still come)."""
    from optuna.trial import TrialState

    return any(t.user_attrs.get("baseline")
               for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


def is_feasible(trial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def describe(constraints: dict) -> str:
    """``wall_s <= 1.1x the baseline's, params <= 2e+06`` for reports and errors."""
    parts = []
    for name, spec in constraints.items():
        (kind, value), = spec.items()
        parts.append(f"{name} <= {value:g}x the baseline's" if kind == "max_ratio" else f"{name} <= {value:g}")
    return ", ".join(parts)


def best_trial(study):
    """The best complete trial within the constraints (``study.best_trial``, which skips infeasible trials), or
    None when no trial is both."""
    try:
        return study.best_trial
    except ValueError:  # no complete trial, or none feasible
        return None


def pareto_front(points: list[tuple[float, float]], maximize: bool) -> list[int]:
    """Indices of the (cost, value) points no other point beats on both (lower cost, better value), by cost."""
    sign = 1 if maximize else -1
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if sign * points[i][1] > best:
            front.append(i)
            best = sign * points[i][1]
    return front


def cost_figure(study, path, constraints: dict) -> str:
    """Value against projected wall time of every complete trial, the Pareto front joined, infeasible trials
    crossed, the wall limit dashed (where it is known); returns "ok" or why it was not drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE
            and "projected_wall_s" in t.user_attrs and t.value is not None]
    if not done:
        return "not drawn: no complete trial has a projected wall time (the sweep needs a wall_s constraint)"
    maximize = study.direction.name == "MAXIMIZE"
    points = [(float(t.user_attrs["projected_wall_s"]), float(t.value)) for t in done]
    feasible = [is_feasible(t) for t in done]
    fig, ax = plt.subplots(figsize=(8, 5))
    ok = [p for p, f in zip(points, feasible) if f]
    bad = [p for p, f in zip(points, feasible) if not f]
    if ok:
        ax.scatter(*zip(*ok), c="tab:blue", label="feasible", zorder=3)
    if bad:
        ax.scatter(*zip(*bad), c="tab:red", marker="x", label="infeasible", zorder=3)
    front = [points[i] for i in pareto_front(points, maximize)]
    ax.plot(*zip(*front), c="tab:green", drawstyle="steps-post", marker="o", mfc="none", ms=10,
            label="Pareto front (no trial cheaper and better)", zorder=2)
    for t, (x, y) in zip(done, points):
        ax.annotate(str(t.number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if t.user_attrs.get("baseline"):
            ax.scatter([x], [y], s=160, facecolors="none", edgecolors="k", label="baseline (preset)", zorder=4)
    spec = constraints.get("wall_s", {})
    limit = spec.get("max") or (spec.get("max_ratio", 0) * (baseline_wall(study) or 0)) or None
    if limit:
        ax.axvline(limit, c="k", ls="--", lw=1, label=f"wall limit {limit:.3g} s")
    ax.set_xlabel("projected wall time of a full run (s)")
    ax.set_ylabel(study.user_attrs.get("metric", "value"))
    ax.set_title(f"study {study.study_name}: value against cost")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return "ok"


def constraint_lines(study, constraints: dict) -> list[str]:
    """How the trials stand against the sweep's cost limits (nothing without any)."""
    from optuna.trial import TrialState

    if not constraints:
        return []
    ended = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    judged = [t for t in ended if t.constraints]
    bad = [t for t in judged if not is_feasible(t)]
    reference = baseline_wall(study)
    return ["## Cost constraints", "",
            f"Limits: {describe(constraints)}"
            + (f" (the baseline's projected wall: {reference:.0f} s)" if reference else "") + ". "
            f"Of {len(ended)} ended trials, {len(judged)} carry constraint values (pruned ones too: a pruned "
            f"trial's wall is projected to the full run); {len(bad)} are infeasible"
            + (f" (trials {', '.join(str(t.number) for t in bad[:20])})" if bad else "") + ". "
            "The sampler learns from them; the best trial and `--confirm` take feasible trials only. "
            "Value against cost: `study_cost.png`.", ""]
