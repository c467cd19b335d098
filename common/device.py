"""Device choice (cuda > mps > cpu), CPU thread count and the mixed-precision policy.

Mixed precision is used only on CUDA: on CPUs without bf16 units (like the 2-core CI machine) bf16 autocast
was measured 8-20x *slower* than fp32.
"""
from __future__ import annotations

import contextlib
import os


def pick_device(name: str = "auto"):
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_threads(threads: int = 0) -> int:
    """Use ``threads`` intra-op threads (0 = all cores this process may use). Returns the number set."""
    import torch

    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def autocast(device, enabled: bool = True):
    """bf16 autocast on CUDA when enabled; a no-op context everywhere else."""
    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
