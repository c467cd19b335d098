"""ex08 data (IDX files, md5, download, the few-label split), corruption, models and parameter counts."""
import gzip
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from ex08_autoencoder import data
from ex08_autoencoder.data import MnistDataError, ensure_files, load_mnist, make_split, read_idx
from helpers import serve_dir, synthetic_digits, write_idx_gz


def test_read_idx_round_trip(tmp_path):
    images, labels = synthetic_digits(20)
    assert np.array_equal(read_idx(write_idx_gz(tmp_path / "x.gz", images), 3), images)
    assert np.array_equal(read_idx(write_idx_gz(tmp_path / "y.gz", labels), 1), labels)


def test_wrong_magic_names_the_file(tmp_path):
    images, _ = synthetic_digits(5)
    path = write_idx_gz(tmp_path / "imgs.gz", images)
    with pytest.raises(MnistDataError, match=r"imgs\.gz: wrong IDX magic"):
        read_idx(path, 1)  # a 3-d image file where labels are expected


def test_truncated_file_names_the_file(tmp_path):
    images, _ = synthetic_digits(5)
    raw = gzip.decompress(write_idx_gz(tmp_path / "full.gz", images).read_bytes())
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(MnistDataError, match=r"short\.gz: header says shape \(5, 28, 28\).*truncated"):
        read_idx(short, 3)
    cut = tmp_path / "cut.gz"
    cut.write_bytes((tmp_path / "full.gz").read_bytes()[:200])  # the gzip stream itself ends early
    with pytest.raises(MnistDataError, match=r"cut\.gz: cannot decompress"):
        read_idx(cut, 3)


def test_bad_md5_names_the_file(synthetic_mnist_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_mnist_dir, root)  # the real md5 table does not match synthetic files
    with pytest.raises(MnistDataError, match=r"train-images-idx3-ubyte\.gz: md5 .* does not match"):
        ensure_files(root)


def test_missing_files_offline_names_files_and_folder(tmp_path):
    with pytest.raises(MnistDataError) as err:
        ensure_files(tmp_path, mirrors=("http://127.0.0.1:9/",))  # nothing listens on port 9
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and "--data-dir" in msg


def test_download_from_a_loopback_mirror_checks_md5(synthetic_mnist_dir, tmp_path, monkeypatch):
    raw = synthetic_mnist_dir / "MNIST" / "raw"
    md5 = {name: hashlib.md5((raw / name).read_bytes()).hexdigest() for name, _ in data.FILES.values()}
    monkeypatch.setattr(data, "FILES", {k: (name, md5[name]) for k, (name, _) in data.FILES.items()})

    with serve_dir(raw) as (base, _):
        mirror = f"{base}/"
        monkeypatch.setenv("I2DL_MNIST_MIRRORS", "http://127.0.0.1:9/," + mirror)  # the first mirror is down
        folder = ensure_files(tmp_path / "fresh")
        assert sorted(p.name for p in folder.iterdir()) == sorted(md5)
        assert load_mnist(tmp_path / "fresh").train_images.shape == (900, 1, 28, 28)
        # a mirror serving different bytes fails the md5 check and leaves nothing behind
        monkeypatch.setattr(data, "FILES", {k: (name, "0" * 32) for k, (name, _) in data.FILES.items()})
        with pytest.raises(MnistDataError, match="md5 mismatch"):
            ensure_files(tmp_path / "other", mirrors=(mirror,))
        assert not any((tmp_path / "other" / "MNIST" / "raw").iterdir())


def test_split_is_balanced_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    split = make_split(labels, seed=3)
    for name in ("train", "val", "test"):
        assert np.bincount(labels[split[name]], minlength=10).tolist() == [10] * 10
    labeled = set(split["train"]) | set(split["val"]) | set(split["test"])
    assert len(labeled) == 300 and not labeled & set(split["unlabeled"])
    assert len(split["unlabeled"]) == 200 and labeled | set(split["unlabeled"]) == set(range(500))
    assert make_split(labels, seed=3) == split and make_split(labels, seed=4) != split


REAL_SPLIT_DIGEST = "5df85f92df193151"  # sha256 of the seed-0 split, recorded when the split was introduced


def test_real_split_is_pinned(real_mnist):
    """The same split on every machine: numpy's PCG64 stream is platform-independent, so this digest of the
    seed-0 split of the real labels must never change (if it does, old runs are no longer comparable)."""
    split = make_split(load_mnist(real_mnist).train_labels.numpy(), seed=0)
    assert len(split["unlabeled"]) == 59_700
    digest = hashlib.sha256(json.dumps({k: split[k] for k in ("train", "val", "test")}).encode()).hexdigest()
    assert split["train"][:5] == [817, 897, 1216, 1703, 1926]
    assert digest[:16] == REAL_SPLIT_DIGEST


