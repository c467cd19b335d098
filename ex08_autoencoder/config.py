"""The ex08 run config: the model and its steps, every field documented, overridable as ``section.field``
(``--set teacher.epochs=10``). The named starting points (``--preset NAME``) live in presets.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from common.config import check_ranges
from common.errors import ConfigError
from common.run.run_config import RunConfig
from common.run.tracking import TrackConfig
from common.training.augment import AffineAugment, augment_ranges

STEPS = ("pretrain", "transfer", "teacher", "student")


def digit_augment(rotate_deg=0.0, shift=0.0, scale=0.0, shear_deg=0.0, erase_p=0.0, blur_p=0.0) -> AffineAugment:
    """An :class:`AffineAugment` for digits: no flip (a mirrored 2 is not a 2), no photometric jitter."""
    return AffineAugment(flip=False, rotate_deg=rotate_deg, scale=scale, shift=shift, brightness=0.0,
                         contrast=0.0, shear_deg=shear_deg, erase_p=erase_p, blur_p=blur_p)


@dataclass
class ModelConfig:
    """The MLP autoencoder/classifier (see models.py): defaults are the leaderboard recipe's."""

    hidden: tuple[int, ...] = (1024, 512)
    """Encoder hidden widths (the decoder uses them reversed)."""
    latent: int = 128
    """Size of the code between encoder and decoder (the classifier's input features)."""
    norm: str = "layer"
    """``layer`` (LayerNorm) or ``batch`` (BatchNorm1d) in every block."""
    activation: str = "gelu"
    """``gelu`` or ``leaky_relu``."""
    dropout: float = 0.1
    """Dropout in the encoder's hidden blocks."""
    latent_block: bool = True
    """The latent projection is a full block (Linear, norm, activation; no dropout) rather than a plain Linear."""
    head_hidden: tuple[int, ...] = (256,)
    """Hidden widths of the classifier head on top of the latent code."""
    head_dropout: float = 0.2
    """Dropout in the head's blocks."""


@dataclass
class DataConfig:
    data_dir: str | None = None
    """Data root holding ``MNIST/raw/``; None = $I2DL_DATA_DIR, else the default cache dir."""
    split_seed: int = 0
    """Seed of the few-label split (which 300 images are labeled); saved with the run as split.json."""
    per_class: int = 10
    """Labeled images per class in each of train / val / test (the course: 10, i.e. 100 each; at most 1800:
    MNIST's rarest digit has 5,421 training images)."""
    max_unlabeled: int = 0
    """Use only the first N images of the unlabeled pool (0 = all 59,700): for smoke tests and quick looks."""


@dataclass
class PretrainConfig:
    """Step 1: (denoising) autoencoder on the unlabeled images."""

    epochs: int = 15
    """Passes over the unlabeled pool (59,700 images)."""
    batch_size: int = 512
    """Images per step."""
    lr: float = 8e-4
    """Adam learning rate."""
    weight_decay: float = 1e-4
    """Adam (L2) weight decay."""
    cosine: bool = True
    """Cosine-decay the learning rate per step (else constant)."""
    loss: str = "bce"
    """Reconstruction loss against the *clean* image: ``bce`` or ``mse``."""
    mask_ratio: float = 0.2
    """Denoising: fraction of pixels set to 0 in the input (0 = plain autoencoder)."""
    noise_std: float = 0.15
    """Denoising: std of the Gaussian noise added to the (masked) input (0 = none)."""
    augment: AffineAugment = field(default_factory=digit_augment)
    """Augmentation of the input before corruption (off for the leaderboard recipe)."""


@dataclass
class TransferConfig:
    """Step 2: classifier = pretrained encoder + fresh head, trained on the 100 labeled images."""

    epochs: int = 50
    """Epochs of ``samples_per_epoch`` draws."""
    samples_per_epoch: int = 1000
    """Labeled samples per epoch (drawn with replacement when ``balanced``); 0 = one pass over the 100."""
    balanced: bool = True
    """Class-balanced sampling (inverse class frequency)."""
    batch_size: int = 32
    """Images per step."""
    optimizer: str = "adamw"
    """``adamw`` (decoupled weight decay) or ``adam`` (L2 weight decay, as the case study)."""
    lr_encoder: float = 1.5e-4
    """Learning rate of the pretrained encoder (lower: keep what pretraining learned)."""
    lr_head: float = 7.5e-4
    """Learning rate of the fresh head."""
    weight_decay: float = 1e-4
    """Weight decay."""
    cosine: bool = True
    """Cosine-decay the learning rates per step (else constant)."""
    label_smoothing: float = 0.05
    """Label smoothing of the cross entropy."""
    mixup_alpha: float = 0.2
    """Mixup Beta(alpha, alpha) (0 = off)."""
    grad_clip: float = 5.0
    """Clip the gradient norm (0 = off)."""
    augment: AffineAugment = field(default_factory=lambda: digit_augment(12, 0.10, 0.10, 5, erase_p=0.15))
    """Strong augmentation: affine (12 deg, 10% shift, 0.9-1.1 scale, shear 5) + random erasing (p 0.15)."""


