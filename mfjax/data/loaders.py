"""Loaders: the MovieLens releases and generic (user, item, rating) triplet files.

Parsing is vectorised: a file is read as bytes (gzip and zip handled in
memory), its separators and newlines located with numpy, the field count of
every line checked at once, and the user / item / rating fields converted
digit by digit over all lines together (one numpy pass per character
position).  Only when that fast path cannot vouch for the data (a line with
the wrong number of fields, a field that is not a plain decimal number, blank
lines, CR line ends...) does a line-by-line Python pass run, which either
parses the file or raises :class:`~mfjax.data.validation.MalformedFileError`
naming the file, the line number and the line.

Original user / item ids are remapped to dense indices ``0..k-1`` in sorted
order of the original ids; :class:`~mfjax.data.IdMap` ``row_ids`` /
``col_ids`` map back.  Fields after the third (e.g. timestamps) are not parsed.

MovieLens lookup order (:func:`find_movielens`): ``data_dir``, then the
``MFJAX_DATA_DIR`` environment variable, then the user cache directory
(:func:`~mfjax.data.download.default_cache_dir`), then -- only with
``download=True`` -- a checksum-verified download of the official GroupLens
archive into the cache.  In each directory the plain file, its ``.gz``, the
release folder (``ml-1m/ratings.dat``...) and the official zip are tried.

References:
  F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and
  Context", ACM TiiS 5(4), 2015.  (Usage license: research use, no
  redistribution -- mfjax never ships the data.)
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import zipfile
from typing import Callable, NamedTuple

import numpy as np

from mfjax.data import download as _dl
from mfjax.data.ratings import IdMap, Ratings
from mfjax.data.validation import (
    DataNotFoundError,
    MalformedFileError,
    RatingsError,
    check_rating_scale,
    handle_duplicates,
)

__all__ = [
    "MOVIELENS",
    "MovieLensSpec",
    "ParsedTriplets",
    "download_movielens",
    "find_movielens",
    "load_movielens",
    "load_triplets",
    "parse_triplets",
    "read_bytes",
    "triplets_to_ratings",
]

#: Environment variable naming a directory with data sets.
DATA_ENV = "MFJAX_DATA_DIR"

_AUTO_SEPS = ("::", "\t", ",", ";", " ")


# ----------------------------------------------------------------- registry
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


# -------------------------------------------------------------------- bytes
def read_bytes(path, member: str | None = None) -> bytes:
    """A file's bytes: plain, gzip (by magic number), or ``member`` of a zip."""
    path = pathlib.Path(path)
    if member is not None or zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            _dl.check_archive_names(names, path)
            if member is None:
                files = [n for n in names if not n.endswith("/")]
                if len(files) != 1:
                    raise RatingsError(
                        f"{path} holds {len(files)} files; name the member to read"
                    )
                member = files[0]
            return zf.read(member)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise RatingsError(f"{path}: corrupt gzip data ({e})") from None
    return raw


# ------------------------------------------------------------------ parsing
class ParsedTriplets(NamedTuple):
    """Raw parse of a triplet file: original ids, ratings, 1-based line numbers."""

    users: np.ndarray   # int64
    items: np.ndarray   # int64
    values: np.ndarray  # float64
    lines: np.ndarray   # int64, the file line of each entry


def _sep_name(sep: str) -> str:
    return {"\t": "tab", " ": "space"}.get(sep, repr(sep))


def _parse_column(a: np.ndarray, starts: np.ndarray, ends: np.ndarray, integer: bool):
    """Decimal numbers in byte ranges ``a[starts[k]:ends[k]]``, all k at once.

    Accepts ``[-]digits`` (and one ``.`` when not ``integer``); returns None
    when any field is anything else, so the caller falls back to the precise
    line-by-line pass.
    """
    lengths = ends - starts
    if lengths.size == 0:
        return np.zeros(0, np.int64 if integer else np.float64)
    if lengths.min() <= 0 or lengths.max() > 18:
        return None
    width = int(lengths.max())
    val = np.zeros(starts.shape, np.int64)
    ndig = np.zeros(starts.shape, np.int8)
    frac = None if integer else np.zeros(starts.shape, np.int8)
    dot = np.zeros(starts.shape, bool)
    neg = None
    pos = starts.copy()
    last = a.size - 1
    for k in range(width):
        act = lengths > k
        if k:
            pos += 1
            c = a[np.minimum(pos, last)]
        else:
            c = a[pos]
        d = c - np.uint8(48)  # uint8 arithmetic wraps: digits are exactly d < 10
        isd = d < 10
        isd &= act
        val *= np.where(isd, 10, 1)
        val += np.where(isd, d, 0)
        ndig += isd
        ok = isd | ~act
        if not integer:
            frac += isd & dot
            isdot = act & (c == 46)
            if (isdot & dot).any():
                return None
            dot |= isdot
            ok |= isdot
        if k == 0:
            neg = act & (c == 45)
            ok |= neg
        if not ok.all():
            return None
    if (ndig == 0).any():
        return None
    if neg.any():
        val = np.where(neg, -val, val)
    if integer:
        return val
    return val / np.power(10.0, frac)


