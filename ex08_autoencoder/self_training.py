"""Step 4 (optional): self-training, as Noisy Student does it (Xie et al. 2020). The finished teacher, in eval
mode on clean images, labels the whole unlabeled pool once (soft labels: its probabilities); a student (the
pretrained encoder and a fresh head, or the teacher itself) learns from them on strongly augmented images, with
dropout, and from the 100 true labels. The val-best student is submitted.

Mean Teacher's pseudo-labels come from a teacher that learns along and count only where it is sure; these come
from the finished teacher, on every image, so the student trains as a supervised MLP on 60k digits would, with
the augmentation MLPs on MNIST need (elastic distortions, Simard et al. 2003).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from common.run.device import autocast
from common.training.augment import augment_images
from common.training.loop import Fitted
from common.training.optim import optimizer_step, param_groups
from common.training.schedules import cosine_scheduler
from ex08_autoencoder.config import StudentConfig
from ex08_autoencoder.data import FewLabelData, cpu_generator, mixed_batches, to_float
from ex08_autoencoder.evaluate import fit_best_on_val, predict_logits
from ex08_autoencoder.models import Classifier


def pool_targets(teacher: Classifier, images_uint8, temperature: float):
    """The teacher's labels for ``images_uint8`` (eval mode, clean images): its probabilities at
    ``temperature``, or at 0 its argmax as one-hot rows."""
    logits = predict_logits(teacher, images_uint8).float()
    if temperature == 0:
        return F.one_hot(logits.argmax(1), logits.shape[1]).float()
    return (logits / temperature).softmax(1)


def self_training(c: StudentConfig, student: Classifier, teacher: Classifier, data: FewLabelData, generator,
                  amp: bool, fit: Callable[..., Fitted]) -> tuple[Classifier, dict]:
    """Train ``student`` on ``teacher``'s labels of the pool and on the labeled images with the epoch loop
    ``fit``; returns the best-val student and its figures."""
    device = data.train_x.device
    targets = pool_targets(teacher, data.unlabeled_x, c.temperature)
    teacher_pred = targets.argmax(1)
    student.train()
    optimizer = torch.optim.AdamW(param_groups(student, c.lr, c.weight_decay), lr=c.lr)
    n_pool = data.unlabeled_x.shape[0]
    steps = max(1, n_pool // c.batch_size)
    scheduler = cosine_scheduler(optimizer, steps * c.epochs) if c.cosine else None
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
    cpu_gen = cpu_generator(generator)

    def train_epoch(epoch: int) -> dict:
        sums = torch.zeros(2, device=device)
        for l_idx, u_idx in mixed_batches(data.train_y, n_pool, steps, c.labeled_batch, c.batch_size, generator,
                                          cpu_gen):
            x = augment_images(to_float(torch.cat([data.train_x[l_idx], data.unlabeled_x[u_idx]])), c.augment,
                               generator)
            with autocast(device, amp):
                logits = student(x).float()
            supervised = criterion(logits[:len(l_idx)], data.train_y[l_idx])
            # KL(teacher || student): 0 when the student matches its labels, whatever their entropy
            distill = F.kl_div(logits[len(l_idx):].log_softmax(1), targets[u_idx], reduction="batchmean")
            optimizer_step(student, optimizer, supervised + c.pool_weight * distill, c.grad_clip, scheduler)
            sums += torch.stack([supervised.detach(), distill.detach()])
        sup, dist = (sums / steps).tolist()
        return {"train/supervised_loss": sup, "train/distill_loss": dist, "lr": optimizer.param_groups[0]["lr"]}

    student, figures = fit_best_on_val(
        fit, c.epochs, student, data.val_x, data.val_y, "student", train_epoch=train_epoch,
        objects={"student": student, "optimizer": optimizer, "scheduler": scheduler, "generator": generator,
                 "cpu_generator": cpu_gen},
        hint="lower student.lr", show=("val/acc",))
    # How far the student moved from its labels: where it disagrees with the teacher on the pool it may have
    # corrected the teacher's mistakes (or made new ones; the test accuracy says which).
    agrees = (predict_logits(student, data.unlabeled_x).argmax(1) == teacher_pred).float().mean().item()
    return student, {**figures, "pool_agreement": agrees}
