"""``python -m experiments.run tutorial [--seeds 0,1,2] [--out DIR] [--workers K] [--budget quick|default]``:
every claim of Tutorial 9's conv / batch-norm / dropout half re-made here, in order, then ``DIR/TUTORIAL.md``.

The demonstrations (counts, the conv example, the normalisation axes, the dropout patterns) are recomputed each
time (seconds); the ablations are grid studies in ``DIR/studies/<sweep>`` and the ex08 case study a run in
``DIR/ex08-case-study``: a re-run trains only the cells and steps that did not finish."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tutorial import ablations, conv_example, counts, dropout_patterns, metric, norm_axes

DEFAULT_OUT = Path("runs") / "tutorial"


def matched_mlp_widths(cnn_overrides: dict) -> list[int]:
    """Two equal hidden widths w that give the MLP about as many parameters as the CNN of ``cnn_overrides``
    (counted on the real module): 9216 w (first layer, no bias) + w^2 (second) + 4 w (two BatchNorm1d) + 30 w + 30
    (the output layer), solved for w."""
    import math

    from common.config import apply_overrides
    from ex09_keypoints.config import make_config
    from ex09_keypoints.data import IMAGE_SIZE
    from ex09_keypoints.models import N_OUTPUTS, build_model

    target = counts.n_params(build_model(apply_overrides(make_config(), dict(cnn_overrides)).model))
    b = IMAGE_SIZE ** 2 + 4 + N_OUTPUTS
    # at least 1: a CNN smaller than any MLP on 9216 pixels (a tiny soft-argmax one) gets the smallest MLP
    return [max(1, int((-b + math.sqrt(b * b + 4 * (target - N_OUTPUTS))) / 2))] * 2


def check_ex08_run(given: Path) -> None:
    """``--ex08-run``: a finished run of ex08 (checked before anything trains)."""
    from common.errors import ConfigError
    from exercises import load_run

    if not (Path(given) / "summary.json").is_file():
        raise ConfigError(f"--ex08-run {given}: no summary.json there; give a finished ex08 run dir")
    found, _ = load_run(given)
    if found.name != "ex08":
        raise ConfigError(f"--ex08-run {given} is an {found.name} run; give a finished ex08 run dir (the case "
                          "study: python -m experiments.run ex08 --preset case-study)")


def ex08_case_study(out: Path, given: Path | None, data_dir: str | None, progress: bool) -> Path:
    """The run dir of the course's ex08 case study: ``given`` (``--ex08-run``), else trained (or resumed) here."""
    from common.config import apply_overrides
    from exercises import get_experiment

    if given is not None:
        check_ex08_run(given)
        return Path(given)
    run = out / "ex08-case-study"
    if not (run / "summary.json").is_file():
        exp = get_experiment("ex08")
        cfg = apply_overrides(exp.make_config("case-study"), [f"data.data_dir={data_dir}"] if data_dir else [])
        exp.train(cfg, run, resume=run if (run / "config.json").is_file() else None, progress=progress)
    return run


def main(args) -> int:
    """``python -m experiments.run tutorial ...`` (flags: :mod:`tutorial.flags`)."""
    from common.run.signals import exit_code, interrupts_unwrapped, signal_name
    from studies.cores import check_workers

    check_workers(args.workers)
    try:
        with interrupts_unwrapped():  # an interrupt that Python wrapped is still one (common.run.signals)
            return run_tutorial(args.seeds, args.out, args.workers, args.budget, args.data_dir, args.ex08_run,
                                progress=not args.no_progress, overrides=args.overrides)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, wherever it lands (a grid, the figures, the ex08 run)
        print(f"[tutorial] interrupted ({signal_name(e)}); what finished is kept, the same command continues where "
              "it stopped", file=sys.stderr)
        return exit_code(e)


MARKER = ".i2dl-tutorial.json"
"""Written into the tutorial's dir when it first claims it: the tutorial writes only into a dir that is new,
empty, or one it wrote (this marker; or, made before it, its grid studies' ``studies/tutorial-*/study.db``)."""


def claim_out_dir(out: Path) -> None:
    """Refuse, naming it, an ``--out`` that is a file or a folder the tutorial did not write; then mark it."""
    from common.files.marked_dir import check_marked_dir, is_sqlite, mark_dir

    check_marked_dir(out, MARKER, "tutorial dir",
                     legacy=lambda p: any(is_sqlite(db) for db in p.glob("studies/tutorial-*/study.db")))
    mark_dir(out, MARKER, {"written_by": "i2dl-lab tutorial"})


