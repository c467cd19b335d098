"""Augmentation keeps keypoints on the features they mark."""
import pytest
import torch

from common.training.augment import AffineAugment, augment_batch, random_affine, warp_images, warp_points
from ex09_keypoints.data import FLIP_PERMUTATION, KEYPOINT_NAMES, pixels_to_normalized


def dot_images(points_px, size=96):
    """One image per point set with a single bright pixel at each point."""
    n = points_px.shape[0]
    img = torch.zeros(n, 1, size, size)
    for i in range(n):
        for x, y in points_px[i]:
            img[i, 0, int(y), int(x)] = 1.0  # pixel j spans [j, j+1)
    return img


def blob_centroids(images, points_norm, radius=6):
    """Intensity-weighted centroid (normalized coords) of the image near each expected point."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    out = torch.empty_like(points_norm)
    for i in range(n):
        for k in range(points_norm.shape[1]):
            px = (points_norm[i, k] + 1) * w / 2
            mask = ((xs - px[0]) ** 2 + (ys - px[1]) ** 2) < radius ** 2
            wgt = images[i, 0] * mask
            c = torch.stack([(wgt * xs).sum(), (wgt * ys).sum()]) / wgt.sum()
            out[i, k] = c / (w / 2) - 1
    return out


def test_dot_lands_at_transformed_keypoint():
    g = torch.Generator().manual_seed(0)
    pts_px = torch.tensor([[[30.5, 40.5], [60.5, 35.5], [48.5, 70.5]]]).repeat(8, 1, 1)
    images = dot_images(pts_px)
    pts = pixels_to_normalized(pts_px)
    aug = AffineAugment(flip=False, rotate_deg=25, scale=0.2, shift=0.1, brightness=0, contrast=0)
    A, t, _ = random_affine(8, aug, generator=g)
    assert A.det().abs().min() > 0.5  # rotations/scales were drawn, not identity
    warped = warp_images(images, A, t)
    moved = warp_points(pts, A, t)
    found = blob_centroids(warped, moved)
    err_px = (found - moved).abs().max() * 48
    assert err_px < 0.6, err_px
    assert (moved - pts).abs().max() * 48 > 2  # and the points really moved


def test_flip_mirrors_image_and_swaps_left_right_names():
    # the person's left eye is on the image's right (x > 0)
    pts = torch.zeros(1, 15, 2)
    pts[0, KEYPOINT_NAMES.index("left_eye_center")] = torch.tensor([0.5, -0.3])
    pts[0, KEYPOINT_NAMES.index("right_eye_center")] = torch.tensor([-0.4, -0.25])
    A = torch.tensor([[[-1.0, 0.0], [0.0, 1.0]]])
    t = torch.zeros(1, 2)
    moved = warp_points(pts, A, t, flipped=torch.tensor([True]), flip_permutation=FLIP_PERMUTATION)
    left, right = KEYPOINT_NAMES.index("left_eye_center"), KEYPOINT_NAMES.index("right_eye_center")
    # the mirrored face's left eye is where the old right eye lands, and is again on the image's right
    assert torch.allclose(moved[0, left], torch.tensor([0.4, -0.25]))
    assert torch.allclose(moved[0, right], torch.tensor([-0.5, -0.3]))
    # a dot drawn on the old left eye is found at the new *right* eye
    images = dot_images(((pts + 1) * 48)[:, [left]])
    found = blob_centroids(warp_images(images, A, t), moved[:, [right]])
    assert (found - moved[:, [right]]).abs().max() * 48 < 0.6


def test_flip_permutation_is_an_involution_pairing_left_and_right():
    perm = FLIP_PERMUTATION
    assert sorted(perm) == list(range(15))
    assert all(perm[perm[i]] == i for i in range(15))
    for i, name in enumerate(KEYPOINT_NAMES):
        other = KEYPOINT_NAMES[perm[i]]
        assert other == name.replace("left", "#").replace("right", "left").replace("#", "right")


def test_augment_batch_keeps_dots_on_points_with_flips_and_photometric():
    g = torch.Generator().manual_seed(3)
    pts_px = torch.rand(16, 15, 2, generator=g) * 50 + 23
    images = dot_images(pts_px) * 0.8 + 0.1
    aug = AffineAugment(flip=True, rotate_deg=15, scale=0.1, shift=0.05, brightness=0.1, contrast=0.2)
    out_img, out_pts = augment_batch(images, pixels_to_normalized(pts_px), aug, FLIP_PERMUTATION, generator=g)
    assert out_img.min() >= 0 and out_img.max() <= 1
    bg = out_img.median()
    found = blob_centroids((out_img - bg).clamp(min=0), out_pts, radius=1.6)
    assert ((found - out_pts).abs() * 48).max() < 1.0


def test_photometric_changes_intensity_but_not_geometry():
    g = torch.Generator().manual_seed(1)
    aug = AffineAugment(flip=False, rotate_deg=0, scale=0, shift=0, brightness=0.2, contrast=0.3)
    images = torch.rand(4, 1, 96, 96, generator=g) * 0.5 + 0.25
    pts = torch.rand(4, 15, 2, generator=g) - 0.5
    out_img, out_pts = augment_batch(images, pts, aug, FLIP_PERMUTATION, generator=g)
    assert torch.allclose(out_pts, pts, atol=1e-6)
    assert not torch.allclose(out_img, images, atol=1e-3)
    # contrast scales around the mean and brightness shifts: still perfectly correlated with the input
    for i in range(4):
        c = torch.corrcoef(torch.stack([out_img[i].flatten(), images[i].flatten()]))[0, 1]
        assert c > 0.99


def test_flip_with_one_based_pixel_centres_maps_x_to_97_minus_x():
    """The keypoint data's convention (pixel i centred at px = i + 1): a dot drawn in pixel i is annotated at
    i + 1 and after mirroring sits in pixel 95 - i, annotated at 96 - i = 97 - (i + 1)."""
    from ex09_keypoints.data import KEYPOINT_GRID_OFFSET, normalized_to_pixels

    i, row = 70, 40
    pts = pixels_to_normalized(torch.tensor([[[i + 1.0, row + 1.0]]]))
    image = torch.zeros(1, 1, 96, 96)
    image[0, 0, row, i] = 1.0
    A, t = torch.tensor([[[-1.0, 0.0], [0.0, 1.0]]]), torch.zeros(1, 2)
    moved = warp_points(pts, A, t, point_offset=KEYPOINT_GRID_OFFSET)
    assert torch.allclose(normalized_to_pixels(moved), torch.tensor([[[97.0 - (i + 1), row + 1.0]]]))
    flipped = warp_images(image, A, t)
    # and that pixel is the one annotated at 96 - i
    assert flipped[0, 0, row, 95 - i].item() == pytest.approx(1.0, abs=1e-4)


def test_shear_matches_torchvision_definition():
    """With only shear on, the matrix is [[1, tan(s)], [0, 1]] with s within +-shear_deg; the points follow."""
    import math

    aug = AffineAugment(flip=False, rotate_deg=0, scale=0, shift=0, brightness=0, contrast=0, shear_deg=5)
    A, t, _ = random_affine(2000, aug, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(A[:, 0, 0], torch.ones(2000)) and torch.allclose(A[:, 1], torch.tensor([0.0, 1.0]))
    shear = torch.rad2deg(torch.atan(A[:, 0, 1]))
    assert shear.abs().max() <= 5 + 1e-4 and shear.min() < -4.5 and shear.max() > 4.5
    assert torch.equal(t, torch.zeros_like(t))
    pts = torch.tensor([[[0.0, 0.5]]]).repeat(2000, 1, 1)
    moved = warp_points(pts, A, t)
    assert torch.allclose(moved[:, 0, 0], 0.5 * torch.tan(torch.deg2rad(shear)), atol=1e-6)
    assert math.isclose(float(moved[:, 0, 1].mean()), 0.5, abs_tol=1e-6)


def test_random_erasing_rate_and_area():
    from common.training.augment import random_erasing

    g = torch.Generator().manual_seed(0)
    out = random_erasing(torch.ones(4000, 1, 28, 28), 0.15, (0.01, 0.06), (0.3, 3.3), generator=g)
    erased = (out == 0).flatten(1).float().sum(1) / (28 * 28)
    hit = erased > 0
    assert hit.float().mean().item() == pytest.approx(0.15, abs=0.02)
    assert erased[hit].min() >= 0.004 and erased[hit].max() <= 0.08  # rounding to whole pixels
    assert erased[hit].mean().item() == pytest.approx(0.035, abs=0.007)
    rows = (out[hit] == 0).any(-1).squeeze(1)  # an erased region is one axis-aligned rectangle per image
    cols = (out[hit] == 0).any(-2).squeeze(1)
    assert torch.equal(rows.float().sum(1) * cols.float().sum(1), (out[hit] == 0).flatten(1).float().sum(1))


def test_random_blur_keeps_mean_and_smooths():
    from common.training.augment import random_blur

    g = torch.Generator().manual_seed(0)
    img = torch.zeros(500, 1, 28, 28)
    img[:, :, 14, 14] = 1.0
    out = random_blur(img, 0.5, (0.5, 1.0), generator=g)
    blurred = out[:, 0, 14, 14] < 1.0
    assert blurred.float().mean().item() == pytest.approx(0.5, abs=0.07)
    assert torch.allclose(out.sum((1, 2, 3)), torch.ones(500), atol=1e-5)  # normalized kernel
    assert torch.equal(out[~blurred], img[~blurred])


def test_augment_images_off_is_identity_and_on_changes_pixels():
    from common.training.augment import augment_images
    from ex08_autoencoder.config import digit_augment

    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(augment_images(x, digit_augment()), x)
    strong = augment_images(x, digit_augment(12, 0.1, 0.1, 5, erase_p=1.0), torch.Generator().manual_seed(0))
    assert strong.shape == x.shape and not torch.allclose(strong, x)


def test_elastic_distortion_bends_the_image_and_its_points_alike():
    from common.training.augment import elastic_field

    g = torch.Generator().manual_seed(0)
    field = elastic_field(4, 96, 96, alpha_px=100.0, sigma_px=8.0, generator=g) * 48  # in pixels
    step = (field[:, 1:] - field[:, :-1]).abs().max()
    assert field.abs().max() > 2.0 and step < 0.25 * field.abs().max(), (field.abs().max(), step)  # smooth, not noise
    pts_px = torch.tensor([[[30.5, 40.5], [60.5, 35.5], [48.5, 70.5]]]).repeat(8, 1, 1)
    # soft blobs (sigma 1 px), not single-pixel dots: a stretched dot can fall between two bilinear samples
    ys, xs = torch.meshgrid(torch.arange(96) + 0.5, torch.arange(96) + 0.5, indexing="ij")
    images = sum(torch.exp(-((xs - pts_px[:, k, 0, None, None]) ** 2 + (ys - pts_px[:, k, 1, None, None]) ** 2)
                           / 2) for k in range(3))[:, None]
    pts = pixels_to_normalized(pts_px)
    affine = dict(flip=False, rotate_deg=10, scale=0.05, shift=0.05, brightness=0, contrast=0)
    _, plain = augment_batch(images, pts, AffineAugment(**affine), generator=torch.Generator().manual_seed(1))
    bent_img, bent = augment_batch(images, pts, AffineAugment(**affine, elastic_alpha=100.0, elastic_sigma=8.0),
                                   generator=torch.Generator().manual_seed(1))
    assert (bent - plain).abs().max() * 48 > 1.5  # the field moved the points beyond the affine's own move
    found = blob_centroids(bent_img, bent)
    assert (found - bent).abs().max() * 48 < 0.6  # and each dot sits where its point went


def test_the_elastic_fields_blur_is_a_gaussian_with_zeros_past_the_edges():
    """The field's blur (two matrix products) gives the sums of the separable Gaussian convolution it stands for
    (taps out to 3 sigma, zero padding, as scipy's gaussian_filter(mode="constant")), on a non-square image."""
    import math

    import torch.nn.functional as F

    from common.training.augment import elastic_field

    n, h, w, sigma, alpha = 3, 30, 20, 1.5, 10.0
    field = elastic_field(n, h, w, alpha, sigma, generator=torch.Generator().manual_seed(3))
    noise = torch.rand(n * 2, 1, h, w, generator=torch.Generator().manual_seed(3)) * 2 - 1  # the same draws
    r = math.ceil(3 * sigma)
    taps = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma ** 2))
    taps = taps / taps.sum()
    blurred = F.conv2d(F.conv2d(noise, taps.view(1, 1, 1, -1), padding=(0, r)), taps.view(1, 1, -1, 1), padding=(r, 0))
    expected = blurred.view(n, 2, h, w).permute(0, 2, 3, 1) * alpha * torch.tensor([2.0 / w, 2.0 / h])
    assert torch.allclose(field, expected, atol=1e-6), (field - expected).abs().max()


def test_elastic_distortion_of_digits_is_off_by_default_and_drawn_per_image():
    from common.training.augment import augment_images
    from ex08_autoencoder.config import digit_augment

    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0  # a "1"
    assert digit_augment().elastic_alpha == 0
    aug = digit_augment()
    aug.elastic_alpha, aug.elastic_sigma = 34.0, 4.0  # Simard et al.'s MNIST values
    out = augment_images(x, aug, torch.Generator().manual_seed(0))
    moved = (out - x).abs().sum((1, 2, 3))
    assert (moved > 1.0).all() and not torch.allclose(out[0], out[1])  # every image bent, each its own way
    overlap = (out * x).sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert (overlap > 0.3).all() and out.min() >= 0 and out.max() <= 1  # bent, still the same stroke
