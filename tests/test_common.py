"""common/ utilities checked against their definitions."""
import math
import os
import signal

import pytest
import torch

from common.files.atomic import atomic_torch_save, atomic_write
from common.files.checkpoint import ModelTooLargeError, check_param_limit, load, save_model_checked
from common.run.seed import seed_everything
from common.training.ema import make_ema
from common.training.optim import discriminative_groups, param_groups
from common.training.schedules import consistency_ramp, cosine_scheduler, cosine_with_warmup


def test_cosine_endpoints_and_warmup():
    assert cosine_with_warmup(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 100, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_with_warmup(10, 100, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 100, warmup_steps=10) == pytest.approx(0.5)
    assert cosine_with_warmup(100, 100, warmup_steps=10, min_ratio=0.01) == pytest.approx(0.01)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_scheduler(opt, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2.0) and lrs == sorted(lrs, reverse=True)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_consistency_ramp_values():
    assert consistency_ramp(0, 10, 10.0) == pytest.approx(10 * math.exp(-5))
    assert consistency_ramp(5, 10, 10.0) == pytest.approx(10 * math.exp(-5 * 0.25))
    assert consistency_ramp(10, 10, 10.0) == pytest.approx(10.0)
    assert consistency_ramp(50, 10, 10.0) == pytest.approx(10.0)


def test_ema_matches_closed_form_after_k_steps():
    model = torch.nn.Linear(3, 1)
    decay = 0.9
    ema = make_ema(model, decay)
    values = []
    for k in range(5):
        with torch.no_grad():
            model.weight.fill_(float(k + 1))
        values.append(float(k + 1))
        ema.update_parameters(model)
    # first update copies, then ema = d * ema + (1 - d) * w
    expect = values[0]
    for v in values[1:]:
        expect = decay * expect + (1 - decay) * v
    assert torch.allclose(ema.module.weight, torch.full_like(model.weight, expect))


def test_ema_averages_batchnorm_buffers():
    model = torch.nn.BatchNorm1d(2)
    ema = make_ema(model, 0.5)
    ema.update_parameters(model)
    model.running_mean.fill_(4.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.running_mean, torch.full((2,), 2.0))


def test_param_groups_skip_decay_on_biases_and_carry_lrs():
    enc, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
    groups = discriminative_groups([(enc, 1e-4), (head, 1e-3)], weight_decay=0.01)
    assert [g["lr"] for g in groups] == [1e-4, 1e-4, 1e-3, 1e-3]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0.01, 0.0]
    assert groups[0]["params"][0] is enc.weight and groups[1]["params"][0] is enc.bias
    with pytest.raises(ValueError):
        discriminative_groups([(enc, 1e-4), (enc, 1e-3)], 0.0)
    assert sum(len(g["params"]) for g in param_groups(enc, 1.0, 0.1)) == 2


def test_seed_everything_repeats():
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))


def test_atomic_save_and_weights_only_load(tmp_path):
    path = tmp_path / "x.pt"
    atomic_torch_save({"w": torch.arange(3), "meta": {"a": 1}}, path)
    blob = load(path)
    assert torch.equal(blob["w"], torch.arange(3)) and blob["meta"] == {"a": 1}
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_ctrl_c_during_an_atomic_write_lands_after_the_file_is_complete(tmp_path):
    """A real SIGINT sent to this process half-way through a write: the write finishes, the file is whole, and
    the KeyboardInterrupt comes right after (inside torch.save it used to turn into the zip writer's
    "unexpected pos" RuntimeError, a traceback instead of the run's one-line resume message)."""
    path = tmp_path / "x.bin"

    def write(f):
        f.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the two halves
        f.write(b"second half")

    # The handler Python installs in an interactive shell: a suite started in the background inherits SIGINT
    # ignored, and a Ctrl-C would then do nothing at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, write)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert path.read_bytes() == b"first half second half"
    assert not list(tmp_path.glob(".*tmp"))


def test_an_atomic_write_from_another_thread_works(tmp_path):
    """Only the main thread may set signal handlers: a write from another thread skips holding Ctrl-C."""
    import threading

    from common.files.atomic import atomic_write_text

    errors = []

    def write():
        try:
            atomic_write_text(tmp_path / "t.txt", "from a thread")
        except Exception as e:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(e)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert not errors and (tmp_path / "t.txt").read_text() == "from a thread"


def test_size_limits(tmp_path):
    big = torch.nn.Linear(2500, 2001)  # 5,004,501 parameters
    with pytest.raises(ModelTooLargeError, match="5,000,000"):
        check_param_limit(big)
    small = torch.nn.Linear(10, 10)
    with pytest.raises(ModelTooLargeError, match="20 MB"):
        save_model_checked({"pad": torch.zeros(6 * 2**20)}, small, tmp_path / "m.pt")  # 24 MB
    assert not (tmp_path / "m.pt").exists()
    assert save_model_checked({"w": small.state_dict()}, small, tmp_path / "ok.pt") < 2**20


