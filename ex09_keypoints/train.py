"""Train a keypoint regressor: the whole loop, top to bottom.

Data lives on the device as uint8 tensors; each step indexes a batch, augments it in one batched affine warp
(points follow), and takes an AdamW step on a per-step cosine schedule. An EMA of the weights is evaluated
every epoch with the batched score; the best EMA weights are checkpointed. At the end the best model is scored
with the course's exact batch-size-1 function, plotted, and summarised.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from common import checkpoint
from common.atomic import atomic_torch_save
from common.augment import augment_batch
from common.config import to_dict
from common.device import autocast
from common.ema import make_ema
from common.errors import ConfigError
from common.limits import PASS_MARKS
from common.optim import optimizer_step, param_groups
from common.paths import resolve_data_dir
from common.progress import EpochBar
from common.record import data_record, start_record
from common.run_config import start_run
from common.rundir import RunDir, check_not_complete
from common.schedules import cosine_scheduler
from common.seed import rng_state, set_rng_state
from common.timing import since_process_start
from common.tracking import Tracker, open_tracker
from ex09_keypoints.config import KeypointsConfig, is_eval_epoch, make_config
from ex09_keypoints.data import FLIP_PERMUTATION, KEYPOINT_GRID_OFFSET, load_keypoints, report_dropped
from ex09_keypoints.evaluate import evaluate_course_exact, evaluate_split
from ex09_keypoints.models import build_model
from ex09_keypoints.saved import STATE_FORMAT, load_model, load_training_state, save_best

PASS_SCORE = PASS_MARKS["ex09"][1]  # the course's pass mark: the run records when it was first reached


class NonFiniteLossError(FloatingPointError):
    """Training diverged (NaN/inf loss); a study prunes such a trial."""


def wing_loss(pred, target, w: float, eps: float) -> torch.Tensor:
    """Wing loss (Feng et al., CVPR 2018), mean over coordinates: ``w * ln(1 + |d| / eps)`` for ``|d| < w``,
    ``|d| - C`` beyond, with ``C = w - w ln(1 + w / eps)`` joining the two pieces continuously. The log piece
    keeps a large gradient on small and medium errors, where MSE's gradient vanishes."""
    d = (pred - target).abs()
    c = w - w * math.log1p(w / eps)
    return torch.where(d < w, w * torch.log1p(d / eps), d - c).mean()


def regression_loss(pred, target, cfg) -> torch.Tensor:
    if cfg.loss == "mse":
        return F.mse_loss(pred, target)
    if cfg.loss == "l1":
        return F.l1_loss(pred, target)
    if cfg.loss == "wing":  # widths in pixels; coordinates are normalised by 48 px
        return wing_loss(pred, target, cfg.wing_w_px / 48.0, cfg.wing_eps_px / 48.0)
    return F.smooth_l1_loss(pred, target, beta=cfg.smooth_l1_beta)


def make_swa(eval_model, cfg) -> tuple:
    """The uniform weight average ``train.swa_from`` asks for and the first epoch it takes, or (None, None).

    It averages the evaluated weights (the EMA's when there is one) once per epoch, and averages BatchNorm's
    running statistics with them (``use_buffers``) instead of re-estimating them in an extra pass over the data
    (``swa_utils.update_bn``), as the EMA already does: snapshots of one run's last epochs are close enough
    that the mean of their statistics is near the statistics of their mean.
    """
    if cfg.swa_from <= 0:
        return None, None
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(eval_model, use_buffers=True), math.ceil(cfg.swa_from * cfg.epochs)


def train_one_epoch(model, optimizer, scheduler, ema, images, points, cfg: KeypointsConfig, generator,
                    steps: int) -> float:
    """``steps`` optimizer steps over a fresh permutation of (uint8 images, points); returns the mean loss.

    Everything stays on the device: index a batch, augment it in one batched warp, step, update the EMA.
    """
    model.train()
    device = images.device
    members = cfg.model.members  # each member gets its own augmentation draws of the same images
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    bs = cfg.train.batch_size
    order = torch.randperm(images.shape[0], generator=generator, device=device)
    loss_sum = torch.zeros((), device=device)
    for step in range(steps):
        idx = order[step * bs:(step + 1) * bs]
        x, y = images[idx].float().div_(255.0), points[idx]
        if members > 1:
            x, y = x.repeat(members, 1, 1, 1), y.repeat(members, 1, 1)
        x, y = augment_batch(x, y, cfg.augment, FLIP_PERMUTATION, generator=generator,
                             point_offset=KEYPOINT_GRID_OFFSET)
        x = x.contiguous(memory_format=memory_format)
        with autocast(device, cfg.run.amp):
            pred = model.member_predictions(x).view(-1, 15, 2)
        loss = regression_loss(pred.float(), y, cfg.train)
        optimizer_step(model, optimizer, loss, cfg.train.grad_clip, scheduler, ema)
        loss_sum += loss.detach()
    return (loss_sum / steps).item()  # one device sync per epoch, not per step


