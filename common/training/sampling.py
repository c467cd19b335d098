"""Class-balanced sampling: every class equally likely per draw, whatever its frequency in the labels."""
from __future__ import annotations


def class_balanced_sampler(labels, num_samples: int, generator=None):
    """A ``WeightedRandomSampler`` drawing ``num_samples`` indices with replacement, each index weighted by
    the inverse frequency of its class (so an "epoch" is ``num_samples`` draws, not one pass)."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    labels = torch.as_tensor(labels)
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].double()
    return WeightedRandomSampler(weights, num_samples=num_samples, replacement=True, generator=generator)
