"""One call seeds every random number generator a run touches."""
from __future__ import annotations

import os
import random


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and all GPUs).

    ``deterministic`` additionally asks torch for deterministic kernels (warn-only, so an op without a
    deterministic implementation still runs) and disables cuDNN autotuning. On CPU the default kernels are
    already deterministic for a fixed thread count, so same seed twice gives the same numbers.
    """
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """Every random stream a run draws from, as tensors and plain values (``weights_only``-loadable): torch's
    global generator (dropout, initialisation), every CUDA device's, numpy's global and python's."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    """Put back what :func:`rng_state` saved, so a resumed run draws exactly the numbers it would have."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_tuples(state["python"]))


def _tuples(value):
    """python's ``random`` state is nested tuples; a checkpoint may hand them back as lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
