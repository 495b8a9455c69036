"""Generic (user, item, rating) triplet files: bytes, parsed triplets, :class:`~mfjax.data.Ratings`.

:func:`load_triplets` = :func:`read_bytes` (plain, gzip by magic number, or a
zip member, all in memory) -> :func:`~mfjax.data.parsing.parse_triplets` ->
:func:`triplets_to_ratings` (validation with line numbers in the messages,
dense ids, duplicates).

Original user / item ids are remapped to dense indices ``0..k-1`` in sorted
order of the original ids; :class:`~mfjax.data.IdMap` ``row_ids`` /
``col_ids`` map back.

>>> from mfjax.data.parsing import parse_triplets
>>> r = triplets_to_ratings(parse_triplets(b"7,30,4\\n3,30,2\\n7,10,5\\n"))
>>> r.shape, r.rows.tolist(), r.cols.tolist(), r.row_ids.original.tolist()
((2, 2), [1, 0, 1], [1, 1, 0], [3, 7])
"""

from __future__ import annotations

import gzip
import pathlib
import warnings
import zipfile

import numpy as np

from mfjax.data.download import check_archive_names
from mfjax.data.errors import RatingsError
from mfjax.data.parsing import ParsedTriplets, parse_triplets
from mfjax.data.ratings import IdMap, Ratings
from mfjax.data.validation import check_rating_scale, duplicate_timestamps, handle_duplicates

__all__ = ["UNKNOWN_ID_POLICIES", "UnknownIdsWarning", "apply_id_maps", "read_bytes",
           "triplets_to_ratings", "load_triplets", "load_triplets_part", "STREAM_CHUNK_BYTES"]

#: How ids missing from given id maps are handled: ``"error"`` raises, ``"drop"`` drops them with a warning.
UNKNOWN_ID_POLICIES = ("error", "drop")


class UnknownIdsWarning(UserWarning):
    """Ratings were dropped because their user or item id is not in the given id maps."""


def read_bytes(path, member: str | None = None) -> bytes:
    """A file's bytes: plain, gzip (by magic number), or ``member`` of a zip."""
    path = pathlib.Path(path)
    if member is not None or zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            check_archive_names(names, path)
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


def _as_id_map(m, what: str) -> IdMap:
    if m is None:
        raise RatingsError(
            f"id_maps: the {what} id map is None (a Ratings built from indices, e.g. synthetic "
            "data, has no id maps); pass the maps of a Ratings loaded from a file"
        )
    return m if isinstance(m, IdMap) else IdMap(np.asarray(m))


def _first(ids: np.ndarray, k: int = 5) -> str:
    u = np.unique(ids)
    more = ", ..." if u.size > k else ""
    return ", ".join(str(v) for v in u[:k].tolist()) + more


def apply_id_maps(parsed: ParsedTriplets, id_maps, *, unknown: str = "error",
                  source: str = "<data>") -> tuple[ParsedTriplets, np.ndarray, np.ndarray, tuple[IdMap, IdMap]]:
    """Map raw user / item ids through given id maps (e.g. a training set's).

    Args:
      parsed: raw triplets.
      id_maps: ``(row_ids, col_ids)``, each an :class:`~mfjax.data.IdMap`
        (or the sequence of original ids).
      unknown: ``"error"`` raises when an id is in neither map (naming how
        many ratings, how many unknown ids and the first few, and the first
        line); ``"drop"`` drops those ratings with an
        :class:`UnknownIdsWarning` giving the count.  Never remapped.
      source: file name for the messages.

    Returns:
      ``(kept triplets, rows, cols, (row_map, col_map))``.

    >>> p = ParsedTriplets(np.array([7, 8]), np.array([10, 10]), np.array([4.0, 2.0]), np.array([1, 2]))
    >>> apply_id_maps(p, (IdMap([3, 7]), IdMap([10])))
    Traceback (most recent call last):
      ...
    mfjax.data.errors.RatingsError: <data>: 1 of 2 ratings have ids not in the given id maps: 1 unknown user ids (8); the first on line 2; pass unknown='drop' to drop them
    """
    if unknown not in UNKNOWN_ID_POLICIES:
        raise ValueError(f"unknown must be 'error' or 'drop', got {unknown!r}")
    try:
        row_map, col_map = id_maps
    except (TypeError, ValueError):
        raise RatingsError(f"id_maps must be a pair (row_ids, col_ids), got {id_maps!r}") from None
    row_map, col_map = _as_id_map(row_map, "row (user)"), _as_id_map(col_map, "column (item)")
    users, items, values, lines = parsed[:4]
    rows, rk = row_map.lookup(users)
    cols, ck = col_map.lookup(items)
    bad = ~(rk & ck)
    if bad.any():
        nbad, k = int(np.count_nonzero(bad)), int(np.argmax(bad))
        parts = [f"{np.unique(ids[~known]).size} unknown {what} ids ({_first(ids[~known])})"
                 for what, ids, known in (("user", users, rk), ("item", items, ck)) if not known.all()]
        what = (f"{source}: {nbad} of {users.size} ratings have ids not in the given id maps: "
                f"{'; '.join(parts)}; the first on line {lines[k]}")
        if unknown == "error" or nbad == users.size:
            hint = "" if nbad == users.size else "; pass unknown='drop' to drop them"
            raise RatingsError(what + hint)
        warnings.warn(what + ": dropped", UnknownIdsWarning, stacklevel=3)
        keep = ~bad
        parsed = parsed.subset(keep)
        rows, cols = rows[keep], cols[keep]
    return parsed, rows, cols, (row_map, col_map)


