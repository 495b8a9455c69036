"""ML-1M side tables: movies.dat / users.dat loaders, their errors, and alignment to Ratings."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import mfjax as mf
from mfjax.data import (GENRES, MalformedFileError, RatingsError, UnknownGenreWarning, align_side,
                        align_to_ratings, load_movies, load_users)

MOVIES = ("1::Toy Story (1995)::Animation|Children's|Comedy\n"
          "73::Mis\xe9rables, Les (1995)::Drama|Musical\n"
          "\n"
          "570::Slingshot, The (K\xe5disbellan ) (1993)::Comedy|Drama\r\n"
          "9::No Year Here::Western\n")
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::98107-2117\n"


def _write(path, text, gz=False):
    data = text.encode("latin-1")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_movies_plain_and_gz_latin1(tmp_path, gz):
    _write(tmp_path / ("movies.dat.gz" if gz else "movies.dat"), MOVIES, gz)
    m = load_movies(tmp_path)
    assert m.ids.tolist() == [1, 73, 570, 9]
    assert m.titles[1] == "Misérables, Les (1995)" and m.titles[2] == "Slingshot, The (Kådisbellan ) (1993)"
    assert m.years.tolist() == [1995, 1995, 1993, mf.data.NO_YEAR]
    assert m.genres.shape == (4, 18) and m.genres.dtype == np.float32
    assert [GENRES[k] for k in np.flatnonzero(m.genres[0])] == ["Animation", "Children's", "Comedy"]
    assert m.genres[3].tolist() == [0.0] * 17 + [1.0]       # Western is the last column
    assert load_movies(tmp_path / ("movies.dat.gz" if gz else "movies.dat")).ids.tolist() == m.ids.tolist()


def test_users_fields(tmp_path):
    u = load_users(_write(tmp_path / "users.dat", USERS))
    assert u.ids.tolist() == [1, 2, 3]
    assert u.gender.tolist() == [0, 1, 1]                     # F = 0, M = 1
    assert u.age.tolist() == [1, 56, 25] and u.occupation.tolist() == [10, 16, 15]
    assert u.zip.tolist() == ["48067", "70072", "98107-2117"]


@pytest.mark.parametrize("line,needle", [
    ("5::Heat (1995)\n", "expected 3"),
    ("x::Heat (1995)::Action\n", "MovieID 'x' is not an integer"),
    ("5::::Action\n", "empty title"),
    ("1::Again (1990)::Drama\n", "repeats the id of line 1"),
])
def test_malformed_movie_lines_name_file_and_line(tmp_path, line, needle):
    p = _write(tmp_path / "movies.dat", "1::Toy Story (1995)::Comedy\n" + line)
    with pytest.raises(MalformedFileError, match=needle) as e:
        load_movies(p)
    assert str(p) in str(e.value) and "line 2" in str(e.value)


@pytest.mark.parametrize("line,needle", [
    ("4::M::25::15\n", "expected 5"),
    ("4::X::25::15::1\n", "gender 'X'"),
    ("4::M::30::15::1\n", "age code 30"),
    ("4::M::25::21::1\n", "occupation 21"),
    ("4::M::25::a::1\n", "occupation 'a' is not an integer"),
    ("1::M::25::1::1\n", "repeats the id of line 1"),
])
def test_malformed_user_lines_name_file_and_line(tmp_path, line, needle):
    p = _write(tmp_path / "users.dat", "1::F::1::10::48067\n" + line)
    with pytest.raises(MalformedFileError, match=needle) as e:
        load_users(p)
    assert str(p) in str(e.value) and "line 2" in str(e.value)


def test_unknown_genre_errors_by_default_and_warns_on_request(tmp_path):
    p = _write(tmp_path / "movies.dat", "1::A (1990)::Drama|Noir Western\n2::B (1991)::Comedy|Noir Western\n")
    with pytest.raises(MalformedFileError, match=r"line 1: unknown genre 'Noir Western'"):
        load_movies(p)
    with pytest.warns(UnknownGenreWarning, match=r"'Noir Western' \(2x\)"):
        m = load_movies(p, unknown_genres="warn")
    assert m.genres.sum(1).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="unknown_genres"):
        load_movies(p, unknown_genres="drop")


def test_no_genres_listed_is_an_all_zero_row(tmp_path):
    m = load_movies(_write(tmp_path / "movies.dat", "1::A (1990)::(no genres listed)\n"))
    assert m.genres.sum() == 0


def test_missing_file_lists_what_was_tried(tmp_path):
    with pytest.raises(mf.data.DataNotFoundError, match="movies.dat.gz"):
        load_movies(tmp_path)
    with pytest.raises(RatingsError, match="holds no users"):
        load_users(_write(tmp_path / "users.dat", "\n\n"))


def test_align_to_ratings_row_i_is_matrix_row_i(tmp_path):
    _write(tmp_path / "movies.dat", MOVIES)
    _write(tmp_path / "users.dat", USERS)
    # ratings over users {3, 1} and movies {570, 9, 1}: dense indices in sorted id order
    ratings = mf.data.load_triplets(_write(tmp_path / "r.csv", "3,570,4\n1,9,5\n1,1,3\n"))
    u, m = align_to_ratings(load_users(tmp_path), load_movies(tmp_path), ratings)
    assert u.ids.tolist() == ratings.row_ids.original.tolist() == [1, 3]
    assert m.ids.tolist() == ratings.col_ids.original.tolist() == [1, 9, 570]
    assert u.zip.tolist() == ["48067", "98107-2117"] and m.years.tolist() == [1995, -1, 1993]
    # entry k's features are u[rows[k]], m[cols[k]]
    k = int(np.flatnonzero(np.asarray(ratings.values) == 4)[0])
    assert u.ids[ratings.rows[k]] == 3 and m.ids[ratings.cols[k]] == 570


def test_align_names_missing_ids(tmp_path):
    m = load_movies(_write(tmp_path / "movies.dat", MOVIES))
    with pytest.raises(RatingsError, match=r"Movies: 2 of 3 ids are not in the table \(first: \[2, 3\]\)"):
        align_side(m, [1, 2, 3])
    no_maps = mf.data.Ratings.create([0], [0], [4.0])
    with pytest.raises(RatingsError, match="no id maps"):
        align_to_ratings(load_users(_write(tmp_path / "users.dat", USERS)), m, no_maps)


def test_real_ml1m_tables(ml1m_dir):
    m, u = load_movies(ml1m_dir), load_users(ml1m_dir)
    assert len(m.ids) == 3883 and len(u.ids) == 6040
    assert m.genres.shape == (3883, 18) and (m.genres.sum(1) >= 1).all()
    assert (m.years >= 1919).all() and (m.years <= 2000).all()
    assert int(m.genres[:, GENRES.index("Drama")].sum()) == 1603
    assert any("é" in t for t in m.titles)
    assert set(np.unique(u.age)) == set(mf.data.AGE_CODES) and u.occupation.max() == 20
    assert int(u.gender.sum()) == 4331                             # 4331 M, 1709 F
    ratings = mf.data.load_movielens("ml-1m", ml1m_dir)
    ua, ma = align_to_ratings(u, m, ratings)
    assert ua.ids.shape == (6040,) and ma.ids.shape == (3706,)
    assert (ma.ids == ratings.col_ids.original).all() and (ua.ids == ratings.row_ids.original).all()
