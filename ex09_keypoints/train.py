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

from common.config import to_dict
from common.errors import ConfigError
from common.files import checkpoint
from common.limits import PASS_MARKS
from common.run.device import autocast
from common.run.paths import resolve_data_dir
from common.run.record import data_record, start_record
from common.run.run_config import start_run
from common.run.rundir import RunDir, check_not_complete
from common.run.timing import since_process_start
from common.run.tracking import Tracker, open_tracker
from common.training.augment import augment_batch
from common.training.ema import make_ema
from common.training.loop import Candidate, fit
from common.training.optim import optimizer_step, param_groups
from common.training.schedules import cosine_scheduler
from common.training.training_state import TrainingState
from ex09_keypoints.config import KeypointsConfig, TrainConfig, is_eval_epoch, make_config
from ex09_keypoints.data import FLIP_PERMUTATION, IMAGE_SIZE, KEYPOINT_GRID_OFFSET, load_keypoints, report_dropped
from ex09_keypoints.evaluate import evaluate_course_exact, evaluate_split
from ex09_keypoints.exclude import read_excluded, without
from ex09_keypoints.models import build_model
from ex09_keypoints.saved import STATE_KIND, load_model, load_training_state, save_best

PASS_SCORE = PASS_MARKS["ex09"][1]  # the course's pass mark: the run records when it was first reached


def wing_loss(pred, target, w: float, eps: float) -> torch.Tensor:
    """Wing loss (Feng et al., CVPR 2018), mean over coordinates: ``w * ln(1 + |d| / eps)`` for ``|d| < w``,
    ``|d| - C`` beyond, with ``C = w - w ln(1 + w / eps)`` joining the two pieces continuously. The log piece
    keeps a large gradient on small and medium errors, where MSE's gradient vanishes."""
    d = (pred - target).abs()
    c = w - w * math.log1p(w / eps)
    return torch.where(d < w, w * torch.log1p(d / eps), d - c).mean()


def regression_loss(pred, target, cfg, mse: bool = False) -> torch.Tensor:
    """``cfg.loss`` (``mse``: MSE whatever it says, the schedule's second part) between (N,15,2) points."""
    if mse or cfg.loss == "mse":
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
                    steps: int, epoch: int = 0) -> float:
    """``steps`` optimizer steps over a fresh permutation of (uint8 images, points); returns the mean loss.

    Everything stays on the device: index a batch, augment it in one batched warp, step, update the EMA.
    """
    mse = epoch >= cfg.train.mse_from * cfg.train.epochs  # the loss schedule's second part
    sigma2 = (cfg.train.heatmap_sigma_px / (IMAGE_SIZE / 2)) ** 2
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
        loss = regression_loss(pred.float(), y, cfg.train, mse)
        if cfg.train.heatmap_reg > 0:  # DSNT's variance regulariser, as the paper writes it (normalised units):
            # dividing by sigma^4 made it 10^4 x the MSE on a flat start and the run collapsed (RESULTS.md)
            loss = loss + cfg.train.heatmap_reg * ((model.heatmap_variances() - sigma2) ** 2).mean()
        optimizer_step(model, optimizer, loss, cfg.train.grad_clip, scheduler, ema)
        loss_sum += loss.detach()
    return (loss_sum / steps).item()  # one device sync per epoch, not per step


def make_optimization(cfg: TrainConfig, model, steps_per_epoch: int) -> tuple:
    """The optimizer, its per-step schedule, the EMA of the weights, the SWA average and its first epoch.

    The cosine spans all epochs, or with ``swa_lr`` ends at ``swa_from`` and holds there (the cosine stays at its
    last value past its own length)."""
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.weight_decay), lr=cfg.lr)
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    swa, swa_start = make_swa(ema.module if ema is not None else model, cfg)
    hold = swa is not None and cfg.swa_lr > 0
    scheduler = cosine_scheduler(optimizer, steps_per_epoch * (swa_start if hold else cfg.epochs),
                                 round(cfg.warmup_epochs * steps_per_epoch), cfg.swa_lr if hold else cfg.min_lr_ratio)
    return optimizer, scheduler, ema, swa, swa_start


