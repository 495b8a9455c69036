"""MovieLens 1M side tables: movies (title, year, genres) and users (gender, age, occupation, zip).

The ML-1M README describes two ``::``-separated, Latin-1 encoded files besides
``ratings.dat``::

    movies.dat   MovieID::Title::Genres            genres pipe-separated, from 18 names
    users.dat    UserID::Gender::Age::Occupation::Zip-code

- :func:`load_movies` -> :class:`Movies`: ids, titles (``str``), release year
  parsed from a trailing ``(YYYY)`` in the title (:data:`NO_YEAR` when
  absent), and a multi-hot genre matrix ``(n_movies, 18)`` over
  :data:`GENRES` in the README's order.
- :func:`load_users` -> :class:`Users`: ids, gender (``0 = "F"``, ``1 = "M"``,
  :data:`GENDERS`), age code (one of :data:`AGE_CODES`: the lower end of the
  README's age band), occupation ``0..20`` and the zip code as a string (some
  are ``"98107-2117"``).
- :func:`align_side` / :func:`align_to_ratings`: reorder a table so that its
  row ``i`` belongs to index ``i`` of a :class:`~mfjax.data.Ratings` id map
  (``row_ids`` for users, ``col_ids`` for movies).

Both loaders take a file (plain or gzip, detected by its magic number) or a
directory holding ``movies.dat`` / ``movies.dat.gz`` (``users.dat`` /
``users.dat.gz``).  Blank lines and a trailing ``\\r`` are ignored; any other
line that cannot be parsed raises :class:`~mfjax.data.MalformedFileError`
naming the file, the line number, the line and the problem.

Unknown genres.  A genre outside :data:`GENRES` is an error by default
(``unknown_genres="error"``): the 18 names are the whole ML-1M vocabulary,
so a new name means a different release or a damaged file, and silently
dropping it would change the feature vector.  ``unknown_genres="warn"``
drops such names with one :class:`UnknownGenreWarning` listing them and
their counts.  ``"(no genres listed)"`` (later releases) and an empty field
give an all-zero genre row.

References:
  F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and
  Context", ACM TiiS 5(4), 2015; the ML-1M README (GroupLens).  The data's
  license forbids redistribution: mfjax only reads it.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "movies.dat").write_bytes("1::Mis\\xe9rables, Les (1995)::Drama|Musical\\n".encode("latin-1"))
>>> m = load_movies(d)
>>> m.ids.tolist(), m.titles.tolist(), m.years.tolist(), [GENRES[k] for k in m.genres[0].nonzero()[0]]
([1], ['Misérables, Les (1995)'], [1995], ['Drama', 'Musical'])
"""

from __future__ import annotations

import collections
import pathlib
import re
import warnings
from typing import NamedTuple

import numpy as np

from mfjax.data.errors import DataNotFoundError, MalformedFileError, RatingsError
from mfjax.data.ratings import IdMap, Ratings
from mfjax.data.triplets import read_bytes

__all__ = [
    "GENRES",
    "GENDERS",
    "AGE_CODES",
    "N_OCCUPATIONS",
    "NO_YEAR",
    "Movies",
    "Users",
    "UnknownGenreWarning",
    "load_movies",
    "load_users",
    "align_side",
    "align_to_ratings",
]

#: The 18 ML-1M genres, in the README's order (column ``k`` of :attr:`Movies.genres`).
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western")
#: Gender codes: ``Users.gender == 0`` is ``"F"``, ``1`` is ``"M"``.
GENDERS = ("F", "M")
#: ML-1M age codes (lower end of the band: under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+).
AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
#: Occupations are coded ``0..20`` (0 = "other or not specified").
N_OCCUPATIONS = 21
#: :attr:`Movies.years` of a title without a trailing ``(YYYY)``.
NO_YEAR = -1

_NO_GENRES = "(no genres listed)"
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_GENRE_INDEX = {g: k for k, g in enumerate(GENRES)}


class UnknownGenreWarning(UserWarning):
    """Genre names outside :data:`GENRES` were dropped (``unknown_genres="warn"``)."""


class Movies(NamedTuple):
    """The movies table; row ``k`` of every field is movie ``ids[k]``.

    Attributes:
      ids: int64 (n,), original MovieIDs.
      titles: str array (n,), titles as in the file (Latin-1 decoded).
      years: int32 (n,), the year of a trailing ``(YYYY)``, :data:`NO_YEAR` if none.
      genres: float32 (n, 18), ``genres[k, g] = 1`` iff movie ``k`` has genre ``GENRES[g]``.
    """

    ids: np.ndarray
    titles: np.ndarray
    years: np.ndarray
    genres: np.ndarray


