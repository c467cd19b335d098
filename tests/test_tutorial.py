"""The tutorial's demonstrations against hand computations: parameter counts against their formulas, the conv
example against one pixel computed by hand, each normalisation's axes against a manual mean and variance, and the
two dropout zero patterns (single entries vs whole maps)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tutorial import conv_example, counts, dropout_patterns, norm_axes


def test_parameter_counts_match_the_formulas():
    fc = counts.fully_connected(hidden=1000)
    assert fc == {name: (c * h * w + 1) * 1000 for name, (c, h, w) in counts.IMAGE_SIZES.items()}
    assert fc["238x238"] == 56_645_000, "a 238x238 image to 1000 units: 57M parameters"
    assert counts.conv_vs_dense(filters=6) == {"conv_5x5x3": 6 * (5 * 5 * 3 + 1),
                                               "dense_same_outputs": (32 * 32 * 3 + 1) * 6 * 28 * 28, "filters": 6}


def test_the_conv_example_matches_a_hand_computed_pixel():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 1, 12, 10), dtype=torch.uint8)
    maps = conv_example.feature_maps(images)
    assert maps.shape == (2, 2, 10, 8)
    x = images.float() / 255
    n, i, j = 1, 4, 6  # output pixel (i, j) sees input rows i..i+2, columns j..j+2
    patch = x[n, 0, i:i + 3, j:j + 3]
    horizontal = patch[2].sum() - patch[0].sum()  # bottom row minus top row
    vertical = patch[:, 2].sum() - patch[:, 0].sum()  # right column minus left column (the transpose)
    assert maps[n, 0, i, j].item() == pytest.approx(horizontal.item(), abs=1e-6)
    assert maps[n, 1, i, j].item() == pytest.approx(vertical.item(), abs=1e-6)
    flat = torch.full((1, 1, 5, 5), 0.5)
    assert conv_example.feature_maps(flat).abs().max() == 0, "no edge, no response"


def test_each_normalisation_centres_exactly_its_own_axes():
    torch.manual_seed(0)
    acts = torch.randn(6, 8, 7, 7) * 3 + torch.randn(6, 1, 1, 1) * 2 + torch.randn(1, 8, 1, 1)  # image and channel
    stats = norm_axes.statistics(acts, groups=4)
    for name, s in stats.items():
        if name != "BatchNorm2d, per image":
            assert s["max_abs_mean"] < 1e-5 and s["max_abs_var_minus_1"] < 2e-3, (name, s)
    assert stats["BatchNorm2d, per image"]["max_abs_mean"] > 0.1, "batch norm does not centre each image's map"
    # BatchNorm2d by hand: per channel over N, H, W, biased variance, eps 1e-5
    mean, var = acts.mean((0, 2, 3), keepdim=True), acts.var((0, 2, 3), keepdim=True, unbiased=False)
    manual = (acts - mean) / torch.sqrt(var + 1e-5)
    assert torch.allclose(nn.BatchNorm2d(8, affine=False).train()(acts), manual, atol=1e-5)
    feats = acts.mean((2, 3))  # BatchNorm1d by hand: per feature over N
    manual = (feats - feats.mean(0)) / torch.sqrt(feats.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(nn.BatchNorm1d(8, affine=False).train()(feats), manual, atol=1e-5)


def test_dropout_zeroes_entries_and_dropout2d_whole_maps():
    mlp = dropout_patterns.dropout_mlp(seed=0)
    assert set(mlp.unique().tolist()) == {0.0, 2.0}, "kept entries are scaled by 1 / (1 - p)"
    spatial = dropout_patterns.zero_pattern(dropout_patterns.dropout_cnn(seed=0))
    assert spatial["maps_mixed"] == 0 and 0 < spatial["maps_all_zero"] < 1
    regular = dropout_patterns.zero_pattern(dropout_patterns.regular_on_maps(seed=0))
    assert regular["maps_mixed"] == 1.0 and 0.3 < regular["zero_fraction"] < 0.7
    assert torch.equal(dropout_patterns.dropout_cnn(seed=3), dropout_patterns.dropout_cnn(seed=3)), "seeded"


def test_the_figures_are_written(tmp_path):
    images = torch.randint(0, 256, (2, 1, 96, 96), dtype=torch.uint8)
    for path in (conv_example.figure(images, tmp_path / "conv.png"), norm_axes.figure(tmp_path / "norms.png"),
                 dropout_patterns.figure(tmp_path / "dropout.png")):
        assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"


TINY = ["model.widths=[8,16]", "model.head_hidden=16", "train.epochs=1", "train.eval_every=1", "run.threads=1",
        "model.tta_shift_px=0", "track.mode=disabled"]  # the cells' W&B runs are tested with the studies



def _norm_rows(means: dict) -> list[dict]:
    return [{"variant": {"model.norm": kind, "train.batch_size": b}, "mean": m, "sd": 2.0, "seeds": {0: m, 1: m}}
            for (kind, b), m in means.items()]


def test_the_norms_verdict_separates_the_step_count_from_batch_statistics():
    """At equal epochs a smaller batch is more steps for every norm; batch norm's own dependence is its gain beyond
    no norm's, and the verdict says which way it goes (or that it does not show)."""
    from tutorial.report import batch_dependence

    free = {(k, b): m for k in ("group", "layer", "instance") for b, m in ((8, 270.0), (32, 200.0))}
    same = batch_dependence(_norm_rows({**free, ("batch", 8): 250.0, ("batch", 32): 150.0,
                                        ("none", 8): 245.0, ("none", 32): 146.0}), [8, 32])
    assert "No norm at all gains +99.0" in same and "beyond it is +1.0" in same and "does not show" in same
    assert "ahead of batch norm at each size (the worst of them by +20.0 at batch 8, +50.0 at batch 32)" in same
    hurt = batch_dependence(_norm_rows({**free, ("batch", 8): 160.0, ("batch", 32): 150.0,
                                        ("none", 8): 245.0, ("none", 32): 146.0}), [8, 32])
    assert "beyond it is -89.0" in hurt and "the dependence the slide warns of" in hurt


