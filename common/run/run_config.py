"""The ``run`` section every experiment's config shares: seed, device, threads, determinism, mixed precision;
and :func:`start_run`, which applies it at the top of both exercises' ``train``."""
from __future__ import annotations

from dataclasses import dataclass

# numpy takes seeds below 2**32, and ex08 seeds each step with seed * 1000 + step
MAX_SEED = 4_000_000


@dataclass
class RunConfig:
    seed: int = 0
    """Seeds initialisation, data order, augmentation, mixup (ex08: each step reseeds with seed*1000 + step)."""
    device: str = "auto"
    """``auto`` (cuda > mps > cpu) or a torch device string."""
    threads: int = 0
    """CPU intra-op threads (0 = all available cores). A study sets it per worker so workers share the cores."""
    deterministic: bool = False
    """Ask torch for deterministic kernels (matters on GPU; CPU is deterministic for a fixed thread count)."""
    amp: bool = True
    """bf16 autocast, on CUDA only (it is 8-20x slower on CPUs without bf16, so CPUs always run fp32)."""

    def validate(self) -> None:
        from common.errors import ConfigError

        if self.threads < 0:
            raise ConfigError(f"run.threads={self.threads} must be >= 0 (0 = all cores)")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"run.seed={self.seed} must be in [0, {MAX_SEED}]")


def start_run(run: RunConfig):
    """Seed every generator, set the thread count, pick the device (refusing one this machine lacks).
    Returns ``(device, threads)``."""
    from common.run.device import pick_device, set_threads
    from common.run.seed import seed_everything

    seed_everything(run.seed, run.deterministic)
    threads = set_threads(run.threads)
    return pick_device(run.device), threads