def run_tutorial(seeds: list[int], out: Path | None = None, workers: int = 1, budget: str = "quick",
                 data_dir: str | None = None, ex08_run: Path | None = None, progress: bool = True,
                 overrides: list[str] = ()) -> int:
    """The whole tutorial; ``overrides`` (``--set``) go into every grid cell's config, on top of the budget."""
    import time

    from common.config import split_override
    from ex09_keypoints.data import load_keypoints
    from tutorial.report import write_report

    t0 = time.perf_counter()
    out = Path(out or DEFAULT_OUT).resolve()
    if budget not in ablations.BUDGETS:
        from common.errors import ConfigError
        raise ConfigError(f"--budget={budget!r} is not valid; choose one of {', '.join(ablations.BUDGETS)}")
    every = {**ablations.BUDGETS[budget], **dict(split_override(o) for o in overrides)}
    cells = {"tutorial-mlp": {**every, "model.mlp_widths": matched_mlp_widths(every)},
             "tutorial-norms": every, "tutorial-dropout": every}
    for name, extra in cells.items():  # every cell of every grid, checked before anything is written or trained
        ablations.check_grid(name, extra, data_dir)
    if ex08_run is not None:
        check_ex08_run(ex08_run)
    claim_out_dir(out)
    sweeps = {name: ablations.grid_sweep(name, seeds, budget, out, extra) for name, extra in cells.items()}
    val = load_keypoints(data_dir, splits=("val",))["val"]
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    faces = val.images[:3]
    demo = {"counts": counts.fully_connected(), "conv_vs_dense": counts.conv_vs_dense(filters=6),
            "conv_png": conv_example.figure(faces, figures / "conv_example.png"),
            "norm_stats": norm_axes.statistics(norm_axes.activations(val.images[:32])),
            "norm_png": norm_axes.figure(figures / "norm_axes.png"),
            "dropout_mlp": dropout_patterns.dropout_mlp().tolist(),
            "dropout_cnn": dropout_patterns.zero_pattern(dropout_patterns.dropout_cnn()),
            "dropout_regular": dropout_patterns.zero_pattern(dropout_patterns.regular_on_maps()),
            "dropout_png": dropout_patterns.figure(figures / "dropout_patterns.png")}
    grids = {}
    overrides = [f"data.data_dir={data_dir}"] if data_dir else []
    for name, path in sweeps.items():
        print(f"[tutorial] {name}: grid of {path}", file=sys.stderr, flush=True)
        code = ablations.run_grid(path, out / "studies" / name, workers, overrides)
        if code != 0:
            print(f"[tutorial] stopped in {name}; the same command continues where it stopped", file=sys.stderr)
            return code
        grids[name] = ablations.cells(path, out / "studies" / name)
    case = ex08_case_study(out, ex08_run, data_dir, progress)
    from ex09_keypoints.saved import load_model

    cnn = next(r for r in grids["tutorial-mlp"] if r["variant"]["model.arch"] == "cnn")
    trained = cnn["runs"][min(cnn["runs"])]  # the first seed's CNN: a model this tutorial trained
    agreement = {"run": str(trained), **metric.agreement(load_model(trained / "best.pt"), val)}
    wall = time.perf_counter() - t0
    path = write_report(out, seeds=seeds, budget=budget, workers=workers, demo=demo, grids=grids, case=case,
                        agreement=agreement, wall_s=wall)
    log_to_wandb(out, path, grids, {"seeds": seeds, "budget": budget, "workers": workers})
    print(f"[tutorial] {path} ({wall:.0f} s this time)", file=sys.stderr)
    print(json.dumps({"tutorial": str(path), "wall_s": round(wall, 1)}))
    return 0


def log_to_wandb(out: Path, report: Path, grids: dict, config: dict) -> None:
    """The report as one W&B run of group ``tutorial`` (its cells are runs of the ``tutorial-*`` study groups):
    each grid as a table, each figure as an image, the report's path in the summary."""
    from common.run.tracking import TrackConfig, Tracker

    track = TrackConfig()
    with Tracker(track.project, config, out, track.mode, name="tutorial", group="tutorial",
                 job_type="report") as tracker:
        for name, rows in grids.items():
            tracker.log_table(name, ["variant", "mean", "sd", "seeds", "params", "s_per_epoch"],
                              [[json.dumps(r["variant"]), r["mean"], r["sd"], len(r["seeds"]), r["params"],
                                r["s_per_epoch"]] for r in rows])
        for png in sorted((out / "figures").glob("*.png")):
            tracker.log_image(f"figures/{png.stem}", png)
        tracker.summary({"report": str(report)})