def test_corruption_rate_and_sigma():
    from ex08_autoencoder.pretrain import corrupt

    g = torch.Generator().manual_seed(0)
    ones = torch.ones(200, 1, 28, 28)
    masked = corrupt(ones, 0.2, 0.0, g)
    assert (masked == 0).float().mean().item() == pytest.approx(0.2, abs=0.005)
    noisy = corrupt(torch.zeros(200, 1, 28, 28), 0.0, 0.15, g)
    assert noisy.std().item() == pytest.approx(0.15, rel=0.01) and abs(noisy.mean().item()) < 0.002
    both = corrupt(ones, 0.2, 0.15, g)  # mask first, then noise on every pixel
    kept = both[both > 0.5]
    assert (kept - 1).std().item() == pytest.approx(0.15, rel=0.02)


def test_parameter_counts_print_as_the_seeds():
    from common.files.checkpoint import count_params
    from ex08_autoencoder.models import Autoencoder, Classifier
    from ex08_autoencoder.presets import make_config
    from ex08_autoencoder.train import param_report

    case = make_config("case-study")
    assert count_params(Autoencoder(case.model)) == 824_702
    assert count_params(Classifier(case.model)) == 591_185
    assert "autoencoder params: 0.824M" in param_report(case) and "classifier params: 0.591M" in param_report(case)
    board = make_config("leaderboard")
    assert count_params(Classifier(board.model)) == 1_433_738  # "~1.4M"
    for model in (Autoencoder(board.model), Classifier(case.model)):
        kinds = {type(m).__name__ for m in model.modules()}
        assert not {k for k in kinds if "Conv" in k}, "fully connected layers only"


def test_each_preset_that_builds_on_pseudo_label_changes_only_what_it_says():
    """A preset is pseudo-label plus the fields its docstring names, nothing else (a stray edit would otherwise
    ride along into every figure measured with it)."""
    from common.config import flatten, to_dict
    from ex08_autoencoder.presets import make_config

    def diff(a, b):
        a, b = (flatten(json.loads(json.dumps(to_dict(make_config(name))))) for name in (a, b))
        return {k: b[k] for k in a if a[k] != b[k]}

    assert diff("pseudo-label", "pseudo-label-long") == {
        "preset": "pseudo-label-long", "teacher.strong.elastic_alpha": 34.0, "teacher.epochs": 60, "teacher.lr": 1e-4,
        "teacher.confidence": 0.9, "teacher.vat_xi": 1e-2, "teacher.ema_decay": 0.99,
        "teacher.consistency_weight": 2.0}
    assert make_config("pseudo-label-long").teacher.strong.elastic_sigma == 4.0  # Simard et al. 2003's
    assert diff("pseudo-label", "noisy-student") == {
        "preset": "noisy-student", "teacher.strong.elastic_alpha": 34.0, "steps": ["pretrain", "transfer", "teacher",
                                                                                   "student"]}


def test_leaderboard_block_structure():
    from ex08_autoencoder.models import Classifier
    from ex08_autoencoder.presets import make_config

    model = Classifier(make_config("leaderboard").model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 1024), (1024, 512), (512, 128), (128, 256),
                                                                  (256, 10)]
    names = [type(m).__name__ for m in model.encoder.net]
    assert names == ["Flatten", "Linear", "LayerNorm", "GELU", "Dropout", "Linear", "LayerNorm", "GELU", "Dropout",
                     "Linear", "LayerNorm", "GELU"]  # the last block has no dropout
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_labeled_epoch_order_balanced_or_shuffled_passes():
    from ex08_autoencoder.data import labeled_order

    labels = torch.tensor([0] * 80 + [1] * 20)
    g = torch.Generator().manual_seed(0)
    one_pass = labeled_order(labels, 0, False, g)
    assert sorted(one_pass.tolist()) == list(range(100))
    three_passes = labeled_order(labels, 250, False, g)
    assert len(three_passes) == 250 and torch.bincount(three_passes).max() <= 3
    balanced = labeled_order(labels, 4000, True, g)
    assert len(balanced) == 4000 and abs(float((labels[balanced] == 1).float().mean()) - 0.5) < 0.03


def test_pseudo_labels_count_only_where_the_teacher_is_confident():
    """FixMatch's term: the student's cross entropy against the teacher's argmax, averaged over all images but
    zero for those whose teacher probability is below the threshold; its gradient pulls the counted ones only."""
    import math

    from ex08_autoencoder.mean_teacher import pseudo_label_loss

    teacher = torch.tensor([[10.0, 0.0, 0.0], [0.3, 0.2, 0.1], [0.0, 0.0, 8.0]]).softmax(1)  # sure, unsure, sure
    student = torch.zeros(3, 3, requires_grad=True)  # uniform: cross entropy ln 3 against any label
    loss, rate = pseudo_label_loss(student, teacher, confidence=0.95)
    assert float(rate) == pytest.approx(2 / 3)
    assert loss.item() == pytest.approx(2 * math.log(3) / 3)
    loss.backward()
    assert student.grad[0, 0] < 0 and student.grad[2, 2] < 0, "raise the teacher's class where counted"
    assert torch.all(student.grad[1] == 0), "the unsure image adds nothing"
    assert float(pseudo_label_loss(student.detach(), teacher, confidence=0.0)[1]) == 1.0, "threshold 0 counts all"