def triplets_to_ratings(parsed: ParsedTriplets, *, rating_scale=None, duplicates: str = "error",
                        source: str = "<data>", dtype=np.float32, id_maps=None,
                        unknown: str = "error") -> Ratings:
    """Validate parsed triplets (errors name the line) and build :class:`Ratings`.

    Parsed timestamps (``parsed.timestamps``) are kept as
    ``Ratings.timestamps`` (aggregated duplicates keep the latest one, or
    the last one's with ``"last"``).

    Ids are remapped to ``0..k-1`` in sorted order of the original ids, or,
    with ``id_maps=(row_ids, col_ids)`` (a training set's maps), mapped
    through those (shape ``(len(row_ids), len(col_ids))``; ids not in them
    handled by ``unknown``, see :func:`apply_id_maps`).

    Raises:
      RatingsError: non-finite rating, negative id, rating outside
        ``rating_scale``, duplicate (user, item) pair (unless ``duplicates``
        is ``"mean"``, ``"sum"`` or ``"last"``), ids unknown to ``id_maps``.

    >>> train = triplets_to_ratings(parse_triplets(b"7,30,4\\n3,30,2\\n7,10,5\\n"))
    >>> test = triplets_to_ratings(parse_triplets(b"3,10,1\\n"), id_maps=(train.row_ids, train.col_ids))
    >>> test.shape, test.rows.tolist(), test.cols.tolist()
    ((2, 2), [0], [0])
    """
    users, items, values, lines = parsed[:4]
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
    if id_maps is None:
        row_ids, rows = _dense_ids(users)
        col_ids, cols = _dense_ids(items)
        row_map, col_map = IdMap(row_ids), IdMap(col_ids)
    else:
        parsed, rows, cols, (row_map, col_map) = apply_id_maps(parsed, id_maps, unknown=unknown,
                                                               source=source)
        users, items, values, lines = parsed[:4]
    stamps = parsed.timestamps
    shape = (len(row_map), len(col_map))
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
        if stamps is not None:
            stamps = duplicate_timestamps(rows, cols, stamps, shape, duplicates)
        rows, cols, values = handle_duplicates(rows, cols, values, shape, duplicates)
    return Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(dtype), shape,
        row_map, col_map, stamps,
    )


def load_triplets(path, sep: str | None = None, *, header="auto", rating_scale=None,
                  duplicates: str = "error", id_maps=None, unknown: str = "error",
                  timestamps: bool = False) -> Ratings:
    """Load a (user, item, rating[, ...]) CSV/TSV file, plain or gzip-compressed.

    Args:
      path: the file (gzip detected by its magic number, whatever the name).
      sep: separator; None detects ``"::"``, tab, ``","``, ``";"`` or space.
      header: True, False or ``"auto"`` (first line skipped when none of
        its first three fields is a number; a UTF-8 byte order mark is
        stripped first).
      rating_scale: optional ``(lo, hi)``; a rating outside raises, naming
        the value and the line.
      duplicates: ``"error"`` (default) or ``"mean"``/``"sum"``/``"last"``.
      id_maps: optional ``(row_ids, col_ids)``, e.g. ``(train.row_ids,
        train.col_ids)``: map the raw ids through a training set's maps so
        that indices mean the same users / items (a test file).
      unknown: with ``id_maps``: ``"error"`` (default) raises on ids not in
        the maps; ``"drop"`` drops those ratings with an
        :class:`UnknownIdsWarning` giving the count.
      timestamps: read the fourth field as an integer timestamp into
        ``Ratings.timestamps`` (a line without one is malformed).

    Returns:
      :class:`Ratings` with ids remapped to ``0..k-1`` (``row_ids`` /
      ``col_ids`` hold the original ids, sorted).  Extra fields are ignored.

    Raises:
      MalformedFileError / RatingsError: naming the file and line number.

    Example::

      train = load_triplets("train.csv", rating_scale=(1, 5))
      test = load_triplets("test.csv", id_maps=(train.row_ids, train.col_ids))
    """
    path = pathlib.Path(path)
    source = str(path)
    data = read_bytes(path)
    parsed = parse_triplets(data, sep, header=header, source=source, timestamps=timestamps)
    return triplets_to_ratings(parsed, rating_scale=rating_scale, duplicates=duplicates,
                               source=source, id_maps=id_maps, unknown=unknown)


#: Bytes read per step by :func:`load_triplets_part` (the streaming memory bound, besides the ids and the part).
STREAM_CHUNK_BYTES = 1 << 26