def _fast_parse(data: bytes, sep: str, skip_header: bool):
    """Vectorised parse; None when the data needs the precise slow pass.

    Works on a zero-copy uint8 view of ``data``.  A separator made of one
    repeated byte (``"::"``) is located as runs of that byte; other
    multi-byte separators are first replaced by a single byte.
    """
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
        if b"\r" in data:
            return None
    if b"\n\n" in data:
        return None  # blank lines: the slow pass skips them
    sepb = sep.encode("latin-1")
    if len(sepb) > 1 and sepb != sepb[:1] * len(sepb):
        if b"\x1f" in data:
            return None
        data = data.replace(sepb, b"\x1f")
        sepb = b"\x1f"
    a = np.frombuffer(data, np.uint8)
    lo, hi = 0, a.size
    first_line = 1
    if skip_header:
        k = data.find(b"\n")
        lo = k + 1 if k >= 0 else hi
        first_line = 2
    if hi > lo and a[hi - 1] == 10:
        hi -= 1
    if hi <= lo or a[lo] == 10:
        return None
    a = a[lo:hi]
    nl = np.flatnonzero(a == 10)
    nlines = nl.size + 1
    starts = np.empty(nlines, np.int64)
    starts[0] = 0
    starts[1:] = nl + 1
    ends = np.empty(nlines, np.int64)
    ends[:-1] = nl
    ends[-1] = a.size
    width = len(sepb)
    hits = np.flatnonzero(a == sepb[0])
    if hits.size % (nlines * width):
        return None
    nsep = hits.size // (nlines * width)
    if nsep < 2:
        return None
    hits = hits.reshape(nlines * nsep, width)
    if width > 1 and (hits[:, -1] - hits[:, 0] != width - 1).any():
        return None  # the byte also occurs outside complete separators
    sep_lo = hits[:, 0].reshape(nlines, nsep)
    sep_hi = (hits[:, -1] + 1).reshape(nlines, nsep)
    # exactly nsep separators per line: row l's separators all lie inside line l
    if (sep_hi[:, -1] > ends).any() or (sep_lo[:, 0] < starts).any():
        return None
    users = _parse_column(a, starts, sep_lo[:, 0], True)
    if users is None:
        return None
    items = _parse_column(a, sep_hi[:, 0], sep_lo[:, 1], True)
    if items is None:
        return None
    vend = sep_lo[:, 2] if nsep >= 3 else ends
    values = _parse_column(a, sep_hi[:, 1], vend, False)
    if values is None:
        return None
    lines = np.arange(first_line, first_line + nlines, dtype=np.int64)
    return ParsedTriplets(users, items, values.astype(np.float64), lines)


def _split_fields(line: str, sep: str):
    return line.split() if sep == " " else [f.strip() for f in line.split(sep)]


def _slow_parse(data: bytes, sep: str, skip_header: bool, source: str) -> ParsedTriplets:
    """Line-by-line parse with precise errors (file, line number, line)."""
    users, items, values, lines = [], [], [], []
    nfields = first = None
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.decode("latin-1").strip()
        if not line:
            continue
        if skip_header:  # the first non-blank line
            skip_header = False
            continue
        fields = _split_fields(line, sep)
        where = f"{source}, line {lineno}"
        if nfields is None:
            nfields, first = len(fields), lineno
            if nfields < 3:
                raise MalformedFileError(
                    f"malformed line: {where}: expected at least 3 fields (user, item, rating) "
                    f"separated by {_sep_name(sep)}, got {nfields}: {line[:200]!r}"
                )
        elif len(fields) != nfields:
            raise MalformedFileError(
                f"malformed line: {where}: expected {nfields} fields separated by "
                f"{_sep_name(sep)} (as on line {first}), got {len(fields)}: {line[:200]!r}"
            )
        if "_" in fields[0] or "_" in fields[1] or "_" in fields[2]:
            raise MalformedFileError(
                f"malformed line: {where}: '_' is not allowed in a number: {line[:200]!r}"
            )
        try:
            u = int(fields[0])
        except ValueError:
            raise MalformedFileError(
                f"malformed line: {where}: user id {fields[0]!r} is not an integer: {line[:200]!r}"
            ) from None
        try:
            i = int(fields[1])
        except ValueError:
            raise MalformedFileError(
                f"malformed line: {where}: item id {fields[1]!r} is not an integer: {line[:200]!r}"
            ) from None
        try:
            v = float(fields[2])
        except ValueError:
            raise MalformedFileError(
                f"malformed line: {where}: rating {fields[2]!r} is not a number: {line[:200]!r}"
            ) from None
        users.append(u)
        items.append(i)
        values.append(v)
        lines.append(lineno)
    if not users:
        raise RatingsError(f"empty data: no ratings in {source}")
    return ParsedTriplets(
        np.asarray(users, np.int64), np.asarray(items, np.int64),
        np.asarray(values, np.float64), np.asarray(lines, np.int64),
    )


