"""The two errors a user can fix without reading a traceback. The CLI turns either into one line on stderr
and exit code 2; anything else is a bug and keeps its traceback."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad flag, override, preset, sweep file or config value; the message names it and what is valid."""


class DataError(ValueError):
    """Missing, corrupt or unexpected data files; the message names the file (row, column) and what to do."""
