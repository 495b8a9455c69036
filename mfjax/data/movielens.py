"""The MovieLens releases: registry, lookup, verified download, loading.

:data:`MOVIELENS` maps a release name to its :class:`MovieLensSpec` (archive
URL and checksum, ratings file and layout, rating scale).

Lookup order (:func:`find_movielens`): ``data_dir``, then the
``MFJAX_DATA_DIR`` environment variable, then the user cache directory
(:func:`~mfjax.data.download.default_cache_dir`), then -- only with
``download=True`` -- a checksum-verified download of the official GroupLens
archive into the cache.  In each directory the plain file, its ``.gz``, the
release folder (``ml-1m/ratings.dat``...) and the official zip are tried.

References:
  F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and
  Context", ACM TiiS 5(4), 2015.  (Usage license: research use, no
  redistribution -- mfjax never ships the data.)

>>> MOVIELENS["ml-1m"].archive, MOVIELENS["ml-1m"].sep, MOVIELENS["ml-1m"].rating_scale
('ml-1m.zip', '::', (1, 5))
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile
import zlib
from typing import Callable

from mfjax.data import download as _dl
from mfjax.data.errors import ChecksumError, DataNotFoundError, RatingsError
from mfjax.data.parsing import parse_triplets
from mfjax.data.ratings import Ratings
from mfjax.data.triplets import read_bytes, triplets_to_ratings

__all__ = [
    "DATA_ENV",
    "MOVIELENS",
    "MovieLensSpec",
    "download_movielens",
    "find_movielens",
    "load_movielens",
    "load_movielens_part",
]

#: Environment variable naming a directory with data sets.
DATA_ENV = "MFJAX_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class MovieLensSpec:
    """Where a MovieLens release lives and how its ratings file is laid out.

    ``md5`` / ``size`` are the official archive's; ``None`` means unknown
    here, in which case a download checks the ``.md5`` file GroupLens
    publishes next to the archive (``url + ".md5"``).
    """

    name: str
    url: str
    folder: str          # folder inside the zip
    file: str            # ratings file inside the folder
    sep: str
    header: bool
    rating_scale: tuple[float, float]
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    checksum_note: str = ""

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_GL = "https://files.grouplens.org/datasets/movielens/"
_THIRD_PARTY = ("MD5 as published for the GroupLens archive (taken from public code; "
                "not re-verified by mfjax)")

#: The MovieLens releases :func:`load_movielens` knows.
MOVIELENS: dict[str, MovieLensSpec] = {
    "ml-100k": MovieLensSpec("ml-100k", _GL + "ml-100k.zip", "ml-100k", "u.data", "\t", False,
                             (1, 5), md5="0e33842e24a9c977be4e0107933c0723",
                             checksum_note=_THIRD_PARTY),
    "ml-1m": MovieLensSpec("ml-1m", _GL + "ml-1m.zip", "ml-1m", "ratings.dat", "::", False,
                           (1, 5), md5="c4d9eecfca2ab87c1945afe126590906", size=5_917_549,
                           checksum_note="MD5 and size of the official archive (verified)"),
    "ml-10m": MovieLensSpec("ml-10m", _GL + "ml-10m.zip", "ml-10M100K", "ratings.dat", "::", False,
                            (0.5, 5), md5="ce571fd55effeba0271552578f2648bd",
                            checksum_note=_THIRD_PARTY),
    "ml-20m": MovieLensSpec("ml-20m", _GL + "ml-20m.zip", "ml-20m", "ratings.csv", ",", True,
                            (0.5, 5), md5="cd245b17a1ae2cc31bb14903e1204af3",
                            checksum_note=_THIRD_PARTY),
    "ml-25m": MovieLensSpec("ml-25m", _GL + "ml-25m.zip", "ml-25m", "ratings.csv", ",", True,
                            (0.5, 5), md5="6b51fb2759a8657d3bfcbfc42b592ada",
                            checksum_note=_THIRD_PARTY),
    "ml-latest-small": MovieLensSpec(
        "ml-latest-small", _GL + "ml-latest-small.zip", "ml-latest-small", "ratings.csv", ",",
        True, (0.5, 5),
        checksum_note="changes with each refresh: checked against GroupLens' published .md5"),
}


def _spec(name: str) -> MovieLensSpec:
    if name not in MOVIELENS:
        raise ValueError(f"unknown MovieLens release {name!r}; known: {sorted(MOVIELENS)}")
    return MOVIELENS[name]


def _candidates(base: pathlib.Path, spec: MovieLensSpec):
    """(path, zip member or None) candidates inside one location, in order."""
    if base.is_file():
        if zipfile.is_zipfile(base):
            yield base, "zip"
        else:
            yield base, None
        return
    for folder in ("", spec.folder, spec.name):
        d = base / folder if folder else base
        yield d / spec.file, None
        yield d / (spec.file + ".gz"), None
    yield base / spec.archive, "zip"


def _zip_member(path: pathlib.Path, spec: MovieLensSpec) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, EOFError) as e:
        raise RatingsError(
            f"{path} is not a readable zip archive ({e}: truncated or corrupted?); "
            f"replace it with the official {spec.archive} ({spec.url})") from None
    _dl.check_archive_names(names, path)
    want = f"{spec.folder}/{spec.file}"
    if want in names:
        return want
    found = [n for n in names if n == spec.file or n.endswith("/" + spec.file)]
    if not found:
        raise RatingsError(f"{path} has no {spec.file} (looked for {want})")
    return sorted(found, key=len)[0]


def _locations(data_dir, cache_dir):
    locs = []
    if data_dir is not None:
        locs.append(("data_dir", pathlib.Path(data_dir).expanduser()))
    env = os.environ.get(DATA_ENV)
    if env:
        locs.append((f"${DATA_ENV}", pathlib.Path(env).expanduser()))
    else:
        locs.append((f"${DATA_ENV}", None))
    cache = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else _dl.default_cache_dir()
    locs.append(("cache", cache))
    return locs, cache


def _locate(spec: MovieLensSpec, data_dir, cache_dir):
    """``(label, path, kind)`` of the first candidate found, or raise DataNotFoundError."""
    locs, cache = _locations(data_dir, cache_dir)
    for label, base in locs:
        if base is None or not base.exists():
            continue
        for path, kind in _candidates(base, spec):
            if path.is_file():
                return label, path, kind
    raise DataNotFoundError(_not_found_message(spec, locs, cache))


def _redownload_hint(spec: MovieLensSpec, path: pathlib.Path) -> str:
    return (f"Delete {path} and download it again: load_movielens({spec.name!r}, download=True) "
            f"(which replaces it), download_movielens({spec.name!r}, force=True) or "
            f"`mfjax data download {spec.name}`")


def _known_checksums(spec: MovieLensSpec, path: pathlib.Path) -> dict:
    """Every checksum known for the archive: the release's, and the SHA-256 recorded at download."""
    recorded = _dl.read_checksum_file(path)
    return {"md5": spec.md5, "sha256": spec.sha256 or recorded, "size": spec.size}