@dataclass
class TeacherConfig:
    """Step 3: Mean Teacher. Student by backprop; teacher = EMA of the student; the teacher is submitted."""

    epochs: int = 30
    """Epochs of ``unlabeled_per_epoch`` unlabeled images each."""
    unlabeled_per_epoch: int = 59700
    """Unlabeled images one epoch sees: a fresh random subset of the pool each epoch; 59,700 = all of it."""
    unlabeled_batch: int = 256
    """Unlabeled images per step."""
    labeled_batch: int = 32
    """Labeled images per step (class-balanced, with replacement)."""
    lr: float = 5e-5
    """AdamW learning rate of the student."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    cosine: bool = False
    """Cosine-decay the learning rate per step (else constant)."""
    ema_decay: float = 0.995
    """Teacher = EMA of the student with this decay, updated after every optimizer step."""
    teacher_dropout: bool = True
    """The teacher's forward pass on the weak view keeps dropout on (the Mean Teacher paper: part of the noise);
    False: eval mode, FixMatch's deterministic targets, and three dropout masks a step fewer."""
    consistency: str = "mse"
    """The unlabeled term: ``mse`` (Mean Teacher: squared distance of the class probabilities) or
    ``pseudo_label`` (FixMatch-style: cross entropy of the student's strong view against the teacher's argmax
    on the weak view, counted only where the teacher's probability reaches ``confidence``)."""
    confidence: float = 0.95
    """``pseudo_label`` only: the teacher probability an image needs before its pseudo-label counts."""
    align: bool = False
    """Distribution alignment (ReMixMatch): rescale the teacher's probabilities so that their running mean
    matches the labeled set's class frequencies, before either consistency term uses them."""
    vat_weight: float = 0.0
    """Weight of virtual adversarial training's smoothness term on the student (0 = off). It costs two more
    forward passes and one more backward pass per step over ``vat_batch`` images."""
    vat_eps: float = 0.3
    """VAT: L2 norm of the adversarial perturbation per image, pixels in [0, 1] (the VAT paper's MNIST value)."""
    vat_xi: float = 1e-6
    """VAT: L2 norm of the power iteration's random first step (the VAT paper's 1e-6). Too small for float32:
    the direction it finds is mostly rounding noise (``vat_direction``); 1e-3 to 0.1 find the exact one."""
    vat_batch: int = 0
    """VAT: images of each step it runs on (the step's labeled ones first, then unlabeled; 0 = all of them, as
    the VAT paper does; ~15 % more time per epoch than 64)."""
    consistency_weight: float = 10.0
    """w_max of the consistency term w(t) * consistency(student, teacher)."""
    ramp_epochs: float = 10.0
    """Epochs over which w(t) ramps up to w_max (sigmoid-shaped ramp)."""
    label_smoothing: float = 0.05
    """Label smoothing of the supervised cross entropy."""
    grad_clip: float = 5.0
    """Clip the gradient norm (0 = off)."""
    strong: AffineAugment = field(default_factory=lambda: digit_augment(12, 0.10, 0.10, 5, erase_p=0.15))
    """The student's augmentation."""
    weak: AffineAugment = field(default_factory=lambda: digit_augment(5, 0.04, 0.03))
    """The teacher's augmentation."""


@dataclass
class StudentConfig:
    """Step 4 (presets that list it): self-training (self_training.py); the student is submitted."""

    init: str = "pretrain"
    """The student's start: ``pretrain`` (the autoencoder's encoder, a fresh head) or ``teacher`` (a copy)."""
    epochs: int = 30
    """Passes over the unlabeled pool."""
    batch_size: int = 256
    """Pool images per step."""
    labeled_batch: int = 32
    """Labeled images per step (class-balanced, with replacement)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    cosine: bool = True
    """Cosine-decay the learning rate per step (else constant)."""
    temperature: float = 1.0
    """Softmax temperature of the teacher's labels (> 1 softer); 0 = one-hot labels (the teacher's argmax)."""
    pool_weight: float = 1.0
    """Weight of the pool's term against the labeled cross entropy."""
    label_smoothing: float = 0.05
    """Label smoothing of the labeled cross entropy."""
    grad_clip: float = 5.0
    """Clip the gradient norm (0 = off)."""
    augment: AffineAugment = field(default_factory=lambda: digit_augment(12, 0.10, 0.10, 5, erase_p=0.15))
    """The student's augmentation."""


