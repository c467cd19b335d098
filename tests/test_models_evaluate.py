"""Models take the course's input and the score is the course's, exactly."""
import pytest
import torch

from common.config import apply_overrides
from ex09_keypoints.config import ModelConfig, make_config
from ex09_keypoints.data import CourseDataset, load_keypoints
from ex09_keypoints.evaluate import course_score, evaluate_split, score_from_predictions
from ex09_keypoints.models import build_model


def small_model(**kw):
    cfg = make_config("quick").model
    cfg.widths, cfg.head_hidden = (8, 16), 16
    for k, v in kw.items():
        setattr(cfg, k, v)
    return build_model(cfg)


@pytest.mark.parametrize("stem, factor, downsample, head", [
    ("unshuffle", 4, "maxpool", "flatten"), ("avgpool", 2, "stride", "gap"), ("none", 1, "maxpool", "gap")])
def test_course_input_and_output_shape(stem, factor, downsample, head):
    model = small_model(stem=stem, stem_factor=factor, downsample=downsample, head=head).eval()
    out = model(torch.rand(3, 1, 96, 96))
    assert out.shape == (3, 30) and out.view(-1, 15, 2).shape == (3, 15, 2)


def test_flip_tta_makes_the_model_mirror_equivariant():
    model = small_model(flip_tta=True).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        direct = model(x).view(-1, 15, 2)
        mirrored = model(x.flip(-1)).view(-1, 15, 2)
    from ex09_keypoints.data import KEYPOINT_GRID_OFFSET

    back = mirrored[:, list(model.flip_perm)].clone()
    back[..., 0] = 2 * KEYPOINT_GRID_OFFSET - back[..., 0]  # 1-based pixel centres: x -> 97 - x in px
    assert torch.allclose(back, direct, atol=1e-5)


def test_shift_image_moves_content_by_whole_pixels():
    from ex09_keypoints.models import shift_image

    x = torch.zeros(1, 1, 96, 96)
    x[0, 0, 40, 50] = 1.0  # row 40, column 50
    moved = shift_image(x, 3, -2)
    assert moved.shape == x.shape and moved[0, 0, 38, 53] == 1.0 and moved.sum() == 1.0
    edge = torch.arange(96.0).expand(1, 1, 96, 96)  # value = column
    assert torch.equal(shift_image(edge, 2, 0)[0, 0, 0, :3], torch.tensor([0.0, 0.0, 0.0])), "the border repeats"


@pytest.mark.parametrize("diagonals", [False, True])
def test_shift_tta_averages_the_views_with_their_points_moved_back(diagonals):
    """tta_shift_px=2: the model's output is the mean over 5 views (moved 0, +-2 px in x and y), or 9 with
    ``tta_diagonals`` (also (+-2, +-2)), of the flip-averaged prediction on each view, minus how far its points
    moved (2 px = 2/48 normalised)."""
    from ex09_keypoints.models import shift_image

    model = small_model(flip_tta=True, tta_shift_px=2, tta_diagonals=diagonals).eval()
    moves = [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)] + ([(2, 2), (-2, 2), (2, -2), (-2, -2)] if diagonals else [])
    torch.manual_seed(0)
    x = torch.rand(3, 1, 96, 96)
    with torch.no_grad():
        out = model(x).view(-1, 15, 2)
        views = [model.predict_flip_averaged(shift_image(x, dx, dy)) - torch.tensor([dx, dy]) / 48.0
                 for dx, dy in moves]
        plain = small_model(flip_tta=True, tta_shift_px=0, tta_diagonals=diagonals)
        plain.load_state_dict(model.state_dict())
        without = plain.eval()(x).view(-1, 15, 2)
    assert torch.allclose(out, torch.stack(views).mean(0), atol=1e-6)
    assert not torch.allclose(out, without, atol=1e-4), "the shifted views change the prediction"
    assert torch.allclose(without, model.predict_flip_averaged(x), atol=1e-6)


def test_members_each_train_on_their_chunk_and_predict_as_their_mean():
    model = small_model(members=3, flip_tta=False, tta_shift_px=0, head_dropout=0.0, dropout2d=0.0)
    torch.manual_seed(0)
    x = torch.rand(6, 1, 96, 96)
    nets = model.net.nets
    with torch.no_grad():
        model.train()
        each = model.member_predictions(x)
        assert torch.allclose(each[2:4], nets[1](x[2:4]), atol=1e-6), "member 1 sees the second chunk"
        model.eval()
        assert torch.allclose(model(x), torch.stack([n(x) for n in nets]).mean(0), atol=1e-6)
    first, second = (next(n.head.parameters()) for n in nets[:2])
    assert not torch.allclose(first, second), "members start apart"


def test_timm_backbone_builds_and_resizes_inside():
    cfg = ModelConfig(arch="timm:resnet10t", input_size=64, flip_tta=False)
    model = build_model(cfg).eval()
    assert model(torch.rand(2, 1, 96, 96)).shape == (2, 30)


def test_batched_score_equals_course_function(synthetic_data_dir):
    val = load_keypoints(synthetic_data_dir)["val"]
    torch.manual_seed(0)
    model = small_model()
    model.train()
    model(torch.rand(8, 1, 96, 96))  # move BN statistics away from their init
    exact = course_score(model, CourseDataset(val))
    batched = evaluate_split(model, val)
    assert batched["score"] == pytest.approx(exact, rel=1e-6)
    # and both equal the definition: 1 / (2 * mean over images of the per-image MSE)
    with torch.no_grad():
        pred = model.eval()(val.float_images()).view(-1, 15, 2)
    per_image = ((pred - val.keypoints) ** 2).mean(dim=(1, 2))
    assert exact == pytest.approx(1.0 / (2.0 * per_image.mean().item()), rel=1e-5)


def test_score_and_rmse_from_known_errors():
    target = torch.zeros(4, 15, 2)
    pred = torch.full((4, 15, 2), 0.1)  # every coordinate off by 0.1 = 4.8 px
    r = score_from_predictions(pred, target)
    assert r["score"] == pytest.approx(1 / (2 * 0.01))
    assert r["rmse_px"] == pytest.approx(4.8)
    assert r["rmse_px_per_keypoint"]["nose_tip"] == pytest.approx(4.8)
    assert r["n_images"] == 4


def test_invalid_model_choices_are_rejected():
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="maxpool, stride"):
        apply_overrides(make_config(), ["model.downsample=avg"])
    with pytest.raises(ConfigError, match="timm:"):
        apply_overrides(make_config(), ["model.arch=resnet"])
