"""Reliability catalogue of the data layer (issue 12): each bad input gets a clear error or a documented handling."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax.data as md
from mfjax.data import MalformedFileError, Ratings, RatingsError, load_triplets


def _file(tmp_path, data: bytes, name="r.csv"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------ headers and BOM (#5)
def test_utf8_bom_is_stripped_not_a_header(tmp_path):
    r = load_triplets(_file(tmp_path, b"\xef\xbb\xbf1,1,4\n1,2,3\n2,1,5\n"))
    assert r.nnz == 3 and sorted(r.values.tolist()) == [3.0, 4.0, 5.0]
    r = load_triplets(_file(tmp_path, b"\xef\xbb\xbfuser,item,rating\n1,1,4\n2,1,5\n"))
    assert r.nnz == 2


def test_utf16_file_is_named(tmp_path):
    p = _file(tmp_path, "1,1,4\n".encode("utf-16"))
    with pytest.raises(MalformedFileError, match="UTF-16"):
        load_triplets(p)


def test_malformed_first_line_is_line_1_not_a_header(tmp_path):
    p = _file(tmp_path, b"1,x,4\n1,2,3\n2,1,5\n")
    with pytest.raises(MalformedFileError, match=r"r\.csv, line 1: item id 'x'"):
        load_triplets(p)


def test_explicit_header_overrides_detection(tmp_path):
    p = _file(tmp_path, b"1,1,4\n1,2,3\n2,1,5\n")
    assert load_triplets(p, header=True).nnz == 2
    assert load_triplets(p, header=False).nnz == 3
    with pytest.raises(MalformedFileError, match="line 1"):
        load_triplets(_file(tmp_path, b"u,i,r\n1,2,3\n"), header=False)
    with pytest.raises(ValueError, match="header must be"):
        load_triplets(p, header="yes")


# ------------------------------------------------------------------ rating scale (#7)
def test_rating_scale_rejects_values_naming_value_and_line(tmp_path):
    p = _file(tmp_path, b"1,1,4\n1,2,7\n2,1,-3\n")
    with pytest.raises(RatingsError, match=r"line 2: rating 7.0 is outside the rating scale \[1, 5\]"):
        load_triplets(p, rating_scale=(1, 5))
    r = load_triplets(p)
    assert r.rating_scale == (-3.0, 7.0)  # the data's own scale, for clipping


def test_observed_scale_of_half_steps():
    r = Ratings.create([0, 1, 2], [0, 0, 1], [0.5, 3.5, 5.0])
    assert r.rating_scale == (0.5, 5.0)


# ------------------------------------------------------------------ test files in the training id maps (#2)
def test_test_file_reuses_training_id_maps(tmp_path):
    train = load_triplets(_file(tmp_path, b"10,100,4\n20,200,3\n30,100,5\n", "train.csv"))
    test = load_triplets(_file(tmp_path, b"30,200,2\n10,100,1\n", "test.csv"),
                         id_maps=(train.row_ids, train.col_ids))
    assert test.shape == train.shape
    assert train.row_ids.to_original(test.rows).tolist() == [30, 10]
    assert train.col_ids.to_original(test.cols).tolist() == [200, 100]
    # its own maps would give other indices: (30 -> 1, 10 -> 0) in a 2-user map
    own = load_triplets(tmp_path / "test.csv")
    assert own.shape == (2, 2) and own.rows.tolist() != test.rows.tolist()


def test_unknown_ids_are_reported_or_dropped(tmp_path):
    train = load_triplets(_file(tmp_path, b"10,100,4\n20,200,3\n", "train.csv"))
    p = _file(tmp_path, b"10,100,1\n99,100,2\n10,555,3\n98,100,2\n", "test.csv")
    maps = (train.row_ids, train.col_ids)
    with pytest.raises(RatingsError) as e:
        load_triplets(p, id_maps=maps)
    msg = str(e.value)
    assert "3 of 4 ratings" in msg and "2 unknown user ids (98, 99)" in msg and "1 unknown item ids (555)" in msg
    assert "line 2" in msg and "unknown='drop'" in msg
    with pytest.warns(md.UnknownIdsWarning, match="3 of 4 ratings"):
        kept = load_triplets(p, id_maps=maps, unknown="drop")
    assert kept.nnz == 1 and kept.values.tolist() == [1.0]
    with pytest.raises(ValueError, match="unknown must be"):
        load_triplets(p, id_maps=maps, unknown="remap")


def test_missing_id_maps_are_refused(tmp_path):
    s = Ratings.create([0, 1], [0, 1], [4.0, 3.0])  # built from indices: no id maps
    with pytest.raises(RatingsError, match="id map is None"):
        load_triplets(_file(tmp_path, b"1,1,4\n"), id_maps=(s.row_ids, s.col_ids))


# ------------------------------------------------------------------ direct construction and create (#2, #5)
def test_direct_ratings_out_of_shape_raises():
    with pytest.raises(RatingsError, match=r"row id 3 at entry 1 is out of range for shape \(3, 2\)"):
        Ratings(np.array([0, 3], np.int32), np.array([0, 1], np.int32), np.array([1.0, 2.0]), (3, 2))
    with pytest.raises(RatingsError, match="column id -1"):
        Ratings(np.array([0], np.int32), np.array([-1], np.int32), np.array([1.0]), (3, 2))
    with pytest.raises(RatingsError, match="disagree|one length"):
        Ratings(np.array([0, 1]), np.array([0]), np.array([1.0]), (3, 2))


def test_direct_ratings_inside_jit_and_transforms_are_unchecked_but_valid():
    r = Ratings.create([0, 1], [1, 0], [4.0, 3.0]).device_put()
    out = jax.jit(lambda q: q.with_values(q.values * 2))(r)
    assert isinstance(out, Ratings) and out.values.tolist() == [8.0, 6.0]
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(r)
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(r)[0]]
    assert paths == [".rows", ".cols", ".values"]


@pytest.mark.parametrize("shape", [(2.5, 3), (True, 3), (0, 3), (-1, 3), (3,), (2**31, 3), "ab", (1 + 2j, 3)])
def test_non_integral_or_bad_shapes(shape):
    with pytest.raises(RatingsError, match="shape"):
        Ratings.create([0], [0], [3.0], shape)


def test_integral_float_shape_is_accepted():
    assert Ratings.create([0], [0], [3.0], (2.0, 3.0)).shape == (2, 3)


@pytest.mark.parametrize("values,match", [
    (np.array([1 + 1j, 2.0]), "real numbers"),
    (np.array([True, False]), "numeric"),
    (np.array([np.nan, 2.0]), "non-finite rating nan at entry 0"),
    (np.array([np.inf, 2.0]), "non-finite rating inf"),
])
def test_complex_boolean_and_nan_values(values, match):
    with pytest.raises(RatingsError, match=match):
        Ratings.create([0, 1], [0, 0], values)


def test_boolean_and_fractional_ids():
    with pytest.raises(RatingsError, match="row ids must be integers, got dtype bool"):
        Ratings.create(np.array([True, False]), [0, 1], [1.0, 2.0])
    with pytest.raises(RatingsError, match="column ids must be integers"):
        Ratings.create([0, 1], [0.5, 1.0], [1.0, 2.0])


def test_nan_and_inf_ratings_in_files(tmp_path):
    with pytest.raises(RatingsError, match="line 2: non-finite rating nan"):
        load_triplets(_file(tmp_path, b"1,1,4\n1,2,nan\n"))


def test_ids_at_integer_limits(tmp_path):
    big = 2**63 - 1
    r = load_triplets(_file(tmp_path, f"{big},1,4\n0,1,3\n".encode()))
    assert r.shape == (2, 1) and r.row_ids.original.tolist() == [0, big]
    with pytest.raises(MalformedFileError, match="line 1: user id 9223372036854775808 does not fit"):
        load_triplets(_file(tmp_path, f"{big + 1},1,4\n0,1,3\n".encode()))
    with pytest.raises(RatingsError, match="int32"):  # indices are int32: no silent wrap-around
        Ratings.create([2**31], [0], [1.0])


def test_duplicates_are_named_or_aggregated(tmp_path):
    p = _file(tmp_path, b"1,1,4\n2,1,3\n1,1,2\n")
    with pytest.raises(RatingsError, match=r"duplicate \(user, item\) pair \(1, 1\) on lines 1 and 3"):
        load_triplets(p)
    assert sorted(load_triplets(p, duplicates="mean").values.tolist()) == [3.0, 3.0]
    with pytest.raises(RatingsError, match=r"duplicate \(row, column\) pair \(0, 0\)"):
        Ratings.create([0, 0], [0, 0], [1.0, 2.0])


def test_shape_mismatch():
    with pytest.raises(RatingsError, match="out of range for shape"):
        Ratings.create([0, 5], [0, 1], [1.0, 2.0], (3, 3))
    with pytest.raises(RatingsError, match="row_ids maps 3 ids but the shape"):
        Ratings(np.array([0]), np.array([0]), np.array([1.0]), (2, 2), md.IdMap([1, 2, 3]))
    a = Ratings.create([0], [0], [1.0], (2, 2))
    b = Ratings.create([0], [0], [1.0], (3, 2))
    with pytest.raises(RatingsError, match="shapes disagree"):
        md.coverage_report(a, b)


# ------------------------------------------------------------------ splits
def test_zero_size_split_part_is_empty_and_valid():
    r = md.synthetic(20, 10, rank=2, density=0.5, seed=0)
    full, empty = md.split(r, (1.0, 0.0))
    assert full.nnz == r.nnz and empty.nnz == 0 and empty.shape == r.shape
    assert empty.rating_scale is None and md.data_checksum(empty).startswith("sha256:")
    with pytest.raises(ValueError, match="sum to 1"):
        md.split(r, (0.5, 0.4))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        md.split(r, (1.5, -0.5))


def test_empty_rows_are_reported_by_splits():
    r = Ratings.create([0, 0, 1, 2], [0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0], (4, 3))  # row 3, column 2 empty
    train, test = md.split(r, (0.5, 0.5), seed=0)
    rep = md.coverage_report(train, test)
    assert 3 in rep["rows_without_train"].tolist() and 2 in rep["cols_without_train"].tolist()
    assert rep["cold_entries"][0] == int(np.count_nonzero(
        (train.row_counts()[test.rows] == 0) | (train.col_counts()[test.cols] == 0)))


def test_no_warning_on_clean_load(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = load_triplets(_file(tmp_path, b"user,item,rating\n1,1,4\n"))
    assert r.nnz == 1 and jnp.asarray(r.values).dtype == jnp.float32
