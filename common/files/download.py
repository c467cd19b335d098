"""Fetch a file over HTTP(S) into place atomically, optionally checking its md5, and unpack zip archives."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path


class DownloadError(RuntimeError):
    pass


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (temp file + rename: an interrupted download leaves nothing behind)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp)
    try:
        with open(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        if md5 is not None and md5sum(tmp) != md5:
            raise DownloadError(f"{url}: md5 mismatch (expected {md5}); the download is corrupt")
        tmp.replace(dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DownloadError(f"could not download {url}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_members(archive: Path, target: Path, wanted: list[str]) -> list[Path]:
    """Extract the members of ``archive`` whose *basename* is in ``wanted`` flat into ``target`` (archives
    differ in whether they wrap files in a folder). Everything is checked before anything is written: a file that
    is not a zip (an HTML page from a captive portal), or an archive lacking one of ``wanted``, leaves ``target``
    as it was (no half set of files that a later run would take for the user's own, no empty folder)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        head = Path(archive).read_bytes()[:64].lstrip().lower() if Path(archive).is_file() else b""
        what = "an HTML page (a captive portal or a login page?)" if head.startswith((b"<!doctype", b"<html")) else \
            f"not a zip archive ({type(e).__name__})"
        raise DownloadError(f"the download {archive} is {what}") from None
    with zf:
        members = {}
        for info in zf.infolist():
            name = Path(info.filename).name
            if name in wanted and not info.is_dir() and "__MACOSX" not in info.filename:
                members[name] = info
        missing = [w for w in wanted if w not in members]
        if missing:
            raise DownloadError(f"{archive} does not contain {missing}; nothing was extracted")
        created = [p for p in [target, *target.parents] if not p.exists()]
        target.mkdir(parents=True, exist_ok=True)
        done = []
        try:
            for name in wanted:
                with zf.open(members[name]) as src, tempfile.NamedTemporaryFile(dir=target, delete=False) as dst:
                    try:
                        shutil.copyfileobj(src, dst, length=1 << 20)
                    except BaseException:
                        Path(dst.name).unlink(missing_ok=True)
                        raise
                Path(dst.name).replace(target / name)
                done.append(target / name)
        except BaseException:
            for path in done:
                path.unlink(missing_ok=True)
            for folder in created:  # deepest first: only what this call created, and only if empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
    return done