def _first_lines(data: bytes, k: int = 2) -> list[str]:
    out = []
    for raw in data[: 1 << 16].split(b"\n"):
        s = raw.decode("latin-1").strip()
        if s:
            out.append(s)
        if len(out) == k:
            break
    return out


def _detect_sep(data: bytes, source: str) -> str:
    for line in _first_lines(data):
        for sep in _AUTO_SEPS:
            if sep in line:
                return sep
    raise MalformedFileError(
        f"{source}: cannot detect the field separator (tried '::', tab, ',', ';', space) "
        "in the first lines; pass sep="
    )


def _looks_like_header(line: str, sep: str) -> bool:
    fields = _split_fields(line, sep)
    try:
        int(fields[0])
        int(fields[1])
        float(fields[2])
    except (ValueError, IndexError):
        return True
    return False


def parse_triplets(data: bytes, sep: str | None = None, *, header="auto",
                   source: str = "<data>") -> ParsedTriplets:
    """Parse ``user<sep>item<sep>rating[<sep>...]`` lines from bytes.

    Args:
      data: the file's bytes (already decompressed).
      sep: field separator (``"::"``, ``"\\t"``, ``","``...); None detects
        it from the first lines.
      header: True (skip the first line), False, or ``"auto"`` (skip it when
        its first three fields are not numbers).
      source: name used in error messages.

    Raises:
      MalformedFileError: naming the file, line number and line.
      RatingsError: for a file without ratings.
    """
    if not data or data.isspace():
        raise RatingsError(f"empty data: no ratings in {source}")
    if sep is None:
        sep = _detect_sep(data, source)
    if not sep or "\n" in sep:
        raise ValueError(f"sep must be a non-empty string without newlines, got {sep!r}")
    if header == "auto":
        first = _first_lines(data, 1)
        skip = bool(first) and _looks_like_header(first[0], sep)
    elif isinstance(header, bool):
        skip = header
    else:
        raise ValueError(f"header must be True, False or 'auto', got {header!r}")
    parsed = _fast_parse(data, sep, skip)
    if parsed is None:
        parsed = _slow_parse(data, sep, skip, source)
    return parsed


# ------------------------------------------------------------ to Ratings
def _dense_ids(ids: np.ndarray):
    """Sorted unique ids and each id's index among them (O(n) for compact ids)."""
    lo, hi = int(ids.min()), int(ids.max())
    span = hi - lo + 1
    if span <= max(4 * ids.size, 1 << 20):
        present = np.zeros(span, bool)
        present[ids - lo] = True
        uniq = np.flatnonzero(present) + lo
        lookup = np.cumsum(present, dtype=np.int64) - 1
        return uniq, lookup[ids - lo]
    uniq, inv = np.unique(ids, return_inverse=True)
    return uniq, inv.reshape(-1)


