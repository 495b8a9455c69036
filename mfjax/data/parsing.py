"""Parsing ``user<sep>item<sep>rating[<sep>...]`` lines from bytes.

Two parsers with one result type, :class:`ParsedTriplets`:

- :func:`parse_triplets_fast`, vectorised: the separators and newlines are
  located with numpy, the field count of every line checked at once, and the
  user / item / rating fields converted digit by digit over all lines
  together (one numpy pass per character position,
  ``value = sum_k d_k 10^(w-1-k)``, divided by ``10^(digits after the dot)``);
  it returns ``None`` whenever it cannot vouch for the data (a line with the
  wrong number of fields, a field that is not a plain decimal number, blank
  lines, CR line ends...).
- :func:`parse_triplets_arrow`, the same contract as the fast parser on top
  of pyarrow's multithreaded CSV reader (``pyarrow.csv``, one compiled pass
  per block instead of numpy's pass per byte position; 2-5x faster on
  ML-10M/20M-size files, see BENCHMARKS.md), used when pyarrow is installed
  (``pip install mfjax[fast-io]``); it too returns ``None`` whenever it
  cannot vouch for the data.
- :func:`parse_triplets_precise`, line by line in Python: parses anything the
  fast paths decline or raises :class:`~mfjax.data.errors.MalformedFileError`
  naming the file, the line number and the line.

:func:`parse_triplets` detects the separator and the header and runs a fast
parser (``engine``) with the precise one as fallback: every engine returns the
same arrays for the same bytes.  Fields after the third are not
parsed, except the fourth as an integer timestamp with ``timestamps=True``
(MovieLens: seconds since the epoch).

>>> p = parse_triplets(b"user::item::rating\\n1::10::5\\n2::11::3\\n")
>>> p.users.tolist(), p.items.tolist(), p.values.tolist(), p.lines.tolist()
([1, 2], [10, 11], [5.0, 3.0], [2, 3])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mfjax.data.errors import MalformedFileError, RatingsError

__all__ = [
    "UTF8_BOM",
    "ParsedTriplets",
    "looks_like_header",
    "ENGINES",
    "parse_triplets",
    "parse_triplets_arrow",
    "parse_triplets_fast",
    "parse_triplets_precise",
    "strip_bom",
]

_AUTO_SEPS = ("::", "\t", ",", ";", " ")


class ParsedTriplets(NamedTuple):
    """Raw parse of a triplet file: original ids, ratings, 1-based line numbers (and timestamps).

    ``timestamps`` (int64, the fourth field) is ``None`` unless asked for.
    """

    users: np.ndarray   # int64
    items: np.ndarray   # int64
    values: np.ndarray  # float64
    lines: np.ndarray   # int64, the file line of each entry
    timestamps: np.ndarray | None = None  # int64, the fourth field, when parsed

    def subset(self, index) -> "ParsedTriplets":
        """The triplets at ``index`` (a boolean mask or integer index)."""
        ts = None if self.timestamps is None else self.timestamps[index]
        return ParsedTriplets(self.users[index], self.items[index], self.values[index],
                              self.lines[index], ts)


def _sep_name(sep: str) -> str:
    return {"\t": "tab", " ": "space"}.get(sep, repr(sep))


def _parse_column(a: np.ndarray, starts: np.ndarray, ends: np.ndarray, integer: bool):
    """Decimal numbers in byte ranges ``a[starts[k]:ends[k]]``, all k at once.

    Accepts ``[-]digits`` (and one ``.`` when not ``integer``); returns None
    when any field is anything else, so the caller falls back to the precise
    line-by-line pass.

    The fields are grouped by length (a column has few distinct lengths:
    ratings ``5`` / ``3.5``, timestamps of 9-10 digits), so that within a
    group every byte position is present and the common all-digits position
    costs one gather and one multiply-add (``val = 10 val + d``).
    """
    lengths = ends - starts
    if lengths.size == 0:
        return np.zeros(0, np.int64 if integer else np.float64)
    if lengths.min() <= 0 or lengths.max() > 18:
        return None
    out = np.empty(lengths.shape, np.int64 if integer else np.float64)
    counts = np.bincount(lengths)
    groups = [(int(L), None) for L in np.flatnonzero(counts)] if np.count_nonzero(counts) > 1 else \
        [(int(lengths[0]), slice(None))]
    for L, sel in groups:
        if sel is None:
            sel = np.flatnonzero(lengths == L)
        got = _parse_fixed(a, starts[sel], L, integer)
        if got is None:
            return None
        out[sel] = got
    return out


def _parse_fixed(a: np.ndarray, starts: np.ndarray, width: int, integer: bool):
    """:func:`_parse_column` for fields of one length ``width``."""
    val = np.zeros(starts.shape, np.int64)
    ndig = None          # digits per field, only tracked once a non-digit was seen
    frac = None
    dot = None
    neg = None
    for k in range(width):
        c = a[starts + k]
        d = c - np.uint8(48)  # uint8 arithmetic wraps: digits are exactly d < 10
        isd = d < 10
        if isd.all():
            val *= 10
            val += d
            if ndig is not None:
                ndig += 1
            if dot is not None:
                frac += dot
            continue
        if ndig is None:
            ndig = np.full(starts.shape, k, np.int8)
            frac = np.zeros(starts.shape, np.int8)
            dot = np.zeros(starts.shape, bool)
        val = np.where(isd, val * 10 + d, val)
        ndig += isd
        frac += isd & dot
        ok = isd.copy()
        if not integer:
            isdot = c == 46
            if (isdot & dot).any():
                return None
            dot |= isdot
            ok |= isdot
        if k == 0:
            neg = c == 45
            ok |= neg
        if not ok.all():
            return None
    if ndig is not None and (ndig == 0).any():
        return None
    if neg is not None and neg.any():
        val = np.where(neg, -val, val)
    if integer:
        return val
    return val / np.power(10.0, frac) if frac is not None else val.astype(np.float64)


def parse_triplets_fast(data: bytes, sep: str, skip_header: bool,
                        timestamps: bool = False) -> ParsedTriplets | None:
    """Vectorised parse of triplet lines; ``None`` when the data needs :func:`parse_triplets_precise`.

    ``timestamps=True`` also parses the fourth field as an integer.

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
    ts = None
    if timestamps:
        if nsep < 3:
            return None
        ts = _parse_column(a, sep_hi[:, 2], sep_lo[:, 3] if nsep >= 4 else ends, True)
        if ts is None:
            return None
    lines = np.arange(first_line, first_line + nlines, dtype=np.int64)
    return ParsedTriplets(users, items, values.astype(np.float64), lines, ts)


