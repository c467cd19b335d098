"""Slide "dropout for convolutional layers": ``nn.Dropout`` zeroes single entries, ``nn.Dropout2d`` whole feature
maps. The slide's two functions re-run, seeded, with p = 0.5 (shapes: a (4, 8) batch of fully connected
activations, a (2, 4, 5, 5) batch of conv feature maps)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

P = 0.5


def dropout_mlp(seed: int = 0, shape: tuple[int, ...] = (4, 8)) -> torch.Tensor:
    """``nn.Dropout(0.5)`` on ones: each entry is 0 or 1 / (1 - p) = 2 on its own."""
    torch.manual_seed(seed)
    return nn.Dropout(P).train()(torch.ones(shape))


def dropout_cnn(seed: int = 0, shape: tuple[int, ...] = (2, 4, 5, 5)) -> torch.Tensor:
    """``nn.Dropout2d(0.5)`` on ones: each (image, channel) map is all 0 or all 2."""
    torch.manual_seed(seed)
    return nn.Dropout2d(P).train()(torch.ones(shape))


def regular_on_maps(seed: int = 0, shape: tuple[int, ...] = (2, 4, 5, 5)) -> torch.Tensor:
    """``nn.Dropout(0.5)`` on the same conv maps as :func:`dropout_cnn`: single entries, whatever the map."""
    torch.manual_seed(seed)
    return nn.Dropout(P).train()(torch.ones(shape))


def zero_pattern(y: torch.Tensor) -> dict[str, float]:
    """How the zeros fall in (N, C, H, W): the fraction of zero entries, and of maps that are all zero or mixed."""
    maps = (y == 0).flatten(2)
    return {"zero_fraction": float((y == 0).float().mean()), "maps_all_zero": float(maps.all(-1).float().mean()),
            "maps_mixed": float((maps.any(-1) & ~maps.all(-1)).float().mean())}


def figure(path: Path, seed: int = 0) -> Path:
    from common.plots import pyplot, save

    plt = pyplot()

    per_entry, spatial = regular_on_maps(seed), dropout_cnn(seed)
    fig, axes = plt.subplots(2, 8, figsize=(12, 3.6))
    for r, (name, y) in enumerate((("nn.Dropout", per_entry), ("nn.Dropout2d", spatial))):
        for k in range(8):
            ax = axes[r, k]
            ax.imshow(y[k // 4, k % 4].numpy(), cmap="gray", vmin=0, vmax=2)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"img {k // 4} ch {k % 4}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle("p = 0.5 on all-ones feature maps: black = dropped (0), white = kept (x2)", fontsize=10)
    return save(fig, path, dpi=90)
