"""Slide "convolution by example": two hand-written 3x3 kernels, a horizontal-edge one and its transpose (vertical
edges), applied with ``F.conv2d`` to real faces."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

HORIZONTAL = [[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
"""The slide's kernel: responds where brightness changes from top to bottom (horizontal edges)."""


def kernels() -> torch.Tensor:
    """(2,1,3,3): the slide's kernel and its transpose."""
    k = torch.tensor(HORIZONTAL)
    return torch.stack([k, k.t()]).unsqueeze(1)


def feature_maps(images: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) images (uint8 or floats in [0,1]) -> (N,2,H-2,W-2) maps, no padding (as the slide computes)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return F.conv2d(x, kernels())


def figure(images: torch.Tensor, path: Path) -> Path:
    from common.plots import pyplot, save

    plt = pyplot()

    maps = feature_maps(images)
    fig, axes = plt.subplots(len(images), 3, figsize=(7.5, 2.6 * len(images)), squeeze=False)
    for i, row in enumerate(axes):
        row[0].imshow(images[i, 0].numpy(), cmap="gray")
        for j, title in ((1, "horizontal-edge kernel"), (2, "its transpose (vertical edges)")):
            lim = float(maps[i, j - 1].abs().max())
            row[j].imshow(maps[i, j - 1].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            row[j].set_title(title if i == 0 else "", fontsize=9)
        row[0].set_title("val face" if i == 0 else "", fontsize=9)
        for ax in row:
            ax.axis("off")
    return save(fig, path, dpi=90)
