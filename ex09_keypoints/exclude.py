"""Training faces left out by digest (``data.exclude FILE``): a face's identity is the digest of its pixels and its
labelled points, as decoded, so the audit (:mod:`ex09_keypoints.audit`) can name the faces it flags and a run can
train without them, whatever copy or order of the CSV it reads."""
from __future__ import annotations

import csv
import hashlib
import io
import sys
from pathlib import Path

from common.errors import ConfigError

CSV_NAME = "audit.csv"
"""The audit's list of every training face (``row,digest,error_px,...``), worst first."""


def face_digests(split) -> list[str]:
    """Each face's identity: the sha256 (16 hex digits) of its pixels and its labelled points, as decoded, so the
    same face in another copy or order of the CSV has the same digest."""
    images, points = split.images.numpy(), split.keypoints.numpy()
    return [hashlib.sha256(images[i].tobytes() + points[i].tobytes()).hexdigest()[:16] for i in range(len(split))]


def read_excluded(path: Path) -> set[str]:
    """The digests in an exclude file: one per line (``#`` comments), or the ``digest`` column of an audit CSV."""
    from common.files.streams import is_stream, read_stream

    path = Path(path)
    if not (path.is_file() or is_stream(path)):
        raise ConfigError(f"data.exclude={path}: no such file; give a file of face digests (an audit's {CSV_NAME})")
    text = read_stream(path).decode(errors="replace") if is_stream(path) else path.read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if lines and "digest" in lines[0].split(","):
        rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
        lines = [row["digest"] for row in rows]
    bad = next((line for line in lines if not (len(line) == 16 and all(c in "0123456789abcdef" for c in line))), None)
    if bad is not None:
        raise ConfigError(f"data.exclude={path}: {bad[:40]!r} is not a face digest (16 hex digits, as {CSV_NAME} "
                          "lists them)")
    return set(lines)


def without(split, excluded: set[str], where: str):
    """``split`` less the faces whose digest is in ``excluded``; says how many were left out (and how many of the
    listed ones it does not hold)."""
    from ex09_keypoints.data import KeypointsSplit

    digests = face_digests(split)
    keep = [i for i, d in enumerate(digests) if d not in excluded]
    found = len(digests) - len(keep)
    print(f"[data] {split.source.name}: left out {found} face(s) listed in {where}"
          + (f" ({len(excluded) - found} listed ones are not among its faces)" if found < len(excluded) else ""),
          file=sys.stderr)
    return KeypointsSplit(split.images[keep], split.keypoints[keep], split.source, split.dropped_rows)
