"""Data layer: the :class:`Ratings` container, loaders, synthetic data, splits, validation.

- container: :class:`Ratings` (COO pytree), :class:`IdMap`
- loaders: :func:`load_movielens` (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m,
  ml-latest-small; plain / .gz / official zip; data_dir -> $MFJAX_DATA_DIR ->
  user cache -> opt-in verified download), :func:`load_triplets` (generic
  user,item,rating CSV/TSV), :func:`download_movielens`, :func:`find_movielens`
- synthetic data: :func:`synthetic`
- splits: :func:`split`, :func:`kfold`, :func:`extendability_split`
  (:class:`ExtendabilitySplit`), :func:`coverage_report`
- validation and provenance: :class:`RatingsError` (a ``ValueError``) and its
  subclasses :class:`MalformedFileError`, :class:`ChecksumError`,
  :class:`DataNotFoundError`; :func:`data_checksum`, :func:`file_sha256`
- download helpers: :func:`download_file`, :func:`safe_extract`,
  :func:`default_cache_dir`
"""

from mfjax.data.ratings import IdMap, Ratings, RatingsError
from mfjax.data.validation import (
    ChecksumError,
    DataNotFoundError,
    MalformedFileError,
    data_checksum,
)
from mfjax.data.download import default_cache_dir, download_file, file_sha256, safe_extract
from mfjax.data.loaders import (
    MOVIELENS,
    download_movielens,
    find_movielens,
    load_movielens,
    load_triplets,
)
from mfjax.data.synthetic import synthetic
from mfjax.data.splits import (
    ExtendabilitySplit,
    coverage_report,
    extendability_split,
    kfold,
    split,
)

__all__ = [
    # container
    "IdMap",
    "Ratings",
    # errors
    "RatingsError",
    "MalformedFileError",
    "ChecksumError",
    "DataNotFoundError",
    # loaders
    "MOVIELENS",
    "load_movielens",
    "load_triplets",
    "download_movielens",
    "find_movielens",
    # synthetic
    "synthetic",
    # splits
    "split",
    "kfold",
    "extendability_split",
    "ExtendabilitySplit",
    "coverage_report",
    # provenance and downloads
    "data_checksum",
    "file_sha256",
    "download_file",
    "safe_extract",
    "default_cache_dir",
]
