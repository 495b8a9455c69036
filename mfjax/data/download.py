"""Checksum-verified, atomic downloads and safe archive extraction.

Nothing here touches the network unless asked: :func:`download_file` fetches
through an injectable ``opener`` (default :func:`urllib.request.urlopen`, which
also serves ``file://`` URLs), so tests use a local file or a server on
127.0.0.1.

A download is written to a temporary file next to its destination, hashed
while it streams, checked against the expected size / MD5 / SHA-256, and only
then moved into place with :func:`os.replace`.  A reader therefore sees either
no file or the whole verified file; a checksum mismatch leaves nothing behind.

Archives are read or extracted only after every member name has been checked:
absolute paths, drive letters, ``..`` components and symbolic links are
rejected (the "zip slip" path escape).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import stat
import tempfile
import urllib.request
import zipfile
from typing import Callable, Iterable

from mfjax.data.validation import ChecksumError, RatingsError

__all__ = [
    "default_cache_dir",
    "download_file",
    "file_md5",
    "file_sha256",
    "check_archive_names",
    "safe_extract",
    "verify_file",
]

#: Environment variable for the user cache directory (overrides XDG).
CACHE_ENV = "MFJAX_CACHE_DIR"


def default_cache_dir() -> pathlib.Path:
    """The user cache directory: ``$MFJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/mfjax``, else ``~/.cache/mfjax``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "mfjax"


def _file_digest(path, algorithm: str, chunk_size: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes (streamed)."""
    return _file_digest(path, "sha256")


def file_md5(path) -> str:
    """Hex MD5 of a file's bytes (streamed)."""
    return _file_digest(path, "md5")


def _compare(what: str, got, expected, source) -> None:
    if expected is None:
        return
    if isinstance(expected, str):
        ok = got.lower() == expected.strip().lower()
    else:
        ok = got == expected
    if not ok:
        raise ChecksumError(
            f"{what} mismatch for {source}: expected {expected}, got {got}"
        )


def verify_file(path, *, md5: str | None = None, sha256: str | None = None,
                size: int | None = None) -> None:
    """Check a file's size / MD5 / SHA-256 (each only if given).

    Raises:
      ChecksumError: naming the file, the expected and the actual value.
    """
    path = pathlib.Path(path)
    _compare("size", path.stat().st_size, size, path)
    if md5 is not None:
        _compare("MD5", file_md5(path), md5, path)
    if sha256 is not None:
        _compare("SHA-256", file_sha256(path), sha256, path)


def _default_opener(url: str):
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 (only the URLs we are given)


def download_file(
    url: str,
    dest,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    opener: Callable[[str], object] | None = None,
    chunk_size: int = 1 << 20,
) -> pathlib.Path:
    """Download ``url`` to ``dest`` with verification, atomically.

    The bytes stream into a temporary file in ``dest``'s directory while
    their MD5 and SHA-256 are computed; if ``size``, ``md5`` or ``sha256`` is
    given and disagrees, the temporary file is deleted and
    :class:`ChecksumError` raised; otherwise it is moved to ``dest`` with
    :func:`os.replace` (atomic on POSIX and Windows).

    Args:
      url: source URL (``https://``, ``http://``, ``file://``...).
      dest: destination file path; parent directories are created.
      md5, sha256, size: expected values (hex digests; bytes).
      opener: ``opener(url)`` returns a readable binary file object (a
        context manager is closed after use).  Default
        :func:`urllib.request.urlopen` with a 60 s timeout.

    Returns:
      ``dest`` as a :class:`pathlib.Path`.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or _default_opener
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h_md5, h_sha = hashlib.md5(), hashlib.sha256()
        nbytes = 0
        with os.fdopen(fd, "wb") as out:
            response = opener(url)
            try:
                while True:
                    block = response.read(chunk_size)
                    if not block:
                        break
                    out.write(block)
                    h_md5.update(block)
                    h_sha.update(block)
                    nbytes += len(block)
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()
            out.flush()
            os.fsync(out.fileno())
        source = f"{url} (downloaded to {dest})"
        _compare("size", nbytes, size, source)
        _compare("MD5", h_md5.hexdigest(), md5, source)
        _compare("SHA-256", h_sha.hexdigest(), sha256, source)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def fetch_text(url: str, opener: Callable[[str], object] | None = None, limit: int = 1 << 16) -> str:
    """Small text resource (e.g. a published ``.md5`` file), at most ``limit`` bytes."""
    response = (opener or _default_opener)(url)
    try:
        return response.read(limit).decode("utf-8", errors="replace")
    finally:
        close = getattr(response, "close", None)
        if close is not None:
            close()


def parse_md5_text(text: str) -> str | None:
    """The first 32-hex-digit token of a published checksum file, or None."""
    m = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    return m.group(1).lower() if m else None


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_archive_names(names: Iterable[str], archive="archive") -> None:
    """Reject archive member names that could escape the extraction directory.

    Raises:
      RatingsError: for an absolute path, a drive letter, a ``..``
        component, or an empty / NUL-containing name.
    """
    for name in names:
        norm = name.replace("\\", "/")
        if not norm or "\x00" in norm:
            raise RatingsError(f"unsafe member name {name!r} in {archive}")
        if norm.startswith("/") or _DRIVE.match(norm):
            raise RatingsError(f"unsafe absolute path {name!r} in {archive}")
        if ".." in norm.split("/"):
            raise RatingsError(f"unsafe path {name!r} in {archive}: '..' escapes the target directory")


def safe_extract(zip_path, dest) -> list[pathlib.Path]:
    """Extract a zip archive into ``dest``, refusing path escapes.

    Every member name is checked first (:func:`check_archive_names`), and
    symbolic links are refused, so nothing is written when one member is
    unsafe.  Each target path is also checked to resolve inside ``dest``.

    Returns:
      the extracted file paths.
    """
    dest = pathlib.Path(dest)
    root = dest.resolve()
    out = []
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        check_archive_names([i.filename for i in infos], zip_path)
        targets = []
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise RatingsError(f"refusing symbolic link {info.filename!r} in {zip_path}")
            target = (root / info.filename.replace("\\", "/")).resolve()
            if target != root and root not in target.parents:
                raise RatingsError(f"unsafe path {info.filename!r} in {zip_path}: escapes {dest}")
            targets.append((info, target))
        for info, target in targets:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            out.append(target)
    return out
