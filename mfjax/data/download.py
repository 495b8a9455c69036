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

from mfjax.data.errors import ChecksumError, DownloadError, RatingsError
from mfjax.store import atomic_write_text

__all__ = [
    "default_cache_dir",
    "download_file",
    "file_md5",
    "file_sha256",
    "check_archive_names",
    "checksum_mismatches",
    "read_checksum_file",
    "safe_extract",
    "verify_file",
    "write_checksum_file",
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
                size: int | None = None, fix: str = "") -> None:
    """Check a file's size / MD5 / SHA-256 (each only if given).

    Args:
      path: the file.
      md5, sha256, size: expected values (hex digests; bytes).
      fix: a sentence appended to the error telling the user what to do.

    Raises:
      ChecksumError: naming the file, the expected and the actual value
        (every value that disagrees, then ``fix``).
    """
    path = pathlib.Path(path)
    bad = checksum_mismatches(path, md5=md5, sha256=sha256, size=size)
    if bad:
        raise ChecksumError(f"{'; '.join(bad)} (file {path})" + (f". {fix}" if fix else ""))


def checksum_mismatches(path, *, md5: str | None = None, sha256: str | None = None,
                        size: int | None = None) -> list[str]:
    """The expected values (size / MD5 / SHA-256, each only if given) a file disagrees with.

    Each entry reads ``"<what> mismatch for <path>: expected <x>, got <y>"``;
    an empty list means the file matches everything given.  Both digests are
    computed even when the size already differs, so the message always
    carries the actual checksums.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "f"
    >>> _ = p.write_bytes(b"hello")
    >>> checksum_mismatches(p, size=5, md5="5d41402abc4b2a76b9719d911017c592")
    []
    >>> checksum_mismatches(p, size=6)  # doctest: +ELLIPSIS
    ['size mismatch for .../f: expected 6, got 5']
    """
    path = pathlib.Path(path)
    got = {"size": path.stat().st_size}
    if md5 is not None:
        got["MD5"] = file_md5(path)
    if sha256 is not None:
        got["SHA-256"] = file_sha256(path)
    bad = []
    for what, expected in (("size", size), ("MD5", md5), ("SHA-256", sha256)):
        try:
            _compare(what, got.get(what), expected, path)
        except ChecksumError as e:
            bad.append(str(e))
    return bad


def _checksum_path(path) -> pathlib.Path:
    path = pathlib.Path(path)
    return path.with_name(path.name + ".sha256")


def write_checksum_file(path, sha256: str | None = None) -> pathlib.Path:
    """Record a verified file's SHA-256 next to it, as ``<file>.sha256`` (``sha256sum`` format).

    Written atomically; :func:`read_checksum_file` reads it back.  A
    download records it once verified, so a later run can check the cached
    copy against it even when no checksum is published for the file.

    Returns:
      the path of the ``.sha256`` file.
    """
    path = pathlib.Path(path)
    digest = (sha256 or file_sha256(path)).lower()
    return atomic_write_text(_checksum_path(path), f"{digest}  {path.name}\n")


_SHA256_TOKEN = re.compile(r"^([0-9a-fA-F]{64})\b")


def read_checksum_file(path) -> str | None:
    """The SHA-256 recorded next to ``path`` by :func:`write_checksum_file`, or None if none.

    Raises:
      ChecksumError: the ``.sha256`` file exists but holds no SHA-256
        (the message names it and says to delete it).
    """
    side = _checksum_path(path)
    if not side.is_file():
        return None
    try:
        text = side.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        text, why = "", f" ({type(e).__name__})"
    else:
        why = ""
    m = _SHA256_TOKEN.match(text.strip())
    if m is None:
        raise ChecksumError(f"checksum file {side} holds no SHA-256{why}; delete it "
                            f"(and {pathlib.Path(path).name} if in doubt) and download again")
    return m.group(1).lower()


def _default_opener(url: str):
    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 (only the URLs we are given)


def _open(opener, url: str, dest) -> object:
    """``opener(url)``; a network failure becomes a :class:`DownloadError` that says what to do."""
    try:
        return opener(url)
    except OSError as e:  # urllib.error.URLError, socket timeouts, refused connections
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"could not download {url}: {reason}. No network? Download the file on a machine "
            f"that has one and put it at {dest} (or pass its folder as data_dir= / "
            "$MFJAX_DATA_DIR)") from None


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
            response = _open(opener, url, dest)
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
    response = _open(opener or _default_opener, url, "the cache")
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
