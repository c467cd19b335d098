"""Keypoint regressors: a configurable CNN and any timm backbone, behind one wrapper.

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


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class KeypointCNN(nn.Module):
    """stem -> [conv-BN-ReLU x n, downsample, Dropout2d] per width -> head -> 30 numbers."""

    def __init__(self, cfg):
        super().__init__()
        self.stem_kind, self.stem_factor = cfg.stem, cfg.stem_factor
        channels = cfg.stem_factor ** 2 if cfg.stem == "unshuffle" else 1
        layers: list[nn.Module] = []
        for width in cfg.widths:
            for i in range(cfg.convs_per_block):
                last = i == cfg.convs_per_block - 1
                stride = 2 if (last and cfg.downsample == "stride") else 1
                layers += conv_bn_relu(channels, width, cfg.kernel, stride)
                channels = width
            if cfg.downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            if cfg.dropout2d > 0:
                layers.append(nn.Dropout2d(cfg.dropout2d))
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            fmap = self.features(self.stem(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)))
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


class TimmRegressor(nn.Module):
    """A timm backbone with ``in_chans=1`` and a 30-output head; resizes its input to ``input_size``."""

    def __init__(self, cfg):
        super().__init__()
        import timm  # ~6 s import: only when a timm model is asked for

        self.input_size = cfg.input_size
        self.net = timm.create_model(cfg.arch.split(":", 1)[1], pretrained=cfg.pretrained, in_chans=1,
                                     num_classes=N_OUTPUTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return self.net(x * 2.0 - 1.0)


class KeypointModel(nn.Module):
    """The saved model: backbone + optional flip test-time augmentation (in eval mode only). ``hparams``: a
    ``ModelConfig`` or the same fields as a plain dict (what the course's server passes)."""

    def __init__(self, hparams):
        super().__init__()
        self.hparams = dataclasses.asdict(hparams) if dataclasses.is_dataclass(hparams) else dict(hparams)
        cfg = SimpleNamespace(**self.hparams)
        self.net = TimmRegressor(cfg) if cfg.arch.startswith("timm:") else KeypointCNN(cfg)
        self.flip_tta = cfg.flip_tta
        self.register_buffer("flip_perm", torch.tensor(FLIP_PERMUTATION), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.flip_tta:
            return self.net(x)
        both = self.net(torch.cat([x, x.flip(-1)]))  # one batched pass over image and mirror
        direct, mirrored = both.view(2, -1, len(FLIP_PERMUTATION), 2).unbind(0)
        mirrored = mirrored[:, self.flip_perm].clone()
        mirrored[..., 0] = 2 * KEYPOINT_GRID_OFFSET - mirrored[..., 0]  # mirror about the grid's centre
        return ((direct + mirrored) / 2).reshape(x.shape[0], N_OUTPUTS)


def build_model(cfg) -> KeypointModel:
    """The model of a ``ModelConfig``."""
    return KeypointModel(cfg)
