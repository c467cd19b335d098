"""``python -m experiments.run {ex08,ex09,report,rerun,runs,export} ... [--set key=value ...] [--out DIR]``

Parse -> config (preset, then the flags that are config values, then ``--set``) -> dispatch: one run, an Optuna
study (``--study kp``) whose trials are runs with overrides, or a study's ``report``. Heavy imports (torch,
wandb, optuna) happen only after the arguments are known to be valid, so ``--help`` and bad flags answer
instantly. Every usage error (a bad flag, key, value, file or sweep) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """argparse's own errors follow the house rule too: one line, exit 2 (not usage + error)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add_run_flags(p: argparse.ArgumentParser, presets, example: str) -> None:
    p.add_argument("--preset", default=None, choices=list(presets),
                   help=f"named starting config (default: {next(iter(presets))})")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="start from a saved config (a run's config.json) instead of a preset")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help=f"config overrides, e.g. --set {example} run.seed=1 (--show-config lists the keys)")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory, new or empty (default: runs/<experiment>-<preset>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue an interrupted run where it stopped, in its own dir")
    p.add_argument("--seeds", type=_seeds, default=None, metavar="0,1,2",
                   help="run once per seed into OUT/seed-N, then print mean +- sd (OUT/seeds.json)")
    p.add_argument("--data-dir", default=None, help="data root = --set data.data_dir=... "
                                                    "(default: $I2DL_DATA_DIR, else the cache dir)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")


def _seeds(text: str) -> list[int]:
    from experiments.seeds import parse_seeds

    return parse_seeds(text)


def _add_study_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Optuna study (instead of one run)")
    g.add_argument("--study", default=None, metavar="NAME|FILE",
                   help="search the space of sweeps/NAME.yaml (or a sweep file); --out is then the study dir "
                        "(default: runs/studies/<study>) and --set applies to every trial")
    g.add_argument("--trials", type=int, default=None,
                   help="finished (complete + pruned) trials the whole study aims for (default: the sweep's)")
    g.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage: an SQLAlchemy URL (postgresql://user:pw@host/db for many machines) or "
                        "journal:///path/file.log (default: $I2DL_STUDY_STORAGE, else sqlite in the study dir)")
    g.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="artifact store for the trials' checkpoints and figures (default: <study dir>/artifacts; "
                        "a folder all machines mount when they share a study)")
    g.add_argument("--workers", type=int, default=1, metavar="K",
                   help="worker processes on this machine, sharing the cores (and the GPUs, round-robin)")
    g.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    from ex08_autoencoder.config import PRESETS as EX08_PRESETS  # light: dataclasses only, no torch
    from ex08_autoencoder.config import STEPS
    from ex09_keypoints.config import PRESETS as EX09_PRESETS

    parser = Parser(prog="python -m experiments.run", description=__doc__.split("\n\n")[0].replace("``", ""))
    sub = parser.add_subparsers(dest="experiment", required=True,
                                metavar="{ex08,ex09,report,rerun,runs,export}")

    p = sub.add_parser("ex08", help="few-label MNIST: autoencoder pretraining -> transfer -> mean teacher",
                       description="Train an ex08 preset (all its steps, or one with --step) into one run dir.")
    _add_run_flags(p, EX08_PRESETS, "teacher.epochs=10 model.hidden=[1024,512]")
    p.add_argument("--recipe", dest="preset", choices=list(EX08_PRESETS), help=argparse.SUPPRESS)  # old name
    p.add_argument("--step", default=None, choices=list(STEPS),
                   help="run only this step, from the previous step's checkpoint in --out (= --set only_step=...)")
    _add_study_flags(p)

    p = sub.add_parser("ex09", help="facial keypoints: train (default) or --evaluate a checkpoint",
                       description="Train the ex09 keypoint regressor, or score a saved model on a CSV.")
    _add_run_flags(p, EX09_PRESETS, "train.epochs=30 model.widths=[32,64,128]")
    p.add_argument("--drop-bad-rows", action="store_true",
                   help="skip invalid CSV rows and report how many (= --set data.drop_bad_rows=true)")
    p.add_argument("--evaluate", type=Path, default=None, metavar="CHECKPOINT",
                   help="score this saved model (best.pt) instead of training; needs --csv")
    p.add_argument("--csv", type=Path, default=None, help="CSV in the course's format for --evaluate")
    _add_study_flags(p)

    p = sub.add_parser("report", help="summarise an Optuna study: Markdown + PNGs in the study dir",
                       description="Write report.md and PNGs (history, importances, intermediate values) for a "
                                   "study; --retrain-best retrains the best trial's config as a normal run.")
    p.add_argument("--study", required=True, metavar="NAME|FILE", help="the sweep the study came from (e.g. kp)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="the study's storage (default: $I2DL_STUDY_STORAGE, else sqlite in the study dir)")
    p.add_argument("--out", type=Path, default=None, help="the study dir (default: runs/studies/<study>)")
    p.add_argument("--retrain-best", action="store_true",
                   help="retrain the best trial's config (plus --set) into <study dir>/best-retrain")
    p.add_argument("--overwrite", action="store_true", help="with --retrain-best: replace an earlier retrain")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="with --retrain-best: overrides on top of the best config, e.g. train.epochs=70")
    p.add_argument("--data-dir", default=None, help="data root for --retrain-best")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="the study's artifact store (default: <study dir>/artifacts)")

    p = sub.add_parser("rerun", help="run a run dir's config again (same threads) and compare the figures",
                       description="Re-run what RUN_DIR's record says into a new dir and print the original and "
                                   "the new figures side by side; warns when the code or the data differ.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, help="the new run dir (default: RUN_DIR-rerun-<time>)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides on top of the recorded config")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")

    p = sub.add_parser("runs", help="list the runs under a folder, or --compare two",
                       description="A table of the run dirs under DIR (default runs/), from their files alone.")
    p.add_argument("root", type=Path, nargs="?", default=Path("runs"), metavar="DIR")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="config keys and figures that differ")
    p.add_argument("--json", action="store_true", help="the rows as one JSON list instead of the table")

    p = sub.add_parser("export", help="hand a run's model in: the course's folder layout + zip, checked",
                       description="Write RUN_DIR's model as the course's submission (exercise_code/, models/*.p, "
                                   "a zip), then load it the way the course does in a fresh interpreter and check "
                                   "it: same predictions, course score or accuracy, parameters, size.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished ex08 or ex09 run")
    p.add_argument("--out", type=Path, default=None, help="the submission folder (default: RUN_DIR/submission)")
    p.add_argument("--data-dir", default=None, help="data for the check (default: the run's)")
    return parser


