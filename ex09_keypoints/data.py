"""Facial keypoints data in the course's CSV format (:mod:`ex09_keypoints.csv_format`), decoded once and held as
tensors: ``<data dir>/facial_keypoints/{training,val}.csv``. Decoded tensors are cached under the cache dir
(never the data dir) keyed by the CSV's path, size and mtime, so parsing the 50 MB file happens once.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from common.errors import describe_error
from common.files.streams import is_stream, read_stream
from common.run.paths import cache_dir, resolve_data_dir
from ex09_keypoints.csv_format import (  # noqa: F401
    IMAGE_SIZE,
    KEYPOINT_COLUMNS,
    KEYPOINT_NAMES,
    N_PIXELS,
    KeypointsDataError,
    check_csv_file,
    parse_csv,
)

SPLIT_FILES = {"train": "training.csv", "val": "val.csv"}
# The course's download (exercise_09): an archive holding training.csv and val.csv.
COURSE_URL = "https://vision.in.tum.de/webshare/g/i2dl/facial_keypoints.zip"
CACHE_VERSION = 2  # 2: dropped rows kept as text


def _mirror_permutation() -> tuple[int, ...]:
    """Index of each keypoint's mirror image: left_* <-> right_*, mouth_left <-> mouth_right."""
    def mirror(name):
        for a, b in (("left", "right"), ("right", "left")):
            if f"{a}_" in name:
                return name.replace(f"{a}_", f"{b}_")
        return name
    return tuple(KEYPOINT_NAMES.index(mirror(n)) for n in KEYPOINT_NAMES)


FLIP_PERMUTATION = _mirror_permutation()

# Where the keypoints put the pixel grid, in normalized units. The annotations use 1-based pixel centres
# (pixel i, counted from 0, is centred at px = i + 1, as in MATLAB and iBUG 300-W), so the mirror of x is
# 97 - x and not 96 - x. Measured: a model trained with flips assuming 96 - x was biased by -0.50 px in x
# and -0.01 px in y on its own training images, exactly half of a 1 px flip error.
KEYPOINT_GRID_OFFSET = 0.5 / 48


def pixels_to_normalized(px):
    return (px - IMAGE_SIZE / 2) / (IMAGE_SIZE / 2)


def normalized_to_pixels(k):
    return k * (IMAGE_SIZE / 2) + IMAGE_SIZE / 2


@dataclass
class KeypointsSplit:
    """One split as tensors: ``images`` uint8 (N,1,96,96), ``keypoints`` float32 (N,15,2) in [-1, 1]."""

    images: "object"
    keypoints: "object"
    source: Path
    dropped_rows: tuple[str, ...] = ()
    """With ``drop_bad_rows``: each skipped row, as ``"<file> row R (line L), <what is wrong>"``."""

    @property
    def dropped(self) -> int:
        return len(self.dropped_rows)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def float_images(self):
        return self.images.float().div_(255.0)


def _cache_file(csv_path: Path, drop_bad_rows: bool) -> Path:
    st = csv_path.stat()
    key = f"{csv_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{drop_bad_rows}|v{CACHE_VERSION}"
    return cache_dir() / "facial_keypoints" / f"{csv_path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


_cache_warned: list[Path] = []  # the cache dir's trouble is said once per process


def load_split(csv_path: Path, drop_bad_rows: bool = False, use_cache: bool = True) -> KeypointsSplit:
    """Decoded tensors of one CSV, from the cache when the CSV is unchanged. A pipe or FIFO (``--csv
    <(zcat faces.csv.gz)``) is read once, whole, and not cached: it has no stable identity."""
    import torch

    from common.files.atomic import atomic_torch_save

    csv_path = Path(csv_path)
    raw, cache = None, None
    if is_stream(csv_path):
        raw = read_stream(csv_path)
        check_csv_file(csv_path, head=raw[:2])
    else:
        check_csv_file(csv_path)
        cache = _cache_file(csv_path, drop_bad_rows) if use_cache else None
    if cache is not None and cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            return KeypointsSplit(blob["images"], blob["keypoints"], csv_path, tuple(blob["dropped_rows"]))
        except Exception:  # a corrupt cache is just rebuilt
            pass
    images, kps_px, dropped = parse_csv(csv_path, drop_bad_rows, raw=raw)
    images = torch.from_numpy(images).unsqueeze(1).contiguous()
    keypoints = pixels_to_normalized(torch.from_numpy(kps_px)).view(-1, len(KEYPOINT_NAMES), 2).contiguous()
    if cache is not None:
        try:
            atomic_torch_save({"images": images, "keypoints": keypoints, "dropped_rows": list(dropped)}, cache)
        except (OSError, RuntimeError) as e:  # a read-only or full cache dir (torch's zip writer says "unexpected
            # pos" for ENOSPC): the cache is optional, so say it once and go on, just slower next time
            if not _cache_warned:
                print(f"[data] cannot write the cache {cache.parent} ({describe_error(e)}); going on without it",
                      file=sys.stderr)
            _cache_warned.append(cache)
    return KeypointsSplit(images, keypoints, csv_path, tuple(dropped))


