"""PNGs people would rather look at than numbers: reconstructions, the latent space, the confusion matrix,
learning curves. matplotlib with the Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path

import torch

from common.plots import learning_curves as curves
from common.plots import pyplot, read_metrics, save


@torch.no_grad()
def reconstructions(ae, images_uint8, corrupt_fn, path: Path, n: int = 10) -> Path:
    """Rows: clean, corrupted (the AE's input; left out for a plain AE, whose input is the clean image),
    reconstructed."""
    plt = pyplot()
    ae.eval()
    clean = images_uint8[:n].float() / 255.0
    noisy = corrupt_fn(clean)
    rows = [("clean", clean), ("corrupted", noisy.clamp(0, 1)), ("reconstructed", ae(noisy))]
    if torch.equal(noisy, clean):
        del rows[1]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 1.1, 1.2 * len(rows)), squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(imgs[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=8)
    return save(fig, path)


def latent_pca(features, labels, path: Path, max_points: int = 3000) -> Path:
    """The latent codes of test images projected to 2-D with PCA, coloured by digit."""
    from sklearn.decomposition import PCA

    plt = pyplot()
    feats, labels = features[:max_points].cpu().numpy(), labels[:max_points].cpu().numpy()
    xy = PCA(n_components=2).fit_transform(feats)
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_title("latent space (PCA of encoder features, MNIST test)")
    return save(fig, path)


def confusion(labels, predictions, path: Path, title: str) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    plt = pyplot()
    cm = confusion_matrix(labels.cpu().numpy(), predictions.cpu().numpy(), labels=list(range(10)))
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ConfusionMatrixDisplay(cm, display_labels=list(range(10))).plot(ax=ax, colorbar=False, values_format="d")
    ax.set_title(title)
    return save(fig, path)


def learning_curves(metrics_file: Path, path: Path) -> Path:
    """One panel per step: training loss, and val accuracy (twin axis) or val loss against epoch."""
    rows = read_metrics(metrics_file)
    panels = []
    for step in dict.fromkeys(r["step"] for r in rows):
        rs = [r for r in rows if r["step"] == step]
        loss = "train/loss" if "train/loss" in rs[0] else "train/supervised_loss"
        panel = {"title": step, "x": [r["epoch"] for r in rs], "left": {loss: [r[loss] for r in rs]}}
        if "val/acc" in rs[0]:
            panel["right"] = {"val/acc": [r["val/acc"] for r in rs]}
        else:
            panel["left"]["val/loss"] = [r["val/loss"] for r in rs]
        panels.append(panel)
    return curves(panels, path)
