"""``python -m experiments.run {<exercise>,report,rerun,runs,export,tutorial} ... [--set key=value ...] [--out DIR]``

Parse -> config (preset, then the flags that are config values, then ``--set``) -> dispatch: one run, an Optuna
study (``--study kp``) whose trials are runs with overrides, or a study's ``report``. Heavy imports (torch,
wandb, optuna) happen only after the arguments are known to be valid, so ``--help`` and bad flags answer
instantly. Every usage error (a bad flag, key, value, file or sweep) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import errno
import json
import sys


def config_overrides(exp, args) -> list[str]:
    """The flags that are config values (``--data-dir``, the exercise's own), as overrides, then ``--set`` (which
    wins): the one place they meet."""
    flags = {"data.data_dir": args.data_dir, **exp.flag_overrides(args)}
    # `is not None`: a flag that sets False (--no-cache: cache_steps=False) is a value too; only an absent one is not
    return [f"{key}={value}" for key, value in flags.items() if value is not None] + args.overrides


def run(args) -> int:
    """One run of an exercise (or the exercise's own command instead, see Experiment.command)."""
    from common.config import apply_overrides, to_dict
    from common.errors import ConfigError
    from common.files.json_files import read_json
    from exercises import get_experiment

    exp = get_experiment(args.experiment)
    if args.resume is not None and not args.seeds:
        from common.run.run_files import is_seeds_dir

        if is_seeds_dir(args.resume):
            seeds = (read_json(args.resume / "seeds.json") or {}).get("seeds") or []
            raise ConfigError(f"--resume {args.resume} is a --seeds dir: add --seeds "
                              f"{','.join(map(str, seeds)) or '0,1,2'} (the seeds it was started with)")
    if args.config is not None and args.config.is_dir():  # a run dir, as --resume, --enqueue and rerun take
        args.config = args.config / "config.json"
    if args.resume is not None and args.config is None and not args.preset:
        # --resume RUN_DIR alone goes on with the config the run was started with (--set on top is checked: a
        # key that changes the computation is refused by the run's resume check)
        run_dir = args.resume if args.resume.is_dir() else args.resume.parent
        if (run_dir / "config.json").is_file():
            args.config = run_dir / "config.json"
    if args.config is not None:
        from exercises import config_from_file

        cfg = apply_overrides(config_from_file(exp, args.config, args.preset), config_overrides(exp, args))
    else:
        cfg = apply_overrides(exp.make_config(args.preset) if args.preset else exp.make_config(),
                              config_overrides(exp, args))
    if args.show_config:
        if args.docs:
            from common.config_docs import format_docs

            print(format_docs(cfg))
        else:
            print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if args.docs:
        raise ConfigError("--docs goes with --show-config (every key with its value, type and docstring)")
    code = exp.command(args, cfg)  # an exercise's own command instead of training
    if code is not None:
        return code
    # Contradictory flags are refused before anything is touched.
    if args.overwrite and args.resume is not None:
        raise ConfigError("--overwrite and --resume contradict each other: --resume continues the run in its dir, "
                          "--overwrite deletes it; give one (nothing was touched)")
    exp.check_flags(args, cfg, False)
    from common.run.run_files import check_replaceable
    from common.run.rundir import default_run_dir
    from common.run.signals import exit_code, interrupts_unwrapped, signal_name

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
        with interrupts_unwrapped():  # an interrupt that Python wrapped is still one
            if args.seeds:
                from common.run.seeds import format_spread, run_seeds

                result = run_seeds(exp, cfg, out, args.seeds, progress=not args.no_progress, overwrite=args.overwrite,
                                   resume=resume is not None)
                print(f"runs: {out}/seed-N; {out / 'seeds.json'}")
                print(f"{len(args.seeds)} seeds: {format_spread(result)}")
                print(json.dumps({k: {m: f[m] for m in ('mean', 'sd', 'min', 'max')}
                                  for k, f in result["figures"].items()}))
                return 0
            summary = exp.train(cfg, out, resume=resume, overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (common.run.signals)
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

    from common.run.record import COMMAND

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


def study(args) -> int:
    from common.errors import ConfigError
    from exercises import get_experiment
    from studies.workers import run_study

    exp = get_experiment(args.experiment)
    given = [flag for flag, value in (("--preset", args.preset), ("--show-config", args.show_config),
                                      ("--overwrite", args.overwrite), ("--seeds", args.seeds),
                                      ("--config", args.config), ("--resume", args.resume)) if value]
    if given:
        raise ConfigError(f"{given[0]} does not apply to --study: the sweep file's 'preset' and 'fixed' "
                          "settings (and --set, for every trial) decide what each trial runs")
    exp.check_flags(args, None, True)
    return run_study(args.experiment, args.study, config_overrides(exp, args), out=args.out, storage=args.storage,
                     trials=args.trials, timeout=args.timeout, workers=args.workers,
                     worker_index=args.worker_index, worker_threads=args.worker_threads, artifacts=args.artifacts,
                     enqueue=args.enqueue or [], study_name=args.study_name)


def report(args) -> int:
    import shlex

    from common.run import record
    from common.run.signals import exit_code, interrupts_unwrapped, signal_name
    from studies.report import report_study

    overrides = ([f"data.data_dir={args.data_dir}"] if args.data_dir else []) + args.overrides
    try:
        with interrupts_unwrapped():
            return report_study(args.study, overrides, out=args.out, storage=args.storage, retrain=args.retrain_best,
                                overwrite=args.overwrite, progress=not args.no_progress, artifacts=args.artifacts,
                                confirm=args.confirm, seeds=args.seeds, workers=args.workers,
                                worker_index=args.worker_index, worker_threads=args.worker_threads,
                                study_name=args.study_name)
    except KeyboardInterrupt as e:  # a retrain or a confirmation: its finished runs are kept
        print(f"interrupted ({signal_name(e)}): finished runs are kept; go on with: {shlex.join(record.COMMAND)}"
              if args.confirm else f"interrupted ({signal_name(e)})", file=sys.stderr)
        return exit_code(e)


def export(args) -> int:
    """One run's model as the course's submission; several runs (or a --seeds dir) as one averaging model."""
    from common.errors import ConfigError
    from common.files.json_files import read_json
    from common.run.run_files import is_seeds_dir
    from exercises import load_run

    runs = []
    for path in args.run_dir:  # a --seeds dir stands for its seed runs
        seeds = (read_json(path / "seeds.json") or {}).get("seeds", []) if is_seeds_dir(path) else None
        runs += [path / f"seed-{s}" for s in seeds] if seeds is not None else [path]
    loaded = [load_run(run) for run in runs]
    exp, cfg = loaded[0]
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    if len(runs) > 1:
        if any(e.name != exp.name for e, _ in loaded):
            raise ConfigError("export: the runs are of different exercises; an ensemble is of one exercise's runs")
        if exp.ensemble is None:
            raise ConfigError(f"export: {exp.name} exports one run at a time; give one run dir")
        if args.out is None and len(args.run_dir) > 1:
            raise ConfigError("export of several run dirs: give --out DIR for the ensemble's submission")
        out = args.out or args.run_dir[0] / "submission"
        code, result = exp.ensemble(cfg, runs, out)
    else:
        out = args.out or runs[0] / "submission"
        code, result = exp.export(cfg, runs[0], out)
    print(f"submission: {out}  (zip: {result['zip']})")
    if "members_mean_val_score" in result and "score" in result:
        print(f"  ensemble of {len(runs)} runs: score {result['score']:.4g}; the runs alone: "
              + ", ".join(f"{v:.4g}" for v in result["members_val_score"])
              + f" (mean {result['members_mean_val_score']:.4g})")
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
    from experiments.parser import build_parser

    args = build_parser().parse_args(argv)
    from common.errors import ConfigError, DataError
    from common.run import record
    from common.run.secrets import redact_argv
    from common.run.signals import raise_on_sigterm

    if getattr(args, "data_dir", None) == "":  # --data-dir "$UNSET": not the same as leaving the flag out
        print("error: --data-dir is empty (an unset shell variable?); give the data root, or leave the flag out "
              "to use $I2DL_DATA_DIR or the cache dir", file=sys.stderr)
        return 2
    raise_on_sigterm()  # SIGTERM ends a run or a study as Ctrl-C does (common/run/signals.py)
    # Whatever records the command line (run.json, the artifact store, W&B's metadata) sees no password.
    sys.argv[1:] = redact_argv(sys.argv[1:])
    record.COMMAND = redact_argv(["python", "-m", "experiments.run",
                                  *(sys.argv[1:] if argv is None else map(str, argv))])
    try:
        if args.experiment == "report":
            return report(args)
        if args.experiment == "export":
            return export(args)
        if args.experiment == "dashboard":
            from studies.dashboard import serve

            return serve(args.study, out=args.out, storage=args.storage, artifacts=args.artifacts, host=args.host,
                         port=args.port, study_name=args.study_name)
        if args.experiment == "tutorial":
            from tutorial.run import main as tutorial

            return tutorial(args)
        if args.experiment in ("rerun", "runs"):
            from experiments import runs

            if args.experiment == "rerun":
                return runs.rerun(args.run_dir, args.out, args.overrides, progress=not args.no_progress)
            return runs.compare(*args.compare) if args.compare else runs.print_runs(args.root, args.json)
        if not args.study:
            given = [flag for flag, value in (("--trials", args.trials), ("--timeout", args.timeout),
                                              ("--storage", args.storage), ("--artifacts", args.artifacts),
                                              ("--enqueue", args.enqueue), ("--workers", args.workers != 1),
                                              ("--study-name", args.study_name)) if value]
            if given:
                raise ConfigError(f"{given[0]} applies to a study only: add --study NAME, or drop it")
        return study(args) if args.study else run(args)
    except (ConfigError, DataError) as e:  # the user can fix these: one line, exit 2
        kind = "data error" if isinstance(e, DataError) else "error"
        print(one_line(f"{kind}: {e}"), file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            print(one_line(f"error: {e.filename or 'a path'}: file name too long (at most 255 bytes a name); choose "
                           "a shorter --out or path"), file=sys.stderr)
            return 2
        if e.errno not in DISK_FULL:
            raise
        print(one_line(f"error: cannot write {e.filename or 'a file'}: {e.strerror}. Free some space (or give "
                       "--out on another disk); an interrupted run continues with --resume RUN_DIR"), file=sys.stderr)
        return 2


def cli() -> None:
    """The ``i2dl`` console command (the same as ``python -m experiments.run``)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
