"""The ex09 run config: one dataclass per concern, every field documented, overridable as ``section.field``.

Presets are named starting points (``--preset quick``); ``--set`` overrides go on top of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from common.config import check_ranges
from common.errors import ConfigError
from common.run.run_config import RunConfig
from common.run.tracking import TrackConfig
from common.training.augment import AffineAugment, augment_ranges


@dataclass
class DataConfig:
    data_dir: str | None = None
    """Data root holding ``facial_keypoints/``; None = $I2DL_DATA_DIR, else the default cache dir."""
    drop_bad_rows: bool = False
    """Drop (and count) invalid CSV rows instead of stopping with an error."""
    exclude: str | None = None
    """A file of training-face digests to train without (one per line, or the audit's ``audit.csv``:
    ``python -m experiments.run ex09 audit``); None = every face."""


@dataclass
class ModelConfig:
    arch: str = "cnn"
    """``cnn`` (the configurable CNN below), ``mlp`` (fully connected layers on the 96x96 pixels: ``mlp_widths``)
    or ``timm:<name>`` for any timm backbone (e.g. timm:resnet10t)."""
    stem: str = "unshuffle"
    """How the 96x96 input is reduced before the first conv: ``unshuffle`` (lossless space-to-depth: 96x96x1 ->
    (96/f)x(96/f)x f^2), ``avgpool`` (area downsampling by ``stem_factor``) or ``none``."""
    stem_factor: int = 4
    """Downsampling factor of the stem (1, 2, 4)."""
    widths: tuple[int, ...] = (32, 80, 192)
    """Output channels of each conv block; the number of entries is the depth."""
    convs_per_block: int = 2
    """Conv-BN-ReLU layers per block (the first one changes the width)."""
    kernel: int = 3
    """Kernel size of every conv."""
    downsample: str = "maxpool"
    """Halve the resolution at the end of each block with ``maxpool``, a stride-2 conv (``stride``) or
    ``blurpool`` (a stride-1 max-pool, then a blur and every second pixel: anti-aliased, Zhang 2019)."""
    residual: bool = False
    """A skip connection around each block's convs (identity, or 1x1 conv + norm where the width changes; He et
    al. 2016); not with ``downsample=stride``."""
    se_ratio: float = 0.25
    """Squeeze-and-excitation after each block's convs with ``width x se_ratio`` hidden units (0 = off)."""
    final_pool: bool = False
    """Halve the resolution after the last block too; False leaves the head a finer map (6x6, not 3x3): the
    soft-argmax heatmaps read from 6x6 scored 13 % above 3x3 on seed 0 (RESULTS.md, "ex09 v3")."""
    norm: str = "batch"
    """The normalisation after each conv: ``batch`` (BatchNorm2d), ``group`` (GroupNorm, ``norm_groups``
    groups), ``layer`` (GroupNorm with one group), ``instance`` (InstanceNorm2d) or ``none``."""
    norm_groups: int = 8
    """Groups of ``norm=group``; every width must be a multiple of it."""
    dropout2d: float = 0.092
    """The rate of the dropout after each conv block (its kind: ``conv_dropout``)."""
    conv_dropout: str = "dropout2d"
    """Which dropout follows each conv block at rate ``dropout2d``: ``dropout2d`` (whole feature maps),
    ``dropout`` (single entries, nn.Dropout) or ``none``."""
    mlp_widths: tuple[int, ...] = (256, 256)
    """``arch=mlp`` only: hidden widths (Linear-BatchNorm1d-ReLU each, ``head_dropout`` after each); the first
    layer has 9216 x width weights (256: 2.4M)."""
    head: str = "soft_argmax"
    """``soft_argmax``: 15 heatmaps (a 1x1 conv on the last feature map, upsampled to ``heatmap_size``) read out
    as each one's expected position (DSNT, Nibali et al. 2018; integral regression, Sun et al. 2018): no fully
    connected layer, translation equivariant; +14 % val score over ``flatten`` on 3 seeds at the same wall time
    and 42 % of the parameters (RESULTS.md, "ex09 v3"). ``flatten``: a fully connected head on the flattened map
    (``head_hidden``, ``head_dropout``; the v2 recipe), ``gap``: the same after global average pooling."""
    heatmap_size: int = 24
    """``head=soft_argmax``: the heatmaps' side (cells of 96 / size pixels)."""
    head_hidden: int = 512
    """``head=flatten|gap``: hidden units of the fully connected head (0 = a single linear layer)."""
    head_dropout: float = 0.0
    """``head=flatten|gap``: dropout before the head's last linear layer; it adds noise to every coordinate (0.1
    cost 15 % of the val score, RESULTS.md)."""
    input_size: int = 96
    """timm backbones only: the model resizes its (N,1,96,96) input to this size inside ``forward``."""
    pretrained: bool = False
    """timm backbones only: load pretrained weights (needs them on disk or a network)."""
    flip_tta: bool = True
    """At eval, also predict on the mirrored face and average (x negated, left/right swapped)."""
    members: int = 1
    """Backbones in the model, each trained on its own augmentation draws of every batch, their predictions
    averaged (an ensemble inside ``forward``; costs ``members`` x the compute and parameters)."""
    tta_shift_px: int = 5
    """At eval, also predict on the face moved by this many whole pixels left, right, up and down (4 more
    views, each mirrored too with ``flip_tta``), move the points back and average (0 = off). Keep it near the
    shifts the model was trained on (``augment.shift`` x 96 px: 3.6 px for the default, which the kp-v3 study
    found gains from 5 px views). On the same weights, 4 px beat 2 px on 10 of 11 long / v2 models (+1.1 %;
    RESULTS.md), not on the 12-epoch quick model; 8 px gave the gain back.
    5x the cost of a prediction, so the per-epoch scores skip it."""
    tta_diagonals: bool = False
    """With ``tta_shift_px``, also the four diagonal moves (+-s, +-s): 9 views. Not on by default: +0.7 % val on
    6 three-member models, but worse on 2 of 4 one-member models, and mixed on half of val (RESULTS.md)."""