def _open_stream(path: pathlib.Path, member: str | None):
    """The (decompressed) bytes of a plain or gzip file, or of the zip archive's ``member``, as a stream."""
    if member is not None:
        return zipfile.ZipFile(path).open(member)
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _line_chunks(path: pathlib.Path, chunk_bytes: int, member: str | None = None):
    """The (decompressed) file in pieces of about ``chunk_bytes`` that end at line ends."""
    with _open_stream(path, member) as f:
        rest = b""
        while True:
            block = f.read(int(chunk_bytes))
            if not block:
                break
            block = rest + block
            k = block.rfind(b"\n")
            if k < 0:
                rest = block
                continue
            rest = block[k + 1:]
            yield block[:k + 1]
        if rest.strip():
            yield rest


def _parsed_chunks(path, sep, header, source, chunk_bytes, member=None):
    """Each piece of the file parsed (the separator and header decided on the first piece)."""
    from mfjax.data.parsing import _detect_sep, _first_lines, looks_like_header, strip_bom

    first = True
    for block in _line_chunks(path, chunk_bytes, member):
        if first:
            block = strip_bom(block, source)
            sep = _detect_sep(block, source) if sep is None else sep
            if header == "auto":
                lines = _first_lines(block, 1)
                header = bool(lines) and looks_like_header(lines[0], sep)
            if header:  # drop the header line (a first piece may hold nothing else)
                k = block.find(b"\n")
                block = b"" if k < 0 else block[k + 1:]
            first = False
        if not block.strip():
            continue
        yield parse_triplets(block, sep, header=False, source=source)


def load_triplets_part(path, part: int, num_parts: int, sep: str | None = None, *, header="auto",
                       rating_scale=None, duplicates: str = "error",
                       chunk_bytes: int = STREAM_CHUNK_BYTES, member: str | None = None) -> Ratings:
    """Part ``part`` of ``num_parts`` of a triplet file, streamed: only that part's rows are kept.

    Two passes over the file, ``chunk_bytes`` at a time (plain or gzip, or
    the ``member`` of a zip archive): the first collects the distinct
    user and item ids and each user's rating count, the second keeps the
    ratings of the users in this part's block -- contiguous dense rows cut
    where the cumulative rating count crosses ``k nnz / num_parts``, the rule
    of :func:`mfjax.objective.process_row_block`.  The result has the whole
    file's shape and dense ids (the same as :func:`load_triplets`), so the
    parts of ``0..num_parts-1`` together are exactly ``load_triplets(path)``.

    Memory bound: one parsed piece (about ``chunk_bytes`` of text and its
    arrays) + the distinct ids (``O(m + n)``) + this part's ratings; never
    the whole file.  Line numbers in error messages count from the start of
    the piece (the message names its byte offset).

    Raises:
      ValueError: ``part`` outside ``[0, num_parts)``.
      RatingsError / MalformedFileError: as :func:`load_triplets`.
    """
    from mfjax.data.ratings import IdMap

    num_parts, part = int(num_parts), int(part)
    if num_parts < 1 or not 0 <= part < num_parts:
        raise ValueError(f"need 0 <= part < num_parts, got part={part}, num_parts={num_parts}")
    path = pathlib.Path(path)
    if member is None and zipfile.is_zipfile(path):
        raise RatingsError(f"{path}: a zip archive; name the ratings file inside it (member=) to stream it")
    source = str(path) if member is None else f"{path}:{member}"
    users, counts, items = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    for parsed in _parsed_chunks(path, sep, header, source, chunk_bytes, member):  # pass 1: ids and row counts
        u, c = np.unique(parsed[0], return_counts=True)
        users, inv = np.unique(np.concatenate([users, u]), return_inverse=True)
        merged = np.zeros(users.size, np.int64)
        np.add.at(merged, inv, np.concatenate([counts, c]))
        counts = merged
        items = np.union1d(items, parsed[1])
    if users.size == 0:
        raise RatingsError(f"empty data: no ratings in {source}")
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, np.arange(1, num_parts) * cum[-1] / num_parts, side="left") + 1
    edges = np.concatenate([[0], cuts, [users.size]])
    lo, hi = int(edges[part]), int(edges[part + 1])
    keep_ids = users[lo:hi]
    kept = []
    for parsed in _parsed_chunks(path, sep, header, source, chunk_bytes, member):  # pass 2: this part's ratings
        keep = np.isin(parsed[0], keep_ids)
        if keep.any():
            kept.append(parsed.subset(np.flatnonzero(keep)))
    if kept:
        fields = [None if getattr(kept[0], f) is None else np.concatenate([getattr(k, f) for k in kept])
                  for f in kept[0]._fields]
        parsed = type(kept[0])(*fields)
    else:  # an empty part: no ratings, the whole file's shape
        return Ratings(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32),
                       (users.size, items.size), IdMap(users), IdMap(items))
    return triplets_to_ratings(parsed, rating_scale=rating_scale, duplicates=duplicates, source=source,
                               id_maps=(IdMap(users), IdMap(items)))
