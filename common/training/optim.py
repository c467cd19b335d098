"""Optimizer parameter groups: no weight decay on norms/biases; per-module (discriminative) learning rates."""
from __future__ import annotations


def param_groups(model, lr: float, weight_decay: float) -> list[dict]:
    """Two groups: weights (>= 2-D) decayed, biases and norm scales (1-D) not: decaying them only hurts."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [g for g in ({"params": decay, "lr": lr, "weight_decay": weight_decay},
                        {"params": no_decay, "lr": lr, "weight_decay": 0.0}) if g["params"]]


def discriminative_groups(module_lrs, weight_decay: float) -> list[dict]:
    """``[(module, lr), ...]`` -> param groups, each module at its own lr (e.g. pretrained encoder slower than a
    fresh head). A parameter shared by two modules is an error, so no parameter is stepped twice."""
    groups, seen = [], set()
    for module, lr in module_lrs:
        for group in param_groups(module, lr, weight_decay):
            ids = {id(p) for p in group["params"]}
            if ids & seen:
                raise ValueError("a parameter belongs to two modules given discriminative learning rates")
            seen |= ids
            groups.append(group)
    return groups


def optimizer_step(model, optimizer, loss, grad_clip: float = 0.0, scheduler=None, ema=None) -> None:
    """One training step after the forward pass, the same in every loop: backward, clip the gradient norm to
    ``grad_clip`` (0 = off), step, advance the per-step schedule, update the EMA / mean teacher."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if ema is not None:
        ema.update_parameters(model)