@dataclass
class TrainConfig:
    epochs: int = 70
    """Passes over the training set; the cosine schedule spans them."""
    batch_size: int = 32
    """Images per optimizer step."""
    lr: float = 2.96e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 8.8e-5
    """AdamW decoupled weight decay."""
    warmup_epochs: float = 1.0
    """Linear warmup length (epochs) before the cosine decay."""
    min_lr_ratio: float = 0.01
    """Final learning rate as a fraction of ``lr``."""
    loss: str = "mse"
    """Training loss on normalized coordinates: ``mse``, ``l1``, ``smooth_l1`` (beta below) or ``wing``."""
    smooth_l1_beta: float = 0.02
    """Where smooth-L1 turns from quadratic to linear (normalized units; 0.02 = ~1 px)."""
    wing_w_px: float = 10.0
    """Wing loss: errors below this many pixels get the log piece (the paper's w = 10)."""
    wing_eps_px: float = 2.0
    """Wing loss: curvature of the log piece in pixels (the paper's epsilon = 2)."""
    mse_from: float = 1.0
    """From this fraction of ``epochs`` on, the loss is MSE whatever ``loss`` says (the course scores MSE): a
    schedule of a robust loss first and MSE to finish; 1 = ``loss`` throughout."""
    heatmap_reg: float = 0.0
    """``model.head=soft_argmax``: weight of DSNT's variance regulariser, which pulls each heatmap's spread
    towards ``heatmap_sigma_px`` (a peaked, unimodal heatmap); 0 = off."""
    heatmap_sigma_px: float = 2.0
    """The spread (standard deviation, pixels) the variance regulariser asks of each heatmap."""
    ema_decay: float = 0.99
    """Per-step EMA of the weights, evaluated and saved instead of the raw model (0 = off). Keep its horizon
    (~1/(1-decay) steps) around an epoch or two: 0.998 (10 epochs here) lagged the fast-moving weights and
    their BatchNorm statistics so much that val was 10x worse mid-training (measured)."""
    grad_clip: float = 5.0
    """Clip the gradient norm to this (0 = off)."""
    channels_last: bool = True
    """NHWC memory layout: measured 1.5x faster CNN training on the CI CPU."""
    eval_every: int = 5
    """Evaluate on val every N epochs (and always at the last)."""
    eval_all_from: float = 0.8
    """From this fraction of ``epochs`` on, evaluate after every epoch whatever ``eval_every`` says (1 = never):
    the best checkpoint is picked on the plateau at the end, and most early evaluations (~0.6 s each, ~20 % of
    an epoch of the default model on 2 cores) are skipped."""
    swa_from: float = 0.0
    """From this fraction of ``epochs`` on, also keep a uniform average of the evaluated weights, one snapshot
    per epoch end (SWA, Izmailov et al. 2018, with ``swa_utils.AveragedModel``), score it at every evaluation as
    ``val/score_swa`` and checkpoint it when it beats every earlier candidate (0 = off). On the long preset's
    plateau (0.7) it removed most of the late decline but never beat the best epoch's weights (RESULTS.md)."""
    swa_lr: float = 0.0
    """With ``swa_from``: the cosine decays to this fraction of ``lr`` by ``swa_from`` and holds it to the end
    (SWA's constant-rate phase: snapshots far enough apart to be worth averaging); 0 = the cosine spans every
    epoch down to ``min_lr_ratio``, whatever ``swa_from`` says."""
    time_limit_s: float = 0.0
    """Stop after this many seconds of training (0 = no limit); the schedule still assumes ``epochs``."""


