"""Per-step learning-rate schedules and the mean-teacher consistency ramp."""
from __future__ import annotations

import math


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0) -> float:
    """LR multiplier at ``step``: linear warmup 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_ratio``
    at ``total_steps``. Use with ``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimizer step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_scheduler(optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0):
    """A LambdaLR applying :func:`cosine_with_warmup` to every param group's own base lr."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lambda s: cosine_with_warmup(s, total_steps, warmup_steps, min_ratio))


def consistency_ramp(t: float, ramp_length: float, w_max: float) -> float:
    """Sigmoid-shaped ramp-up of Laine & Aila / Tarvainen & Valpola: w_max * exp(-5 (1 - min(1, t/T))^2)."""
    if ramp_length <= 0:
        return w_max
    x = 1.0 - min(1.0, max(0.0, t) / ramp_length)
    return w_max * math.exp(-5.0 * x * x)
