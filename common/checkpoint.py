"""Checkpoints: written atomically (temp file + rename, so a killed run never leaves a half file), loaded
with ``weights_only=True`` (no arbitrary pickle code), and checked against the course's size limits."""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

MAX_PARAMS = 5_000_000
MAX_FILE_BYTES = 20 * 1024 * 1024


class ModelTooLargeError(ValueError):
    pass


def _file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give (0666 less the umask): mkstemp's 0600 would leave every
    file the project writes private to its owner."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold a Ctrl-C (SIGINT) or SIGTERM that arrives inside the block and deliver it right after. A
    KeyboardInterrupt raised inside ``torch.save`` makes its zip writer's ``__exit__`` fail ("unexpected pos") and
    that error replaces the interrupt: the run then died with a traceback instead of its one-line "continue it
    with" message (seen in CI). Python only runs signal handlers in the main thread, so elsewhere this does
    nothing; nor for a signal whose handler was not set from Python (``getsignal`` is None: it could not be put
    back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):  # re-deliver to what handled it before: an exception, ignored, the default
            signal.raise_signal(s)


def atomic_write(path: Path, write) -> None:
    """``write(f)`` into a temp file beside ``path``, then rename it over ``path``: never a half-written file,
    and a Ctrl-C during the write lands after it (:func:`_ctrl_c_deferred`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _ctrl_c_deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _file_mode())
            with os.fdopen(fd, "wb") as f:
                out = _WriteErrors(f)
                try:
                    write(out)
                except Exception as e:
                    if out.error is not None:  # the disk's own words ("No space left"), not the writer's
                        raise OSError(out.error.errno, out.error.strerror, str(path)) from e
                    raise
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            if e.filename is None or e.filename == tmp:  # name the file the user knows, not the temp file
                raise OSError(e.errno, e.strerror, str(path)) from e
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _WriteErrors:
    """A file that remembers the OSError of a failed write: torch's zip writer reports a full disk as
    "unexpected pos", losing the ENOSPC that a user can act on."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    atomic_write(Path(path), lambda f: torch.save(obj, f))


def load(path: str | Path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)``; a missing, truncated or foreign file is a :class:`ConfigError` that
    names it (the user gave the wrong path), not a traceback."""
    import torch

    from common.errors import ConfigError

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a checkpoint file (best.pt, last.pt, model.pt, ...)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, a text file, a pickle with code in it. torch's own words are not quoted:
        # they suggest turning weights_only off, which this repo never does.
        raise ConfigError(f"{path} is not a checkpoint this repo wrote ({type(e).__name__}: truncated, another kind "
                          "of file, or pickled objects beyond plain tensors, which are never loaded here); give a "
                          "best.pt, last.pt or model.pt saved by a run") from None
    if not isinstance(blob, dict):
        raise ConfigError(f"{path} holds a {type(blob).__name__}, not one of this project's checkpoints")
    return blob


def save_model(model, path: str | Path, fmt: str, model_config: dict, **extra) -> int:
    """A trained model as both exercises save it: ``{"format", "model_config", "state_dict", **extra}``, the
    weights on the CPU, checked against the course's limits (:func:`save_model_checked`). Returns the bytes."""
    obj = {"format": fmt, "model_config": model_config,
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    return save_model_checked(obj, model, path)


def load_model_blob(path: str | Path, fmt: str, what: str, **expect) -> dict:
    """Load a :func:`save_model` checkpoint, checking its ``format`` (and any ``expect`` field, e.g. ``kind``);
    anything else is refused naming the file and what it is instead."""
    from common.errors import ConfigError

    blob = load(path)
    found = {"format": blob.get("format"), **{k: blob.get(k) for k in expect}}
    if found != {"format": fmt, **expect}:
        hint = " (it is a training state: continue it with --resume)" if "optimizer" in blob else ""
        raise ConfigError(f"{path} is not {what}: it holds "
                          f"{', '.join(f'{k} {v!r}' for k, v in found.items())}{hint}")
    return blob


def build_checked(build, state_dict: dict, path):
    """``build()`` a model for ``state_dict`` (as saved in ``path``) only after checking, on PyTorch's ``meta``
    device (no memory allocated), that the config gives the same parameter names and shapes: a hand-edited
    config with huge widths must not allocate terabytes, nor end in a size-mismatch traceback."""
    import torch

    from common.errors import ConfigError

    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        raise ConfigError(f"{path}: its model config cannot be built ({type(e).__name__}: {str(e)[:200]}); the file "
                          "was edited or written by another version") from None
    got = {k: tuple(v.shape) for k, v in state_dict.items() if hasattr(v, "shape")}
    if expected != got:
        key = next((k for k in sorted(set(expected) | set(got)) if expected.get(k) != got.get(k)), "?")
        raise ConfigError(f"{path}: its model config does not match its weights ({key}: config gives "
                          f"{expected.get(key, 'nothing')}, weights hold {got.get(key, 'nothing')}); the file was "
                          "edited or put together by hand")
    model = build()
    model.load_state_dict(state_dict)
    return model


def changed_keys(saved: dict, now: dict, prefix: str = "model.", ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between a saved config (section) and the current one (tuples and
    lists compare equal), as ``<prefix><key>``, leaving out keys that start with any of ``ignore``."""
    import json

    from common.config import flatten

    saved, now = (flatten(json.loads(json.dumps(c))) for c in (saved, now))
    return [prefix + k for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k) and not (prefix + k).startswith(ignore)]


# What a resumed run may change: where the data and W&B are, the wall-clock budget, which ex08 step is asked for.
RESUME_MAY_CHANGE = ("data.data_dir", "track.", "train.time_limit_s", "only_step")


def check_resumable(saved_config: dict, cfg, where) -> None:
    """Refuse (naming the keys) to resume a run whose saved config differs from ``cfg``: it would not go on
    with the same computation."""
    from common.config import to_dict
    from common.errors import ConfigError

    differ = changed_keys(saved_config, to_dict(cfg), prefix="", ignore=RESUME_MAY_CHANGE)
    if differ:
        raise ConfigError(f"--resume {where} was trained with other settings ({', '.join(differ)}); resume with "
                          "the --preset and --set it was trained with")


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_param_limit(model, limit: int = MAX_PARAMS) -> int:
    n = count_params(model)
    if n >= limit:
        raise ModelTooLargeError(
            f"model has {n:,} parameters; the course allows fewer than {limit:,}. Shrink the widths/depth.")
    return n


def save_model_checked(obj: dict, model, path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> int:
    """Save ``obj`` (holding ``model``'s state) atomically after checking the parameter limit, then check the
    file size; an oversize file is removed and an error raised. Returns the file size in bytes."""
    check_param_limit(model)
    path = Path(path)
    atomic_torch_save(obj, path)
    size = path.stat().st_size
    if size >= max_bytes:
        path.unlink()
        raise ModelTooLargeError(f"saved model {path} is {size / 2**20:.1f} MB; the course allows < 20 MB")
    return size
