"""Device choice (cuda > mps > cpu), CPU thread count and the mixed-precision policy.

Mixed precision is used only on CUDA: on CPUs without bf16 units (like the 2-core CI machine) bf16 autocast
was measured 8-20x *slower* than fp32.
"""
from __future__ import annotations

import contextlib
import os


def pick_device(name: str = "auto"):
    """``auto``: cuda > mps > cpu. A named device this machine does not have is a ConfigError, not a crash at
    the first tensor moved there."""
    import torch

    from common.errors import ConfigError

    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"run.device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
        if not available.get(device.type, True):
            raise ConfigError(f"run.device={name}: this machine has no {device.type.upper()} device; "
                              "use run.device=auto or cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"run.device={name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def core_count() -> int:
    """The cores this process may run on (its affinity mask: a Slurm or taskset share, not the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(threads: int = 0) -> int:
    """Use ``threads`` intra-op threads (0 = all cores this process may use). Returns the number set."""
    import torch

    if threads <= 0:
        threads = core_count()
    torch.set_num_threads(threads)
    return threads


def autocast(device, enabled: bool = True):
    """bf16 autocast on CUDA when enabled; a no-op context everywhere else."""
    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
