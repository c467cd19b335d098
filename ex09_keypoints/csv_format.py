"""The course's keypoint CSV format: its columns, and one file parsed with every row validated.

30 keypoint columns in pixels (15 points, ``_x``/``_y``, in :data:`KEYPOINT_NAMES` order) and ``Image`` (9216
space-separated integers 0..255, a 96x96 face, row-major), found by name (the course's archive also has a leading
index column). A bad row raises :class:`KeypointsDataError` naming file, row and column, unless ``drop_bad_rows``.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from common.errors import DataError

KEYPOINT_NAMES = (
    "left_eye_center", "right_eye_center", "left_eye_inner_corner", "left_eye_outer_corner",
    "right_eye_inner_corner", "right_eye_outer_corner", "left_eyebrow_inner_end", "left_eyebrow_outer_end",
    "right_eyebrow_inner_end", "right_eyebrow_outer_end", "nose_tip", "mouth_left_corner",
    "mouth_right_corner", "mouth_center_top_lip", "mouth_center_bottom_lip",
)
KEYPOINT_COLUMNS = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y"))
IMAGE_SIZE = 96
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE

class KeypointsDataError(DataError):
    """Bad or missing keypoint data; the message says which file/row/column and what to do."""


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

    header = [name.strip() for name in _cells(f.readline().rstrip("\r\n"))]
    twice = next((name for i, name in enumerate(header) if name in header[:i]), None)
    if twice is not None:
        first = header.index(twice)
        raise KeypointsDataError(f"{path}: the header names column {twice!r} twice (columns {first + 1} and "
                                 f"{header.index(twice, first + 1) + 1}), so which one holds it is unclear; "
                                 "remove or rename one")
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


def _cells(line: str) -> list[str]:
    """A CSV line's cells: a plain split (fast: the course's files quote nothing), the csv module's reading of
    quotes only for a line that has them (a spreadsheet that quoted every cell, ``"Image"``)."""
    if '"' not in line:
        return line.split(",")
    import csv

    return next(csv.reader([line]), [])


def _parse_row(line: str, n_cols: int, kp_idx: list[int], img_idx: int):
    import numpy as np

    cells = _cells(line)
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
