"""The course's limits and pass marks, in one place: training, studies, export and the submission check (which
gets them in its inputs: it runs without this repo) all read them here."""
from __future__ import annotations

MAX_PARAMS = 5_000_000
"""A model must have fewer parameters than this."""
MAX_MODEL_BYTES = 20_000_000
"""A saved model must be smaller than this: the course's "20 MB" is 20 * 1e6 bytes."""
PASS_MARKS = {"ex09": ("score", 100.0), "ex08": ("test10k_acc", 0.55)}
"""Each exercise's pass mark: (the submission check's figure, the bar it must reach)."""


def mb(n_bytes: int) -> str:
    """Bytes in the course's MB (1e6 bytes): ``20 MB``, ``20.04 MB``."""
    return f"{round(n_bytes / 1e6, 2):g} MB"
