"""PNGs people look at: predicted vs true keypoints on faces, and learning curves."""
from __future__ import annotations

import math
from pathlib import Path

from common.plots import learning_curves as curves
from common.plots import pyplot, read_metrics, save


def keypoints_grid(model, split, path: Path, n: int = 16, seed: int = 0) -> Path:
    """A 4x4 grid of val faces: true keypoints green, predicted red (pixel coordinates)."""
    import torch

    from ex09_keypoints.data import normalized_to_pixels
    from ex09_keypoints.evaluate import predict

    plt = pyplot()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    pred = normalized_to_pixels(predict(model, split.images[idx]))
    true = normalized_to_pixels(split.keypoints[idx])
    cols = 4
    rows = (len(idx) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows))
    for ax, i in zip(axes.flat, range(len(idx))):
        # keypoints use 1-based pixel centres (pixel j spans [j + 0.5, j + 1.5]): draw the image on that grid
        ax.imshow(split.images[idx[i], 0].numpy(), cmap="gray", extent=(0.5, 96.5, 96.5, 0.5))
        ax.scatter(true[i, :, 0], true[i, :, 1], s=10, c="lime", label="true")
        ax.scatter(pred[i, :, 0], pred[i, :, 1], s=10, c="red", marker="x", label="predicted")
        ax.set_axis_off()
    for ax in list(axes.flat)[len(idx):]:
        ax.set_axis_off()
    axes.flat[0].legend(loc="lower left", fontsize=6)
    fig.suptitle("val faces: true (green) vs predicted (red)")
    return save(fig, path)


def learning_curves(metrics_jsonl: Path, path: Path) -> Path:
    rows = read_metrics(metrics_jsonl)
    epochs = [r["epoch"] for r in rows]
    return curves([{"title": "train loss", "x": epochs, "left": {"train/loss": [r["train/loss"] for r in rows]},
                    "log": True},
                   {"title": "val score (course, higher is better)", "x": epochs,
                    "left": {key: [r.get(key, math.nan) for r in rows]  # SWA rows start late: gaps
                             for key in ("val/score", "val/score_swa") if any(key in r for r in rows)},
                    "hline": 100}], path)


def faces_table(model, split) -> tuple[list[str], list[list]]:
    """Columns and rows of a table of every face: the image with true (green) and predicted (red) points
    drawn in, and the face's RMSE in pixels (sort by it to find the worst faces)."""
    import numpy as np

    from ex09_keypoints.data import normalized_to_pixels
    from ex09_keypoints.evaluate import predict

    pred = normalized_to_pixels(predict(model, split.images)).numpy()
    true = normalized_to_pixels(split.keypoints).numpy()
    rmse = np.sqrt(((pred - true) ** 2).mean(axis=(1, 2)))
    rows = []
    for i in range(len(split)):
        face = np.repeat(split.images[i, 0].numpy()[..., None], 3, axis=2)
        for points, colour in ((true[i], (0, 255, 0)), (pred[i], (255, 0, 0))):
            for x, y in points:  # 1-based pixel centres: point p sits on pixel round(p) - 1
                c, r = int(round(x)) - 1, int(round(y)) - 1
                face[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = colour
        rows.append([face, i, float(rmse[i])])
    return ["face", "index", "rmse_px"], rows
