"""Keypoint regressors: a configurable CNN, an MLP and any timm backbone, behind one wrapper.

Every model takes the course's input, (N,1,96,96) floats in [0,1], and returns (N,30) so that the course's
``model(image).view(-1,15,2)`` works unchanged: resizing, normalisation and test-time flip averaging all
happen inside ``forward``.

This file is also the course submission's ``exercise_code/networks/keypoint_nn.py`` (``experiments.run export``
copies it, putting the constants' values in place of the import marked below), so it imports nothing else of
this repo, and ``KeypointModel(hparams)`` takes the plain dict the course pickles beside the weights.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ex09_keypoints.data import FLIP_PERMUTATION, IMAGE_SIZE, KEYPOINT_GRID_OFFSET  # export: constants

N_OUTPUTS = 30


def norm_layer(kind: str, channels: int, groups: int = 8) -> nn.Module:
    """The normalisation after a conv: each of them averages over other axes of (N, C, H, W)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)  # per channel, over N, H, W (running statistics at eval)
    if kind == "group":
        return nn.GroupNorm(groups, channels)  # per image, over each group of C/groups channels and H, W
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # per image, over C, H, W (GroupNorm with one group)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)  # per image and channel, over H, W
    return nn.Identity()  # "none"


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, norm: str = "batch",
                 groups: int = 8) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=norm == "none"),
            norm_layer(norm, c_out, groups), nn.ReLU(inplace=True)]


class Residual(nn.Module):
    """``body(x) + skip(x)``, then ReLU: the identity, or a 1x1 conv + norm where the width changes (He et al.
    2016)."""

    def __init__(self, body: list[nn.Module], c_in: int, c_out: int, norm: str, groups: int):
        super().__init__()
        body[-1] = nn.Identity()  # the body's last ReLU comes after the sum
        self.body = nn.Sequential(*body)
        self.skip = (nn.Identity() if c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), norm_layer(norm, c_out, groups)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): each channel scaled by a gate computed from all channels' means."""

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        hidden = max(4, round(channels * ratio))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang 2019): a [1,2,1] x [1,2,1] blur, then every second pixel; after a stride-1
    max-pool this is MaxBlurPool, which keeps a small shift of the face from changing the features much. (timm has
    one; timm is an optional extra, and the course's loader has only torch.)"""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).contiguous(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=x.shape[1])


def conv_dropout(kind: str, p: float) -> list[nn.Module]:
    """After each conv block: none, ``nn.Dropout`` (single entries) or ``nn.Dropout2d`` (whole feature maps)."""
    if p == 0 or kind == "none":
        return []
    return [nn.Dropout(p) if kind == "dropout" else nn.Dropout2d(p)]


class KeypointCNN(nn.Module):
    """stem -> [conv-norm-ReLU x n, downsample, dropout] per width -> head -> 30 numbers."""

    def __init__(self, cfg):
        super().__init__()
        self.stem_kind, self.stem_factor = cfg.stem, cfg.stem_factor
        channels = cfg.stem_factor ** 2 if cfg.stem == "unshuffle" else 1
        layers: list[nn.Module] = []
        for b, width in enumerate(cfg.widths):
            halve = b < len(cfg.widths) - 1 or getattr(cfg, "final_pool", True)
            block, c_in = [], channels
            for i in range(cfg.convs_per_block):
                last = i == cfg.convs_per_block - 1
                stride = 2 if (halve and last and cfg.downsample == "stride") else 1
                block += conv_bn_relu(channels, width, cfg.kernel, stride, cfg.norm, cfg.norm_groups)
                channels = width
            # plain blocks keep their flat layout: the state-dict keys of models saved before these options
            layers += [Residual(block, c_in, width, cfg.norm, cfg.norm_groups)] if cfg.residual else block
            layers += [SqueezeExcite(width, cfg.se_ratio)] if cfg.se_ratio > 0 else []
            if halve and cfg.downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            if halve and cfg.downsample == "blurpool":
                layers += [nn.MaxPool2d(2, stride=1), BlurPool(width)]
            layers += conv_dropout(cfg.conv_dropout, cfg.dropout2d)
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            fmap = self.features(self.stem(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)))
        if cfg.head == "soft_argmax":
            self.head = SoftArgmaxHead(fmap.shape[1], cfg.heatmap_size)
            return
        if cfg.head == "gap":
            pool, n_in = [nn.AdaptiveAvgPool2d(1), nn.Flatten()], fmap.shape[1]
        else:
            pool, n_in = [nn.Flatten()], fmap.numel()
        if cfg.head_hidden > 0:
            head = [nn.Linear(n_in, cfg.head_hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.head_dropout),
                    nn.Linear(cfg.head_hidden, N_OUTPUTS)]
        else:
            head = [nn.Dropout(cfg.head_dropout), nn.Linear(n_in, N_OUTPUTS)]
        self.head = nn.Sequential(*pool, *head)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2.0 - 1.0  # centre the [0,1] input
        if self.stem_kind == "unshuffle" and self.stem_factor > 1:
            return F.pixel_unshuffle(x, self.stem_factor)
        if self.stem_kind == "avgpool" and self.stem_factor > 1:
            return F.avg_pool2d(x, self.stem_factor)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