def test_mixup_lam_perm_and_loss():
    from common.training.mixup import mixup_batch, mixup_loss

    torch.manual_seed(0)
    x = torch.arange(8.0).view(4, 2)
    mixed, perm, lam = mixup_batch(x, alpha=0.2)
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    same, ident, one = mixup_batch(x, alpha=0.0)
    assert same is x and one == 1.0 and ident.tolist() == [0, 1, 2, 3]
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    ce = torch.nn.CrossEntropyLoss()
    expect = lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm])
    assert torch.allclose(mixup_loss(ce, logits, y, perm, lam), expect)
    lams = [mixup_batch(x, alpha=0.2)[2] for _ in range(400)]  # Beta(0.2, 0.2) is U-shaped
    assert sum(lam < 0.1 or lam > 0.9 for lam in lams) > 0.5 * len(lams)


def test_class_balanced_sampler_frequencies():
    from common.training.sampling import class_balanced_sampler

    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    sampler = class_balanced_sampler(labels, num_samples=30000, generator=torch.Generator().manual_seed(0))
    drawn = labels[torch.tensor(list(sampler))]
    freq = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert len(drawn) == 30000
    assert torch.allclose(freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.015)


def test_optimizer_step_clips_the_gradient_norm_and_updates_ema():
    from common.training.optim import optimizer_step

    model = torch.nn.Linear(4, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ema = make_ema(model, 0.5)
    before = model.weight.detach().clone()
    loss = 1000.0 * model(torch.ones(1, 4)).sum()  # gradient (1000, 1000, 1000, 1000), norm 2000
    optimizer_step(model, opt, loss, grad_clip=1.0, ema=ema)
    step = before - model.weight.detach()
    assert torch.linalg.norm(step).item() == pytest.approx(1.0, rel=1e-5)  # lr 1 x clipped norm 1
    assert torch.allclose(ema.module.weight, model.weight)  # the first EMA update copies


def test_label_smoothing_cross_entropy_is_the_definition():
    """PyTorch's label smoothing: (1 - eps) * CE(y) + eps * mean over classes of -log p."""
    logits, y, eps = torch.randn(6, 10), torch.randint(0, 10, (6,)), 0.05
    logp = logits.log_softmax(1)
    expect = ((1 - eps) * -logp.gather(1, y[:, None]).squeeze(1) + eps * -logp.mean(1)).mean()
    assert torch.allclose(torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits, y), expect)


def test_the_saved_model_limit_is_the_courses_20_million_bytes(tmp_path):
    """One definition of "20 MB" (common/limits.py): a file of 20.04e6 bytes is refused when saved, as export
    refuses it (it used to pass training's 20 * 2**20 and fail export)."""
    import pytest
    import torch

    from common.files.checkpoint import ModelTooLargeError, save_model_checked
    from common.limits import MAX_MODEL_BYTES

    model = torch.nn.Linear(4, 2)
    with pytest.raises(ModelTooLargeError, match="20.04 MB; the course allows less than 20 MB"):
        save_model_checked({"state_dict": model.state_dict(), "pad": torch.zeros(5_010_000)}, model,
                           tmp_path / "big.pt")
    assert not (tmp_path / "big.pt").exists() and MAX_MODEL_BYTES == 20_000_000
    assert save_model_checked({"state_dict": model.state_dict(), "pad": torch.zeros(4_990_000)}, model,
                              tmp_path / "ok.pt") < MAX_MODEL_BYTES


def test_the_record_keeps_torchs_build():
    import torch

    from common.run.record import package_versions

    build = package_versions()["torch_build"]
    assert build["version"] == torch.__version__ and build["cuda"] == torch.version.cuda and "cudnn" in build


SWALLOWED_CTRL_C = """
import os, signal, sys, weakref
from common.run.signals import check_interrupted, raise_on_sigterm
raise_on_sigterm()
class Thing:
    pass
def callback(ref):  # Python runs the SIGINT handler inside this callback and drops what it raises
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10000):
        pass
thing = Thing()
ref = weakref.ref(thing, callback)
del thing
print("went on", flush=True)
try:
    check_interrupted()
except KeyboardInterrupt:
    print("raised again", flush=True)
    sys.exit(130)
"""


def test_a_ctrl_c_that_python_drops_in_a_callback_is_raised_again():
    """Python prints and drops an exception raised in a weakref callback, a signal handler's KeyboardInterrupt
    too (a study worker trained on after Ctrl-C, seen in CI): the loops' check_interrupted() raises it again."""
    import subprocess
    import sys

    from helpers import REPO, ctrl_c_works

    proc = subprocess.run([sys.executable, "-c", SWALLOWED_CTRL_C], cwd=REPO, capture_output=True, text=True,
                          timeout=60, preexec_fn=ctrl_c_works)
    assert "KeyboardInterrupt" in proc.stderr and "Exception ignored" in proc.stderr, "Python dropped it"
    assert proc.stdout.split() == ["went", "on", "raised", "again"] and proc.returncode == 130
