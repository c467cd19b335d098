"""ex09 speed: the project's training loop vs a plain PyTorch reference loop, on the same model.

* project   : uint8 tensors resident on the device, batched on-device affine augmentation (points follow),
              channels_last, EMA -- ``ex09_keypoints.train.train_one_epoch``, the loop ``train()`` runs.
* reference : what a plain PyTorch script does -- a Dataset returning one sample, torchvision transforms v2
              per sample (RandomAffine + ColorJitter on the image and its KeyPoints, flip with left/right
              swap), a DataLoader collating batches, the same model/optimizer/loss in the default layout.
              Measured with 0 and 2 loader workers; the faster one counts.

* model step alone: forward + backward + step on one resident batch, the ceiling no loop can beat;
              ``max_attainable_ratio`` = ceiling / reference says how much a loop can gain on this model.

Both the default recipe's model and the quick preset's (3x fewer FLOPs, so the input pipeline weighs more).
Also (unless --skip-runs): time from process start to val score >= 100 (``--preset quick`` run in a fresh
process), and the default recipe's and the old one's (``--preset v1``) wall time and final val score, one after
the other in the same benchmark, with their ratio. Last line: one JSON object.

    python benchmarks/ex09_speed.py [--data-dir D] [--seconds 25] [--skip-runs]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def project_throughput(cfg, split, seconds: float) -> float:
    import torch

    from common.training.ema import make_ema
    from common.training.optim import param_groups
    from common.training.schedules import cosine_scheduler
    from ex09_keypoints.models import build_model
    from ex09_keypoints.train import train_one_epoch

    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = build_model(cfg.model).to(memory_format=fmt)
    opt = torch.optim.AdamW(param_groups(model, cfg.train.lr, cfg.train.weight_decay))
    sched = cosine_scheduler(opt, 10**6)
    ema = make_ema(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(0)
    steps = 8
    train_one_epoch(model, opt, sched, ema, split.images, split.keypoints, cfg, gen, 2)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        train_one_epoch(model, opt, sched, ema, split.images, split.keypoints, cfg, gen, steps)
        n += steps * cfg.train.batch_size
    return n / (time.perf_counter() - t0)


def compute_ceiling(cfg, split, seconds: float) -> float:
    """Forward + backward + AdamW step on one resident, pre-augmented batch, nothing else: no loop, data or
    augmentation can train faster than this, so ``ceiling / reference`` bounds the attainable ratio."""
    import torch

    from ex09_keypoints.models import build_model
    from ex09_keypoints.train import regression_loss

    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = build_model(cfg.model).to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    bs = cfg.train.batch_size
    x = (split.images[:bs].float() / 255.0).contiguous(memory_format=fmt)
    y = split.keypoints[:bs]
    n, t0 = 0, None
    for i in range(10**9):
        loss = regression_loss(model(x).view(-1, 15, 2), y, cfg.train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i == 2:
            t0 = time.perf_counter()
        elif t0 is not None:
            n += bs
            if time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0)


class ReferenceDataset:
    """One sample per __getitem__, transforms per sample: the textbook PyTorch input pipeline."""

    def __init__(self, split, cfg):
        import torch
        from torchvision.transforms import v2

        self.split, self.aug = split, cfg.augment
        self.transform = v2.Compose([
            v2.RandomAffine(degrees=self.aug.rotate_deg, translate=(self.aug.shift, self.aug.shift),
                            scale=(1 - self.aug.scale, 1 + self.aug.scale)),
            v2.ColorJitter(brightness=self.aug.brightness, contrast=self.aug.contrast),
        ])
        self.torch = torch

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        from torchvision import tv_tensors

        from ex09_keypoints.data import FLIP_PERMUTATION

        torch = self.torch
        image = tv_tensors.Image(self.split.images[i].float() / 255.0)
        px = (self.split.keypoints[i] + 1) * 48
        points = tv_tensors.KeyPoints(px, canvas_size=(96, 96))
        if self.aug.flip and torch.rand(()) < 0.5:
            image = tv_tensors.Image(image.flip(-1))
            points = tv_tensors.KeyPoints(torch.stack([97 - px[:, 0], px[:, 1]], -1)[list(FLIP_PERMUTATION)],
                                          canvas_size=(96, 96))
        image, points = self.transform(image, points)
        return image.as_subclass(torch.Tensor), points.as_subclass(torch.Tensor) / 48 - 1


def reference_throughput(cfg, split, seconds: float, workers: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    from ex09_keypoints.models import build_model
    from ex09_keypoints.train import regression_loss

    model = build_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    loader = DataLoader(ReferenceDataset(split, cfg), batch_size=cfg.train.batch_size, shuffle=True,
                        drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    model.train()
    n, t0, warm = 0, None, 2
    while True:
        for x, y in loader:
            loss = regression_loss(model(x).view(-1, 15, 2), y, cfg.train)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if warm > 0:
                warm -= 1
                if warm == 0:
                    t0 = time.perf_counter()
                continue
            n += x.shape[0]
            if time.perf_counter() - t0 >= seconds:
                return n / (time.perf_counter() - t0)


def run_cli(args: list[str], out: Path) -> dict:
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "experiments.run", "ex09", "--out", str(out), "--no-progress", *args],
                   cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    summary["process_wall_s"] = time.time() - t0
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seconds", type=float, default=25.0, help="measuring time per loop")
    ap.add_argument("--skip-runs", action="store_true", help="only the throughput comparison")
    ap.add_argument("--presets", nargs="+", default=["default", "quick"],
                    help="whose models to compare the loops on (the first one's figures are the top-level ones)")
    args = ap.parse_args()

    from common.run.device import set_threads
    from ex09_keypoints.config import make_config
    from ex09_keypoints.data import load_keypoints
    from ex09_keypoints.models import build_model

    threads = set_threads(0)
    split = load_keypoints(args.data_dir)["train"]
    result = {"threads": threads}
    for preset in args.presets:  # the first preset's figures are also the top-level ones
        cfg = make_config(preset)
        project = project_throughput(cfg, split, args.seconds)
        print(f"[{preset}] project loop: {project:.0f} img/s", flush=True)
        reference = {w: reference_throughput(cfg, split, args.seconds, w) for w in (0, 2)}
        for w, v in reference.items():
            print(f"[{preset}] reference loop, {w} workers: {v:.0f} img/s", flush=True)
        ceiling = compute_ceiling(cfg, split, args.seconds)
        best_ref = max(reference.values())
        print(f"[{preset}] model step alone: {ceiling:.0f} img/s -> ratio {project / best_ref:.2f} "
              f"(at most {ceiling / best_ref:.2f})", flush=True)
        figures = {"model_params": sum(p.numel() for p in build_model(cfg.model).parameters()),
                   "batch_size": cfg.train.batch_size, "project_img_s": round(project, 1),
                   "reference_img_s": {str(k): round(v, 1) for k, v in reference.items()},
                   "model_step_only_img_s": round(ceiling, 1),
                   "throughput_ratio": round(project / best_ref, 3),
                   "max_attainable_ratio": round(ceiling / best_ref, 3)}
        result.setdefault("preset", preset)
        for k, v in figures.items():
            result.setdefault(k, v)
        result[f"{preset}_model"] = figures
    if not args.skip_runs:
        data_args = ["--data-dir", args.data_dir] if args.data_dir else []
        with tempfile.TemporaryDirectory() as tmp:
            quick = run_cli(["--preset", "quick", *data_args], Path(tmp) / "quick")
            print(f"quick: val {quick['val/score']:.1f}, >=100 after {quick['time_to_pass_s']:.1f} s", flush=True)
            default = run_cli(data_args, Path(tmp) / "default")
            print(f"default: val {default['val/score']:.1f} in {default['process_wall_s']:.0f} s", flush=True)
            v1 = run_cli(["--preset", "v1", *data_args], Path(tmp) / "v1")
            print(f"v1: val {v1['val/score']:.1f} in {v1['process_wall_s']:.0f} s", flush=True)
        result.update({
            "quick_time_to_score_100_s": quick["time_to_pass_s"], "quick_val_score": quick["val/score"],
            "quick_process_wall_s": round(quick["process_wall_s"], 1),
            "default_process_wall_s": round(default["process_wall_s"], 1),
            "default_val_score": default["val/score"], "default_val_rmse_px": default["val/rmse_px"],
            "default_epochs": default["epochs"], "v1_process_wall_s": round(v1["process_wall_s"], 1),
            "v1_val_score": v1["val/score"],
            "default_vs_v1_wall_ratio": round(default["process_wall_s"] / v1["process_wall_s"], 3)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