def _verify_cached_archive(spec: MovieLensSpec, path: pathlib.Path) -> None:
    """Check an archive found in the cache against every checksum known for it.

    Raises:
      ChecksumError: naming the file, each expected and actual value, whether
        it is still a readable zip, and the fix (delete / re-download).
    """
    known = _known_checksums(spec, path)
    fix = _redownload_hint(spec, path)
    if all(v is None for v in known.values()):
        raise ChecksumError(
            f"cached archive {path} cannot be verified: no checksum is known for {spec.name} "
            f"and none was recorded when it was downloaded ({path.name}.sha256). {fix}; "
            f"or, to use this copy unverified, pass its folder as data_dir")
    bad = _dl.checksum_mismatches(path, **known)
    if bad:
        state = ("" if zipfile.is_zipfile(path)
                 else " It is not a readable zip archive (truncated or corrupted?).")
        raise ChecksumError(
            f"cached archive {path} is not the {spec.name} archive: {'; '.join(bad)}.{state} {fix}")


def find_movielens(name: str, data_dir=None, *, cache_dir=None):
    """Locate a MovieLens ratings file without downloading.

    An archive found in the cache (``cache_dir`` or the user cache) is
    verified first against every checksum known for it: the release's MD5 /
    size (:data:`MOVIELENS`) and the SHA-256 recorded in ``<archive>.sha256``
    when mfjax downloaded it.  Files in ``data_dir`` and ``$MFJAX_DATA_DIR``
    are the user's own and used as they are (an unreadable zip there is
    still named).

    Returns:
      ``(path, member)``: the file, and the zip member to read (None for a
      plain or ``.gz`` file).

    Raises:
      DataNotFoundError: listing every place looked at and how to provide
        the data.
      ChecksumError: a cached archive that fails its checksum, or has none
        to be checked against; the message names the file, the expected and
        actual values, and how to re-download it.
      RatingsError: an archive that is not a readable zip.
    """
    spec = _spec(name)
    label, path, kind = _locate(spec, data_dir, cache_dir)
    if kind != "zip":
        return path, None
    if label == "cache":
        _verify_cached_archive(spec, path)
    return path, _zip_member(path, spec)


