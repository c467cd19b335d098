"""Seconds since *this process* started (interpreter start, imports and data loading included), which is
what "time to score X from process start" means."""
from __future__ import annotations

import os
import time

_FALLBACK_START = time.time()


def process_start_time() -> float:
    """Wall-clock (epoch seconds) at which this process started; Linux /proc, else first import of this module."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _FALLBACK_START


def since_process_start() -> float:
    return time.time() - process_start_time()
