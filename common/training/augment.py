"""Batched, on-device augmentation of images *and* the points on them.

Why not torchvision's v2 transforms on the batch tensor: they draw *one* set of random parameters per call, so
every image of a batch would get the same rotation / erased box. Here every parameter is drawn per sample.

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
    shear_deg: float = 0.0
    """x-shear angle drawn uniformly from [-shear_deg, shear_deg] degrees (torchvision's ``shear=s``)."""
    gamma: float = 0.0
    """Gamma curve x ** g with g drawn log-uniformly from [1 / (1 + gamma), 1 + gamma] per image (0 = off): darker
    or lighter mid-tones, black and white kept (the Kaggle runner-up's contrast stretch)."""
    noise: float = 0.0
    """Gaussian pixel noise with a standard deviation drawn from [0, noise] per image (0 = off)."""
    sharpen_p: float = 0.0
    """Probability of sharpening per image (an unsharp mask: x + amount * (x - blur(x)))."""
    sharpen_amount: float = 1.0
    """Strength of the unsharp mask, drawn from [0, sharpen_amount] per sharpened image."""
    blur_p: float = 0.0
    """Probability of a Gaussian blur (3x3 kernel) per image."""
    blur_sigma: tuple[float, ...] = (0.1, 1.0)
    """Range of the blur's standard deviation in pixels, drawn per image."""
    erase_p: float = 0.0
    """Probability of random erasing per image: one rectangle set to 0 (torchvision's ``RandomErasing``)."""
    erase_scale: tuple[float, ...] = (0.01, 0.06)
    """Range of the erased area as a fraction of the image."""
    erase_ratio: tuple[float, ...] = (0.3, 3.3)
    """Range of the erased rectangle's aspect ratio (drawn log-uniformly)."""
    elastic_alpha: float = 0.0
    """Elastic distortion (Simard et al. 2003): every pixel moves by a random field, uniform in [-1, 1] per
    pixel and axis, smoothed by a Gaussian of ``elastic_sigma`` pixels and scaled by this many pixels (their
    MNIST values: 34 and 4, moving a 28x28 pixel by ~1.5 px on average); points move with it. 0 = off."""
    elastic_sigma: float = 4.0
    """The smoothing Gaussian's standard deviation in pixels: larger = smoother, gentler bends."""


def augment_ranges(prefix: str) -> dict[str, str]:
    """The valid range of each :class:`AffineAugment` field, keyed ``<prefix>.<field>`` (for ``check_ranges``)."""
    ranges = {"rotate_deg": "[0, 180]", "scale": "[0, 1)", "shift": "[0, 1]", "brightness": "[0, 1]",
              "contrast": "[0, 1]", "shear_deg": "[0, 80]", "gamma": "[0, 4]", "noise": "[0, 1]",
              "sharpen_p": "[0, 1]", "sharpen_amount": "[0, 4]", "blur_p": "[0, 1]", "blur_sigma": "> 0",
              "erase_p": "[0, 1]", "erase_scale": "(0, 1]", "erase_ratio": "> 0", "elastic_alpha": "[0, 1000]",
              "elastic_sigma": "(0, 100]"}
    return {f"{prefix}.{k}": v for k, v in ranges.items()}


def random_affine(n: int, aug: AffineAugment, generator=None, device="cpu"):
    """``(A, t, flipped)``: per-sample 2x2 matrices, 2-vectors and a bool mask, mapping points input->output."""
    import torch

    def uniform(lo, hi):
        return torch.rand(n, generator=generator, device=device) * (hi - lo) + lo

    angle = uniform(-aug.rotate_deg, aug.rotate_deg) * (math.pi / 180.0)
    scale = uniform(1.0 - aug.scale, 1.0 + aug.scale)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    A = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    if aug.shear_deg > 0:  # drawn only when asked, so configs without shear keep their random stream
        shear = torch.tan(uniform(-aug.shear_deg, aug.shear_deg) * (math.pi / 180.0))
        S = torch.eye(2, device=device).repeat(n, 1, 1)
        S[:, 0, 1] = shear
        A = A @ S
    if aug.flip:
        flipped = torch.rand(n, generator=generator, device=device) < 0.5
        sign = torch.where(flipped, -1.0, 1.0)
        A = A * torch.stack([sign, torch.ones_like(sign)], -1)[:, None, :]  # flip x before rotating
    else:
        flipped = torch.zeros(n, dtype=torch.bool, device=device)
    t = torch.stack([uniform(-aug.shift, aug.shift), uniform(-aug.shift, aug.shift)], -1) * 2.0  # [-1,1] spans 2
    return A, t, flipped


def elastic_field(n: int, h: int, w: int, alpha_px: float, sigma_px: float, generator=None, device="cpu"):
    """(N,H,W,2): Simard et al.'s smooth random displacement of every output pixel, in normalized (x, y) units:
    uniform noise in [-1, 1], blurred by a Gaussian of ``sigma_px`` (separable), times
    ``alpha_px`` pixels."""
    import torch

    d = torch.rand(n * 2, h, w, generator=generator, device=device) * 2 - 1
    # the separable blur as two matrix products (down the height, then along the width): the sums of two 1-D
    # convolutions, ~9x faster on 28x28 digits (0.4 against 3.7 ms for a 288-image batch's fields, 2 cores)
    d = _blur_matrix(h, sigma_px, d) @ d @ _blur_matrix(w, sigma_px, d).T
    to_unit = torch.tensor([2.0 / w, 2.0 / h], device=device, dtype=d.dtype)  # [-1, 1] spans the image
    return d.view(n, 2, h, w).permute(0, 2, 3, 1) * alpha_px * to_unit


def _blur_matrix(size: int, sigma_px: float, like):
    """M with ``M @ v`` = v blurred by a Gaussian of ``sigma_px`` (taps to 3 sigma), zeros past the edges as
    scipy's gaussian_filter(mode="constant"): replicated edges would leave the border pixels' noise unsmoothed."""
    import torch

    r = max(1, math.ceil(3 * sigma_px))
    kernel = torch.exp(-torch.arange(-r, r + 1, device=like.device, dtype=like.dtype) ** 2 / (2 * sigma_px ** 2))
    i = torch.arange(size, device=like.device)
    offset = i[None, :] - i[:, None]  # M[i, j] weighs pixel j for output pixel i
    return torch.where(offset.abs() <= r, kernel[(offset + r).clamp(0, 2 * r)], 0.0) / kernel.sum()


def warp_images(images, A, t, out_size=None, field=None):
    """Resample ``images`` (N,C,H,W) so that content at x moves to ``A x + t`` (normalized coordinates); with an
    :func:`elastic_field` ``field``, the output pixel at p then shows what the affine put at ``p + field(p)``."""
    import torch
    import torch.nn.functional as F

    A_inv = torch.linalg.inv(A)
    theta = torch.cat([A_inv, -(A_inv @ t.unsqueeze(-1))], dim=-1)  # (N, 2, 3)
    n, c, h, w = images.shape
    size = (n, c, *(out_size or (h, w)))
    grid = F.affine_grid(theta.to(images.dtype), size, align_corners=False)
    if field is not None:  # the grid is linear in p: grid(p + d) = grid(p) + A^-1 d
        grid = grid + torch.einsum("nij,nhwj->nhwi", A_inv.to(images.dtype), field)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def elastic_points(points, field, point_offset: float = 0.0, iterations: int = 4):
    """Where points (N,K,2) land under :func:`warp_images`' ``field``: the p with ``p + field(p) = y``, by
    fixed-point steps from p = y (the field is smooth and a few pixels at most, so a few steps converge)."""
    import torch.nn.functional as F

    y = points - point_offset
    as_image = field.permute(0, 3, 1, 2)  # (N, 2, H, W)
    p = y
    for _ in range(iterations):
        d = F.grid_sample(as_image, p[:, :, None, :].to(as_image.dtype), mode="bilinear", padding_mode="border",
                          align_corners=False)[..., 0].transpose(1, 2)  # (N, K, 2)
        p = y - d
    return p + point_offset


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


def tone_and_noise(images, aug: AffineAugment, generator=None):
    """A random gamma curve, then Gaussian noise of a random strength, per image, clamped to [0, 1]; each drawn
    only when switched on (a config without them keeps its random stream)."""
    import torch

    shape = (images.shape[0],) + (1,) * (images.dim() - 1)
    dev = images.device
    if aug.gamma > 0:
        log_g = (torch.rand(shape, generator=generator, device=dev) * 2 - 1) * math.log1p(aug.gamma)
        images = images.clamp(1e-6, 1.0) ** torch.exp(log_g)
    if aug.noise > 0:
        sd = torch.rand(shape, generator=generator, device=dev) * aug.noise
        noise = torch.randn(images.shape, generator=generator, device=dev)
        images = (images + noise * sd).clamp_(0.0, 1.0)
    return images


def random_sharpen(images, p: float, amount: float, generator=None):
    """With probability ``p`` per image, an unsharp mask of strength drawn from [0, amount]: x + a (x - blur(x)),
    the blur a fixed 3x3 Gaussian (sigma 1 px), clamped to [0, 1]."""
    import torch

    n = images.shape[0]
    smooth = random_blur(images, 1.0, (1.0, 1.0), generator=generator)
    a = torch.rand(n, generator=generator, device=images.device) * amount
    chosen = torch.rand(n, generator=generator, device=images.device) < p
    a = torch.where(chosen, a, torch.zeros_like(a))[:, None, None, None]
    return (images + a * (images - smooth)).clamp_(0.0, 1.0)


def random_blur(images, p: float, sigma_range, generator=None):
    """Blur each image with probability ``p`` by a 3x3 Gaussian of its own sigma (one grouped conv)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    lo, hi = sigma_range
    sigma = torch.rand(n, generator=generator, device=images.device) * (hi - lo) + lo
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0], device=images.device)[None, :] / (2 * sigma[:, None] ** 2))
    taps = taps / taps.sum(1, keepdim=True)  # (n, 3) normalized 1-D kernels
    kernel = (taps[:, :, None] * taps[:, None, :]).repeat_interleave(c, 0)[:, None]  # (n*c, 1, 3, 3)
    blurred = F.conv2d(F.pad(images.reshape(1, n * c, h, w), (1, 1, 1, 1), mode="replicate"), kernel,
                       groups=n * c).view(n, c, h, w)
    chosen = torch.rand(n, generator=generator, device=images.device) < p
    return torch.where(chosen[:, None, None, None], blurred, images)


def random_erasing(images, p: float, scale_range, ratio_range, generator=None):
    """torchvision's RandomErasing (value 0) drawn per image: with probability ``p`` one rectangle of area
    ``scale`` x image and aspect ratio ``ratio`` (log-uniform) is zeroed, at a uniformly random position."""
    import torch

    n, _, h, w = images.shape
    dev = images.device

    def uniform(lo, hi):
        return torch.rand(n, generator=generator, device=dev) * (hi - lo) + lo

    area = uniform(*scale_range) * h * w
    ratio = torch.exp(uniform(math.log(ratio_range[0]), math.log(ratio_range[1])))
    eh = torch.sqrt(area * ratio).round().clamp(1, h)
    ew = torch.sqrt(area / ratio).round().clamp(1, w)
    top = (torch.rand(n, generator=generator, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=generator, device=dev) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (n, h)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (n, w)
    chosen = torch.rand(n, generator=generator, device=dev) < p
    box = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]
    return images.masked_fill(box[:, None], 0.0)


def pixel_ops(images, aug: AffineAugment, generator=None):
    """The non-geometric part: brightness/contrast, gamma, noise, sharpening, blur, erasing (each skipped when
    switched off)."""
    if aug.brightness > 0 or aug.contrast > 0:
        images = jitter_photometric(images, aug, generator=generator)
    if aug.gamma > 0 or aug.noise > 0:
        images = tone_and_noise(images, aug, generator=generator)
    if aug.sharpen_p > 0:
        images = random_sharpen(images, aug.sharpen_p, aug.sharpen_amount, generator=generator)
    if aug.blur_p > 0:
        images = random_blur(images, aug.blur_p, aug.blur_sigma, generator=generator)
    if aug.erase_p > 0:
        images = random_erasing(images, aug.erase_p, aug.erase_scale, aug.erase_ratio, generator=generator)
    return images


def augment_images(images, aug: AffineAugment, generator=None):
    """Augment a batch of images (N,C,H,W) in [0, 1] that carry no points (e.g. MNIST digits)."""
    if aug.flip or aug.rotate_deg > 0 or aug.scale > 0 or aug.shift > 0 or aug.shear_deg > 0 or aug.elastic_alpha > 0:
        A, t, _ = random_affine(images.shape[0], aug, generator=generator, device=images.device)
        images = warp_images(images, A, t, field=_field(images, aug, generator))
    return pixel_ops(images, aug, generator)


def _field(images, aug: AffineAugment, generator):
    """The batch's elastic field, drawn after the affine (a config without it keeps its random stream), or None."""
    if aug.elastic_alpha <= 0:
        return None
    n, _, h, w = images.shape
    return elastic_field(n, h, w, aug.elastic_alpha, aug.elastic_sigma, generator, images.device).to(images.dtype)


def augment_batch(images, points, aug: AffineAugment, flip_permutation=None, generator=None,
                  point_offset: float = 0.0):
    """Geometric + photometric augmentation of a batch of images and their points, in one pass."""
    A, t, flipped = random_affine(images.shape[0], aug, generator=generator, device=images.device)
    field = _field(images, aug, generator)
    images = warp_images(images, A, t, field=field)
    points = warp_points(points, A, t, flipped, flip_permutation, point_offset)
    if field is not None:
        points = elastic_points(points, field, point_offset)
    return pixel_ops(images, aug, generator), points