#: ``parse_triplets(engine=...)``: ``"auto"`` is pyarrow when it is installed and the data are at least
#: :data:`ARROW_MIN_BYTES` long (below that its import costs more than it saves), else numpy.
ENGINES = ("auto", "numpy", "pyarrow")
ARROW_MIN_BYTES = 4 << 20


def _arrow():
    try:
        import pyarrow
        import pyarrow.csv
    except ImportError:
        return None
    return pyarrow


def parse_triplets_arrow(data: bytes, sep: str, skip_header: bool,
                         timestamps: bool = False) -> ParsedTriplets | None:
    """:func:`parse_triplets_fast` on pyarrow's CSV reader; ``None`` when the data need the precise pass.

    A separator of one byte repeated ``w`` times (``","``, ``"\t"``, ``"::"``) is read as that byte:
    field ``j`` of a line is CSV column ``j w`` and the ``w - 1`` columns between two fields must be
    empty (typed ``null``: anything else is a conversion error).  No quoting, no escapes, no blank
    lines: a blank line reads as a row of nulls, and any null among the parsed fields (a blank line,
    an empty field, ``NA``) declines, as does every pyarrow error (a line with another field count,
    a field that is not a number, an integer out of range), so that the precise pass names the line.
    ``None`` as well without pyarrow, for other separators, a space (whitespace runs) and a lone
    carriage return.  Values that both parse are equal: pyarrow's decimal conversion is correctly
    rounded, like :func:`_parse_column`'s exact-integer division.
    """
    pa = _arrow()
    sepb = sep.encode("latin-1")
    if pa is None or sepb[:1] * len(sepb) != sepb or sepb in (b" ", b"\n", b"\r", b'"'):
        return None
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
        if b"\r" in data:
            return None
    width = len(sepb)
    need = 4 if timestamps else 3
    types = {}
    for j, t in enumerate((pa.int64(), pa.int64(), pa.float64(), pa.int64())[:need]):
        types[f"f{j * width}"] = t
        if j < need - 1:
            types.update({f"f{j * width + g}": pa.null() for g in range(1, width)})
    options = dict(
        read_options=pa.csv.ReadOptions(autogenerate_column_names=True, skip_rows=int(bool(skip_header))),
        parse_options=pa.csv.ParseOptions(delimiter=sepb[:1].decode("latin-1"), quote_char=False,
                                          double_quote=False, escape_char=False, ignore_empty_lines=False),
        convert_options=pa.csv.ConvertOptions(column_types=types, include_columns=list(types)))
    try:
        table = pa.csv.read_csv(pa.py_buffer(data), **options)
    except (pa.ArrowInvalid, pa.ArrowKeyError, pa.ArrowTypeError):  # the data, never our options
        return None
    cols = [table.column(f"f{j * width}") for j in range(need)]
    if table.num_rows == 0 or any(c.null_count for c in cols):
        return None
    users, items, values, *ts = (c.to_numpy() for c in cols)
    first_line = 2 if skip_header else 1
    lines = np.arange(first_line, first_line + table.num_rows, dtype=np.int64)
    return ParsedTriplets(users.astype(np.int64, copy=False), items.astype(np.int64, copy=False),
                          values.astype(np.float64, copy=False), lines,
                          ts[0].astype(np.int64, copy=False) if timestamps else None)


