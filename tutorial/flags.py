"""The ``tutorial`` subcommand's flags (light: argparse only, so ``--help`` answers at once)."""
from __future__ import annotations

from pathlib import Path


def add_tutorial_parser(sub, seeds_type) -> None:
    p = sub.add_parser("tutorial", help="Tutorial 9's conv / batch-norm / dropout claims re-made: TUTORIAL.md",
                       description="Re-make each claim of the tutorial as an experiment on the real data (grid "
                                   "studies for the ablations) and write DIR/TUTORIAL.md with its figures; a "
                                   "re-run continues where it stopped.")
    p.add_argument("--seeds", type=seeds_type, default=[0, 1, 2], metavar="0,1,2", help="seeds of every grid cell")
    p.add_argument("--out", type=Path, default=None, help="the tutorial's dir (default: runs/tutorial)")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="worker processes for the grid studies")
    p.add_argument("--budget", default="quick", choices=["quick", "default"],  # tutorial.ablations.BUDGETS
                   help="quick-sized models (default) or the default ex09 recipe in every cell")
    p.add_argument("--ex08-run", type=Path, default=None, metavar="RUN_DIR",
                   help="a finished ex08 case-study run to report (default: train one, ~30 s)")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="ex09 overrides for every grid cell, on top of the budget")
    p.add_argument("--data-dir", default=None, help="data root (default: $I2DL_DATA_DIR, else the cache dir)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