def _not_found_message(spec: MovieLensSpec, locs, cache) -> str:
    f = spec.file
    lines = [
        f"MovieLens {spec.name!r} not found. In each place below mfjax looked for {f}, {f}.gz, "
        f"{spec.folder}/{f}(.gz) and {spec.archive}:"
    ]
    for label, base in locs:
        if base is None:
            lines.append(f"  - {label}: (not set)")
        else:
            state = "" if base.exists() else " (does not exist)"
            lines.append(f"  - {label}: {base}{state}")
    lines.append(
        f"To provide it: download {spec.url} and put the zip (or its extracted {spec.folder}/ "
        f"folder) into one of these, e.g. {cache}; or set {DATA_ENV}=/path/to/dir; or pass "
        f"data_dir=...; or call load_movielens({spec.name!r}, download=True) to download and "
        f"verify it into the cache (GroupLens license: research use, no redistribution)."
    )
    return "\n".join(lines)


def download_movielens(name: str, cache_dir=None, *, url: str | None = None,
                       opener: Callable[[str], object] | None = None,
                       md5: str | None = None, sha256: str | None = None,
                       size: int | None = None, extract: bool = False,
                       force: bool = False) -> pathlib.Path:
    """Download the official archive of a MovieLens release into the cache.

    The archive is verified (known MD5 / size, see :data:`MOVIELENS`; for a
    release without a known checksum, the ``.md5`` GroupLens publishes next
    to it) and written atomically (:func:`~mfjax.data.download.download_file`).

    Args:
      name: release, e.g. ``"ml-1m"``.
      cache_dir: target directory (default the user cache).
      url: override the source (a mirror, or a ``file://`` URL in tests);
        the release's checksum still applies unless ``md5``/``sha256`` given.
      opener: ``opener(url)`` -> binary file object (default urlopen).
      md5, sha256, size: override the expected values.
      extract: also extract the archive safely next to it.
      force: download even if the archive is already cached.

    Returns:
      the path of the verified zip archive; its SHA-256 is recorded next to
      it (``<archive>.sha256``) for the checks of later runs.

    Raises:
      ChecksumError: the download, or the archive already cached (without
        ``force``), disagrees with the expected values; nothing unverified
        is left in the cache.

    Checksums (:data:`MOVIELENS`): ml-1m's MD5 and size are the official
    archive's (verified against the shared copy's documentation); the MD5s
    of ml-100k, ml-10m, ml-20m and ml-25m are the published values as found
    in public code, not re-verified here; ml-latest-small is refreshed by
    GroupLens, so the ``.md5`` published next to it is fetched and used.
    """
    spec = _spec(name)
    cache = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else _dl.default_cache_dir()
    dest = cache / spec.archive
    src = url or spec.url
    if md5 is None and sha256 is None:
        md5, sha256 = spec.md5, spec.sha256
        size = spec.size if size is None else size
        if md5 is None and sha256 is None:
            try:
                md5 = _dl.parse_md5_text(_dl.fetch_text(src + ".md5", opener))
            except OSError as e:
                raise RatingsError(
                    f"no known checksum for {name} and fetching {src}.md5 failed ({e}); "
                    "pass md5= or sha256="
                ) from None
            if md5 is None:
                raise RatingsError(f"no MD5 found in {src}.md5; pass md5= or sha256=")
    if force or not dest.is_file():
        _dl.download_file(src, dest, md5=md5, sha256=sha256, size=size, opener=opener)
        _dl.write_checksum_file(dest)
    else:
        _dl.verify_file(dest, md5=md5, sha256=sha256, size=size,
                        fix=f"the cached copy is damaged or another file: {_redownload_hint(spec, dest)}")
        if _dl.read_checksum_file(dest) is None:
            _dl.write_checksum_file(dest)
    if extract:
        _dl.safe_extract(dest, cache)
    return dest