def train(cfg: KeypointsConfig, out_dir: str | Path, *, resume: str | Path | None = None,
          overwrite: bool = False, on_epoch: Callable[[int, dict], None] | None = None,
          tracker: Tracker | None = None, progress: bool = True) -> dict:
    """Train with ``cfg``, writing everything into ``out_dir``; returns the summary dict.

    ``resume``: a run's ``last.pt`` to continue from. ``overwrite``: replace the run in ``out_dir`` (only once
    the config, the checkpoint and the data have been checked). ``on_epoch(epoch, row)`` is called after each evaluation
    (a study reports ``row["val/score"]`` to its pruner there and may raise to stop the run). ``tracker``: log
    into this W&B run and leave finishing it to the caller (a study trial); by default the run opens and
    closes its own.
    """
    cfg.validate()
    t_train = time.perf_counter()
    state = load_training_state(resume, cfg) if resume else None  # a wrong file stops us before the data loads
    if resume:
        check_not_complete(out_dir, lambda summary: summary.get("epochs", 0) >= cfg.train.epochs)
    checkpoint.check_model_size(lambda: build_model(cfg.model))  # before a huge config allocates anything
    device, threads = start_run(cfg.run)
    # The data is read (found, headers and rows checked) before the run dir is touched: a mistyped --data-dir
    # must not cost the run that --overwrite would replace.
    data = load_keypoints(cfg.data.data_dir, cfg.data.drop_bad_rows)
    with RunDir(out_dir, cfg, reuse=resume is not None, replace=overwrite) as run, \
            open_tracker(cfg.track, to_dict(cfg), run.path, tracker, name=cfg.track.name or run.path.name,
                         job_type="ex09-train", run_id=run.previous.get("wandb", {}).get("id")) as tracker:
        run.record(**start_record(cfg, make_config, threads, device, run / "code.patch"), wandb=tracker.info())
        run.record(data=data_record(resolve_data_dir(cfg.data.data_dir), [s.source for s in data.values()]))
        report_dropped(data, run.path)
        train_images, train_points = data["train"].images.to(device), data["train"].keypoints.to(device)
        val = data["val"]
        n_train = train_images.shape[0]
        if cfg.train.batch_size > n_train:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the {n_train} training "
                              "images; lower it")

        model = build_model(cfg.model).to(device)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        n_params = checkpoint.check_param_limit(model)
        optimizer = torch.optim.AdamW(param_groups(model, cfg.train.lr, cfg.train.weight_decay), lr=cfg.train.lr)
        steps_per_epoch = max(1, n_train // cfg.train.batch_size)  # drop the ragged last batch (BN statistics)
        ema = make_ema(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        eval_model = ema.module if ema is not None else model
        swa, swa_start = make_swa(eval_model, cfg.train)
        # The cosine spans all epochs, or with swa_lr ends at swa_from and holds there (the cosine stays at its
        # last value past its own length).
        hold = swa is not None and cfg.train.swa_lr > 0
        scheduler = cosine_scheduler(optimizer, steps_per_epoch * (swa_start if hold else cfg.train.epochs),
                                     round(cfg.train.warmup_epochs * steps_per_epoch),
                                     cfg.train.swa_lr if hold else cfg.train.min_lr_ratio)
        generator = torch.Generator(device=device).manual_seed(cfg.run.seed)

        start_epoch, best, time_to_pass = 0, {"val/score": -math.inf, "epoch": -1}, None
        if state is not None:  # go on with exactly the computation the run was doing
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            if swa is not None and state.get("swa") is not None:
                swa.load_state_dict(state["swa"])
            generator.set_state(state["generator"])
            set_rng_state(state["rng"])
            start_epoch, best, time_to_pass = state["epoch"] + 1, state["best"], state["time_to_pass"]
            run.keep_metrics(lambda row: row["epoch"] <= state["epoch"])  # epochs after last.pt come again
            print(f"[ex09] resumed from {resume} at epoch {start_epoch}", file=sys.stderr)

        tracker.define_metric("val/score", summary="max")
        tracker.define_metric("train/loss", summary="min")
        tracker.define_metric("val/score_swa", summary="max")
        for m in [eval_model] + ([swa.module] if swa is not None else []):
            m.shift_tta = False  # per-epoch scores without the shifted views; best.pt has them
        epochs_run = start_epoch
        bar = EpochBar(range(start_epoch, cfg.train.epochs), "ex09 epochs", progress)
        for epoch in bar:
            train_loss = train_one_epoch(model, optimizer, scheduler, ema, train_images, train_points, cfg,
                                         generator, steps_per_epoch)
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(f"epoch {epoch}: training loss is {train_loss}; lower train.lr")
            epochs_run = epoch + 1
            if swa is not None and epoch >= swa_start:
                swa.update_parameters(eval_model)

            out_of_time = cfg.train.time_limit_s > 0 and time.perf_counter() - t_train > cfg.train.time_limit_s
            if not (is_eval_epoch(epoch, cfg.train) or out_of_time):
                continue
            val_metrics = evaluate_split(eval_model, val, device, cfg.train.channels_last)
            row = {"epoch": epoch, "train/loss": train_loss, "val/score": val_metrics["score"],
                   "val/rmse_px": val_metrics["rmse_px"], "lr": optimizer.param_groups[0]["lr"]}
            candidates = {"val/score": eval_model}  # the weights this evaluation could checkpoint
            if swa is not None and epoch >= swa_start:
                row["val/score_swa"] = evaluate_split(swa.module, val, device, cfg.train.channels_last)["score"]
                candidates["val/score_swa"] = swa.module
            elapsed = since_process_start()
            run.log_metrics({**row, "elapsed_s": elapsed})
            tracker.log(row, step=epoch)
            if time_to_pass is None and row["val/score"] >= PASS_SCORE:
                time_to_pass = elapsed
            key = max(candidates, key=row.get)
            if row[key] > best["val/score"]:
                weights = "swa" if key == "val/score_swa" else "ema" if ema is not None else "model"
                best = {"val/score": row[key], "epoch": epoch, "weights": weights}
                save_best(candidates[key], cfg, run / "best.pt", epoch=epoch, val_score=row[key], weights=weights)
            atomic_torch_save(
                {"format": STATE_FORMAT, "config": to_dict(cfg), "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None,
                 "swa": swa.state_dict() if swa is not None else None, "generator": generator.get_state(),
                 "rng": rng_state(), "epoch": epoch, "best": best, "time_to_pass": time_to_pass}, run / "last.pt")
            bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{row['val/score']:.0f}", best=f"{best['val/score']:.0f}")
            if on_epoch is not None:
                on_epoch(epoch, row)
            if out_of_time:
                print(f"[ex09] time limit {cfg.train.time_limit_s:.0f}s reached after epoch {epoch}", file=sys.stderr)
                break

        # Final figures come from the best checkpoint, scored exactly as the course does.
        best_model = load_model(run / "best.pt")
        final = evaluate_split(best_model, val)
        course = evaluate_course_exact(best_model, val)
        summary = {
            "val/score": course, "val/score_batched": final["score"], "val/rmse_px": final["rmse_px"],
            "val/rmse_px_per_keypoint": final["rmse_px_per_keypoint"], "best_epoch": best["epoch"],
            "best_weights": best.get("weights"),
            "epochs": epochs_run, "params": n_params, "model_bytes": (run / "best.pt").stat().st_size,
            "wall_s": time.perf_counter() - t_train, "since_process_start_s": since_process_start(),
            "time_to_pass_s": time_to_pass, "threads": threads, "device": str(device),
            "checkpoint": str(run / "best.pt"),
        }
        from ex09_keypoints import plots
        try:
            summary["figures"] = [str(p) for p in (plots.keypoints_grid(best_model, val, run / "val_keypoints.png"),
                                                   plots.learning_curves(run / "metrics.jsonl", run / "curves.png"))]
            for p in summary["figures"]:
                tracker.log_image(Path(p).stem, p)
        except Exception as e:  # a plotting problem must not lose a finished training
            print(f"[ex09] plotting failed: {e}", file=sys.stderr)
        if tracker.run is not None:  # the best model as an artifact, every val face in a table
            t_log = time.perf_counter()
            headline = {k: summary[k] for k in ("val/score", "val/rmse_px", "params", "best_epoch")}
            tracker.log_model(run / "best.pt", f"ex09-{cfg.track.name or run.path.name}", headline)
            tracker.log_table("val/faces", *plots.faces_table(best_model, val))
            summary["wandb_artifacts_s"] = time.perf_counter() - t_log
        run.write_summary(summary)
        tracker.summary({k: summary[k] for k in ("val/score", "val/rmse_px", "params")})
    return summary