def report_dropped(splits: dict[str, KeypointsSplit], run_dir: Path | None = None) -> None:
    """One line per split that lost rows to ``drop_bad_rows``; the rows themselves go to
    ``<run dir>/dropped_rows.txt`` (else the first is quoted)."""
    lines = [row for split in splits.values() for row in split.dropped_rows]
    if run_dir is not None and lines:
        from common.files.atomic import atomic_write_text

        atomic_write_text(Path(run_dir) / "dropped_rows.txt", "\n".join(lines) + "\n")
    for split in splits.values():
        if split.dropped:
            where = (f"each row and why: {Path(run_dir) / 'dropped_rows.txt'}" if run_dir is not None
                     else f"first: {split.dropped_rows[0]}")
            print(f"[data] {split.source.name}: dropped {split.dropped} bad row(s), kept {len(split)} ({where})",
                  file=sys.stderr)


def keypoints_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return resolve_data_dir(data_dir) / "facial_keypoints"


def ensure_files(data_dir: str | os.PathLike | None = None, url: str | None = None) -> Path:
    """The folder holding training.csv and val.csv; downloads and unpacks the course archive if missing."""
    from common.files.download import DownloadError, download, extract_members

    folder = keypoints_dir(data_dir)
    wanted = list(SPLIT_FILES.values())
    present = [name for name in wanted if (folder / name).exists()]
    if len(present) == len(wanted):
        return folder
    if present:  # never download over a file the user put there
        missing = [name for name in wanted if name not in present]
        raise KeypointsDataError(
            f"{folder / missing[0]} is missing ({', '.join(present)} is there): put {' and '.join(missing)} beside "
            f"it, or point --data-dir at a folder whose facial_keypoints/ holds both. Nothing was downloaded, so "
            f"your files are untouched")
    url = url or os.environ.get("I2DL_KEYPOINTS_URL", COURSE_URL)
    archive = cache_dir() / "downloads" / "facial_keypoints.zip"
    try:
        print(f"[data] {folder} lacks {wanted}; downloading {url}", file=sys.stderr)
        download(url, archive)
        extract_members(archive, folder, wanted)
    except (DownloadError, OSError) as e:
        raise KeypointsDataError(
            f"facial keypoint data not found: put training.csv and val.csv (the course's format) into {folder} "
            f"(or point --data-dir / $I2DL_DATA_DIR at a folder holding facial_keypoints/). "
            f"Automatic download failed: {e}") from e
    return folder


def load_keypoints(data_dir=None, drop_bad_rows: bool = False, splits=("train", "val"), url=None,
                   csv_files: dict | None = None) -> dict[str, KeypointsSplit]:
    """``{"train": KeypointsSplit, "val": KeypointsSplit}`` from the data dir (or explicit CSV paths)."""
    if csv_files is None:
        folder = ensure_files(data_dir, url)
        csv_files = {s: folder / SPLIT_FILES[s] for s in splits}
    return {s: load_split(Path(p), drop_bad_rows) for s, p in csv_files.items()}


class CourseDataset:
    """A map-style dataset yielding ``{"image": (1,96,96) float in [0,1], "keypoints": (15,2)}`` exactly like
    the course's ``FacialKeypointsDataset`` with ``transforms.ToTensor()``; used by the course-exact score."""

    def __init__(self, split: KeypointsSplit):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return {"image": self.split.images[i].float() / 255.0, "keypoints": self.split.keypoints[i]}
