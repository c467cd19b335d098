"""Batched, on-device augmentation of images *and* the points on them.

One random affine per sample (rotation, isotropic scale, shift, optional horizontal flip) is applied to the
whole batch with a single ``affine_grid`` + ``grid_sample`` call, and the same matrix moves the points, so
keypoints stay on the features they mark. Points use the normalized image coordinates of ``grid_sample``
with ``align_corners=False``: x = -1 is the left edge of the image and +1 the right edge, which matches the
course's keypoint normalisation (px - 48) / 48 up to ``point_offset`` (below). No per-sample Python, no PIL.

For a point p (in output coordinates) ``grid_sample`` reads the input at ``theta @ [p, 1]``; so if points move
input -> output by ``y = A x + t``, the sampling matrix is the inverse: ``theta = [A^-1 | -A^-1 t]``.

``point_offset`` says where the data's point coordinates put the pixel grid: points are ``grid + offset``.
Annotations made in 1-based pixel coordinates (MATLAB, iBUG 300-W) put pixel i's centre at i + 1, half a
pixel right/down of the 0-based [i, i+1] convention; ignoring that makes every flip land one pixel off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class AffineAugment:
    """Strengths of the random geometric and photometric augmentation (0 switches one off)."""

    flip: bool = True
    """Mirror half of the batch horizontally (points get x -> -x and left/right names swapped)."""
    rotate_deg: float = 10.0
    """Rotation drawn uniformly from [-rotate_deg, rotate_deg] degrees."""
    scale: float = 0.08
    """Zoom factor drawn uniformly from [1 - scale, 1 + scale]."""
    shift: float = 0.06
    """Translation drawn uniformly from [-shift, shift] of the image width/height, per axis."""
    brightness: float = 0.15
    """Additive brightness offset drawn from [-brightness, brightness] (images in [0, 1])."""
    contrast: float = 0.25
    """Contrast factor drawn from [1 - contrast, 1 + contrast], applied around each image's mean."""


def random_affine(n: int, aug: AffineAugment, generator=None, device="cpu"):
    """``(A, t, flipped)``: per-sample 2x2 matrices, 2-vectors and a bool mask, mapping points input->output."""
    import torch

    def uniform(lo, hi):
        return torch.rand(n, generator=generator, device=device) * (hi - lo) + lo

    angle = uniform(-aug.rotate_deg, aug.rotate_deg) * (math.pi / 180.0)
    scale = uniform(1.0 - aug.scale, 1.0 + aug.scale)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    A = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    if aug.flip:
        flipped = torch.rand(n, generator=generator, device=device) < 0.5
        sign = torch.where(flipped, -1.0, 1.0)
        A = A * torch.stack([sign, torch.ones_like(sign)], -1)[:, None, :]  # flip x before rotating
    else:
        flipped = torch.zeros(n, dtype=torch.bool, device=device)
    t = torch.stack([uniform(-aug.shift, aug.shift), uniform(-aug.shift, aug.shift)], -1) * 2.0  # [-1,1] spans 2
    return A, t, flipped


def warp_images(images, A, t, out_size=None):
    """Resample ``images`` (N,C,H,W) so that content at x moves to ``A x + t`` (normalized coordinates)."""
    import torch
    import torch.nn.functional as F

    A_inv = torch.linalg.inv(A)
    theta = torch.cat([A_inv, -(A_inv @ t.unsqueeze(-1))], dim=-1)  # (N, 2, 3)
    n, c, h, w = images.shape
    size = (n, c, *(out_size or (h, w)))
    grid = F.affine_grid(theta.to(images.dtype), size, align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warp_points(points, A, t, flipped=None, flip_permutation=None, point_offset: float = 0.0):
    """Move points (N,K,2) by ``A x + t`` (in grid coordinates, see ``point_offset``); where ``flipped``,
    reorder them with ``flip_permutation`` so that "left" names keep meaning the person's left."""
    import torch

    moved = (points - point_offset) @ A.transpose(1, 2) + t[:, None, :] + point_offset
    if flip_permutation is not None and flipped is not None and bool(flipped.any()):
        perm = torch.as_tensor(flip_permutation, device=points.device)
        moved = torch.where(flipped[:, None, None], moved[:, perm], moved)
    return moved


def jitter_photometric(images, aug: AffineAugment, generator=None):
    """Random brightness and contrast per image, clamped to [0, 1]."""
    import torch

    n = images.shape[0]
    shape = (n,) + (1,) * (images.dim() - 1)
    out = images
    if aug.contrast > 0:
        c = (torch.rand(shape, generator=generator, device=images.device) * 2 - 1) * aug.contrast + 1
        mean = images.mean(dim=tuple(range(1, images.dim())), keepdim=True)
        out = (out - mean) * c + mean
    if aug.brightness > 0:
        out = out + (torch.rand(shape, generator=generator, device=images.device) * 2 - 1) * aug.brightness
    return out.clamp_(0.0, 1.0)


def augment_batch(images, points, aug: AffineAugment, flip_permutation=None, generator=None,
                  point_offset: float = 0.0):
    """Geometric + photometric augmentation of a batch of images and their points, in one pass."""
    A, t, flipped = random_affine(images.shape[0], aug, generator=generator, device=images.device)
    images = warp_images(images, A, t)
    points = warp_points(points, A, t, flipped, flip_permutation, point_offset)
    return jitter_photometric(images, aug, generator=generator), points