def train(cfg: KeypointsConfig, out_dir: str | Path, *, resume: str | Path | None = None,
          overwrite: bool = False, on_epoch: Callable[[int, dict], None] | None = None,
          tracker: Tracker | None = None, progress: bool = True) -> dict:
    """Train with ``cfg``, writing everything into ``out_dir``; returns the summary dict.

    ``resume``: a run's ``last.pt`` to continue from. ``overwrite``: replace the run in ``out_dir`` (only once
    the config, the checkpoint and the data have been checked). ``on_epoch(epoch, row)`` is called after each
    evaluation (a study reports ``row["val/score"]`` to its pruner there and may raise to stop the run).
    ``tracker``: log into this W&B run and leave finishing it to the caller (a study trial); by default the run
    opens and closes its own.
    """
    cfg.validate()
    t_train = time.perf_counter()
    saved = load_training_state(resume, cfg) if resume else None  # a wrong file stops us before the data loads
    if resume:
        check_not_complete(out_dir, lambda summary: summary.get("epochs", 0) >= cfg.train.epochs)
    checkpoint.check_model_size(lambda: build_model(cfg.model))  # before a huge config allocates anything
    device, threads = start_run(cfg.run)
    # The data is read (found, headers and rows checked) before the run dir is touched: a mistyped --data-dir
    # must not cost the run that --overwrite would replace.
    data = load_keypoints(cfg.data.data_dir, cfg.data.drop_bad_rows)
    if cfg.data.exclude:  # faces an audit flagged (ex09_keypoints.audit)
        data["train"] = without(data["train"], read_excluded(cfg.data.exclude), f"data.exclude={cfg.data.exclude}")
    with RunDir(out_dir, cfg, reuse=resume is not None, replace=overwrite) as run, \
            open_tracker(cfg.track, to_dict(cfg), run.path, tracker, name=cfg.track.name or run.path.name,
                         job_type="ex09-train", run_id=run.previous.get("wandb", {}).get("id")) as tracker:
        run.record(**start_record(cfg, make_config, threads, device, run / "code.patch"), wandb=tracker.info())
        run.record(data=data_record(resolve_data_dir(cfg.data.data_dir), [s.source for s in data.values()]
                                    + ([Path(cfg.data.exclude)] if cfg.data.exclude else [])))
        report_dropped(data, run.path)
        train_images, train_points = data["train"].images.to(device), data["train"].keypoints.to(device)
        val, n_train = data["val"], train_images.shape[0]
        if cfg.train.batch_size > n_train:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the {n_train} training "
                              "images; lower it")

        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model = build_model(cfg.model).to(device).to(memory_format=memory_format)
        n_params = checkpoint.check_param_limit(model)
        steps_per_epoch = max(1, n_train // cfg.train.batch_size)  # drop the ragged last batch (BN statistics)
        optimizer, scheduler, ema, swa, swa_start = make_optimization(cfg.train, model, steps_per_epoch)
        eval_model = ema.module if ema is not None else model
        generator = torch.Generator(device=device).manual_seed(cfg.run.seed)
        for key, how in (("val/score", "max"), ("train/loss", "min"), ("val/score_swa", "max")):
            tracker.define_metric(key, summary=how)
        for m in [eval_model] + ([swa.module] if swa is not None else []):
            m.shift_tta = False  # per-epoch scores without the shifted views; best.pt has them

        def train_epoch(epoch: int) -> dict:
            loss = train_one_epoch(model, optimizer, scheduler, ema, train_images, train_points, cfg, generator,
                                   steps_per_epoch, epoch)
            if swa is not None and epoch >= swa_start:
                swa.update_parameters(eval_model)
            return {"train/loss": loss, "lr": optimizer.param_groups[0]["lr"]}

        def evaluate(epoch: int) -> tuple[dict, list[Candidate]]:
            scores = evaluate_split(eval_model, val, device, cfg.train.channels_last)
            row = {"val/score": scores["score"], "val/rmse_px": scores["rmse_px"]}
            candidates = [Candidate(eval_model, (row["val/score"],), {"val/score": row["val/score"]},
                                    "ema" if ema is not None else "model")]
            if swa is not None and epoch >= swa_start:
                row["val/score_swa"] = evaluate_split(swa.module, val, device, cfg.train.channels_last)["score"]
                candidates.append(Candidate(swa.module, (row["val/score_swa"],),
                                            {"val/score": row["val/score_swa"]}, "swa"))
            return row, candidates

        def keep_best(candidate: Candidate, best: dict) -> None:
            save_best(candidate.module, cfg, run / "best.pt", epoch=best["epoch"], val_score=best["val/score"],
                      weights=candidate.weights)

        limit = cfg.train.time_limit_s
        fitted = fit("ex09", cfg.train.epochs, train_epoch=train_epoch, evaluate=evaluate, keep_best=keep_best,
                     objects={"model": model, "optimizer": optimizer, "scheduler": scheduler, "ema": ema,
                              "swa": swa, "generator": generator},
                     state=TrainingState(run / "last.pt", STATE_KIND, saved=saved, config=to_dict(cfg)),
                     run=run, tracker=tracker, hint="lower train.lr",
                     eval_epoch=lambda epoch: is_eval_epoch(epoch, cfg.train),
                     deadline=t_train + limit if limit > 0 else None, pass_mark=("val/score", PASS_SCORE),
                     on_epoch=on_epoch, progress=progress, show=("train/loss", "val/score"))
        about = {"params": n_params, "best_epoch": fitted.best["epoch"]}
        summary = {**final_report(run, val, tracker, cfg, about), **about, "best_weights": fitted.best["weights"],
                   "epochs": fitted.epochs_run,
                   "model_bytes": (run / "best.pt").stat().st_size, "wall_s": time.perf_counter() - t_train,
                   "since_process_start_s": since_process_start(), "time_to_pass_s": fitted.time_to_pass,
                   "threads": threads, "device": str(device), "checkpoint": str(run / "best.pt")}
        run.write_summary(summary)
        tracker.summary({k: summary[k] for k in ("val/score", "val/rmse_px", "params")})
    return summary


def final_report(run: RunDir, val, tracker: Tracker, cfg: KeypointsConfig, about: dict) -> dict:
    """The best checkpoint scored exactly as the course does (batch size 1), its figures, and in W&B the model as
    an artifact (its metadata: the scores and ``about``) and every val face in a table."""
    best_model = load_model(run / "best.pt")
    final = evaluate_split(best_model, val)
    report = {"val/score": evaluate_course_exact(best_model, val), "val/score_batched": final["score"],
              "val/rmse_px": final["rmse_px"], "val/rmse_px_per_keypoint": final["rmse_px_per_keypoint"]}
    from ex09_keypoints import plots
    try:
        report["figures"] = [str(p) for p in (plots.keypoints_grid(best_model, val, run / "val_keypoints.png"),
                                              plots.learning_curves(run / "metrics.jsonl", run / "curves.png"))]
        for p in report["figures"]:
            tracker.log_image(Path(p).stem, p)
    except Exception as e:  # a plotting problem must not lose a finished training
        print(f"[ex09] plotting failed: {e}", file=sys.stderr)
    if tracker.run is not None:
        t_log = time.perf_counter()
        tracker.log_model(run / "best.pt", f"ex09-{cfg.track.name or run.path.name}",
                          {"val/score": report["val/score"], "val/rmse_px": report["val/rmse_px"], **about})
        tracker.log_table("val/faces", *plots.faces_table(best_model, val))
        report["wandb_artifacts_s"] = time.perf_counter() - t_log
    return report
