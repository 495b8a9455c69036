"""pandas in and out: :func:`from_pandas` (a DataFrame of ratings -> :class:`Ratings`) and :func:`to_pandas`.

pandas is optional (``pip install 'mfjax[pandas]'``): it is imported inside
the functions, never by ``import mfjax``.

User and item ids may be any hashable values (strings, integers, tuples...).
They are mapped to dense indices ``0..k-1`` in sorted order of the ids (as
the file loaders do; ``pandas.factorize(sort=True)``, which puts numbers
before strings when both occur), or in order of first appearance when the
ids cannot be compared at all; the raw ids are kept in ``row_ids`` / ``col_ids``,
so :func:`to_pandas` gives them back.  Errors follow
:mod:`~mfjax.data.validation`: a :class:`RatingsError` naming the column,
the DataFrame row (its index label) and the value.

>>> import pandas as pd
>>> df = pd.DataFrame({"user": ["ann", "bob", "ann"], "item": ["x", "x", "y"], "rating": [4, 3, 5]})
>>> r = from_pandas(df)
>>> r.shape, r.rows.tolist(), r.cols.tolist(), r.row_ids.original.tolist()
((2, 2), [0, 1, 0], [0, 0, 1], ['ann', 'bob'])
>>> to_pandas(r).equals(df.astype({"rating": "float32"}))
True
"""

from __future__ import annotations

import warnings

import numpy as np

from mfjax.data.errors import RatingsError
from mfjax.data.ratings import IdMap, Ratings
from mfjax.data.triplets import UnknownIdsWarning
from mfjax.data.validation import check_rating_scale

__all__ = ["from_pandas", "to_pandas"]

_INSTALL = "pandas is needed for this (an optional dependency): pip install 'mfjax[pandas]' (or pandas>=2)"


def _pandas():
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - exercised only without pandas
        raise ImportError(_INSTALL) from e
    return pd


def _label(df, k: int) -> str:
    return f"row {df.index[k]!r}"


def _id_array(values) -> np.ndarray:
    """A 1-d numpy array of the ids (object dtype for anything not numeric, so tuples stay whole)."""
    arr = np.asarray(values)
    if arr.ndim == 1 and arr.dtype.kind in "biuUS":
        return arr
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _codes(pd, df, col: str, what: str, id_map: IdMap | None):
    """Dense codes and the id map of one id column (sorted ids, or first appearance if unsortable)."""
    s = df[col]
    missing = s.isna().to_numpy()
    if missing.any():
        k = int(np.argmax(missing))
        raise RatingsError(f"column {col!r} ({what} ids): missing id ({s.iloc[k]!r}) at {_label(df, k)}")
    if id_map is not None:
        codes, known = id_map.lookup(_id_array(s.to_numpy()))
        return codes, known, id_map
    try:
        codes, uniq = pd.factorize(s, sort=True)
    except TypeError:  # ids of mixed types cannot be sorted
        codes, uniq = pd.factorize(s, sort=False)
    return codes.astype(np.int64), np.ones(codes.shape, bool), IdMap(_id_array(uniq))


