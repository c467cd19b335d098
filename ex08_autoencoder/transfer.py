"""Step 2: transfer. The pretrained encoder plus a fresh head learn from the 100 labeled images.

Discriminative learning rates (slow encoder, fast head), class-balanced sampling, strong augmentation, mixup
and label smoothing all fight over-fitting 100 images. The epoch with the best val accuracy is kept.
"""
from __future__ import annotations

from typing import Callable

import torch

from common.run.device import autocast
from common.training.augment import augment_images
from common.training.loop import Fitted
from common.training.mixup import mixup_batch, mixup_loss
from common.training.optim import discriminative_groups, optimizer_step
from common.training.schedules import cosine_scheduler
from ex08_autoencoder.config import TransferConfig
from ex08_autoencoder.data import FewLabelData, cpu_generator, labeled_order, to_float
from ex08_autoencoder.evaluate import fit_best_on_val
from ex08_autoencoder.models import Classifier


def supervised_loss(model, images_uint8, labels, aug, criterion, mixup_alpha: float, generator, amp: bool):
    """Augment, optionally mix up, and score one labeled batch; returns (loss, logits)."""
    x = augment_images(to_float(images_uint8), aug, generator)
    x, perm, lam = mixup_batch(x, mixup_alpha)
    with autocast(x.device, amp):
        logits = model(x).float()
    return mixup_loss(criterion, logits, labels, perm, lam), logits


def make_optimizer(c, classifier: Classifier):
    groups = discriminative_groups([(classifier.encoder, c.lr_encoder), (classifier.head, c.lr_head)],
                                   c.weight_decay)
    if c.optimizer == "adam":  # L2 weight decay, as the case study's torch.optim.Adam(weight_decay=...)
        return torch.optim.Adam(groups)
    return torch.optim.AdamW(groups)


def transfer(c: TransferConfig, model: Classifier, data: FewLabelData, generator, amp: bool,
             fit: Callable[..., Fitted]) -> tuple[Classifier, dict]:
    """Train ``model`` (the pretrained encoder and a fresh head) on the labeled images with the epoch loop
    ``fit``; returns the best-val classifier and its figures."""
    device = data.train_x.device
    model.train()
    optimizer = make_optimizer(c, model)
    cpu_gen = cpu_generator(generator)
    per_epoch = c.samples_per_epoch or len(data.train_y)
    steps = max(1, per_epoch // c.batch_size + (per_epoch % c.batch_size > 1))  # a last batch of 1 breaks BN
    scheduler = cosine_scheduler(optimizer, steps * c.epochs) if c.cosine else None
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)

    def train_epoch(epoch: int) -> dict:
        order = labeled_order(data.train_y, c.samples_per_epoch, c.balanced, cpu_gen).to(device)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for s in range(steps):
            idx = order[s * c.batch_size:(s + 1) * c.batch_size]
            loss, logits = supervised_loss(model, data.train_x[idx], data.train_y[idx], c.augment, criterion,
                                           c.mixup_alpha, generator, amp)
            optimizer_step(model, optimizer, loss, c.grad_clip, scheduler)
            loss_sum += loss.detach()  # summed on the device: no sync per step
            correct += (logits.argmax(1) == data.train_y[idx]).sum()
        row = {"train/loss": loss_sum.item() / steps, "lr_head": optimizer.param_groups[-1]["lr"]}
        if c.mixup_alpha <= 0:  # with mixup the images no longer carry a single label to be right about
            row["train/acc"] = correct.item() / min(len(order), steps * c.batch_size)
        return row

    return fit_best_on_val(
        fit, c.epochs, model, data.val_x, data.val_y, "classifier", train_epoch=train_epoch,
        objects={"model": model, "optimizer": optimizer, "scheduler": scheduler, "generator": generator,
                 "cpu_generator": cpu_gen},
        hint="lower transfer.lr_encoder and transfer.lr_head", show=("train/loss", "val/acc"))