def triplets_to_ratings(parsed: ParsedTriplets, *, rating_scale=None, duplicates: str = "error",
                        source: str = "<data>", dtype=np.float32) -> Ratings:
    """Validate parsed triplets (errors name the line) and build :class:`Ratings`.

    Ids are remapped to ``0..k-1`` in sorted order of the original ids.

    Raises:
      RatingsError: non-finite rating, negative id, rating outside
        ``rating_scale``, duplicate (user, item) pair (unless ``duplicates``
        is ``"mean"``, ``"sum"`` or ``"last"``).
    """
    users, items, values, lines = parsed
    if users.size == 0:
        raise RatingsError(f"empty data: no ratings in {source}")
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise RatingsError(f"{source}, line {lines[k]}: non-finite rating {values[k]}")
    for what, ids in (("user", users), ("item", items)):
        if ids.min() < 0:
            k = int(np.argmin(ids))
            raise RatingsError(f"{source}, line {lines[k]}: negative {what} id {ids[k]}")
    check_rating_scale(values, rating_scale, lambda k: f"{source}, line {lines[k]}: rating {values[k]}")
    if duplicates not in ("error", "mean", "sum", "last"):
        raise ValueError(f"duplicates must be 'error', 'mean', 'sum' or 'last', got {duplicates!r}")
    row_ids, rows = _dense_ids(users)
    col_ids, cols = _dense_ids(items)
    shape = (int(row_ids.size), int(col_ids.size))
    key = rows * shape[1] + cols
    if shape[0] * shape[1] <= (1 << 26):  # bitmap: O(nnz), no sort
        seen = np.zeros(shape[0] * shape[1], bool)
        seen[key] = True
        has_dup = int(np.count_nonzero(seen)) < key.size
    else:
        sk = np.sort(key)
        has_dup = bool((sk[1:] == sk[:-1]).any())
    if has_dup:
        if duplicates == "error":
            order = np.argsort(key, kind="stable")
            sk = key[order]
            j = int(np.flatnonzero(sk[1:] == sk[:-1])[0])
            a, b = order[j], order[j + 1]
            raise RatingsError(
                f"{source}: duplicate (user, item) pair ({users[a]}, {items[a]}) on lines "
                f"{lines[a]} and {lines[b]}; pass duplicates='mean'|'sum'|'last' to aggregate"
            )
        rows, cols, values = handle_duplicates(rows, cols, values, shape, duplicates)
    return Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(dtype), shape,
        IdMap(row_ids), IdMap(col_ids),
    )


def load_triplets(path, sep: str | None = None, *, header="auto", rating_scale=None,
                  duplicates: str = "error") -> Ratings:
    """Load a (user, item, rating[, ...]) CSV/TSV file, plain or gzip-compressed.

    Args:
      path: the file (gzip detected by its magic number, whatever the name).
      sep: separator; None detects ``"::"``, tab, ``","``, ``";"`` or space.
      header: True, False or ``"auto"`` (first line skipped when its fields
        are not numbers).
      rating_scale: optional ``(lo, hi)``; a rating outside raises.
      duplicates: ``"error"`` (default) or ``"mean"``/``"sum"``/``"last"``.

    Returns:
      :class:`Ratings` with ids remapped to ``0..k-1`` (``row_ids`` /
      ``col_ids`` hold the original ids, sorted).  Extra fields are ignored.

    Raises:
      MalformedFileError / RatingsError: naming the file and line number.

    Example::

      r = load_triplets("my_ratings.csv", rating_scale=(1, 5))
    """
    path = pathlib.Path(path)
    source = str(path)
    data = read_bytes(path)
    parsed = parse_triplets(data, sep, header=header, source=source)
    return triplets_to_ratings(parsed, rating_scale=rating_scale, duplicates=duplicates,
                               source=source)


# ----------------------------------------------------------------- lookup
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
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
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


def find_movielens(name: str, data_dir=None, *, cache_dir=None):
    """Locate a MovieLens ratings file without downloading.

    Returns:
      ``(path, member)``: the file, and the zip member to read (None for a
      plain or ``.gz`` file).

    Raises:
      DataNotFoundError: listing every place looked at and how to provide
        the data.
    """
    spec = _spec(name)
    locs, cache = _locations(data_dir, cache_dir)
    for _, base in locs:
        if base is None or not base.exists():
            continue
        for path, kind in _candidates(base, spec):
            if path.is_file():
                return path, (_zip_member(path, spec) if kind == "zip" else None)
    raise DataNotFoundError(_not_found_message(spec, locs, cache))


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
      the path of the verified zip archive.

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
    else:
        _dl.verify_file(dest, md5=md5, sha256=sha256, size=size)
    if extract:
        _dl.safe_extract(dest, cache)
    return dest


def load_movielens(name: str, data_dir=None, *, download: bool = False, cache_dir=None) -> Ratings:
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

    Returns:
      :class:`Ratings` with user/movie ids remapped to ``0..k-1`` (sorted
      original ids in ``row_ids`` / ``col_ids``).  ML-1M: 1,000,209 ratings,
      shape (6040, 3706), mean 3.5816.

    Raises:
      DataNotFoundError: not found (the message lists where it looked and
        how to provide the data).
      MalformedFileError / RatingsError / ChecksumError: bad content.

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
        try:
            path = download_movielens(name, cache_dir)
        except OSError as e:  # offline, DNS, HTTP errors (ChecksumError is not an OSError)
            raise DataNotFoundError(
                f"downloading {spec.url} failed ({e}).\n{missing}"
            ) from e
        member = _zip_member(path, spec)
    source = f"{path}:{member}" if member else str(path)
    data = read_bytes(path, member)
    parsed = parse_triplets(data, spec.sep, header=spec.header, source=source)
    return triplets_to_ratings(parsed, rating_scale=spec.rating_scale, source=source)