@dataclass
class AutoencoderConfig:
    """Everything one ex08 run needs."""

    experiment: ClassVar[str] = "ex08"  # the exercise, recorded in config.json (not a key to set)

    preset: str = "leaderboard"
    """The preset this config started from (informational: ``--preset`` sets it; ``steps`` decides what runs)."""
    steps: tuple[str, ...] = STEPS[:3]
    """The steps of this preset, in order (``student`` only where a preset adds it)."""
    only_step: str | None = None
    """Run only this one of ``steps``, from the previous step's checkpoint in the run dir (``--step``); None: all."""
    cache_steps: bool = True
    """Take a step an earlier run computed exactly so from the step cache (step_cache.py; ``--no-cache``: off)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    run: RunConfig = field(default_factory=RunConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def validate(self) -> None:
        self.run.validate()
        choices = {"model.norm": (self.model.norm, ("layer", "batch")),
                   "model.activation": (self.model.activation, ("gelu", "leaky_relu")),
                   "pretrain.loss": (self.pretrain.loss, ("bce", "mse")),
                   "transfer.optimizer": (self.transfer.optimizer, ("adamw", "adam")),
                   "teacher.consistency": (self.teacher.consistency, ("mse", "pseudo_label")),
                   "student.init": (self.student.init, ("pretrain", "teacher"))}
        for key, (value, valid) in choices.items():
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(valid)}")
        bad = [s for s in self.steps if s not in STEPS]
        if bad or not self.steps:
            raise ConfigError(f"steps={self.steps!r}: each must be one of {', '.join(STEPS)}")
        if self.only_step is not None and self.only_step not in self.steps:
            raise ConfigError(f"--step {self.only_step} is not a step of the {self.preset} preset; "
                              f"choose one of {', '.join(self.steps)}")
        p, t, mt, st = "pretrain", "transfer", "teacher", "student"
        shared = {f"{s}.{k}": r for s in (t, mt, st) for k, r in
                  (("epochs", ">= 1"), ("weight_decay", ">= 0"), ("label_smoothing", "[0, 1)"), ("grad_clip", ">= 0"))}
        check_ranges(self, {
            "model.hidden": ">= 1", "model.latent": ">= 1", "model.dropout": "[0, 1)", "model.head_hidden": ">= 1",
            "model.head_dropout": "[0, 1)", "data.split_seed": ">= 0", "data.per_class": "[1, 1800]",
            "data.max_unlabeled": ">= 0", f"{p}.epochs": ">= 1", f"{p}.batch_size": ">= 2", f"{p}.lr": "> 0",
            f"{p}.weight_decay": ">= 0", f"{p}.mask_ratio": "[0, 1)", f"{p}.noise_std": ">= 0", **shared,
            f"{t}.samples_per_epoch": ">= 0", f"{t}.batch_size": ">= 2", f"{t}.lr_encoder": ">= 0",
            f"{t}.lr_head": "> 0", f"{t}.mixup_alpha": ">= 0", f"{mt}.unlabeled_per_epoch": ">= 1",
            f"{mt}.unlabeled_batch": ">= 1", f"{mt}.labeled_batch": ">= 1", f"{mt}.lr": "> 0",
            f"{mt}.ema_decay": "(0, 1)", f"{mt}.consistency_weight": ">= 0", f"{mt}.confidence": "[0, 1]",
            f"{mt}.vat_weight": ">= 0", f"{mt}.vat_eps": ">= 0", f"{mt}.vat_xi": "> 0", f"{mt}.vat_batch": ">= 0",
            f"{mt}.ramp_epochs": ">= 0",
            f"{st}.batch_size": ">= 1", f"{st}.labeled_batch": ">= 1", f"{st}.lr": "> 0", f"{st}.temperature": ">= 0",
            f"{st}.pool_weight": ">= 0", **augment_ranges(f"{p}.augment"), **augment_ranges(f"{t}.augment"),
            **augment_ranges(f"{mt}.strong"), **augment_ranges(f"{mt}.weak"), **augment_ranges(f"{st}.augment")})