def _fast_parse(data: bytes, sep: str, skip: bool, timestamps: bool, engine: str):
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "pyarrow" and _arrow() is None:
        raise ImportError("engine='pyarrow' needs pyarrow: pip install 'mfjax[fast-io]' (or pyarrow)")
    if engine == "pyarrow" or (engine == "auto" and len(data) >= ARROW_MIN_BYTES and _arrow() is not None):
        parsed = parse_triplets_arrow(data, sep, skip, timestamps)
        if parsed is not None:
            return parsed
    return parse_triplets_fast(data, sep, skip, timestamps)


def _split_fields(line: str, sep: str):
    return line.split() if sep == " " else [f.strip() for f in line.split(sep)]


def parse_triplets_precise(data: bytes, sep: str, skip_header: bool, source: str,
                           timestamps: bool = False) -> ParsedTriplets:
    """Line-by-line parse of triplet lines with precise errors (file, line number, line).

    The reference (and fallback) for :func:`parse_triplets_fast`: blank lines
    are skipped, ``skip_header`` drops the first non-blank line, the field
    count must agree with the first data line (at least 3), and the user,
    item and rating fields must parse as ``int``, ``int``, ``float``.

    Args:
      data: the file's bytes; sep: the field separator (``" "`` splits on
        any whitespace); skip_header: drop the first non-blank line;
      source: the file name used in error messages;
      timestamps: also parse the fourth field as an integer timestamp.

    Returns:
      :class:`ParsedTriplets`.

    Raises:
      MalformedFileError: naming ``source``, the line number and the line.
      RatingsError: no ratings at all.

    >>> p = parse_triplets_precise(b"u,i,r\\n1,10,4\\n\\n2,10,3.5\\n", ",", True, "x.csv")
    >>> p.users.tolist(), p.items.tolist(), p.values.tolist(), p.lines.tolist()
    ([1, 2], [10, 10], [4.0, 3.5], [2, 4])
    """
    users, items, values, lines, stamps = [], [], [], [], []
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
            if timestamps and nfields < 4:
                raise MalformedFileError(
                    f"malformed line: {where}: timestamps were asked for but the line has no fourth "
                    f"field (user, item, rating, timestamp) separated by {_sep_name(sep)}: {line[:200]!r}"
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
        for what, v_id in (("user", u), ("item", i)):
            if not -(2**63) <= v_id < 2**63:
                raise MalformedFileError(
                    f"malformed line: {where}: {what} id {v_id} does not fit in a 64-bit integer: {line[:200]!r}"
                )
        if timestamps:
            try:
                t = int(fields[3]) if "_" not in fields[3] else None
            except ValueError:
                t = None
            if t is None or not -(2**63) <= t < 2**63:
                raise MalformedFileError(
                    f"malformed line: {where}: timestamp {fields[3]!r} is not a 64-bit integer: {line[:200]!r}"
                )
            stamps.append(t)
        users.append(u)
        items.append(i)
        values.append(v)
        lines.append(lineno)
    if not users:
        raise RatingsError(f"empty data: no ratings in {source}")
    return ParsedTriplets(
        np.asarray(users, np.int64), np.asarray(items, np.int64),
        np.asarray(values, np.float64), np.asarray(lines, np.int64),
        np.asarray(stamps, np.int64) if timestamps else None,
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


#: The UTF-8 byte order mark some editors (Excel, Notepad) write at the start of a CSV.
UTF8_BOM = b"\xef\xbb\xbf"


def strip_bom(data: bytes, source: str = "<data>") -> bytes:
    """``data`` without a leading UTF-8 byte order mark (UTF-16 / UTF-32 data raises).

    A BOM is not part of the first field: left in place it makes the first
    line unparseable, and header detection used to drop it as a "header".

    Raises:
      MalformedFileError: UTF-16 / UTF-32 data (a ``\\xff\\xfe`` or
        ``\\xfe\\xff`` mark); re-save the file as UTF-8 or ASCII.

    >>> strip_bom(b"\\xef\\xbb\\xbf1,2,3\\n")
    b'1,2,3\\n'
    """
    if data.startswith(UTF8_BOM):
        return data[len(UTF8_BOM):]
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise MalformedFileError(
            f"{source}: the data is UTF-16/UTF-32 encoded (byte order mark {data[:2]!r}); "
            "save it as UTF-8 or ASCII"
        )
    return data


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def looks_like_header(line: str, sep: str) -> bool:
    """Whether ``line`` is a header: none of its first three fields is a number.

    A line with any numeric field among user / item / rating is data (a typo
    in it, e.g. ``1,x,4``, is then reported as malformed line 1 rather than
    silently dropped as a header).

    >>> looks_like_header("userId,movieId,rating,timestamp", ","), looks_like_header("1,x,4", ",")
    (True, False)
    """
    fields = _split_fields(line, sep)[:3]
    return bool(fields) and not any(_is_number(f) for f in fields)


_looks_like_header = looks_like_header  # the former private name


def parse_triplets(data: bytes, sep: str | None = None, *, header="auto",
                   source: str = "<data>", timestamps: bool = False, engine: str = "auto") -> ParsedTriplets:
    """Parse ``user<sep>item<sep>rating[<sep>...]`` lines from bytes.

    Args:
      data: the file's bytes (already decompressed).
      sep: field separator (``"::"``, ``"\\t"``, ``","``...); None detects
        it from the first lines.
      header: True (skip the first line), False, or ``"auto"`` (skip it
        when none of its first three fields is a number,
        :func:`looks_like_header`; a first line with a number and a typo is
        data and is reported as malformed).  A UTF-8 byte order mark is
        stripped first (:func:`strip_bom`).
      source: name used in error messages.
      timestamps: also parse the fourth field as an integer timestamp
        (``ParsedTriplets.timestamps``; a line without it, or with a
        non-integer one, is malformed).
      engine: the fast parser tried before the precise one: ``"numpy"``
        (:func:`parse_triplets_fast`), ``"pyarrow"``
        (:func:`parse_triplets_arrow`, then numpy's) or ``"auto"`` (pyarrow
        for data of at least :data:`ARROW_MIN_BYTES` when it is installed).
        The result does not depend on it.

    Raises:
      MalformedFileError: naming the file, line number and line.
      RatingsError: for a file without ratings.

    >>> parse_triplets(b"1,10,5,978300760\\n2,11,3,978302109\\n", timestamps=True).timestamps.tolist()
    [978300760, 978302109]
    """
    data = strip_bom(data, source)
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
    parsed = _fast_parse(data, sep, skip, timestamps, engine)
    if parsed is None:
        parsed = parse_triplets_precise(data, sep, skip, source, timestamps)
    return parsed
