"""Slide "why not just an MLP": the weights one fully connected layer needs grow with the image, a conv filter
bank's do not. Counted on real ``nn.Linear`` / ``nn.Conv2d`` modules (the formulas are in the tests)."""
from __future__ import annotations

import torch.nn as nn

IMAGE_SIZES = {"5x5": (1, 5, 5), "32x32x3": (3, 32, 32), "96x96": (1, 96, 96), "238x238": (1, 238, 238)}
"""The slides' images (channels, height, width)."""


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fully_connected(hidden: int = 1000) -> dict[str, int]:
    """Parameters of one ``nn.Linear`` from each slide image, flattened, to ``hidden`` units (bias included).
    Built on the meta device: a 238x238 image to 1000 units is 57M weights, counted without allocating them."""
    counts = {}
    for name, (c, h, w) in IMAGE_SIZES.items():
        counts[name] = n_params(nn.Linear(c * h * w, hidden, device="meta"))
    return counts


def conv_vs_dense(filters: int = 1) -> dict[str, int]:
    """The slide's 32x32x3 image to a 28x28 activation map per filter: a 5x5x3 conv (``filters`` of them) against
    a fully connected layer producing the same 28x28 x ``filters`` outputs."""
    conv = nn.Conv2d(3, filters, kernel_size=5)  # 32 - 5 + 1 = 28
    dense = nn.Linear(3 * 32 * 32, filters * 28 * 28, device="meta")
    return {"conv_5x5x3": n_params(conv), "dense_same_outputs": n_params(dense), "filters": filters}
