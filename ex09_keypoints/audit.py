"""A training-label audit: which training faces does a model trained without them disagree with most? K short
runs, each trained on all training faces but one block of them (blocks follow the CSV's order, so the frames of
one person, which sit together, stay in one block), predict the held-out block; every face gets an out-of-fold
error. The worst are drawn (face, label, prediction) and listed with their row digests: a wrong label is a face
whose error stays large whatever model predicts it. It never looks at val: the short runs train a fixed number
of epochs and keep their last weights (the EMA's).

``data.exclude FILE`` trains without the faces listed there (:mod:`ex09_keypoints.exclude`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common.errors import ConfigError
from ex09_keypoints.exclude import CSV_NAME, face_digests

PNG_NAME, JSON_NAME = "audit_worst.png", "audit.json"


def fit_without_val(cfg, images, points, device, progress_label: str):
    """A model trained on (images, points) for ``cfg.train.epochs`` with the run's own recipe; its last weights
    (the EMA's when there is one). No val is read."""
    import torch

    from common.run.progress import EpochBar
    from ex09_keypoints.models import build_model
    from ex09_keypoints.train import make_optimization, train_one_epoch

    model = build_model(cfg.model).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps = max(1, images.shape[0] // cfg.train.batch_size)
    optimizer, scheduler, ema, _, _ = make_optimization(cfg.train, model, steps)
    generator = torch.Generator(device=device).manual_seed(cfg.run.seed)
    for epoch in EpochBar(range(cfg.train.epochs), progress_label, enabled=progress_label != ""):
        train_one_epoch(model, optimizer, scheduler, ema, images, points, cfg, generator, steps, epoch)
    return (ema.module if ema is not None else model).eval()


def audit(cfg, out: Path, folds: int = 5, worst: int = 24, progress: bool = True) -> dict:
    """Write ``audit.csv`` (every training face: row, digest, out-of-fold error), ``audit_worst.png`` (the
    ``worst`` faces) and ``audit.json`` into ``out`` (new or empty); returns the summary."""
    import torch

    from common.files.atomic import atomic_write_text
    from common.run.run_config import start_run
    from common.run.rundir import check_out_dir
    from ex09_keypoints.data import KEYPOINT_NAMES, load_keypoints, normalized_to_pixels
    from ex09_keypoints.evaluate import predict

    if not 2 <= folds <= 50:
        raise ConfigError(f"--folds {folds}: give 2 to 50 blocks")
    if worst < 1:
        raise ConfigError(f"--worst {worst}: give how many of the worst faces to draw (>= 1)")
    cfg.validate()
    check_out_dir(out)
    device, _ = start_run(cfg.run)
    train = load_keypoints(cfg.data.data_dir, cfg.data.drop_bad_rows, splits=("train",))["train"]  # never val
    n = len(train)
    if n < 2 * folds:
        raise ConfigError(f"{train.source} has {n} faces: too few for {folds} folds")
    images, points = train.images.to(device), train.keypoints.to(device)
    bounds = [round(k * n / folds) for k in range(folds + 1)]
    pred = torch.empty_like(train.keypoints)
    for k in range(folds):
        held = torch.arange(bounds[k], bounds[k + 1])
        rest = torch.cat([torch.arange(0, bounds[k]), torch.arange(bounds[k + 1], n)])
        print(f"[audit] fold {k + 1}/{folds}: training on {len(rest)} faces, predicting rows {bounds[k] + 1}-"
              f"{bounds[k + 1]}", file=sys.stderr, flush=True)
        model = fit_without_val(cfg, images[rest.to(device)], points[rest.to(device)], device,
                                f"fold {k + 1}" if progress else "")
        with torch.no_grad():
            pred[held] = predict(model, train.images[held], device=device)
    true_px, pred_px = normalized_to_pixels(train.keypoints), normalized_to_pixels(pred)
    dist = (pred_px - true_px).norm(dim=-1)  # (N, 15) pixels
    error = dist.mean(-1)
    digests = face_digests(train)
    order = torch.argsort(error, descending=True).tolist()
    out.mkdir(parents=True, exist_ok=True)
    rows = ["row,digest,error_px,worst_keypoint,worst_keypoint_px"]
    for i in order:
        j = int(dist[i].argmax())
        rows.append(f"{i + 1},{digests[i]},{error[i]:.3f},{KEYPOINT_NAMES[j]},{dist[i, j]:.3f}")
    atomic_write_text(out / CSV_NAME, "\n".join(rows) + "\n")
    figure = draw_worst(train, true_px, pred_px, error, order[:worst], out / PNG_NAME)
    summary = {"folds": folds, "faces": n, "mean_error_px": float(error.mean()),
               "median_error_px": float(error.median()), "worst": [
                   {"row": i + 1, "digest": digests[i], "error_px": float(error[i])} for i in order[:worst]],
               "csv": str(out / CSV_NAME), "figure": str(figure), "epochs_per_fold": cfg.train.epochs,
               "preset": cfg.preset}
    atomic_write_text(out / JSON_NAME, json.dumps(summary, indent=2) + "\n")
    return summary


def draw_worst(split, true_px, pred_px, error, rows: list[int], path: Path) -> Path:
    """The faces ``rows`` with their labels (green) and the out-of-fold predictions (red)."""
    from common.plots import pyplot, save

    plt = pyplot()
    cols = 6
    lines = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(2.2 * cols, 2.4 * lines), squeeze=False)
    for ax, i in zip(axes.flat, rows):
        ax.imshow(split.images[i, 0].numpy(), cmap="gray", extent=(0.5, 96.5, 96.5, 0.5))
        ax.scatter(true_px[i, :, 0], true_px[i, :, 1], s=9, c="lime")
        ax.scatter(pred_px[i, :, 0], pred_px[i, :, 1], s=9, c="red", marker="x")
        ax.set_title(f"row {i + 1}: {error[i]:.1f} px", fontsize=8)
        ax.set_axis_off()
    for ax in list(axes.flat)[len(rows):]:
        ax.set_axis_off()
    fig.suptitle("training faces the out-of-fold models disagree with most: label (green), prediction (red)")
    return save(fig, path)
