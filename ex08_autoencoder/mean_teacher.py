"""Step 3: Mean Teacher (Tarvainen & Valpola, 2017) on labeled and unlabeled images.

The student learns by backprop from
    loss = CE(student(strong(x_l)), y_l) + w(t) * MSE(softmax(student(strong(x))), softmax(teacher(weak(x))))
over x = labeled + unlabeled images of the step, and the teacher is an EMA of the student, updated after every
optimizer step. w(t) ramps up (sigmoid-shaped) so the early, unreliable teacher does not dominate. Both start
from the transfer step's classifier. The teacher (best val epoch) is the submitted model.

``teacher.consistency=pseudo_label`` swaps the MSE for FixMatch's term (Sohn et al. 2020): the student's cross
entropy on the strong view against the teacher's argmax on the weak view, where the teacher is confident.
``teacher.align`` first rebalances the teacher's probabilities toward the labeled set's class frequencies
(ReMixMatch's distribution alignment, Berthelot et al. 2020). ``teacher.vat_weight`` adds virtual adversarial
training (Miyato et al. 2018): the student's prediction must not move under the small input perturbation that
moves it most.

One epoch = ``unlabeled_per_epoch`` unlabeled images (a fresh random subset of the pool) in batches of
``unlabeled_batch``, each step paired with ``labeled_batch`` class-balanced labeled images.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from common.run.device import autocast
from common.training.augment import augment_images
from common.training.ema import make_ema
from common.training.loop import Fitted
from common.training.optim import optimizer_step, param_groups
from common.training.schedules import consistency_ramp, cosine_scheduler
from ex08_autoencoder.config import TeacherConfig
from ex08_autoencoder.data import FewLabelData, cpu_generator, mixed_batches, to_float
from ex08_autoencoder.evaluate import accuracy, fit_best_on_val
from ex08_autoencoder.models import Classifier


def consistency_loss(student_logits, teacher_probs):
    """MSE between the class probabilities, averaged over samples and classes."""
    return F.mse_loss(student_logits.softmax(1), teacher_probs)


def pseudo_label_loss(student_logits, teacher_probs, confidence: float):
    """FixMatch's unlabeled loss (Sohn et al. 2020): cross entropy of the student against the teacher's
    argmax, averaged over all images but counting only those whose teacher probability reaches
    ``confidence``. Returns (loss, the fraction of images counted)."""
    top, label = teacher_probs.max(1)
    mask = (top >= confidence).float()
    return (F.cross_entropy(student_logits, label, reduction="none") * mask).mean(), mask.mean()


class DistributionAlignment(torch.nn.Module):
    """ReMixMatch's distribution alignment (Berthelot et al. 2020): multiply the teacher's class probabilities
    by ``target / running mean of the teacher's probabilities`` and renormalise. A class the teacher
    over-predicts (split 1's transfer model calls many 4s 9s) loses confidence on its doubtful images and the
    under-predicted one gains it, so the pseudo-labels keep the labeled set's class balance instead of
    reinforcing the teacher's bias. The running mean is an EMA over the steps (``momentum`` 0.99: the last ~100
    batches; ReMixMatch averages the last 128) and a buffer, so a resumed step goes on with it."""

    def __init__(self, target: torch.Tensor, momentum: float = 0.99):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("target", target.float() / target.sum())
        self.register_buffer("running", self.target.clone())

    @torch.no_grad()
    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        self.running.mul_(self.momentum).add_(probs.mean(0), alpha=1 - self.momentum)
        aligned = probs * (self.target / self.running)
        return aligned / aligned.sum(1, keepdim=True)


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each image's perturbation scaled to L2 norm 1 (over all its pixels)."""
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (d.dim() - 1))


def vat_direction(model, x, target, xi: float, generator=None):
    """The unit perturbation of each image of ``x`` that changes ``model``'s prediction (``target``) most, by
    one power iteration: the gradient of the KL divergence at a random step of L2 norm ``xi``.

    ``xi`` is a finite difference and must survive float32: the change it makes to the prediction has to stand
    above the forward pass's rounding. At the VAT paper's 1e-6, on 784 pixels in [0, 1], it does not, and the
    direction is mostly rounding noise; 1e-3 to 0.1 give float64's (``benchmarks/vat_xi.py``, RESULTS.md)."""
    d = (xi * _unit(torch.randn(x.shape, generator=generator, device=x.device))).requires_grad_()
    kl = F.kl_div(model(x + d).to(target.dtype).log_softmax(1), target, reduction="batchmean")  # bf16 under amp
    (grad,) = torch.autograd.grad(kl, d)
    return _unit(grad)


