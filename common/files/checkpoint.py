"""Checkpoints: written atomically (:mod:`common.files.atomic`), loaded with ``weights_only=True`` (no arbitrary pickle
code), rebuilt only when their config fits their weights, and checked against the course's limits
(:mod:`common.limits`)."""
from __future__ import annotations

import contextlib
from pathlib import Path

from common.errors import ConfigError
from common.files.atomic import atomic_torch_save
from common.limits import MAX_MODEL_BYTES, MAX_PARAMS, mb


class ModelTooLargeError(ConfigError):
    """A model over the course's limits: the user (or a study's sampler) asked for it, so a one-line error."""


STATE_FORMAT = "i2dl-training-state-v1"
"""The format of every training state (common.training.training_state), named here where saved models are told
apart."""

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
        hint = " (it is a training state: continue it with --resume)" if found["format"] == STATE_FORMAT else ""
        raise ConfigError(f"{path} is not {what}: it holds "
                          f"{', '.join(f'{k} {v!r}' for k, v in found.items())}{hint}")
    return blob


def build_checked(build, state_dict: dict, path):
    """``build()`` a model for ``state_dict`` (as saved in ``path``) only after checking, on PyTorch's ``meta``
    device (no memory allocated), that the config gives the same parameter names and shapes: a hand-edited
    config with huge widths must not allocate terabytes, nor end in a size-mismatch traceback."""
    from common.errors import ConfigError

    try:
        with on_meta():
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


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_model_size(build) -> int:
    """The parameter count of ``build()``'s model, built on PyTorch's ``meta`` device (no memory, and the random
    streams are left as they were), refused when over the course's limit: before a huge config allocates it."""
    with on_meta():
        return check_param_limit(build())


@contextlib.contextmanager
def on_meta():
    """Modules built inside are on PyTorch's ``meta`` device (shapes only, no memory), and the random streams are
    as they were before (a real build then draws the same initial weights)."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        yield


def check_param_limit(model, limit: int = MAX_PARAMS) -> int:
    n = count_params(model)
    if n >= limit:
        raise ModelTooLargeError(
            f"model has {n:,} parameters; the course allows fewer than {limit:,}. Shrink the widths/depth.")
    return n


def save_model_checked(obj: dict, model, path: str | Path, max_bytes: int = MAX_MODEL_BYTES) -> int:
    """Save ``obj`` (holding ``model``'s state) atomically after checking the parameter limit, then check the
    file size; an oversize file is removed and an error raised. Returns the file size in bytes."""
    check_param_limit(model)
    path = Path(path)
    atomic_torch_save(obj, path)
    size = path.stat().st_size
    if size >= max_bytes:
        path.unlink()
        raise ModelTooLargeError(f"saved model {path} is {mb(size)}; the course allows less than {mb(max_bytes)}")
    return size
