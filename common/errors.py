"""The two errors a user can fix without reading a traceback. The CLI turns either into one line on stderr
and exit code 2; anything else is a bug and keeps its traceback."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad flag, override, preset, sweep file or config value; the message names it and what is valid."""


class DataError(ValueError):
    """Missing, corrupt or unexpected data files; the message names the file (row, column) and what to do."""


def describe_error(error: BaseException) -> str:
    """What a run record says it died of: the innermost OS error when there is one (a full disk surfaces from
    torch's zip writer as "unexpected pos", with the ENOSPC as its cause or context)."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return f"{type(e).__name__}: {e.strerror}" + (f": {e.filename}" if e.filename else "")
        e = e.__cause__ or e.__context__
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted ({getattr(error, 'signal_name', 'Ctrl-C')})"
    return f"{type(error).__name__}: {error}"[:1000]


def short(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a quoted value in a message stays on one line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