def from_pandas(df, user: str = "user", item: str = "item", rating: str = "rating",
                timestamp: str | None = None, *, rating_scale=None, duplicates: str = "error",
                id_maps=None, unknown: str = "error", dtype=np.float32) -> Ratings:
    """Ratings from a DataFrame with one row per rating.

    Args:
      df: a ``pandas.DataFrame``.
      user, item, rating: the names of its user id, item id and rating
        columns (ids: any hashable values; ratings: numeric).
      timestamp: optional column of times (numbers, e.g. seconds since the
        epoch, or ``datetime64``, stored as int64 seconds) kept as
        ``Ratings.timestamps``.
      rating_scale: optional ``(lo, hi)``; a rating outside raises.
      duplicates: ``"error"`` (default) raises on a repeated (user, item)
        pair naming both DataFrame rows; ``"mean"``, ``"sum"``, ``"last"``
        aggregate (see :meth:`Ratings.create`).
      id_maps: optional ``(row_ids, col_ids)`` of another :class:`Ratings`
        (a training set): map the ids through them, so that indices mean the
        same users and items; ids not in them raise, or with
        ``unknown="drop"`` their rows are dropped.
      dtype: dtype of the values.

    Returns:
      :class:`Ratings` of shape ``(number of users, number of items)`` (or
      the id maps' sizes) with the raw ids in ``row_ids`` / ``col_ids``.

    Raises:
      RatingsError: a missing column (the available ones are listed), an
        empty frame, a missing (NaN / None) id, a non-numeric, NaN or
        infinite rating, a rating outside ``rating_scale``, a duplicate
        pair, a missing timestamp, ids unknown to ``id_maps``.
      TypeError: ``df`` is not a DataFrame.
    """
    pd = _pandas()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"from_pandas needs a pandas.DataFrame, got {type(df).__name__}")
    wanted = [("user", user), ("item", item), ("rating", rating)]
    if timestamp is not None:
        wanted.append(("timestamp", timestamp))
    absent = [f"{role}={col!r}" for role, col in wanted if col not in df.columns]
    if absent:
        raise RatingsError(f"DataFrame has no column {', '.join(absent)}; its columns are "
                           f"{list(df.columns)} (pass user=, item=, rating=, timestamp= to name them)")
    if len(df) == 0:
        raise RatingsError("empty data: the DataFrame has no rows")
    if unknown not in ("error", "drop"):
        raise ValueError(f"unknown must be 'error' or 'drop', got {unknown!r}")
    if duplicates not in ("error", "mean", "sum", "last"):
        raise ValueError(f"duplicates must be 'error', 'mean', 'sum' or 'last', got {duplicates!r}")
    vs = df[rating]
    if not (pd.api.types.is_numeric_dtype(vs) and not pd.api.types.is_bool_dtype(vs)) or \
            pd.api.types.is_complex_dtype(vs):
        raise RatingsError(f"column {rating!r} (ratings) must hold real numbers, got dtype {vs.dtype}")
    values = vs.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise RatingsError(f"column {rating!r}: non-finite rating {values[k]} at {_label(df, k)} "
                           f"(user {df[user].iloc[k]!r}, item {df[item].iloc[k]!r})")
    check_rating_scale(values, rating_scale,
                       lambda k: f"column {rating!r}: rating {values[k]} at {_label(df, k)}")
    stamps = None
    if timestamp is not None:
        ts = df[timestamp]
        if ts.isna().any():
            k = int(np.argmax(ts.isna().to_numpy()))
            raise RatingsError(f"column {timestamp!r}: missing timestamp at {_label(df, k)}")
        if pd.api.types.is_datetime64_any_dtype(ts):
            if getattr(ts.dt, "tz", None) is not None:
                ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
            stamps = ts.to_numpy().astype("datetime64[s]").astype(np.int64)
        elif pd.api.types.is_numeric_dtype(ts) and not pd.api.types.is_bool_dtype(ts):
            stamps = ts.to_numpy()
        else:
            raise RatingsError(f"column {timestamp!r} (timestamps) must hold numbers or datetimes, "
                               f"got dtype {ts.dtype}")
    row_map = col_map = None
    if id_maps is not None:
        try:
            row_map, col_map = id_maps
        except (TypeError, ValueError):
            raise RatingsError(f"id_maps must be a pair (row_ids, col_ids), got {id_maps!r}") from None
        if row_map is None or col_map is None:
            raise RatingsError("id_maps: an id map is None (a Ratings built from indices has none)")
    rows, rk, row_map = _codes(pd, df, user, "user", row_map)
    cols, ck, col_map = _codes(pd, df, item, "item", col_map)
    keep = rk & ck
    if not keep.all():
        k = int(np.argmax(~keep))
        msg = (f"{int((~keep).sum())} of {len(df)} ratings have ids not in the given id maps; "
               f"the first at {_label(df, k)} (user {df[user].iloc[k]!r}, item {df[item].iloc[k]!r})")
        if unknown == "error" or not keep.any():
            raise RatingsError(msg + ("; pass unknown='drop' to drop them" if keep.any() else ""))
        warnings.warn(msg + ": dropped", UnknownIdsWarning, stacklevel=2)
        rows, cols, values = rows[keep], cols[keep], values[keep]
        stamps = None if stamps is None else stamps[keep]
    shape = (len(row_map), len(col_map))
    if duplicates == "error":
        key = rows * shape[1] + cols
        order = np.argsort(key, kind="stable")
        dup = np.flatnonzero(key[order][1:] == key[order][:-1])
        if dup.size:
            pos = np.flatnonzero(keep)
            a, b = pos[order[dup[0]]], pos[order[dup[0] + 1]]
            raise RatingsError(
                f"duplicate (user, item) pair ({df[user].iloc[a]!r}, {df[item].iloc[a]!r}) at "
                f"{_label(df, a)} and {_label(df, b)}; pass duplicates='mean'|'sum'|'last' to aggregate")
    return Ratings.create(rows, cols, values, shape, row_ids=row_map, col_ids=col_map,
                          duplicates=duplicates, dtype=dtype, timestamps=stamps)


def to_pandas(ratings: Ratings, user: str = "user", item: str = "item", rating: str = "rating",
              timestamp: str = "timestamp"):
    """A DataFrame with one row per rating: raw user / item ids (indices without id maps), rating, time.

    The ``timestamp`` column is present only when ``ratings.timestamps`` is.
    :func:`from_pandas` of the result gives the ratings back (entries in the
    same order, the same ids).

    Returns:
      ``pandas.DataFrame`` with columns ``user``, ``item``, ``rating`` (and
      ``timestamp``) and a default index.
    """
    pd = _pandas()
    names = [user, item, rating] + ([timestamp] if ratings.timestamps is not None else [])
    if len(set(names)) < len(names):
        raise ValueError(f"column names must differ, got {names}")
    rows, cols = np.asarray(ratings.rows), np.asarray(ratings.cols)
    data = {
        user: ratings.row_ids.to_original(rows) if ratings.row_ids is not None else rows,
        item: ratings.col_ids.to_original(cols) if ratings.col_ids is not None else cols,
        rating: np.asarray(ratings.values),
    }
    if ratings.timestamps is not None:
        data[timestamp] = np.asarray(ratings.timestamps)
    return pd.DataFrame(data)
