"""Reading the JSON files runs write (``run.json``, ``config.json``, ``summary.json``, ``seeds.json``, ...) and the
JSON a user hands over (``--config``, a ``--set`` list): any of them may be missing, truncated by a kill, edited by
hand, or built to hurt. ``json.loads`` recurses once per nesting level, so ``[[[[...`` 100,000 deep ends in a
``RecursionError`` (a traceback, and a ``runs`` listing that stops at one bad file): :func:`loads` measures the
nesting and the size first, in one linear pass, and refuses past :data:`MAX_DEPTH` / :data:`MAX_BYTES`."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from common.errors import ConfigError

MAX_DEPTH = 64
"""Nesting levels a JSON value may have: a config nests 3, a run record 4; nothing this repo reads needs more."""
MAX_BYTES = 16_000_000
"""Size of a JSON text: a run record or config is a few kB, a metrics file a few MB."""
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text (brackets inside strings not counted)."""
    depth = deepest = 0
    for ch in _STRING.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(text: str, what: str) -> Any:
    """``json.loads(text)`` after the size and nesting checks; a problem is a :class:`ConfigError` naming ``what``
    (a file, a flag)."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{what}: {len(text):,} characters is too large for JSON this repo reads "
                          f"(at most {MAX_BYTES:,})")
    if text.count("[") + text.count("{") > MAX_DEPTH:  # fewer brackets cannot nest deeper
        depth = nesting(text)
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what}: JSON nested {depth:,} levels deep (at most {MAX_DEPTH}); this is not a "
                              "file or value this repo wrote")
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{what} is not valid JSON ({type(e).__name__}); it was truncated or edited by hand"
                          ) from None


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing, unreadable or refused by :func:`loads`: for files that are
    looked at, not relied on."""
    try:
        return loads(Path(path).read_text(), str(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def read_json_dict(path: Path, what: str = "file", yaml_too: bool = False) -> dict:
    """The JSON object in ``path``; missing, broken or of another type is a :class:`ConfigError` naming the file.
    ``yaml_too``: a ``.yaml``/``.yml`` file, or a stream that is not JSON, is read as YAML (a config people write)."""
    from common.files.streams import is_stream, read_stream

    path = Path(path)
    stream = is_stream(path)  # a shell's <(cat config.json): read once
    if not (path.is_file() or stream):
        raise ConfigError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        if stream:
            data = read_stream(path)
            if len(data) > MAX_BYTES:
                raise ConfigError(f"{path}: {len(data):,} bytes is too large for JSON this repo reads")
            text = data.decode()
        else:
            text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read as text ({type(e).__name__})") from None
    if yaml_too and (path.suffix in (".yaml", ".yml") or (stream and text.lstrip()[:1] not in ("{", "["))):
        from common.files.safe_yaml import load_yaml_text

        data = load_yaml_text(text, path, what)
    else:
        data = loads(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a {what}")
    return data