def config_overrides(args) -> list[str]:
    """The flags that are config values, as overrides, then ``--set`` (which wins): the one place they meet."""
    flags = {"data.data_dir": args.data_dir, "data.drop_bad_rows": getattr(args, "drop_bad_rows", False) or None,
             "only_step": getattr(args, "step", None)}
    return [f"{key}={value}" for key, value in flags.items() if value] + args.overrides


def run(args) -> int:
    """One run of ex08 or ex09 (or ex09's ``--evaluate``)."""
    from common.config import ConfigError, apply_overrides, to_dict
    from experiments.registry import get_experiment

    exp = get_experiment(args.experiment)
    if args.resume is not None and args.config is None and not args.preset:
        # --resume RUN_DIR alone goes on with the config the run was started with (--set on top is checked: a
        # key that changes the computation is refused by the run's resume check)
        run_dir = args.resume if args.resume.is_dir() else args.resume.parent
        if (run_dir / "config.json").is_file():
            args.config = run_dir / "config.json"
    if args.config is not None:
        from experiments.registry import config_from_file

        if args.preset:
            raise ConfigError("--config and --preset both say where to start; give one")
        cfg = apply_overrides(config_from_file(exp, args.config), config_overrides(args))
    else:
        cfg = apply_overrides(exp.make_config(args.preset) if args.preset else exp.make_config(),
                              config_overrides(args))
    if args.show_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if getattr(args, "evaluate", None) is not None:
        return evaluate_ex09(args, cfg)
    if getattr(args, "csv", None) is not None:
        raise ConfigError("--csv goes with --evaluate CHECKPOINT; add --evaluate or drop --csv")
    step = getattr(cfg, "only_step", None)
    # Contradictory flags are refused before anything is touched.
    if step and args.out is None:
        raise ConfigError("--step needs --out DIR: the run dir holding the previous step's checkpoint")
    if args.overwrite and args.resume is not None:
        raise ConfigError("--overwrite and --resume contradict each other: --resume continues the run in its dir, "
                          "--overwrite deletes it; give one (nothing was touched)")
    if args.overwrite and step not in (None, "pretrain"):
        raise ConfigError(f"--step {step} goes on from the earlier steps' checkpoints in --out, which --overwrite "
                          "would delete; drop --overwrite (nothing was touched)")
    if args.seeds and step:
        raise ConfigError("--seeds runs whole presets: drop --step")
    from common.rundir import default_run_dir
    from common.run_files import check_replaceable
    from common.signals import exit_code, signal_name

    resume = args.resume
    if args.out:
        out = args.out
    elif resume is not None:  # a run goes on in its own dir
        out = resume if resume.is_dir() else resume.parent
    else:
        out = default_run_dir(f"{exp.name}-{cfg.preset}")
    if args.overwrite:  # refused now if it is not ours; replaced only after the run's own checks pass
        check_replaceable(out)
    try:
        if args.seeds:
            from experiments.seeds import format_spread, run_seeds

            result = run_seeds(exp, cfg, out, args.seeds, progress=not args.no_progress, overwrite=args.overwrite,
                               resume=resume is not None)
            print(f"runs: {out}/seed-N; {out / 'seeds.json'}")
            print(f"{len(args.seeds)} seeds: {format_spread(result)}")
            print(json.dumps({k: {m: f[m] for m in ('mean', 'sd', 'min', 'max')}
                              for k, f in result["figures"].items()}))
            return 0
        summary = exp.train(cfg, out, resume=resume, overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (common.signals)
        flags = ["--resume", str(out)] if args.seeds else exp.continue_flags(cfg, out)
        again = flags or ["--out", str(out), "--overwrite"]  # --resume RUN_DIR names the dir itself
        print(f"interrupted ({signal_name(e)}): {out} keeps what finished; " + (
              "continue it with: " if flags else "nothing finished to continue; start again with: ")
              + command_with(again), file=sys.stderr)
        return exit_code(e)
    print(f"run dir: {out}")
    for step, r in summary.get("steps", {}).items():
        print(f"  {step:9s} {r['wall_s']:6.0f} s  " + "  ".join(f"{k} {r[k]:.4g}" for k in sorted(r)
                                                                  if "/" in k and isinstance(r[k], float)))
    headline = {k: summary[k] for k in exp.headline if k in summary}
    print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in headline.items()))
    print(json.dumps(headline))
    return 0


