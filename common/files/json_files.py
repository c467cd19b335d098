"""Reading the JSON files runs write (``run.json``, ``config.json``, ``summary.json``, ``seeds.json``, ...): any of
them may be missing, truncated by a kill or edited by hand."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import ConfigError


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable: for files that are looked at, not relied on."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def read_json_dict(path: Path, what: str = "file") -> dict:
    """The JSON object in ``path``; missing, broken or of another type is a :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({type(e).__name__}); it was truncated or edited by hand") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a {what}")
    return data