def load_movielens(name: str, data_dir=None, *, download: bool = False, cache_dir=None,
                   id_maps=None, unknown: str = "error", timestamps: bool = True) -> Ratings:
    """Load a MovieLens release as :class:`Ratings` (users are rows, movies columns).

    Supported: ``"ml-100k"`` (``u.data``, tab-separated), ``"ml-1m"``,
    ``"ml-10m"`` (``ratings.dat``, ``::``-separated), ``"ml-20m"``,
    ``"ml-25m"``, ``"ml-latest-small"`` (``ratings.csv`` with a header).
    Plain, ``.gz`` and the official zip are read (the zip in memory; its
    member names are checked for path escapes).

    Lookup order: ``data_dir``; ``$MFJAX_DATA_DIR``; the user cache
    (``cache_dir`` or :func:`~mfjax.data.download.default_cache_dir`); and,
    only if ``download=True``, a checksum-verified, atomic download of the
    official GroupLens archive into the cache.  ``data_dir`` may also be
    the ratings file or the zip itself.

    ``id_maps=(row_ids, col_ids)`` maps the ids through given maps instead
    (another release or a subset sharing a training set's indices; ids not
    in them raise, or with ``unknown="drop"`` are dropped with a warning, see
    :func:`~mfjax.data.triplets.apply_id_maps`).

    ``timestamps`` (default True) keeps every rating's time, the fourth
    field of each release (int64 seconds since the epoch), as
    ``Ratings.timestamps`` for :func:`~mfjax.data.splits.leave_last_out` /
    :func:`~mfjax.data.splits.temporal_split`; ``False`` skips it.

    Returns:
      :class:`Ratings` with user/movie ids remapped to ``0..k-1`` (sorted
      original ids in ``row_ids`` / ``col_ids``).  ML-1M: 1,000,209 ratings,
      shape (6040, 3706), mean 3.5816, timestamps from 956703932 to
      1046454590 (April 2000 to February 2003).

    Raises:
      DataNotFoundError: not found (the message lists where it looked and
        how to provide the data).
      ChecksumError: an archive in the cache fails its checksum (the
        message names it, the expected and actual checksums and the fix);
        with ``download=True`` it is downloaded again instead.
      MalformedFileError / RatingsError: bad content (an unreadable zip is
        named).

    Example::

      ratings = load_movielens("ml-1m", "~/data")          # ~/data/ml-1m.zip etc.
      ratings = load_movielens("ml-100k", download=True)    # into ~/.cache/mfjax
    """
    spec = _spec(name)
    try:
        path, member = find_movielens(name, data_dir, cache_dir=cache_dir)
    except DataNotFoundError as missing:
        if not download:
            raise
        path, member = _download_or_explain(spec, cache_dir, str(missing), DataNotFoundError)
    except ChecksumError as bad:  # a cached archive failing its checksum
        if not download:
            raise
        path, member = _download_or_explain(spec, cache_dir, str(bad), ChecksumError, force=True)
    source = f"{path}:{member}" if member else str(path)
    data = _read(path, member, spec)
    parsed = parse_triplets(data, spec.sep, header=spec.header, source=source, timestamps=timestamps)
    return triplets_to_ratings(parsed, rating_scale=spec.rating_scale, source=source,
                               id_maps=id_maps, unknown=unknown)


def load_movielens_part(name: str, part: int, num_parts: int, data_dir=None, *, cache_dir=None,
                        chunk_bytes: int | None = None) -> Ratings:
    """Part ``part`` of ``num_parts`` of a MovieLens release, streamed: only that part's users are kept.

    The per-process loader of ``mfjax launch`` (one part per process):
    :func:`~mfjax.data.triplets.load_triplets_part` on the release's ratings
    file (plain, ``.gz`` or the member of the official zip, read in pieces),
    so no process ever holds the whole release.  Users are cut into contiguous
    blocks of about ``nnz / num_parts`` ratings; the result has the whole
    release's shape and ids (those of :func:`load_movielens`), and the parts
    together are exactly ``load_movielens(name)`` without timestamps.  Found
    as :func:`load_movielens` finds it (no download).

    Raises:
      DataNotFoundError / ChecksumError / RatingsError: as :func:`load_movielens`;
      ValueError: ``part`` outside ``[0, num_parts)``.
    """
    from mfjax.data.triplets import STREAM_CHUNK_BYTES, load_triplets_part

    spec = _spec(name)
    path, member = find_movielens(name, data_dir, cache_dir=cache_dir)
    return load_triplets_part(path, part, num_parts, spec.sep, header=spec.header, rating_scale=spec.rating_scale,
                              chunk_bytes=STREAM_CHUNK_BYTES if chunk_bytes is None else chunk_bytes,
                              member=member)


def _download_or_explain(spec: MovieLensSpec, cache_dir, why: str, error, force: bool = False):
    """Download the release (``force``: over a bad cached copy); on a network failure raise ``error``."""
    try:
        path = download_movielens(spec.name, cache_dir, force=force)
    except OSError as e:  # offline, DNS, HTTP errors (ChecksumError is not an OSError)
        raise error(f"downloading {spec.url} failed ({e}).\n{why}") from e
    return path, _zip_member(path, spec)


def _read(path: pathlib.Path, member, spec: MovieLensSpec) -> bytes:
    """The ratings file's bytes; a damaged zip member (CRC, truncation) is named."""
    try:
        return read_bytes(path, member)
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise RatingsError(
            f"{path}:{member} cannot be read ({type(e).__name__}: {e}); the archive is damaged: "
            f"replace it with the official {spec.archive} ({spec.url})") from None