@dataclass
class KeypointsConfig:
    """Everything one ex09 training run needs."""

    experiment: ClassVar[str] = "ex09"  # the exercise, recorded in config.json (not a key to set)

    preset: str = "default"
    """The preset this config started from (informational: ``--preset`` sets it)."""
    data: DataConfig = field(default_factory=DataConfig)
    # the default's values here and in ModelConfig / TrainConfig: the kp-v3 study's trial 31, confirmed on 3 seeds
    # (+9.9 +- 0.4 over v3 at 0.79x its wall; RESULTS.md "The kp-v3 study earns a new default")
    augment: AffineAugment = field(default_factory=lambda: AffineAugment(rotate_deg=10.2, scale=0.071,
                                                                         shift=0.037, contrast=0.31))
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def validate(self) -> None:
        self.run.validate()
        m = self.model
        choices = {"model.stem": (m.stem, ("unshuffle", "avgpool", "none")),
                   "model.downsample": (m.downsample, ("maxpool", "stride", "blurpool")),
                   "model.head": (m.head, ("flatten", "gap", "soft_argmax")),
                   "model.norm": (m.norm, ("batch", "group", "layer", "instance", "none")),
                   "model.conv_dropout": (m.conv_dropout, ("dropout2d", "dropout", "none")),
                   "train.loss": (self.train.loss, ("mse", "l1", "smooth_l1", "wing"))}
        for key, (value, valid) in choices.items():
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(valid)}")
        if not (m.arch in ("cnn", "mlp") or m.arch.startswith("timm:")):
            raise ConfigError(f"model.arch={m.arch!r}: use 'cnn', 'mlp' or 'timm:<model name>'")
        if m.arch == "mlp" and self.train.batch_size < 2:
            raise ConfigError("train.batch_size=1 with model.arch=mlp: its BatchNorm1d needs 2 or more images a batch")
        if m.norm == "group" and any(w % max(m.norm_groups, 1) for w in m.widths):
            raise ConfigError(f"model.widths={','.join(map(str, m.widths))} must be multiples of "
                              f"model.norm_groups={m.norm_groups} for model.norm=group")
        if m.stem_factor < 1 or 96 % m.stem_factor:
            raise ConfigError(f"model.stem_factor={m.stem_factor} must divide 96")
        if not m.widths:
            raise ConfigError("model.widths needs at least one block width")
        if m.residual and m.downsample == "stride":
            raise ConfigError("model.residual=true needs model.downsample=maxpool or blurpool: with stride the last "
                              "conv halves the map and the skip would not match it")
        if self.train.heatmap_reg > 0 and m.head != "soft_argmax":
            raise ConfigError("train.heatmap_reg regularises heatmaps: it needs model.head=soft_argmax")
        if m.kernel % 2 == 0:
            raise ConfigError(f"model.kernel={m.kernel} must be odd (3, 5, 7: 'same' padding keeps the size)")
        check_ranges(self, {
            "model.widths": ">= 1", "model.convs_per_block": ">= 1", "model.kernel": ">= 1",
            "model.dropout2d": "[0, 1)", "model.head_hidden": ">= 0", "model.head_dropout": "[0, 1)",
            "model.input_size": ">= 16", "model.norm_groups": ">= 1", "model.mlp_widths": ">= 1",
            "model.tta_shift_px": "[0, 16]", "model.members": ">= 1", "model.se_ratio": "[0, 1]",
            "train.epochs": ">= 1", "train.batch_size": ">= 1", "train.lr": "> 0", "train.weight_decay": ">= 0",
            "train.warmup_epochs": ">= 0", "train.min_lr_ratio": "[0, 1]", "train.smooth_l1_beta": "> 0",
            "train.wing_w_px": "> 0", "train.wing_eps_px": "> 0", "train.ema_decay": "[0, 1)",
            "train.grad_clip": ">= 0", "train.eval_every": ">= 1", "train.eval_all_from": "[0, 1]",
            "train.swa_from": "[0, 1)", "train.swa_lr": "[0, 1]", "train.mse_from": "[0, 1]",
            "train.heatmap_reg": ">= 0", "train.heatmap_sigma_px": "> 0", "model.heatmap_size": "[2, 96]",
            "train.time_limit_s": ">= 0", **augment_ranges("augment")})


