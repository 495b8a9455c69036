"""ML-1M side features for DMF's branches (``DMFConfig.side_dims``): users.dat and movies.dat encoded.

The tables are read by :func:`mfjax.data.load_users` / :func:`mfjax.data.load_movies`
and aligned to the rating matrix by :func:`mfjax.data.align_to_ratings`
(user row ``i`` = matrix row ``i``, movie row ``j`` = column ``j``); this
module only encodes them as the dense inputs of
:class:`~mfjax.models.dmf.SideFeatures`:

- a user (29): ``[gender (1 = M), one-hot age band (7, AGE_CODES), one-hot occupation (21)]``;
- a movie (19): ``[genres multi-hot (18, GENRES), year scaled to [0, 1]]``.

Why these.  Age and occupation are nominal codes (occupation 0..20 has no
order; the age codes are band ends), so they enter one-hot: the first layer
``f S_1`` then learns one row per band / occupation, which a single scaled
number cannot express.  The zip code is left out (3,439 distinct values for
6,040 users: one-hot would be almost an id, which is exactly what an unseen
user does not have).  The release year, already parsed from the title, is
min-max scaled over the movies that have one (a title without ``(YYYY)``
gets the mean of the scaled years): it is a known popularity / rating-level
signal on MovieLens and costs one input.  Every feature is in ``[0, 1]``.

No rating enters the features, so they leak nothing about any split.

>>> import numpy as np
>>> from mfjax.data import Users
>>> f = user_features(Users(np.array([1, 2]), np.array([0, 1], np.int8), np.array([1, 56], np.int16),
...                         np.array([0, 20], np.int16), np.array(["a", "b"])))
>>> f.shape, f[1, [0, 7, 8 + 20]].tolist()   # gender M, age band 56+, occupation 20
((2, 29), [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.data.side import AGE_CODES, GENRES, N_OCCUPATIONS, NO_YEAR, Movies, Users, align_to_ratings
from mfjax.models.dmf import SideFeatures

__all__ = ["USER_FEATURES", "MOVIE_FEATURES", "user_features", "movie_features", "movielens_side_features"]

#: The columns of :func:`user_features`.
USER_FEATURES = ("gender:M", *(f"age:{a}" for a in AGE_CODES), *(f"occupation:{k}" for k in range(N_OCCUPATIONS)))
#: The columns of :func:`movie_features`.
MOVIE_FEATURES = (*(f"genre:{g}" for g in GENRES), "year")


def _one_hot(codes, vocabulary) -> np.ndarray:
    """``(len(codes), len(vocabulary))`` float32 one-hot rows; a code outside ``vocabulary`` raises."""
    codes = np.asarray(codes, np.int64)
    voc = np.asarray(vocabulary, np.int64)
    pos = np.searchsorted(voc, codes)
    ok = (pos < voc.size) & (voc[np.minimum(pos, voc.size - 1)] == codes)
    if not ok.all():
        raise ValueError(f"codes {sorted(set(codes[~ok].tolist()))[:5]} are not in {voc.tolist()}")
    out = np.zeros((codes.size, voc.size), np.float32)
    out[np.arange(codes.size), pos] = 1.0
    return out


def user_features(users: Users) -> np.ndarray:
    """``(n_users, 29)`` float32 rows in :data:`USER_FEATURES` order (gender, one-hot age, one-hot occupation)."""
    g = np.asarray(users.gender, np.float32)[:, None]
    return np.concatenate([g, _one_hot(users.age, AGE_CODES), _one_hot(users.occupation, range(N_OCCUPATIONS))],
                          axis=1)


def movie_features(movies: Movies) -> np.ndarray:
    """``(n_movies, 19)`` float32 rows in :data:`MOVIE_FEATURES` order (genres, scaled year).

    ``year = (y - min y) / (max y - min y)`` over the movies with a year
    (0 when all share one); a movie without a year gets the mean of the others.
    """
    g = np.asarray(movies.genres, np.float32)
    if g.ndim != 2 or g.shape[1] != len(GENRES):
        raise ValueError(f"movies.genres must be (n, {len(GENRES)}), got {g.shape}")
    y = np.asarray(movies.years, np.float64)
    known = y != NO_YEAR
    year = np.zeros(y.shape, np.float64)
    if known.any():
        lo, hi = y[known].min(), y[known].max()
        year[known] = 0.0 if hi == lo else (y[known] - lo) / (hi - lo)
        year[~known] = year[known].mean()
    return np.concatenate([g, year.astype(np.float32)[:, None]], axis=1)


def movielens_side_features(users: Users, movies: Movies, ratings: Ratings) -> SideFeatures:
    """:class:`~mfjax.models.dmf.SideFeatures` of ``ratings``' rows (users) and columns (movies).

    The tables are aligned with :func:`mfjax.data.align_to_ratings` (raises
    when ``ratings`` has no id maps or an id is missing from a table); pass
    ``DMFConfig(side_dims=(29, 19))``.
    """
    u, mv = align_to_ratings(users, movies, ratings)
    return SideFeatures(user_features(u), movie_features(mv))
