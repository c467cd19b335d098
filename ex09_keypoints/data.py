"""Facial keypoints data in the course's CSV format, decoded once and held as tensors.

``<data dir>/facial_keypoints/{training,val}.csv``: 30 keypoint columns in pixels (15 points, ``_x``/``_y``,
order below) and ``Image`` (9216 space-separated integers 0..255, a 96x96 face, row-major). The course's own
archive also has a leading index column; both layouts are accepted (columns are found by name).

Every row is validated; a bad row raises :class:`KeypointsDataError` naming file, row and column, unless
``drop_bad_rows`` is set (then they are dropped and counted). Decoded tensors are cached under the cache dir
(never the data dir) keyed by the CSV's path, size and mtime, so parsing the 50 MB file happens once.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError, describe_error
from common.files.streams import is_stream, read_stream
from common.run.paths import cache_dir, resolve_data_dir

KEYPOINT_NAMES = (
    "left_eye_center", "right_eye_center", "left_eye_inner_corner", "left_eye_outer_corner",
    "right_eye_inner_corner", "right_eye_outer_corner", "left_eyebrow_inner_end", "left_eyebrow_outer_end",
    "right_eyebrow_inner_end", "right_eyebrow_outer_end", "nose_tip", "mouth_left_corner",
    "mouth_right_corner", "mouth_center_top_lip", "mouth_center_bottom_lip",
)
KEYPOINT_COLUMNS = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y"))
IMAGE_SIZE = 96
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
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


class KeypointsDataError(DataError):
    """Bad or missing keypoint data; the message says which file/row/column and what to do."""


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


def parse_csv(path: Path, drop_bad_rows: bool = False, raw: bytes | None = None):
    """Parse and validate one CSV (``raw``: its bytes, already read from a stream). Returns ``(images uint8
    (N,96,96) numpy, keypoints float32 (N,30) px, dropped rows)``, each dropped row as one line saying where and
    why."""
    path = Path(path)
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name
    source = open(path, "rb") if raw is None else io.BytesIO(raw)
    try:
        with io.TextIOWrapper(source, encoding="utf-8-sig", newline="") as f:
            return _parse_lines(path, f, drop_bad_rows)
    except UnicodeDecodeError as e:
        raise KeypointsDataError(f"{path}: not UTF-8 text (it holds the byte 0x{e.object[e.start]:02x}); save it as "
                                 "UTF-8") from None


def _parse_lines(path: Path, f, drop_bad_rows: bool):
    import numpy as np

    header = f.readline().rstrip("\r\n").split(",")
    try:
        kp_idx = [header.index(c) for c in KEYPOINT_COLUMNS]
        img_idx = header.index("Image")
    except ValueError:
        missing = [c for c in (*KEYPOINT_COLUMNS, "Image") if c not in header]
        raise KeypointsDataError(
            f"{path}: header lacks column(s) {missing}; expected the course's 30 keypoint columns and "
            f"'Image'") from None
    images, keypoints, dropped = [], [], []
    for row, line in enumerate(f, start=1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        try:
            image, kps = _parse_row(line, len(header), kp_idx, img_idx)
        except KeypointsDataError as e:
            msg = f"{path.name} row {row} (line {row + 1}), {e}"
            if not drop_bad_rows:
                raise KeypointsDataError(
                    f"{path}: row {row} (line {row + 1}), {e}. Fix the row, or pass --drop-bad-rows to "
                    f"skip bad rows") from None
            dropped.append(msg)
            continue
        images.append(image)
        keypoints.append(kps)
    if not images:
        raise KeypointsDataError(f"{path}: no valid rows")
    return (np.stack(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE), np.stack(keypoints).astype(np.float32),
            dropped)


def _parse_row(line: str, n_cols: int, kp_idx: list[int], img_idx: int):
    import numpy as np

    cells = line.split(",")
    if len(cells) != n_cols:
        raise KeypointsDataError(f"expected {n_cols} comma-separated cells, found {len(cells)}")
    kps = np.empty(len(kp_idx), dtype=np.float64)
    for j, ci in enumerate(kp_idx):
        cell = cells[ci].strip()
        if cell == "":
            raise KeypointsDataError(f"column '{KEYPOINT_COLUMNS[j]}': missing keypoint")
        try:
            value = float(cell)
        except ValueError:
            raise KeypointsDataError(f"column '{KEYPOINT_COLUMNS[j]}': not a number: {cell[:20]!r}") from None
        if not np.isfinite(value):
            raise KeypointsDataError(f"column '{KEYPOINT_COLUMNS[j]}': missing keypoint ({cell})")
        if not 0.0 <= value <= IMAGE_SIZE:
            raise KeypointsDataError(
                f"column '{KEYPOINT_COLUMNS[j]}': keypoint {value} px lies outside the 96x96 image")
        kps[j] = value
    try:  # a bad token makes fromstring stop (older numpy: with a warning) or raise (numpy >= 2.3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pixels = np.fromstring(cells[img_idx], dtype=np.int64, sep=" ")
    except ValueError:
        pixels = np.empty(0, dtype=np.int64)
    if pixels.size != N_PIXELS:  # slow path only to say exactly what is wrong
        tokens = cells[img_idx].split()
        bad = next((t for t in tokens if not t.lstrip("-").isdigit()), None)
        if bad is not None:
            raise KeypointsDataError(f"column 'Image': pixel {bad[:20]!r} is not an integer")
        raise KeypointsDataError(f"column 'Image': expected {N_PIXELS} pixel values, found {len(tokens)}")
    if pixels.min() < 0 or pixels.max() > 255:
        pos = int(np.argmax((pixels < 0) | (pixels > 255)))
        raise KeypointsDataError(f"column 'Image': pixel {pos} has value {pixels[pos]}, outside 0..255")
    return pixels.astype(np.uint8), kps


def _cache_file(csv_path: Path, drop_bad_rows: bool) -> Path:
    st = csv_path.stat()
    key = f"{csv_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{drop_bad_rows}|v{CACHE_VERSION}"
    return cache_dir() / "facial_keypoints" / f"{csv_path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def check_csv_file(path: Path, head: bytes | None = None) -> None:
    """A readable plain CSV file, or a :class:`KeypointsDataError` saying what it is instead (``head``: the first
    bytes of a stream, already read)."""
    if head is None:
        if not path.exists():
            raise KeypointsDataError(f"{path} does not exist: give a CSV in the course's format")
        if path.is_dir():
            raise KeypointsDataError(f"{path} is a directory, not a CSV file: give the CSV file inside it")
        try:
            with open(path, "rb") as f:
                head = f.read(2)
        except OSError as e:
            raise KeypointsDataError(f"{path}: cannot be read ({e.strerror})") from None
    if head[:2] == b"\x1f\x8b":
        raise KeypointsDataError(f"{path} is gzip-compressed: unpack it first (gunzip -k {path.name}, or "
                                 f"<(zcat {path.name}))")


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
