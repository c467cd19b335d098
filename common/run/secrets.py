"""Secrets in what we print and record: a storage URL's password (``postgresql://user:pw@host``, ``?password=``)
is hidden wherever a URL or a command line is shown or written (the run record, the artifact store, W&B's copy of
``sys.argv``)."""
from __future__ import annotations

import re
from urllib.parse import unquote


def _credentials(url: str) -> tuple[str, str, str] | None:
    """``(scheme, user, password)`` of ``scheme://user:password@host...``. The password runs to the *last* ``@``:
    SQLAlchemy stops at the first one, so an unescaped ``@`` in a password would leave its rest in the host."""
    if "://" not in url:
        return None
    scheme, rest = url.split("://", 1)
    if "@" not in rest:
        return None
    creds = rest.rsplit("@", 1)[0]
    user, _, password = creds.partition(":")
    return scheme, user, password


def redact(url: str) -> str:
    """The storage URL with its password hidden, whole, for printing (and any ``password=`` query value)."""
    creds = _credentials(url)
    if creds is not None:
        scheme, user, password = creds
        tail = url.split("://", 1)[1].rsplit("@", 1)[1]
        url = f"{scheme}://{user}{':***' if password else ''}@{tail}"
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message from a driver) with the URL redacted and no fragment of its password left:
    a driver that parsed the URL its own way may quote part of the password as a host name."""
    text = text.replace(url, redact(url))
    creds = _credentials(url)
    if creds is None or not creds[2]:
        return text
    password = creds[2]
    pieces = {password, unquote(password), *re.split(r"[@/:?#]", password)}
    for piece in sorted((p for p in pieces if len(p) >= 2), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with every URL's password hidden (``--storage URL`` and ``--storage=URL`` alike)."""
    return [redact(a) if ("://" in a or "password=" in a.lower()) else a for a in argv]
