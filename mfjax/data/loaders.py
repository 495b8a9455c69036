"""Loaders: the MovieLens releases and generic (user, item, rating) triplet files.

This module gathers the loading API in one place; the code lives in

- :mod:`mfjax.data.parsing`    bytes -> :class:`ParsedTriplets` (vectorised
  fast path, precise line-by-line fallback with file / line in the errors)
- :mod:`mfjax.data.triplets`   :func:`read_bytes` (plain, gzip, zip member),
  :func:`triplets_to_ratings` (validation, dense ids), :func:`load_triplets`
- :mod:`mfjax.data.movielens`  the :data:`MOVIELENS` registry, lookup,
  verified download, :func:`load_movielens`

Original user / item ids are remapped to dense indices ``0..k-1`` in sorted
order of the original ids; :class:`~mfjax.data.IdMap` ``row_ids`` /
``col_ids`` map back.

>>> r = triplets_to_ratings(parse_triplets(b"1\\t5\\t4\\n2\\t5\\t3\\n"))
>>> r.shape, r.values.tolist()
((2, 1), [4.0, 3.0])
"""

from __future__ import annotations

import dataclasses  # noqa: F401  (kept: ``loaders.dataclasses.replace(spec, ...)`` in user code and tests)

from mfjax.data.movielens import (
    DATA_ENV,
    MOVIELENS,
    MovieLensSpec,
    download_movielens,
    find_movielens,
    load_movielens,
)
from mfjax.data.parsing import (
    ParsedTriplets,
    parse_triplets,
    parse_triplets_fast,
    parse_triplets_precise,
)
from mfjax.data.triplets import load_triplets, read_bytes, triplets_to_ratings

__all__ = [
    "DATA_ENV",
    "MOVIELENS",
    "MovieLensSpec",
    "ParsedTriplets",
    "download_movielens",
    "find_movielens",
    "load_movielens",
    "load_triplets",
    "parse_triplets",
    "parse_triplets_fast",
    "parse_triplets_precise",
    "read_bytes",
    "triplets_to_ratings",
]

# the former private names of the two parsers (tests and old scripts)
_fast_parse = parse_triplets_fast
_slow_parse = parse_triplets_precise
