"""Reading a YAML file a user (or an attacker) wrote: ``yaml.safe_load`` builds no objects, but it still expands
aliases, so a 1 kB "billion laughs" file grows into gigabytes, and it recurses once per nesting level. Aliases and
anchors are refused, and the file's size, node count and nesting are capped, by a streaming pass over its events
before anything is built."""
from __future__ import annotations

from pathlib import Path

from common.errors import ConfigError

MAX_BYTES = 1_000_000
MAX_NODES = 100_000
MAX_DEPTH = 32
"""Nesting of lists and mappings: a sweep nests 4 (space, a parameter, its item, a choice list)."""


def load_yaml(path: Path, what: str = "YAML file"):
    """``yaml.safe_load`` of ``path`` after those checks; every problem is a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes is too large for a {what} (at most {MAX_BYTES:,})")
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a {what} is plain text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    return load_yaml_text(text, path, what)


def load_yaml_text(text: str, path, what: str = "YAML file"):
    """:func:`load_yaml` of text already read (a stream); ``path`` names it in errors."""
    import yaml

    if len(text) > MAX_BYTES:
        raise ConfigError(f"{path}: {len(text):,} characters is too large for a {what} (at most {MAX_BYTES:,})")
    nodes = depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:  # safe_load builds nested values recursively: a RecursionError past ~1000
                    raise ConfigError(f"{path}: line {event.start_mark.line + 1}: nested more than {MAX_DEPTH} "
                                      f"levels deep; this is not a {what}")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                raise ConfigError(f"{path}: line {mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                                  f"accepted in a {what}; write the values out")
            if isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                nodes += 1
                if nodes > MAX_NODES:
                    raise ConfigError(f"{path}: more than {MAX_NODES:,} values; this is not a {what}")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())[:300]}") from None
