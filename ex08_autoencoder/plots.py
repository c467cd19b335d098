"""PNGs people would rather look at than numbers: reconstructions, the latent space, the confusion matrix,
learning curves. matplotlib with the Agg backend (no display needed)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def reconstructions(ae, images_uint8, corrupt_fn, path: Path, n: int = 10) -> Path:
    """Rows: clean, corrupted (the AE's input), reconstructed."""
    plt = _plt()
    ae.eval()
    clean = images_uint8[:n].float() / 255.0
    noisy = corrupt_fn(clean)
    rows = [("clean", clean), ("corrupted", noisy.clamp(0, 1)), ("reconstructed", ae(noisy))]
    fig, axes = plt.subplots(3, n, figsize=(n * 1.1, 3.6))
    for r, (title, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(imgs[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def latent_pca(features, labels, path: Path, max_points: int = 3000) -> Path:
    """The latent codes of test images projected to 2-D with PCA, coloured by digit."""
    from sklearn.decomposition import PCA

    plt = _plt()
    feats, labels = features[:max_points].cpu().numpy(), labels[:max_points].cpu().numpy()
    xy = PCA(n_components=2).fit_transform(feats)
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, alpha=0.7)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_title("latent space (PCA of encoder features, MNIST test)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion(labels, predictions, path: Path, title: str) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    plt = _plt()
    cm = confusion_matrix(labels.cpu().numpy(), predictions.cpu().numpy(), labels=list(range(10)))
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ConfusionMatrixDisplay(cm, display_labels=list(range(10))).plot(ax=ax, colorbar=False, values_format="d")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def learning_curves(metrics_file: Path, path: Path) -> Path:
    """One panel per step: training loss and val accuracy / val loss against epoch."""
    plt = _plt()
    rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
    steps = list(dict.fromkeys(r["step"] for r in rows))
    fig, axes = plt.subplots(1, len(steps), figsize=(4.5 * len(steps), 3.5), squeeze=False)
    for ax, step in zip(axes[0], steps):
        rs = [r for r in rows if r["step"] == step]
        ep = [r["epoch"] for r in rs]
        loss_key = "train_loss" if "train_loss" in rs[0] else "supervised_loss"
        ax.plot(ep, [r[loss_key] for r in rs], label=loss_key)
        if "val_acc" in rs[0]:
            ax2 = ax.twinx()
            ax2.plot(ep, [r["val_acc"] for r in rs], color="C1", label="val acc")
            ax2.set_ylabel("val accuracy")
        else:
            ax.plot(ep, [r["val_loss"] for r in rs], label="val loss")
        ax.set_title(step)
        ax.set_xlabel("epoch")
        ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