@pytest.mark.slow  # ~2 min: 17 tiny grid cells, interrupted once and resumed
def test_the_tutorial_writes_every_section_and_resumes_without_retraining(synthetic_data_dir, synthetic_mnist,
                                                                          tmp_path):
    from optuna.trial import TrialState

    from ex08_autoencoder.train import train
    from helpers import cli, interrupt_when, load, tiny_ex08_config

    case = tmp_path / "case"
    train(tiny_ex08_config(synthetic_mnist, "case-study"), case, progress=False)
    out = tmp_path / "tut"
    args = ["tutorial", "--seeds", "0", "--out", out, "--data-dir", synthetic_data_dir, "--ex08-run", case,
            "--no-progress", "--set", *TINY]

    def trials(grid: str) -> list:
        try:
            return load(f"sqlite:///{out / 'studies' / grid / 'study.db'}", grid).get_trials(deepcopy=False)
        except Exception:  # not created yet
            return []

    code, err = interrupt_when(args, lambda: any(t.state == TrialState.COMPLETE for t in trials("tutorial-norms")),
                               "a finished cell of the second grid")
    assert code == 130, err[-2000:]
    before = {t.number: t.datetime_complete for t in trials("tutorial-mlp")}
    done_norms = {t.number: t.datetime_complete for t in trials("tutorial-norms") if t.state == TrialState.COMPLETE}
    assert len(before) == 2 and 0 < len(done_norms) < 10
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {t.number: t.datetime_complete for t in trials("tutorial-mlp")} == before, "the finished grid is kept"
    norms = {t.number: t for t in trials("tutorial-norms")}
    assert all(norms[n].datetime_complete == when for n, when in done_norms.items()), "finished cells kept"
    trained = [t for t in norms.values() if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    cells = {(t.params["model.norm"], t.params["train.batch_size"]) for t in trained}
    assert len(trained) == len(cells) == 10, "5 norms x 2 batch sizes x 1 seed, each once"
    text = (out / "TUTORIAL.md").read_text()
    for n, title in enumerate(["Why not just an MLP", "Convolution by example", "Batch norm, fully connected",
                               "Other normalisations", "Dropout for convolutional layers", "Exercise 8 case study",
                               "The ex09 metric"], 1):
        assert f"## {n}. {title}" in text
    for png in text.split("](figures/")[1:]:
        assert (out / "figures" / png.split(")")[0]).stat().st_size > 5000
    assert "**What the data says:**" in text and "nan" not in text.lower()
    assert list((out / "wandb").glob("offline-run-*")), "the report is a W&B run of its own (group tutorial)"
