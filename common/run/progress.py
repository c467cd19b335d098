"""A tqdm bar over epochs that prints its finished state once. tqdm's own iterator prints the last step and
``close()`` prints it again: two identical 100% lines in every log file (and in a terminal without ``\\r``)."""
from __future__ import annotations

import sys


class EpochBar:
    """Iterate ``epochs`` (a ``range``; a resumed run starts it later) with a bar on stderr, or silently when
    ``enabled`` is false. ``set_postfix`` shows figures from the next update on."""

    def __init__(self, epochs: range, desc: str, enabled: bool = True):
        self.epochs, self.bar = epochs, None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs.stop, initial=epochs.start, desc=desc, unit="ep", file=sys.stderr,
                            dynamic_ncols=True)

    def __iter__(self):
        try:
            for epoch in self.epochs:
                yield epoch
                if self.bar is not None:
                    if epoch + 1 < self.epochs.stop:
                        self.bar.update(1)
                    else:
                        self.bar.n += 1  # close() prints the final state; update() would print it first
        finally:
            if self.bar is not None:
                self.bar.close()

    def set_postfix(self, **figures) -> None:
        if self.bar is not None:
            self.bar.set_postfix(figures, refresh=False)
