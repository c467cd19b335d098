"""Fully connected autoencoder and classifier for 28x28 digits, both recipes from one description.

A block is Linear -> Norm -> Activation -> Dropout. The encoder is blocks 784 -> hidden[0] -> ... -> hidden[-1]
then a projection to the latent code (a plain Linear in the case study, a full block without dropout in the
leaderboard recipe); the decoder mirrors it (latent -> reversed(hidden) -> 784, Sigmoid, pixels in [0, 1]); the
classifier is the encoder plus a head of blocks ending in a Linear to 10 logits. Images go in as (N,1,28,28)
or flattened (N,784), in [0, 1]: nothing here knows pixels are neighbours (fully connected only, as the course asks).

This file is also the course submission's ``exercise_code/models.py`` (``experiments.run export`` copies it), so it
imports only torch, and ``Encoder(hparams, input_size, latent_dim)`` / ``Classifier(hparams, encoder)`` take the
course's arguments: ``hparams`` a ``ModelConfig`` or the same fields as the plain dict the course pickles.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch
from torch import nn

N_PIXELS = 28 * 28
N_CLASSES = 10


def plain(hparams) -> dict:
    """``hparams`` as a plain dict (what the course pickles), from a ``ModelConfig`` or a dict."""
    return dataclasses.asdict(hparams) if dataclasses.is_dataclass(hparams) else dict(hparams)


def block(n_in: int, n_out: int, cfg, dropout: float) -> list[nn.Module]:
    norm = nn.LayerNorm(n_out) if cfg.norm == "layer" else nn.BatchNorm1d(n_out)
    act = nn.GELU() if cfg.activation == "gelu" else nn.LeakyReLU()
    return [nn.Linear(n_in, n_out), norm, act] + ([nn.Dropout(dropout)] if dropout > 0 else [])


class Encoder(nn.Module):
    def __init__(self, hparams, input_size: int = N_PIXELS, latent_dim: int | None = None):
        super().__init__()
        self.hparams, self.input_size = plain(hparams), input_size
        cfg = SimpleNamespace(**self.hparams)
        self.latent_dim = latent_dim or cfg.latent
        layers, width = [nn.Flatten()], input_size
        for h in cfg.hidden:
            layers += block(width, h, cfg, cfg.dropout)
            width = h
        layers += (block(width, self.latent_dim, cfg, 0.0) if cfg.latent_block
                   else [nn.Linear(width, self.latent_dim)])
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        layers, width = [], cfg.latent
        for h in reversed(cfg.hidden):
            layers += block(width, h, cfg, 0.0)
            width = h
        layers.append(nn.Linear(width, N_PIXELS))
        self.net = nn.Sequential(*layers)

    def logits(self, z):
        """Pre-sigmoid pixels: what a stable BCE-with-logits loss wants."""
        return self.net(z).view(-1, 1, 28, 28)

    def forward(self, z):
        return torch.sigmoid(self.logits(z))


class Autoencoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)

    def reconstruction_logits(self, x):
        return self.decoder.logits(self.encoder(x))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class Classifier(nn.Module):
    """The (pretrained) encoder and a head; ``encoder`` and ``head`` are separate attributes so each can get
    its own learning rate."""

    def __init__(self, hparams, encoder: Encoder | None = None):
        super().__init__()
        self.hparams = plain(hparams)
        cfg = SimpleNamespace(**self.hparams)
        self.encoder = encoder if encoder is not None else Encoder(hparams)
        layers, width = [], self.encoder.latent_dim
        for h in cfg.head_hidden:
            layers += block(width, h, cfg, cfg.head_dropout)
            width = h
        layers.append(nn.Linear(width, N_CLASSES))
        self.head = nn.Sequential(*layers)

    def forward(self, x):
        return self.head(self.encoder(x))


def millions(n_params: int) -> str:
    """Parameter count the way the case-study seed prints it: thousands truncated, e.g. 824,702 -> 0.824M
    (PyTorch Lightning's ModelSummary floors to whole thousands, "824 K")."""
    return f"{n_params // 1000 / 1000:.3f}M"


@torch.no_grad()
def encode(encoder: nn.Module, images_uint8, batch_size: int = 4096):
    """Latent features of uint8 images, in eval mode, batched."""
    was_training = encoder.training
    encoder.eval()
    feats = [encoder(images_uint8[i:i + batch_size].float() / 255.0) for i in range(0, len(images_uint8), batch_size)]
    encoder.train(was_training)
    return torch.cat(feats)
