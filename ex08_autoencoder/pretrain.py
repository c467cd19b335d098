"""Step 1: a (denoising) autoencoder on the unlabeled images.

Each batch: clean image (optionally augmented) -> corrupt (zero ``mask_ratio`` of the pixels, add Gaussian
noise of std ``noise_std``) -> reconstruct the *clean* image. Reconstruction loss on the 100 clean val images
picks the epoch whose encoder is kept.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from common.errors import ConfigError
from common.run.device import autocast
from common.training.augment import augment_images
from common.training.loop import Candidate, Fitted
from common.training.optim import optimizer_step, param_groups
from common.training.schedules import cosine_scheduler
from ex08_autoencoder.config import PretrainConfig
from ex08_autoencoder.data import FewLabelData, to_float
from ex08_autoencoder.evaluate import keep_in_memory
from ex08_autoencoder.models import Autoencoder


def corrupt(x, mask_ratio: float, noise_std: float, generator=None):
    """Zero each pixel with probability ``mask_ratio``, then add N(0, noise_std^2) noise to every pixel.
    Not clamped, so the noise has exactly the std asked for."""
    if mask_ratio > 0:
        x = x * (torch.rand(x.shape, generator=generator, device=x.device) >= mask_ratio)
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, generator=generator, device=x.device)
    return x


def reconstruction_loss(logits, clean, kind: str):
    """BCE (from logits: stable) or MSE of the sigmoid output, against the clean image."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, clean)
    return F.mse_loss(torch.sigmoid(logits), clean)


@torch.no_grad()
def val_loss(ae, images_uint8, kind: str) -> float:
    ae.eval()
    x = to_float(images_uint8)
    loss = reconstruction_loss(ae.reconstruction_logits(x), x, kind).item()
    ae.train()
    return loss


def pretrain(c: PretrainConfig, ae: Autoencoder, data: FewLabelData, generator, amp: bool,
             fit: Callable[..., Fitted]) -> tuple[Autoencoder, dict]:
    """Train the autoencoder ``ae`` with the epoch loop ``fit`` (common.training.loop.fit, bound to the step's run dir,
    tracker and training state). Returns the best-val autoencoder and its figures."""
    device = data.unlabeled_x.device
    optimizer = torch.optim.Adam(param_groups(ae, c.lr, c.weight_decay), lr=c.lr)
    n = data.unlabeled_x.shape[0]
    steps = n // c.batch_size  # ragged last batch dropped (BatchNorm statistics of a tiny batch are noise)
    if steps == 0:  # no step at all: the loss would be a NaN mean over nothing
        raise ConfigError(f"pretrain.batch_size={c.batch_size} is larger than the {n} unlabeled images "
                          "(data.max_unlabeled); lower the batch size or use more images")
    scheduler = cosine_scheduler(optimizer, steps * c.epochs) if c.cosine else None
    last = {}  # the epoch's training figures: the best epoch's are reported with it

    def train_epoch(epoch: int) -> dict:
        order = torch.randperm(n, generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        for s in range(steps):
            clean = augment_images(to_float(data.unlabeled_x[order[s * c.batch_size:(s + 1) * c.batch_size]]),
                                   c.augment, generator)
            noisy = corrupt(clean, c.mask_ratio, c.noise_std, generator)
            with autocast(device, amp):
                logits = ae.reconstruction_logits(noisy)
            loss = reconstruction_loss(logits.float(), clean, c.loss)
            optimizer_step(ae, optimizer, loss, 0.0, scheduler)
            loss_sum += loss.detach()
        last.update({"train/loss": (loss_sum / steps).item(), "lr": optimizer.param_groups[0]["lr"]})
        return dict(last)

    def evaluate(epoch: int) -> tuple[dict, list[Candidate]]:
        loss = val_loss(ae, data.val_x, c.loss)
        record = {"val/loss": loss, "train/loss": last["train/loss"]}
        return {"val/loss": loss}, [Candidate(ae, (-loss,), record, "autoencoder")]

    fitted = fit(c.epochs, train_epoch=train_epoch, evaluate=evaluate, keep_best=keep_in_memory,
                 objects={"model": ae, "optimizer": optimizer, "scheduler": scheduler, "generator": generator},
                 hint="lower pretrain.lr", show=("train/loss", "val/loss"))
    ae.load_state_dict(fitted.best_weights)
    return ae.eval(), {"best_epoch": fitted.best["epoch"], "val/loss": fitted.best["val/loss"],
                       "train/loss": fitted.best["train/loss"]}
