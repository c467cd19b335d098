"""A folder this repo writes files into beside a user's (export's submission folder, report's ``best-trial/``):
it replaces only files it wrote itself, and knows which by a manifest.

The manifest (``.i2dl-files.json`` in the folder) lists each file written, relative to the folder, with its
sha256. Before anything is written, every file about to be written is checked: one that exists but is not in the
manifest, or whose bytes changed since it was written, is the user's and the write is refused naming it. Files
the manifest does not list are never touched (nor zipped, nor deleted).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from common.errors import ConfigError
from common.files.digest import sha256_file as sha256

MANIFEST = ".i2dl-files.json"


def read_manifest(folder: Path) -> dict[str, str] | None:
    """``{relative path: sha256}`` of what this repo wrote into ``folder``, or None when it has no manifest."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else None


class OwnedFolder:
    """``folder``, for writing ``names`` into it. ``must_be_ours``: an existing non-empty folder without a manifest
    is refused (export: the submission folder is new or one export wrote); else the user's other files may sit
    beside ours (report's ``best-trial/``)."""

    def __init__(self, folder: Path, what: str, must_be_ours: bool = False):
        self.folder, self.what = Path(folder), what
        if self.folder.is_symlink():
            raise ConfigError(f"{what}: {self.folder} is a symbolic link; give a real folder (nothing was written)")
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{what}: {self.folder} is a file, not a folder; choose another (nothing was written)")
        manifest = read_manifest(self.folder)
        if (must_be_ours and manifest is None and self.folder.is_dir() and any(self.folder.iterdir())):
            raise ConfigError(f"{what}: {self.folder} already exists and was not written by it (no {MANIFEST}); "
                              "give a new folder (nothing was written)")
        self.written: dict[str, str] = dict(manifest or {})

    def path(self, name: str) -> Path:
        """``name`` (relative to the folder; ``../x.zip`` for a file beside it) as a path that exists without it."""
        return Path(os.path.normpath(self.folder / name))

    def check(self, names) -> None:
        """Refuse before writing anything if any of ``names`` (relative paths) is a file this repo did not write."""
        for name in names:
            path = self.path(name)
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise ConfigError(f"{self.what}: {path} is not a plain file this repo wrote; move it away "
                                  "(nothing was written)")
            if path.is_file() and (name not in self.written or sha256(path) != self.written[name]):
                why = "changed since it was written" if name in self.written else "not written by this repo"
                raise ConfigError(f"{self.what}: {path} exists and is {why}; it is left as it is: move it away or "
                                  "choose another folder (nothing was written)")

    def record(self, name: str) -> Path:
        """Note that ``name`` (now written) is ours, and save the manifest."""
        from common.files.atomic import atomic_write_text

        self.written[name] = sha256(self.path(name))
        atomic_write_text(self.folder / MANIFEST, json.dumps({"written_by": f"i2dl-lab {self.what}",
                                                              "files": self.written}, indent=2) + "\n")
        return self.path(name)

    def forget(self, name: str) -> None:
        """Remove a file this repo wrote (it must be listed and unchanged: :meth:`check` first)."""
        self.path(name).unlink(missing_ok=True)
        self.written.pop(name, None)


def foreign_in_owned_folder(folder: Path) -> list[str]:
    """Files in ``folder`` that this repo did not write, or changed since (relative paths); all of them when the
    folder has no manifest. ``__pycache__`` counts as foreign: nothing here writes one into such a folder."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files:
            rel = str((Path(root) / name).relative_to(folder))
            if rel == MANIFEST and manifest is not None:
                continue
            path = folder / rel
            if manifest is None or rel not in manifest or path.is_symlink() or sha256(path) != manifest[rel]:
                found.append(rel)
        found += [str((Path(root) / d).relative_to(folder)) + "/" for d in dirs if (Path(root) / d).is_symlink()]
    return sorted(found)


def remove_owned_folder(folder: Path) -> None:
    """Delete the files the manifest lists, the manifest, then the folders left empty (call
    :func:`foreign_in_owned_folder` first: anything else stays)."""
    folder = Path(folder)
    for rel in read_manifest(folder) or {}:
        if not rel.startswith(".."):
            (folder / rel).unlink(missing_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    for root, _dirs, _files in sorted(os.walk(folder, topdown=False), key=lambda t: -len(t[0])):
        try:
            Path(root).rmdir()
        except OSError:
            pass  # not empty: something not ours stays
