"""Mixup (Zhang et al. 2018) on a whole batch: one lam ~ Beta(alpha, alpha) and one permutation per batch.

Draws come from torch's global RNG, which :func:`common.run.seed.seed_everything` seeds.
"""
from __future__ import annotations


def mixup_batch(x, alpha: float):
    """``(mixed, perm, lam)`` with ``mixed = lam * x + (1 - lam) * x[perm]``; alpha <= 0 returns x unmixed."""
    import torch

    if alpha <= 0:
        return x, torch.arange(x.shape[0], device=x.device), 1.0
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    perm = torch.randperm(x.shape[0]).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], perm, lam


def mixup_loss(criterion, logits, targets, perm, lam: float):
    """The mixed loss: ``lam * L(logits, y) + (1 - lam) * L(logits, y[perm])``."""
    return lam * criterion(logits, targets) + (1.0 - lam) * criterion(logits, targets[perm])
