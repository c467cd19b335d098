"""PNGs people look at: predicted vs true keypoints on faces, and learning curves."""
from __future__ import annotations

import json
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def keypoints_grid(model, split, path: Path, n: int = 16, seed: int = 0) -> Path:
    """A 4x4 grid of val faces: true keypoints green, predicted red (pixel coordinates)."""
    import torch

    from ex09_keypoints.data import normalized_to_pixels
    from ex09_keypoints.evaluate import predict

    plt = _plt()
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def learning_curves(metrics_jsonl: Path, path: Path) -> Path:
    plt = _plt()
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(epochs, [r["train_loss"] for r in rows])
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_title("train loss")
    b.plot(epochs, [r["val_score"] for r in rows])
    b.axhline(100, color="gray", ls="--", lw=1)
    b.set_xlabel("epoch")
    b.set_title("val score (course, higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
