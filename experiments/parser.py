"""The command line's flags: each exercise's subcommand (the run flags, its own flags, the study flags) from
the exercise table, and the report, rerun, runs and export commands. Every usage error is one line, exit 2."""
from __future__ import annotations

import argparse
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
                   help="start from a config file: a run's config.json (or its run dir), or JSON/YAML giving some "
                        "keys (the others: its 'preset' key's values, else --preset's)")
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
    p.add_argument("--docs", action="store_true", help="with --show-config: each key's value, type and docstring")


def _seeds(text: str) -> list[int]:
    from common.run.seeds import parse_seeds

    return parse_seeds(text)


def _add_study_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Optuna study (instead of one run)")
    g.add_argument("--study", default=None, metavar="NAME|FILE",
                   help="search the space of sweeps/NAME.yaml (or a sweep file); --out is then the study dir "
                        "(default: runs/studies/<study>) and --set applies to every trial")
    g.add_argument("--study-name", default=None, metavar="NAME",
                   help="the study's name instead of the sweep's own: a new study of the same sweep (its dir: "
                        "runs/studies/NAME)")
    g.add_argument("--trials", type=int, default=None,
                   help="finished (complete + pruned) trials the whole study aims for (default: the sweep's)")
    g.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage: an SQLAlchemy URL (postgresql://user:pw@host/db for many machines) or "
                        "journal:///path/file.log (default: $I2DL_STUDY_STORAGE, else sqlite in the study dir)")
    g.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="artifact store for the trials' checkpoints and figures (default: <study dir>/artifacts; "
                        "a folder all machines mount when they share a study)")
    g.add_argument("--enqueue", type=Path, action="append", default=None, metavar="FILE",
                   help="run this config first (a config.json or a run dir, e.g. an earlier study's best trial); "
                        "repeatable; a config the study already ran is not queued again")
    g.add_argument("--workers", type=int, default=1, metavar="K",
                   help="worker processes on this machine, sharing the cores (and the GPUs, round-robin)")
    g.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)


DESCRIPTION = ("i2dl (or python -m experiments.run) {<exercise>,report,dashboard,rerun,runs,export,tutorial} ... "
               "[--set key=value ...] [--out DIR]")


def build_parser() -> argparse.ArgumentParser:
    from exercises import all_experiments  # light: the declarations and their config dataclasses, no torch
    from tutorial.flags import add_tutorial_parser  # light too

    experiments = all_experiments()
    commands = [e.name for e in experiments] + ["report", "dashboard", "rerun", "runs", "export", "tutorial"]
    prog = "i2dl" if Path(sys.argv[0]).name == "i2dl" else "python -m experiments.run"
    parser = Parser(prog=prog, description=DESCRIPTION)
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="{" + ",".join(commands) + "}")
    for exp in experiments:
        p = sub.add_parser(exp.name, help=exp.summary, description=exp.description)
        _add_run_flags(p, exp.presets, exp.example_overrides)
        exp.add_flags(p)
        _add_study_flags(p)

    p = sub.add_parser("report", help="summarise an Optuna study: Markdown + PNGs in the study dir",
                       description="Write report.md and PNGs (history, importances, intermediate values) for a "
                                   "study; --retrain-best retrains the best trial's config as a normal run, "
                                   "--confirm K confirms the top K on fresh seeds.")
    p.add_argument("--study", required=True, metavar="NAME|FILE", help="the sweep the study came from (e.g. kp)")
    p.add_argument("--study-name", default=None, metavar="NAME", help="the study's name, if not the sweep's own")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="the study's storage (default: $I2DL_STUDY_STORAGE, else sqlite in the study dir)")
    p.add_argument("--out", type=Path, default=None, help="the study dir (default: runs/studies/<study>)")
    p.add_argument("--retrain-best", action="store_true",
                   help="retrain the best trial's config (plus --set) into <study dir>/best-retrain")
    p.add_argument("--confirm", type=int, default=None, metavar="K",
                   help="train the top K trials and the preset again on --seeds, rank them by mean +- sd with the "
                        "paired difference to the preset, into <study dir>/confirm (resumable)")
    p.add_argument("--seeds", type=_seeds, default=None, metavar="0,1,2",
                   help="with --confirm: the seeds every candidate is trained with (default 0,1,2)")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="with --confirm: train the candidates in K processes on this machine, sharing the cores")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true", help="with --retrain-best: replace an earlier retrain")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="with --retrain-best or --confirm: overrides on top of each config, e.g. train.epochs=70")
    p.add_argument("--data-dir", default=None, help="data root for --retrain-best or --confirm")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="the study's artifact store (default: <study dir>/artifacts)")

    p = sub.add_parser("dashboard", help="browse a study (trials, curves, importances, artifacts) in a browser",
                       description="Serve a study's storage and artifact store with optuna-dashboard (the "
                                   "dashboard extra) and print its URL; Ctrl-C stops it.")
    p.add_argument("--study", required=True, metavar="NAME|FILE", help="the sweep the study came from (e.g. kp)")
    p.add_argument("--study-name", default=None, metavar="NAME", help="the study's name, if not the sweep's own")
    p.add_argument("--out", type=Path, default=None, help="the study dir (default: runs/studies/<study>)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="the study's storage (default: $I2DL_STUDY_STORAGE, else sqlite in the study dir)")
    p.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="the study's artifact store (default: <study dir>/artifacts)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")

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
    p.add_argument("run_dir", type=Path, nargs="+", metavar="RUN_DIR",
                   help="a finished run; several runs of one config, or a --seeds dir: one model averaging them")
    p.add_argument("--out", type=Path, default=None, help="the submission folder (default: RUN_DIR/submission)")
    p.add_argument("--data-dir", default=None, help="data for the check (default: the run's)")

    add_tutorial_parser(sub, _seeds)
    return parser
