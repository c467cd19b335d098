"""MNIST for ex08: the four original IDX files, checked, decoded to tensors, and the course's few-label split.

Files live in ``<data dir>/MNIST/raw/`` exactly as torchvision lays them out. Each is md5-checked against
torchvision's list and its IDX header validated (magic number, dimensions, size), so a truncated or foreign
file stops the run with an error naming it. Missing files are fetched from torchvision's mirrors (md5
verified); offline that fails with an error naming the files and the folder. Decoding the gzip files takes
~0.3 s, so nothing is cached and nothing is ever written next to existing data.

The few-label split (``make_split``): from the 60k training images, 10 images per class for each of the
labeled train / val / test sets (300 in all), chosen by a seeded numpy ``Generator`` (PCG64: the same stream
on every machine), and the other 59,700 images as the unlabeled pool. The 10k MNIST test set is the honest
yardstick and is never used to choose anything.
"""
from __future__ import annotations

import gzip
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import DataError
from common.run.paths import resolve_data_dir

# torchvision's mirrors and md5 sums (torchvision.datasets.MNIST.mirrors / .resources)
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
IDX_MAGIC = {3: 2051, 1: 2049}  # images (n, rows, cols) / labels (n,), unsigned bytes
N_CLASSES = 10


class MnistDataError(DataError):
    """Missing, corrupt or unexpected MNIST files; the message names the file and what to do."""


def mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return resolve_data_dir(data_dir) / "MNIST" / "raw"


