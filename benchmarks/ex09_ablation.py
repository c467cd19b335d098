"""ex09's knobs, one at a time, against a base preset at its own budget: each variant is the base plus a few
``--set`` overrides, trained as the user would train it, in a fresh process, one after another (never two at
once: two torch processes on 2 cores are 10-20x slower), on the same seed:

    python -m experiments.run ex09 [--preset P] --out DIR/<variant> --set run.seed=S <overrides>

    python benchmarks/ex09_ablation.py --data-dir ../shared/data [--seed 0] [--preset v3]
        [--variants default soft_argmax ...] [--keep DIR]

The base is the default preset unless ``--preset`` names another: the variants were written against ``v3``, so
some are the default already (``se``, ``soft_argmax``: the default has them) and measure nothing new on it.

Each row: the val score, pixels, parameters, epochs and wall time, and both against the default of the same
benchmark run (``score_vs_default``, ``wall_vs_default``). A finished variant in ``--keep`` is read, not retrained
(the command resumes). Last line: one JSON object."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": [],
    "soft_argmax": ["model.head=soft_argmax"],
    "soft_argmax_6x6": ["model.head=soft_argmax", "model.final_pool=false"],
    "soft_argmax_reg": ["model.head=soft_argmax", "model.final_pool=false", "train.heatmap_reg=0.1"],
    "loss_schedule": ["train.loss=smooth_l1", "train.mse_from=0.5"],
    "photometric": ["augment.gamma=0.3", "augment.noise=0.02", "augment.sharpen_p=0.2"],
    "residual": ["model.residual=true"],
    "se": ["model.se_ratio=0.25"],
    "blurpool": ["model.downsample=blurpool"],
}
"""Variant name -> overrides on the default preset (``--variant NAME=k=v,k=v`` adds one)."""


def run_variant(name: str, overrides: list[str], out: Path, data_dir: str | None, seed: int,
                preset: str | None = None) -> dict:
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        cmd = [sys.executable, "-m", "experiments.run", "ex09", *(["--preset", preset] if preset else []), "--out",
               str(out), "--no-progress", "--set", f"run.seed={seed}", *overrides]
        cmd += ["--data-dir", data_dir] if data_dir else []
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    s = json.loads(summary_path.read_text())
    return {"overrides": overrides, "val/score": s["val/score"], "val/rmse_px": s["val/rmse_px"],
            "params": s["params"], "epochs": s["epochs"], "wall_s": s["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default=None, help="the base preset of every variant (default: the default)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names of VARIANTS to run")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=K=V,K=V",
                        help="an extra variant: its name and its overrides, comma-separated")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and resume) the run dirs here")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants}
    for extra in args.variant:
        name, _, overrides = extra.partition("=")
        variants[name] = [o for o in overrides.split(",") if o]
    variants = {"default": [], **variants}  # the baseline of every ratio, always in the same run
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for name, overrides in variants.items():
            run_dir = root / "-".join([*([args.preset] if args.preset else []), name, f"seed{args.seed}"])
            results[name] = run_variant(name, overrides, run_dir, args.data_dir, args.seed, args.preset)
    base = results["default"]
    print(f"{'variant':18s} {'val score':>9s} {'x default':>9s} {'px':>5s} {'params':>9s} {'wall s':>7s} "
          f"{'x default':>9s}", file=sys.stderr)
    for name, r in results.items():
        r["score_vs_default"] = r["val/score"] / base["val/score"]
        r["wall_vs_default"] = r["wall_s"] / base["wall_s"]
        print(f"{name:18s} {r['val/score']:9.1f} {r['score_vs_default']:9.3f} {r['val/rmse_px']:5.2f} "
              f"{r['params']:9,d} {r['wall_s']:7.0f} {r['wall_vs_default']:9.2f}", file=sys.stderr)
    print(json.dumps({"seed": args.seed, "preset": args.preset or "default", "variants": results}))


if __name__ == "__main__":
    main()