def command_with(flags: list[str]) -> str:
    """This process's command line with ``flags`` replacing its own ``--out``/``--resume``/``--step``/
    ``--overwrite``: what to type to continue (or redo) the run."""
    import shlex

    from common.record import COMMAND

    argv, kept, skip = (COMMAND or ["python", "-m", "experiments.run", *sys.argv[1:]])[3:], [], False
    valued = {"--out", "--resume", "--step"}
    for a in argv:
        if skip:
            skip = False
        elif a in valued:
            skip = True
        elif a == "--overwrite" or a.split("=", 1)[0] in valued:
            continue
        else:
            kept.append(a)
    return shlex.join(["python", "-m", "experiments.run", *kept, *flags])


def evaluate_ex09(args, cfg) -> int:
    from common.config import ConfigError

    if args.csv is None:
        raise ConfigError("--evaluate needs --csv FILE (a CSV in the course's format)")
    from ex09_keypoints.data import CourseDataset, load_split, report_dropped
    from ex09_keypoints.evaluate import course_score, evaluate_split
    from ex09_keypoints.train import TEST_TIME_KEYS, load_model

    keys = [o.split("=", 1)[0] for o in args.overrides if o.startswith("model.")]
    test_time = {k.split(".", 1)[1]: getattr(cfg.model, k.split(".", 1)[1]) for k in keys if k in TEST_TIME_KEYS}
    model = load_model(args.evaluate, test_time=test_time)  # loaded once; a wrong file is the first thing to say
    weights = [k for k in keys if k not in TEST_TIME_KEYS]
    if weights:
        raise ConfigError(f"--evaluate scores the saved model as it is: --set {weights[0]} does not apply (only the "
                          f"test-time settings {', '.join(TEST_TIME_KEYS)} do)")
    split = load_split(args.csv, cfg.data.drop_bad_rows)
    report_dropped({"csv": split})
    score = course_score(model, CourseDataset(split))
    detail = evaluate_split(model, split)
    print(f"{args.csv}: {len(split)} images" + (f" ({split.dropped} bad rows dropped)" if split.dropped else ""))
    print(f"score (course, batch size 1): {score:.2f}   RMSE {detail['rmse_px']:.3f} px")
    for name, err in detail["rmse_px_per_keypoint"].items():
        print(f"  {name:26s} {err:6.2f} px")
    print(json.dumps({"score": score, "rmse_px": detail["rmse_px"], "n_images": len(split),
                      "dropped_rows": split.dropped, "rmse_px_per_keypoint": detail["rmse_px_per_keypoint"]}))
    return 0