def mnist_files(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The four IDX files a run reads (for the run record's data hashes)."""
    return [mnist_dir(data_dir) / name for name, _ in FILES.values()]


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Decode one gzipped IDX file of unsigned bytes with ``ndim`` dimensions, validating the header."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # not gzip, or truncated
        raise MnistDataError(f"{path}: cannot decompress ({e}); the file is corrupt or truncated, delete it "
                             f"and let the project download it again") from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MnistDataError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != IDX_MAGIC[ndim]:
        raise MnistDataError(f"{path}: wrong IDX magic number {magic} (expected {IDX_MAGIC[ndim]} for a "
                             f"{ndim}-d unsigned-byte array); is it the right file?")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise MnistDataError(f"{path}: header says shape {tuple(dims)} ({expected} bytes) but the file holds "
                             f"{len(raw)} bytes; it is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def ensure_files(data_dir=None, mirrors: tuple[str, ...] | None = None, check_md5: bool = True) -> Path:
    """The folder holding the four files, each md5-checked; downloads missing ones from the mirrors."""
    from common.files.download import DownloadError, download, md5sum

    folder = mnist_dir(data_dir)
    env = os.environ.get("I2DL_MNIST_MIRRORS")
    mirrors = mirrors or (tuple(env.split(",")) if env else MIRRORS)
    missing = [name for name, _ in FILES.values() if not (folder / name).is_file()]
    for name, md5 in FILES.values():
        if name not in missing:
            continue
        errors = []
        for mirror in mirrors:
            try:
                print(f"[data] downloading {mirror}{name} -> {folder}", file=sys.stderr)
                download(mirror + name, folder / name, md5=md5)
                break
            except (DownloadError, OSError) as e:
                errors.append(str(e))
        else:
            raise MnistDataError(
                f"MNIST files {missing} are missing from {folder} and could not be downloaded "
                f"({'; '.join(errors)[:500]}). Put the four original .gz files there, or point --data-dir / "
                f"$I2DL_DATA_DIR at a folder holding MNIST/raw/.")
    if check_md5:
        for name, md5 in FILES.values():
            got = md5sum(folder / name)
            if got != md5:
                raise MnistDataError(f"{folder / name}: md5 {got} does not match the original's {md5}; the file "
                                     f"is corrupt or not MNIST. Delete it to download it again.")
    return folder


@dataclass
class Mnist:
    """All of MNIST as uint8 tensors: images (N,1,28,28), labels (N,) int64."""

    train_images: "torch.Tensor"  # noqa: F821
    train_labels: "torch.Tensor"  # noqa: F821
    test_images: "torch.Tensor"  # noqa: F821
    test_labels: "torch.Tensor"  # noqa: F821


def load_mnist(data_dir=None, check_md5: bool = True) -> Mnist:
    import torch

    folder = ensure_files(data_dir, check_md5=check_md5)
    arrays = {key: read_idx(folder / name, 3 if key.endswith("images") else 1) for key, (name, _) in FILES.items()}
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise MnistDataError(f"{folder}: {n_img} {split} images but {n_lab} labels")
        if arrays[f"{split}_labels"].max() >= N_CLASSES:
            raise MnistDataError(f"{folder / FILES[split + '_labels'][0]}: label outside 0..9")
    return Mnist(**{k: torch.from_numpy(v.copy()).unsqueeze(1) if k.endswith("images")
                    else torch.from_numpy(v.astype(np.int64)) for k, v in arrays.items()})


def make_split(labels, seed: int = 0, per_class: int = 10) -> dict[str, list[int]]:
    """Indices into the training set: ``train``/``val``/``test`` (``per_class`` of each class each) and
    ``unlabeled`` (every other image). Deterministic for a seed on every platform (numpy PCG64)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels == c)
        if len(members) < 3 * per_class:
            raise MnistDataError(f"class {c} has only {len(members)} images; need {3 * per_class}")
        chosen = rng.permutation(members)[:3 * per_class]
        for i, name in enumerate(parts):
            parts[name].extend(int(j) for j in chosen[i * per_class:(i + 1) * per_class])
    labeled = np.zeros(len(labels), dtype=bool)
    for name in parts:
        parts[name] = sorted(parts[name])
        labeled[parts[name]] = True
    parts["unlabeled"] = np.flatnonzero(~labeled).tolist()
    return parts


@dataclass
class FewLabelData:
    """The tensors one run works on (uint8 images (N,1,28,28), int64 labels), already on the device."""

    train_x: "torch.Tensor"  # noqa: F821
    train_y: "torch.Tensor"  # noqa: F821
    val_x: "torch.Tensor"  # noqa: F821
    val_y: "torch.Tensor"  # noqa: F821
    test100_x: "torch.Tensor"  # noqa: F821
    test100_y: "torch.Tensor"  # noqa: F821
    unlabeled_x: "torch.Tensor"  # noqa: F821
    test10k_x: "torch.Tensor"  # noqa: F821
    test10k_y: "torch.Tensor"  # noqa: F821
    split: dict


def few_label_data(mnist: Mnist, seed: int = 0, per_class: int = 10, device="cpu",
                   max_unlabeled: int = 0) -> FewLabelData:
    import torch

    split = make_split(mnist.train_labels.numpy(), seed, per_class)
    if max_unlabeled:
        split["unlabeled"] = split["unlabeled"][:max_unlabeled]

    def take(name):
        idx = torch.tensor(split[name])
        return mnist.train_images[idx].to(device), mnist.train_labels[idx].to(device)

    (tx, ty), (vx, vy), (sx, sy) = take("train"), take("val"), take("test")
    ux = mnist.train_images[torch.tensor(split["unlabeled"])].to(device)
    return FewLabelData(tx, ty, vx, vy, sx, sy, ux, mnist.test_images.to(device), mnist.test_labels.to(device),
                        split)


def to_float(images):
    """uint8 (N,1,28,28) -> float in [0, 1]."""
    return images.float().div_(255.0)


def cpu_generator(generator):
    """A CPU generator seeded from ``generator`` (the sampler wants one on the CPU whatever the device)."""
    import torch

    return torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator,
                                                            device=generator.device)))


def labeled_order(labels, n_samples: int, balanced: bool, generator_cpu):
    """Indices into the labeled images for one epoch of ``n_samples`` (0 = one pass over them): class-balanced
    draws with replacement, or shuffled passes without."""
    import torch

    from common.training.sampling import class_balanced_sampler

    n = n_samples or len(labels)
    if balanced:
        return torch.tensor(list(class_balanced_sampler(labels.cpu(), n, generator_cpu)))
    passes = -(-n // len(labels))
    return torch.cat([torch.randperm(len(labels), generator=generator_cpu) for _ in range(passes)])[:n]


def mixed_batches(train_y, n_pool: int, steps: int, labeled_batch: int, pool_batch: int, generator, generator_cpu):
    """One epoch of a step that trains on the labeled images and the unlabeled pool together: per step, the
    indices of ``labeled_batch`` class-balanced labeled images and of ``pool_batch`` pool images (the pool
    shuffled afresh each epoch)."""
    import torch

    device = train_y.device
    pool_order = torch.randperm(n_pool, generator=generator, device=device)
    l_order = labeled_order(train_y, steps * labeled_batch, True, generator_cpu).to(device)
    for s in range(steps):
        yield (l_order[s * labeled_batch:(s + 1) * labeled_batch],
               pool_order[s * pool_batch:(s + 1) * pool_batch])
