"""Classifier accuracy and loss on uint8 digit tensors, batched, in eval mode."""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F

from common.training.loop import Candidate, Fitted


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


def candidate(model, images_uint8, labels, weights: str) -> tuple[dict, Candidate]:
    """Score ``model`` on the 100 val images: ``({"val/acc", "val/loss"}, the Candidate for the loop)``. Model
    selection: higher accuracy, ties (frequent with 100 images) broken by the lower val loss."""
    val = accuracy(model, images_uint8, labels)
    record = {"val/acc": val["acc"], "val/loss": val["loss"]}
    return record, Candidate(model, (val["acc"], -val["loss"]), record, weights)


def keep_in_memory(best: Candidate, record: dict) -> dict:
    """An ex08 step keeps its best weights in memory (and in its training state): its epochs are too short
    (~0.3 s in transfer) to write a checkpoint file at each improvement."""
    return copy.deepcopy(best.module.state_dict())


def fit_best_on_val(fit: Callable[..., Fitted], epochs: int, model, val_x, val_y, weights: str, *, train_epoch,
                    objects: dict, hint: str, show: tuple, extra: Callable[[], dict] | None = None):
    """Train a step with the epoch loop ``fit``, scoring ``model`` on val after each epoch (:func:`candidate`,
    plus ``extra()``'s figures), and load its best weights: returns ``(model in eval mode, {"best_epoch",
    "val/acc", "val/loss"})``, what every ex08 classifier step reports."""
    def evaluate(epoch: int) -> tuple[dict, list[Candidate]]:
        record, best = candidate(model, val_x, val_y, weights)
        return ({**record, **extra()} if extra else record), [best]

    fitted = fit(epochs, train_epoch=train_epoch, evaluate=evaluate, keep_best=keep_in_memory, objects=objects,
                 hint=hint, show=show)
    model.load_state_dict(fitted.best_weights)
    return model.eval(), {"best_epoch": fitted.best["epoch"], "val/acc": fitted.best["val/acc"],
                          "val/loss": fitted.best["val/loss"]}