class SoftArgmaxHead(nn.Module):
    """15 heatmaps -> each one's expected position (N,30): a 1x1 conv gives a logit map per keypoint, upsampled
    (bilinear) to ``size`` x ``size`` cells over the image, a softmax over the cells, and the mean of the cells'
    centres under it (a differentiable arg-max). ``variance`` keeps each heatmap's spread (N,15,2) from the last
    forward for DSNT's regulariser."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.logits = nn.Conv2d(channels, len(FLIP_PERMUTATION), 1)
        self.size = size
        # cell j's centre in the keypoints' normalised coordinates (1-based pixel centres: KEYPOINT_GRID_OFFSET)
        centres = ((torch.arange(size) + 0.5) * (IMAGE_SIZE / size) - IMAGE_SIZE / 2) / (IMAGE_SIZE / 2)
        self.register_buffer("centres", centres + KEYPOINT_GRID_OFFSET, persistent=False)
        self.variance = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = self.logits(features)
        if z.shape[-1] != self.size:
            z = F.interpolate(z, size=(self.size, self.size), mode="bilinear", align_corners=False)
        n, k = z.shape[:2]
        p = z.float().flatten(2).softmax(-1).view(n, k, self.size, self.size)
        px, py = p.sum(2), p.sum(3)  # marginals over x (columns) and y (rows)
        mean = torch.stack([(px * self.centres).sum(-1), (py * self.centres).sum(-1)], -1)  # (N,15,2)
        second = torch.stack([(px * self.centres ** 2).sum(-1), (py * self.centres ** 2).sum(-1)], -1)
        self.variance = second - mean ** 2
        return mean.flatten(1)


class KeypointMLP(nn.Module):
    """Fully connected layers only, on all 96x96 input pixels: [Linear-BatchNorm1d-ReLU-Dropout] per hidden
    width -> 30 numbers (the tutorial's "why not just an MLP"; its first layer alone has 9216 x width weights)."""

    def __init__(self, cfg):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = IMAGE_SIZE * IMAGE_SIZE
        for width in cfg.mlp_widths:
            layers += [nn.Linear(n_in, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                       nn.Dropout(cfg.head_dropout)]
            n_in = width
        self.net = nn.Sequential(*layers, nn.Linear(n_in, N_OUTPUTS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


class TimmRegressor(nn.Module):
    """A timm backbone with ``in_chans=1`` and a 30-output head; resizes its input to ``input_size``."""

    def __init__(self, cfg):
        super().__init__()
        try:
            import timm  # ~6 s import: only when a timm model is asked for
        except ImportError:
            from common.errors import ConfigError
            raise ConfigError(f"model.arch={cfg.arch} needs timm, an optional dependency: pip install "
                              "'i2dl-lab[timm]' (or model.arch=cnn)") from None

        self.input_size = cfg.input_size
        self.net = timm.create_model(cfg.arch.split(":", 1)[1], pretrained=cfg.pretrained, in_chans=1,
                                     num_classes=N_OUTPUTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return self.net(x * 2.0 - 1.0)


class Members(nn.Module):
    """An ensemble inside one model: ``n`` backbones, each trained on its own loss and its own augmentation
    draws (:meth:`each`); the prediction is their mean."""

    def __init__(self, make, n: int):
        super().__init__()
        self.nets = nn.ModuleList(make() for _ in range(n))

    def each(self, x: torch.Tensor) -> torch.Tensor:
        """Member m predicts on the m-th of ``n`` equal chunks of the batch (training)."""
        return torch.cat([net(chunk) for net, chunk in zip(self.nets, x.chunk(len(self.nets)))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets]).mean(0)


def shift_image(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move the content of (N,C,H,W) images ``dx`` pixels right and ``dy`` down; border pixels repeat. A whole-
    pixel move needs no interpolation, and moves every point by exactly (dx, dy) / (IMAGE_SIZE / 2)."""
    k = max(abs(dx), abs(dy))
    if k == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (k, k, k, k), mode="replicate")
    return padded[..., k - dy:k - dy + h, k - dx:k - dx + w]


class KeypointModel(nn.Module):
    """The saved model: backbone + optional test-time augmentation (in eval mode only): the mirrored face
    (``flip_tta``) and the face moved by whole pixels (``tta_shift_px``; ``tta_diagonals`` adds the four diagonal
    moves), each prediction mapped back and averaged. ``hparams``: a ``ModelConfig`` or the same fields as a
    plain dict (what the course's server passes)."""

    def __init__(self, hparams):
        super().__init__()
        self.hparams = dataclasses.asdict(hparams) if dataclasses.is_dataclass(hparams) else dict(hparams)
        # A model saved before these fields existed was made without them.
        cfg = SimpleNamespace(**{"tta_shift_px": 0, "tta_diagonals": False, "members": 1, "norm": "batch",
                                 "norm_groups": 8, "conv_dropout": "dropout2d", "heatmap_size": 24, "residual": False,
                                 "se_ratio": 0.0, **self.hparams})
        backbone = (TimmRegressor if cfg.arch.startswith("timm:") else KeypointMLP if cfg.arch == "mlp"
                    else KeypointCNN)
        self.net = backbone(cfg) if cfg.members == 1 else Members(lambda: backbone(cfg), cfg.members)
        self.members = cfg.members
        self.flip_tta = cfg.flip_tta
        s = cfg.tta_shift_px
        self.shifts = [(0, 0)] + ([(s, 0), (-s, 0), (0, s), (0, -s)] if s else [])
        if s and cfg.tta_diagonals:
            self.shifts += [(s, s), (-s, s), (s, -s), (-s, -s)]
        self.shift_tta = True  # training switches it off for its per-epoch val scores (5x cheaper)
        self.register_buffer("flip_perm", torch.tensor(FLIP_PERMUTATION), persistent=False)

    def heatmap_variances(self) -> torch.Tensor | None:
        """The soft-argmax heads' heatmap spreads (N,15,2) from the last forward (members' stacked), else None."""
        heads = [m for m in self.modules() if isinstance(m, SoftArgmaxHead) and m.variance is not None]
        return torch.cat([h.variance for h in heads]) if heads else None

    def member_predictions(self, x: torch.Tensor) -> torch.Tensor:
        """Training: (N,30) predictions where a batch of ``members`` equal chunks goes one chunk per member."""
        return self.net.each(x) if self.members > 1 else self.net(x)

    def predict_flip_averaged(self, x: torch.Tensor) -> torch.Tensor:
        """(N,15,2): the mean of the prediction on ``x`` and the mirrored prediction on the mirrored ``x``."""
        both = self.net(torch.cat([x, x.flip(-1)]))  # one batched pass over image and mirror
        direct, mirrored = both.view(2, -1, len(FLIP_PERMUTATION), 2).unbind(0)
        mirrored = mirrored[:, self.flip_perm].clone()
        mirrored[..., 0] = 2 * KEYPOINT_GRID_OFFSET - mirrored[..., 0]  # mirror about the grid's centre
        return (direct + mirrored) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifts = self.shifts if self.shift_tta else self.shifts[:1]
        if self.training or not (self.flip_tta or len(shifts) > 1):
            return self.net(x)
        views = torch.cat([shift_image(x, dx, dy) for dx, dy in shifts])  # one batched pass over all views
        pred = (self.predict_flip_averaged(views) if self.flip_tta
                else self.net(views).view(-1, len(FLIP_PERMUTATION), 2))
        moved = torch.tensor(shifts, dtype=pred.dtype, device=pred.device) / (IMAGE_SIZE / 2)
        pred = pred.view(len(shifts), x.shape[0], -1, 2) - moved[:, None, None, :]  # move the points back
        return pred.mean(0).reshape(x.shape[0], N_OUTPUTS)


def build_model(cfg) -> KeypointModel:
    """The model of a ``ModelConfig``."""
    return KeypointModel(cfg)