def test_distribution_alignment_moves_confidence_from_an_over_predicted_class():
    """ReMixMatch's alignment: while the teacher's running mean matches the labeled frequencies it changes
    nothing; once the teacher keeps over-predicting class 0, a doubtful image's pseudo-label moves to class 1
    and a sure one stays, every row still a distribution."""
    from ex08_autoencoder.mean_teacher import DistributionAlignment, pseudo_label_loss

    align = DistributionAlignment(torch.tensor([5, 5]))
    balanced = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    assert torch.allclose(align(balanced), balanced), "a balanced teacher is left as it is"
    biased = torch.tensor([[0.99, 0.01], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])  # mean 0.62 / 0.38
    for _ in range(500):
        out = align(biased)
    assert torch.allclose(align.running, biased.mean(0), atol=1e-3), "the running mean follows the teacher"
    assert torch.allclose(out.sum(1), torch.ones(4))
    assert out[1].argmax() == 1 and out[0].argmax() == 0, "the doubtful 0 becomes a 1; the sure 0 stays"
    # the aligned probabilities flip the pseudo-label the student is trained toward
    student = torch.zeros(4, 2, requires_grad=True)
    pseudo_label_loss(student, out, confidence=0.0)[0].backward()
    assert student.grad[1, 1] < 0 < student.grad[1, 0]


def test_vat_finds_the_direction_that_moves_the_prediction_most():
    """VAT's power iteration: the perturbation it finds changes the prediction several times more than random
    ones of the same length, its loss trains the weights, and the model's train mode is back afterwards."""
    import torch.nn.functional as F

    from ex08_autoencoder.mean_teacher import _unit, vat_loss

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 64), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(64, 4)).train()
    x, eps = torch.rand(32, 1, 5, 8), 0.5
    g = torch.Generator().manual_seed(0)
    adversarial = vat_loss(model, x, eps, g)
    assert model.training, "train mode restored"
    adversarial.backward()
    assert model[1].weight.grad.abs().sum() > 0, "the smoothness term trains the weights"
    model.eval()
    with torch.no_grad():
        p = model(x).softmax(1)
        randoms = [F.kl_div(model(x + eps * _unit(torch.randn(x.shape))).log_softmax(1), p, reduction="batchmean")
                   for _ in range(20)]
    assert adversarial.item() > 3 * max(r.item() for r in randoms) > 0
    assert vat_loss(model, x, 0.0, g).item() == pytest.approx(0.0, abs=1e-7), "no perturbation, no change"


def test_vat_finds_its_direction_in_float32_only_with_a_step_above_rounding():
    """``teacher.vat_xi``: the power iteration's finite step must move the prediction by more than float32
    rounds. On the preset's classifier (784 pixels in [0, 1], LayerNorm, GELU) the float32 direction at 1e-2 is
    the float64 one; at the VAT paper's 1e-6 it is mostly noise."""
    import copy

    from ex08_autoencoder.config import ModelConfig
    from ex08_autoencoder.mean_teacher import vat_direction
    from ex08_autoencoder.models import Classifier

    torch.manual_seed(0)
    model = Classifier(ModelConfig()).eval()
    exact = copy.deepcopy(model).double()
    x = torch.rand(64, 1, 28, 28) * (torch.rand(64, 1, 28, 28) < 0.2)  # sparse strokes, as digits are

    def cosines(xi):
        with torch.no_grad():
            target, target64 = model(x).softmax(1), exact(x.double()).softmax(1)
        ours = vat_direction(model, x, target, xi, torch.Generator().manual_seed(1))
        ref = vat_direction(exact, x.double(), target64, xi, torch.Generator().manual_seed(1))  # the same step
        return (ours.flatten(1) * ref.float().flatten(1)).sum(1)

    assert cosines(1e-2).min() > 0.99
    assert cosines(1e-6).mean() < 0.9, "1e-6 no longer drowns in float32: the knob's reason is gone"


@pytest.mark.slow  # ~5 s: two tiny runs
def test_the_teacher_drops_out_for_its_targets_unless_told_not_to(synthetic_mnist, tmp_path, monkeypatch):
    """``teacher.teacher_dropout``: the teacher's forward passes for the targets (no gradient, dropout on) run
    in train mode by default, as in the Mean Teacher paper, and in eval mode when it is false; every other
    no-gradient pass (val, VAT's target) is in eval mode either way."""
    from ex08_autoencoder.models import Classifier
    from ex08_autoencoder.train import train
    from helpers import tiny_ex08_config

    calls, forward = [], Classifier.forward

    def spy(self, x):
        calls.append(self.training and not torch.is_grad_enabled())
        return forward(self, x)

    monkeypatch.setattr(Classifier, "forward", spy)
    for noisy in (True, False):
        calls.clear()
        cfg = tiny_ex08_config(synthetic_mnist, "pseudo-label", **{"teacher.teacher_dropout": noisy})
        train(cfg, tmp_path / str(noisy), progress=False)
        # 2 epochs of 128 unlabeled images in batches of 64: 4 steps, one target pass each
        assert sum(calls) == (4 if noisy else 0)
