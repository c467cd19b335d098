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
