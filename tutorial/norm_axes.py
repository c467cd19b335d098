"""Slides "batch norm, fully connected vs spatial" and "other normalisations": which axes of the activations each
normalisation averages over, checked on a real batch: after the layer (training mode, no affine change yet) the
mean is ~0 and the variance ~1 along exactly those axes."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn


def activations(images: torch.Tensor, channels: int = 8, seed: int = 0) -> torch.Tensor:
    """A real batch of conv activations: (N,1,96,96) faces through a seeded 3x3 conv -> (N, channels, 96, 96)."""
    torch.manual_seed(seed)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    with torch.no_grad():
        return nn.Conv2d(1, channels, 3, padding=1)(x * 2 - 1)


def _worst(y: torch.Tensor, dims: tuple[int, ...]) -> dict[str, float]:
    """The largest |mean| and |var - 1| of ``y`` taken over ``dims`` (one value per remaining index)."""
    mean, var = y.mean(dims), y.var(dims, unbiased=False)
    return {"max_abs_mean": float(mean.abs().max()), "max_abs_var_minus_1": float((var - 1).abs().max())}


def statistics(acts: torch.Tensor, groups: int = 4) -> dict[str, dict[str, float]]:
    """Each normalisation in training mode on ``acts`` (N,C,H,W), measured along its own axes; BatchNorm1d on the
    spatially pooled (N, C) features (what a fully connected layer's batch norm sees)."""
    n, c, h, w = acts.shape
    feats = acts.mean((2, 3))
    layers = {"BatchNorm1d (N, D)": (nn.BatchNorm1d(c, affine=False), feats, (0,)),
              "BatchNorm2d (N, C, H, W)": (nn.BatchNorm2d(c, affine=False), acts, (0, 2, 3)),
              "LayerNorm = GroupNorm(1)": (nn.GroupNorm(1, c, affine=False), acts, (1, 2, 3)),
              "InstanceNorm2d": (nn.InstanceNorm2d(c), acts, (2, 3))}
    out = {}
    with torch.no_grad():
        for name, (layer, x, dims) in layers.items():
            out[name] = {"axes": list(dims), **_worst(layer.train()(x), dims)}
        grouped = nn.GroupNorm(groups, c, affine=False)(acts).view(n, groups, c // groups, h, w)
        out[f"GroupNorm({groups})"] = {"axes": "group, H, W", **_worst(grouped, (2, 3, 4))}
        # the contrast: BatchNorm2d does not make each image's channel mean 0 (it averages over the batch)
        out["BatchNorm2d, per image"] = _worst(nn.BatchNorm2d(c, affine=False).train()(acts), (2, 3))
    return out


def figure(path: Path, n: int = 6, c: int = 8, groups: int = 4) -> Path:
    """The four normalisations as the cells (image n, channel c) one mean/variance is taken over, each cell
    standing for its H x W map."""
    from common.plots import pyplot, save

    plt = pyplot()

    masks = {"Batch norm": torch.zeros(n, c), "Layer norm": torch.zeros(n, c), "Instance norm": torch.zeros(n, c),
             f"Group norm ({groups} groups)": torch.zeros(n, c)}
    masks["Batch norm"][:, 2] = 1  # one channel, every image
    masks["Layer norm"][2, :] = 1  # one image, every channel
    masks["Instance norm"][2, 2] = 1  # one image, one channel
    masks[f"Group norm ({groups} groups)"][2, 2:2 + c // groups] = 1  # one image, one group of channels
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    for ax, (title, mask) in zip(axes, masks.items()):
        ax.imshow(mask.numpy(), cmap="Blues", vmin=0, vmax=1.3)
        ax.set_xticks(range(c)), ax.set_yticks(range(n))
        ax.set_xticks([x - 0.5 for x in range(1, c)], minor=True), ax.set_yticks([y - 0.5 for y in range(1, n)],
                                                                                  minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="both", length=0, labelsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("channel C (each cell: all of H x W)", fontsize=8)
        ax.set_ylabel("image N in the batch", fontsize=8)
    fig.suptitle("One mean and variance is taken over the shaded cells", fontsize=10)
    return save(fig, path, dpi=90)
