"""What this machine can run: how many study workers, how many threads each, which GPUs they share."""
from __future__ import annotations

import os
import subprocess

from common.errors import ConfigError
from common.run.device import core_count

MAX_WORKERS_PER_CORE = 4  # past this a CPU study only thrashes (and 99999 would be a fork bomb)


def check_workers(workers: int) -> None:
    cores = core_count()
    most = MAX_WORKERS_PER_CORE * max(cores, len(gpu_ids()) if workers > cores else 0)
    if workers < 1 or workers > most:
        raise ConfigError(f"--workers={workers} must be between 1 and {most} ({MAX_WORKERS_PER_CORE} per core or GPU "
                          f"of the {cores} cores here); each worker is a whole training process")


def gpu_ids() -> list[str]:
    """GPUs to share among workers: $CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists, else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def threads_per_worker(workers: int) -> int:
    return max(1, core_count() // max(1, workers))