class Users(NamedTuple):
    """The users table; row ``k`` of every field is user ``ids[k]``.

    Attributes:
      ids: int64 (n,), original UserIDs.
      gender: int8 (n,), 0 = female, 1 = male (:data:`GENDERS`).
      age: int16 (n,), the age code (:data:`AGE_CODES`).
      occupation: int16 (n,), ``0..20``.
      zip: str array (n,), the zip code as written.
    """

    ids: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    occupation: np.ndarray
    zip: np.ndarray


# ----------------------------------------------------------------- reading
def _resolve(path_or_dir, stem: str) -> pathlib.Path:
    """The file itself, or ``<dir>/<stem>`` / ``<dir>/<stem>.gz``; DataNotFoundError lists what was tried."""
    p = pathlib.Path(path_or_dir).expanduser()
    if p.is_file():
        return p
    tried = [p / stem, p / (stem + ".gz")] if p.is_dir() else [p]
    for c in tried:
        if c.is_file():
            return c
    raise DataNotFoundError(f"{stem} not found: looked for {', '.join(str(c) for c in tried)}")


def _lines(path: pathlib.Path):
    """``(line number, text)`` of the non-blank lines, decoded as Latin-1 (never fails)."""
    text = read_bytes(path).decode("latin-1")
    for no, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield no, line


def _bad(path, no, line, why) -> MalformedFileError:
    return MalformedFileError(f"{path}, line {no}: {why}: {line!r}")


def _int(path, no, line, field: str, name: str) -> int:
    try:
        return int(field)
    except ValueError:
        raise _bad(path, no, line, f"{name} {field!r} is not an integer") from None


def _check_unique(path, ids: list[int], lines: list[int]) -> None:
    seen: dict[int, int] = {}
    for i, no in zip(ids, lines):
        if i in seen:
            raise MalformedFileError(f"{path}, line {no}: id {i} repeats the id of line {seen[i]}")
        seen[i] = no


def load_movies(path_or_dir, *, unknown_genres: str = "error") -> Movies:
    """Read ``movies.dat`` (``MovieID::Title::Genres``) into a :class:`Movies` table.

    Args:
      path_or_dir: the file (plain or ``.gz``) or a directory holding
        ``movies.dat`` or ``movies.dat.gz``.
      unknown_genres: ``"error"`` (default) raises on a genre outside
        :data:`GENRES`; ``"warn"`` drops it with an :class:`UnknownGenreWarning`.

    Returns:
      :class:`Movies` in file order.  ML-1M: 3883 movies, ids 1..3952.

    Raises:
      DataNotFoundError: no such file.
      MalformedFileError: a line without three ``::`` fields, a non-integer
        or repeated id, an empty title, or (by default) an unknown genre;
        the message names the file and the line.
    """
    if unknown_genres not in ("error", "warn"):
        raise ValueError(f"unknown_genres must be 'error' or 'warn', got {unknown_genres!r}")
    path = _resolve(path_or_dir, "movies.dat")
    ids, titles, years, rows, nos = [], [], [], [], []
    unknown: collections.Counter = collections.Counter()
    for no, line in _lines(path):
        parts = line.split("::")
        if len(parts) < 3:
            raise _bad(path, no, line, f"expected 3 '::'-separated fields (MovieID::Title::Genres), got {len(parts)}")
        # a title never holds "::" in ML-1M; if one does, the first and last fields are still id and genres
        mid = _int(path, no, line, parts[0].strip(), "MovieID")
        title, gfield = "::".join(parts[1:-1]).strip(), parts[-1].strip()
        if not title:
            raise _bad(path, no, line, "empty title")
        row = np.zeros(len(GENRES), np.float32)
        if gfield and gfield != _NO_GENRES:
            for g in gfield.split("|"):
                g = g.strip()
                k = _GENRE_INDEX.get(g)
                if k is None:
                    if unknown_genres == "error":
                        raise _bad(path, no, line, f"unknown genre {g!r} (the 18 ML-1M genres are "
                                   f"{', '.join(GENRES)}; unknown_genres='warn' drops unknown names)")
                    unknown[g] += 1
                else:
                    row[k] = 1.0
        y = _YEAR.search(title)
        ids.append(mid)
        titles.append(title)
        years.append(int(y.group(1)) if y else NO_YEAR)
        rows.append(row)
        nos.append(no)
    if not ids:
        raise RatingsError(f"{path} holds no movies")
    _check_unique(path, ids, nos)
    if unknown:
        warnings.warn(f"{path}: dropped unknown genres " + ", ".join(f"{g!r} ({c}x)" for g, c in unknown.most_common()),
                      UnknownGenreWarning, stacklevel=2)
    return Movies(np.asarray(ids, np.int64), np.asarray(titles, dtype=str), np.asarray(years, np.int32),
                  np.stack(rows))