def is_eval_epoch(epoch: int, train: TrainConfig) -> bool:
    """Whether epoch ``epoch`` (0-based) ends with a val evaluation (the last one always does)."""
    return ((epoch + 1) % train.eval_every == 0 or epoch == train.epochs - 1
            or epoch >= train.eval_all_from * train.epochs)


def _v1(cfg: KeypointsConfig) -> None:
    """The first default recipe, the baseline the others are timed and scored against: a dropout before the
    head's last layer, no shifted views, a val score every epoch."""
    _v3(cfg)
    cfg.model.head, cfg.model.final_pool = "flatten", True
    cfg.model.head_hidden, cfg.model.head_dropout, cfg.model.tta_shift_px = 256, 0.1, 0
    cfg.train.epochs, cfg.train.eval_every, cfg.train.eval_all_from = 70, 1, 1.0


def _v3(cfg: KeypointsConfig) -> None:
    """The default recipe of 2026-12-05 (571.9 +- 6.0 over 3 seeds): soft-argmax heatmaps on the 6x6 map of a
    48/96/192 CNN, the augmentation's own defaults, before the kp-v3 study's winner replaced it."""
    cfg.model.widths, cfg.model.se_ratio, cfg.model.dropout2d, cfg.model.tta_shift_px = (48, 96, 192), 0.0, 0.0, 4
    cfg.train.lr, cfg.train.weight_decay, cfg.augment = 2e-3, 1e-4, AffineAugment()


def _v2(cfg: KeypointsConfig) -> None:
    """The default recipe of 2026-11 (499.4 +- 11.6 over 3 seeds): a fully connected head (1728 -> 512 -> 30) on
    the 3x3 map, before the soft-argmax heatmaps replaced it."""
    _v3(cfg)
    cfg.model.head, cfg.model.final_pool = "flatten", True


def _quick(cfg: KeypointsConfig) -> None:
    """~1 minute on 2 CPU cores: the fully connected head on the 3x3 map (v2's), one conv per block (3x cheaper),
    few epochs, a val score after each (its time to pass 100 is measured at them)."""
    _v2(cfg)  # the soft-argmax heatmaps learn slower: at 12 epochs 164.9 +- 4.3 against this head's 234.5 +- 4.0
    cfg.model.convs_per_block = 1
    cfg.train.epochs, cfg.train.eval_every, cfg.train.eval_all_from = 12, 1, 1.0


def _long(cfg: KeypointsConfig) -> None:
    """Three members (an ensemble inside the model: 1.96M parameters, 7.9 MB) of v3 on twice the epochs: ~23
    minutes on 2 CPU cores. Soft-argmax members beat v2's FC-head members (4.66M) by 11 % on 3 seeds at the same
    wall (RESULTS.md, "ex09 v3"); members of today's default are not measured yet."""
    _v3(cfg)
    cfg.model.members = 3
    cfg.train.epochs = 140


PRESETS = {"default": lambda cfg: None, "quick": _quick, "long": _long, "v3": _v3, "v2": _v2, "v1": _v1}


def make_config(preset: str = "default") -> KeypointsConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = KeypointsConfig(preset=preset)
    PRESETS[preset](cfg)
    cfg.validate()
    return cfg
