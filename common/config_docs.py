"""Each config key's docstring, for ``--show-config --docs``: the string literal under a dataclass field (the
house style of every ``config.py``) is not kept at run time, so it is read from the class's source with ``ast``."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any


def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` of one dataclass, from its source (empty where there is no source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body, docs = tree.body[0].body, {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe(cfg, prefix: str = "") -> list[tuple[str, Any, str, str]]:
    """``(key, value, type, docstring)`` for every key of a config tree, in declaration order."""
    import typing

    rows, docs, hints = [], field_docs(type(cfg)), typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(value, f"{prefix}{f.name}.")
        else:
            kind = getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", "")
            rows.append((prefix + f.name, value, kind, docs.get(f.name, "")))
    return rows


def format_docs(cfg, width: int = 110) -> str:
    """The config as a reference: ``key = value  (type)`` and the docstring wrapped under it."""
    from common.config import format_override

    lines = []
    for key, value, kind, doc in describe(cfg):
        lines.append(f"{format_override(key, value).replace('=', ' = ', 1)}  ({kind})")
        lines += textwrap.wrap(doc, width, initial_indent="    ", subsequent_indent="    ") if doc else []
    return "\n".join(lines)