def vat_loss(model, x, eps: float, generator=None, xi: float = 1e-6):
    """Virtual adversarial training's smoothness term (Miyato et al. 2018, one power iteration): the KL divergence
    between ``model``'s prediction on ``x`` and on ``x + r_adv``, where ``r_adv`` (L2 norm ``eps`` per image) is
    the :func:`vat_direction`. The gradient reaches the model's weights through the perturbed prediction only.
    The model runs in eval mode here (then back): with dropout on, two forward passes differ by their masks, and
    the tiny step's gradient would point at that noise instead of the model's most sensitive direction. The
    reference MNIST settings (100 labels, MLP 784-1200-1200-10): ``eps`` 0.3, ``xi`` 1e-6."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            target = model(x).float().softmax(1)
        r_adv = eps * vat_direction(model, x, target, xi, generator)
        return F.kl_div(model(x + r_adv).float().log_softmax(1), target, reduction="batchmean")
    finally:
        model.train(was_training)


def mean_teacher(c: TeacherConfig, student: Classifier, data: FewLabelData, generator, amp: bool,
                 fit: Callable[..., Fitted]) -> tuple[Classifier, dict]:
    """Train ``student`` (the transfer step's classifier) and its EMA teacher with the epoch loop ``fit``;
    returns the best-val teacher and its figures."""
    device = data.train_x.device
    student.train()
    teacher = make_ema(student, c.ema_decay)
    teacher.update_parameters(student)  # the first update copies the student
    teacher.module.train(c.teacher_dropout)  # kept: the val passes (predict_logits) restore the mode they found
    optimizer = torch.optim.AdamW(param_groups(student, c.lr, c.weight_decay), lr=c.lr)
    steps = max(1, c.unlabeled_per_epoch // c.unlabeled_batch)
    scheduler = cosine_scheduler(optimizer, steps * c.epochs) if c.cosine else None
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
    cpu_gen = cpu_generator(generator)
    n_unlabeled = data.unlabeled_x.shape[0]
    # the labeled split's class frequencies are the target (balanced by construction: data.per_class each)
    align = DistributionAlignment(torch.bincount(data.train_y, minlength=10)).to(device) if c.align else None

    def train_epoch(epoch: int) -> dict:
        sums = torch.zeros(4, device=device)
        batches = mixed_batches(data.train_y, n_unlabeled, steps, c.labeled_batch, c.unlabeled_batch, generator,
                                cpu_gen)
        for s, (l_idx, u_idx) in enumerate(batches):
            x = to_float(torch.cat([data.train_x[l_idx], data.unlabeled_x[u_idx]]))
            strong, weak = augment_images(x, c.strong, generator), augment_images(x, c.weak, generator)
            with autocast(device, amp):
                student_logits = student(strong).float()
                with torch.no_grad():  # the teacher's dropout, unless teacher.teacher_dropout=false, is noise too
                    teacher_probs = teacher.module(weak).float().softmax(1)
            if align is not None:
                teacher_probs = align(teacher_probs)
            supervised = criterion(student_logits[:len(l_idx)], data.train_y[l_idx])
            if c.consistency == "pseudo_label":
                consistency, counted = pseudo_label_loss(student_logits, teacher_probs, c.confidence)
            else:
                consistency, counted = consistency_loss(student_logits, teacher_probs), sums.new_ones(())
            w = consistency_ramp(epoch + s / steps, c.ramp_epochs, c.consistency_weight)
            loss = supervised + w * consistency
            if c.vat_weight > 0:  # on the clean images: the labeled ones and the first unlabeled, vat_batch in all
                # in float32 even under amp: bf16 would round the power iteration's small step away
                vat = vat_loss(student, x[:c.vat_batch or len(x)], c.vat_eps, generator, c.vat_xi)
                loss = loss + c.vat_weight * vat
            else:
                vat = sums.new_zeros(())
            optimizer_step(student, optimizer, loss, c.grad_clip, scheduler, ema=teacher)
            sums += torch.stack([supervised.detach(), consistency.detach(), counted, vat.detach()])
        sup, cons, counted_rate, vat_mean = (sums / steps).tolist()
        row = {"train/supervised_loss": sup, "train/consistency_loss": cons, "consistency_weight": w}
        if c.consistency == "pseudo_label":
            row["train/pseudo_label_rate"] = counted_rate
        if c.vat_weight > 0:
            row["train/vat_loss"] = vat_mean
        if align is not None:  # how unbalanced the teacher's own predictions are (1 = balanced): what it corrects
            row["train/teacher_class_ratio"] = (align.running.max() / align.running.min()).item()
        return row

    return fit_best_on_val(
        fit, c.epochs, teacher.module, data.val_x, data.val_y, "teacher", train_epoch=train_epoch,
        objects={"student": student, "teacher": teacher, "optimizer": optimizer, "scheduler": scheduler,
                 "generator": generator, "cpu_generator": cpu_gen, "align": align},
        hint="lower teacher.lr", show=("val/acc",),
        extra=lambda: {"val/student_acc": accuracy(student, data.val_x, data.val_y)["acc"]})
