"""Exponential moving average of a model's weights (the "teacher" of Mean Teacher; EMA eval in ex09).

Built on ``torch.optim.swa_utils.AveragedModel`` with ``use_buffers=True``, so BatchNorm running statistics
are averaged like the weights. The first update copies the student; each later update does
``ema = decay * ema + (1 - decay) * student``.
"""
from __future__ import annotations


def make_ema(model, decay: float):
    """An EMA copy of ``model``; call ``.update_parameters(model)`` after every optimizer step and use
    ``.module`` for evaluation / saving."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