def study(args) -> int:
    from common.config import ConfigError
    from studies.workers import run_study

    given = [flag for flag, value in (("--preset", args.preset), ("--show-config", args.show_config),
                                      ("--overwrite", args.overwrite), ("--seeds", args.seeds),
                                      ("--config", args.config),
                                      ("--step", getattr(args, "step", None)),
                                      ("--resume", args.resume),
                                      ("--evaluate", getattr(args, "evaluate", None))) if value]
    if given:
        raise ConfigError(f"{given[0]} does not apply to --study: the sweep file's 'preset' and 'fixed' "
                          "settings (and --set, for every trial) decide what each trial runs")
    return run_study(args.experiment, args.study, config_overrides(args), out=args.out, storage=args.storage,
                     trials=args.trials, timeout=args.timeout, workers=args.workers,
                     worker_index=args.worker_index, worker_threads=args.worker_threads, artifacts=args.artifacts)


def report(args) -> int:
    from studies.report import report_study

    overrides = ([f"data.data_dir={args.data_dir}"] if args.data_dir else []) + args.overrides
    return report_study(args.study, overrides, out=args.out, storage=args.storage, retrain=args.retrain_best,
                        overwrite=args.overwrite, progress=not args.no_progress, artifacts=args.artifacts)


def export(args) -> int:
    from experiments.registry import load_run

    exp, cfg = load_run(args.run_dir)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    out = args.out or args.run_dir / "submission"
    code, result = exp.export(cfg, args.run_dir, out)
    print(f"submission: {out}  (zip: {result['zip']})")
    if "error" in result:
        print(f"  the course's way of loading it fails: {result['error']}")
    else:
        figures = {k: result[k] for k in ("score", "test100_acc", "test10k_acc") if k in result}
        print("  " + "  ".join(f"{k} {v:.4g}" for k, v in figures.items())
              + f"  params {result['params']:,}  {result['size_mb']:.2f} MB  max |diff| {result['max_abs_diff']:.2g}")
    for check, ok in result["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    print(f"  zip holds: {', '.join(result.get('files', []))}")
    mark = result.get("pass_mark")
    if mark and not result["passes"]:
        print(f"does not pass: {mark['metric']} {mark['value']:.4g} is below the course's mark of {mark['bar']:g}",
              file=sys.stderr)
    print(json.dumps(result))
    return code


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a full disk or quota, a file-size limit (RLIMIT_FSIZE)
MAX_MESSAGE = 4000  # characters of an error line (the list of valid keys fits): a huge quoted value must not flood it


def one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters)"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from common import record
    from common.errors import ConfigError, DataError
    from common.secrets import redact_argv
    from common.signals import raise_on_sigterm

    raise_on_sigterm()  # SIGTERM ends a run or a study as Ctrl-C does (common/signals.py)
    # Whatever records the command line (run.json, the artifact store, W&B's metadata) sees no password.
    sys.argv[1:] = redact_argv(sys.argv[1:])
    record.COMMAND = redact_argv(["python", "-m", "experiments.run",
                                  *(sys.argv[1:] if argv is None else map(str, argv))])
    try:
        if args.experiment == "report":
            return report(args)
        if args.experiment == "export":
            return export(args)
        if args.experiment in ("rerun", "runs"):
            from experiments import runs

            if args.experiment == "rerun":
                return runs.rerun(args.run_dir, args.out, args.overrides, progress=not args.no_progress)
            return runs.compare(*args.compare) if args.compare else runs.print_runs(args.root, args.json)
        return study(args) if args.study else run(args)
    except (ConfigError, DataError) as e:  # the user can fix these: one line, exit 2
        kind = "data error" if isinstance(e, DataError) else "error"
        print(one_line(f"{kind}: {e}"), file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        print(one_line(f"error: cannot write {e.filename or 'a file'}: {e.strerror}. Free some space (or give "
                       "--out on another disk); an interrupted run continues with --resume RUN_DIR"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
