"""Classifier accuracy and loss on uint8 digit tensors, batched, in eval mode."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def predict_logits(model, images_uint8, batch_size: int = 2048):
    was_training = model.training
    model.eval()
    out = torch.cat([model(images_uint8[i:i + batch_size].float() / 255.0)
                     for i in range(0, len(images_uint8), batch_size)])
    model.train(was_training)
    return out


def scores(logits, labels) -> dict:
    """``{"acc": fraction correct, "loss": mean cross entropy}`` of given logits."""
    return {"acc": (logits.argmax(1) == labels).float().mean().item(), "loss": F.cross_entropy(logits, labels).item()}


def accuracy(model, images_uint8, labels, batch_size: int = 2048) -> dict:
    """:func:`scores` of the model's predictions on uint8 images."""
    return scores(predict_logits(model, images_uint8, batch_size), labels)


def better(candidate: dict, best: dict | None) -> bool:
    """Model selection on the 100 val images: higher accuracy, ties (frequent with 100 images) broken by the
    lower val loss."""
    return best is None or (candidate["acc"], -candidate["loss"]) > (best["acc"], -best["loss"])