def load_users(path_or_dir) -> Users:
    """Read ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``) into a :class:`Users` table.

    Args:
      path_or_dir: the file (plain or ``.gz``) or a directory holding
        ``users.dat`` or ``users.dat.gz``.

    Returns:
      :class:`Users` in file order.  ML-1M: 6040 users, ids 1..6040.

    Raises:
      DataNotFoundError: no such file.
      MalformedFileError: a line without exactly five ``::`` fields, a
        non-integer or repeated id, a gender other than ``M`` / ``F``, an age
        not in :data:`AGE_CODES`, an occupation outside ``0..20``; the message
        names the file and the line.
    """
    path = _resolve(path_or_dir, "users.dat")
    cols: dict[str, list] = {"ids": [], "gender": [], "age": [], "occupation": [], "zip": []}
    nos = []
    for no, line in _lines(path):
        parts = [p.strip() for p in line.split("::")]
        if len(parts) != 5:
            raise _bad(path, no, line, "expected 5 '::'-separated fields "
                       f"(UserID::Gender::Age::Occupation::Zip-code), got {len(parts)}")
        uid = _int(path, no, line, parts[0], "UserID")
        if parts[1] not in GENDERS:
            raise _bad(path, no, line, f"gender {parts[1]!r} is not one of {GENDERS}")
        age = _int(path, no, line, parts[2], "age")
        if age not in AGE_CODES:
            raise _bad(path, no, line, f"age code {age} is not one of {AGE_CODES}")
        occ = _int(path, no, line, parts[3], "occupation")
        if not 0 <= occ < N_OCCUPATIONS:
            raise _bad(path, no, line, f"occupation {occ} is outside 0..{N_OCCUPATIONS - 1}")
        for k, v in zip(cols, (uid, GENDERS.index(parts[1]), age, occ, parts[4])):
            cols[k].append(v)
        nos.append(no)
    if not nos:
        raise RatingsError(f"{path} holds no users")
    _check_unique(path, cols["ids"], nos)
    return Users(np.asarray(cols["ids"], np.int64), np.asarray(cols["gender"], np.int8),
                 np.asarray(cols["age"], np.int16), np.asarray(cols["occupation"], np.int16),
                 np.asarray(cols["zip"], dtype=str))


# --------------------------------------------------------------- alignment
def align_side(table, ids):
    """``table`` (:class:`Movies` or :class:`Users`) reordered so that row ``i`` is the entity ``ids[i]``.

    Args:
      table: a side table (any NamedTuple whose first field ``ids`` holds the
        original ids and whose fields all have the entities on axis 0).
      ids: an :class:`~mfjax.data.IdMap` (e.g. ``ratings.col_ids``) or the
        original ids in the wanted order.

    Returns:
      a table of the same type with ``len(ids)`` rows and ``out.ids == ids``.

    Raises:
      RatingsError: naming the ids (first few and how many) missing from the table.

    >>> t = Users(np.array([5, 2]), np.array([1, 0]), np.array([25, 1]), np.array([3, 4]), np.array(["a", "b"]))
    >>> align_side(t, IdMap([2, 5])).age.tolist()
    [1, 25]
    """
    want = np.asarray(ids.original if isinstance(ids, IdMap) else ids).reshape(-1)
    index, known = IdMap(table.ids).lookup(want)
    if not known.all():
        miss = want[~known]
        raise RatingsError(f"{type(table).__name__}: {miss.size} of {want.size} ids are not in the table "
                           f"(first: {miss[:5].tolist()})")
    return type(table)(*(np.asarray(f)[index] for f in table))


def align_to_ratings(users: Users, movies: Movies, ratings: Ratings) -> tuple[Users, Movies]:
    """``(users, movies)`` aligned to ``ratings``: user row ``i`` is matrix row ``i``, movie row ``j`` column ``j``.

    Raises:
      RatingsError: ``ratings`` has no id maps (``row_ids`` / ``col_ids``),
        or one of its ids is missing from a table.
    """
    if ratings.row_ids is None or ratings.col_ids is None:
        raise RatingsError("ratings has no id maps (row_ids / col_ids): cannot tell which user or movie a row is; "
                           "load it with mfjax.data.load_movielens or load_triplets")
    return align_side(users, ratings.row_ids), align_side(movies, ratings.col_ids)
