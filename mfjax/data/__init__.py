"""Data layer: the :class:`Ratings` container, loaders, synthetic data, splits, validation.

- container: :class:`Ratings` (COO pytree), :class:`IdMap`
- loaders (:mod:`~mfjax.data.movielens`, :mod:`~mfjax.data.triplets`,
  :mod:`~mfjax.data.parsing`, gathered in :mod:`~mfjax.data.loaders`):
  :func:`load_movielens` (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m,
  ml-latest-small; plain / .gz / official zip; data_dir -> $MFJAX_DATA_DIR ->
  user cache -> opt-in verified download), :func:`load_triplets` (generic
  user,item,rating CSV/TSV; ``id_maps=(train.row_ids, train.col_ids)`` loads a
  test file in a training set's indices, :func:`apply_id_maps`,
  :class:`UnknownIdsWarning`), :func:`download_movielens`, :func:`find_movielens`;
  the steps: :func:`parse_triplets` (:func:`parse_triplets_arrow` when
  pyarrow is installed, or :func:`parse_triplets_fast`, with
  :func:`parse_triplets_precise` as fallback) -> :class:`ParsedTriplets` ->
  :func:`triplets_to_ratings`
- synthetic data: :func:`synthetic` (:class:`LowRankTruth`: its noiseless factors)
- splits: :func:`split`, :func:`hash_split` (row-local: per-process splits agree
  with the whole one), :func:`row_ranges` / :func:`check_row_ranges`,
  :func:`kfold`, :func:`extendability_split`
  (:class:`ExtendabilitySplit`), :func:`coverage_report`; by time (from
  ``Ratings.timestamps``, kept by the MovieLens loaders):
  :func:`leave_last_out`, :func:`temporal_split`
- validation and provenance: :class:`RatingsError` (a ``ValueError``) and its
  subclasses :class:`MalformedFileError`, :class:`ChecksumError`,
  :class:`DataNotFoundError` (in :mod:`~mfjax.data.errors`, which imports
  nothing); :func:`data_checksum`, :func:`file_sha256`
- pandas in / out (pandas optional, imported on use): :func:`from_pandas`
  (any hashable user / item ids, kept in the id maps), :func:`to_pandas`
- download helpers: :func:`download_file`, :func:`safe_extract`,
  :func:`default_cache_dir`

Layer: the bottom one.  Nothing here imports another mfjax package (numpy,
JAX for the pytree registration, the standard library); inside, the imports
go errors <- validation <- ratings <- {parsing, triplets, movielens,
synthetic, splits, frames}.

>>> ratings = synthetic(30, 20, rank=2, density=0.3, seed=0)
>>> train, test = split(ratings, fractions=(0.8, 0.2), seed=0)
>>> train.nnz + test.nnz == ratings.nnz, train.shape
(True, (30, 20))
"""

from mfjax.data.errors import ChecksumError, DataNotFoundError, DownloadError, MalformedFileError, RatingsError
from mfjax.data.ratings import IdMap, Ratings
from mfjax.data.validation import combine_checksums, data_checksum
from mfjax.data.download import default_cache_dir, download_file, file_sha256, safe_extract
from mfjax.data.movielens import MOVIELENS, download_movielens, find_movielens, load_movielens, load_movielens_part
from mfjax.data.parsing import (ParsedTriplets, parse_triplets, parse_triplets_arrow, parse_triplets_fast,
                                parse_triplets_precise)
from mfjax.data.triplets import (UnknownIdsWarning, apply_id_maps, load_triplets, load_triplets_part,
                                 triplets_to_ratings)
from mfjax.data import loaders  # noqa: F401  (the gathered loading API, ``mfjax.data.loaders``)
from mfjax.data.synthetic import LowRankTruth, synthetic
from mfjax.data.frames import from_pandas, to_pandas
from mfjax.data.side import (
    AGE_CODES,
    GENDERS,
    GENRES,
    N_OCCUPATIONS,
    NO_YEAR,
    Movies,
    UnknownGenreWarning,
    Users,
    align_side,
    align_to_ratings,
    load_movies,
    load_users,
)
from mfjax.data.splits import (
    SPLIT_METHODS,
    ExtendabilitySplit,
    check_row_ranges,
    coverage_report,
    entry_uniforms,
    extendability_split,
    hash_split,
    kfold,
    leave_last_out,
    row_ranges,
    split,
    temporal_split,
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
    "DownloadError",
    # loaders
    "MOVIELENS",
    "load_movielens",
    "load_movielens_part",
    "load_triplets",
    "load_triplets_part",
    "download_movielens",
    "find_movielens",
    "parse_triplets",
    "parse_triplets_arrow",
    "parse_triplets_fast",
    "parse_triplets_precise",
    "ParsedTriplets",
    "triplets_to_ratings",
    "apply_id_maps",
    "UnknownIdsWarning",
    "from_pandas",
    "to_pandas",
    # side tables (ML-1M movies.dat / users.dat)
    "load_movies",
    "load_users",
    "Movies",
    "Users",
    "align_side",
    "align_to_ratings",
    "UnknownGenreWarning",
    "GENRES",
    "GENDERS",
    "AGE_CODES",
    "N_OCCUPATIONS",
    "NO_YEAR",
    # synthetic
    "synthetic",
    "LowRankTruth",
    # splits
    "split",
    "SPLIT_METHODS",
    "hash_split",
    "entry_uniforms",
    "row_ranges",
    "check_row_ranges",
    "kfold",
    "extendability_split",
    "ExtendabilitySplit",
    "coverage_report",
    "leave_last_out",
    "temporal_split",
    # provenance and downloads
    "data_checksum",
    "combine_checksums",
    "file_sha256",
    "download_file",
    "safe_extract",
    "default_cache_dir",
]
