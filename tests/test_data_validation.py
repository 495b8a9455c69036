"""Validation: every bad input raises RatingsError naming the problem and the value; checksums."""

import hashlib

import numpy as np
import pytest

from mfjax.data import (
    ChecksumError,
    DataNotFoundError,
    MalformedFileError,
    Ratings,
    RatingsError,
    data_checksum,
    file_sha256,
)
from mfjax.data.download import check_archive_names, verify_file
from mfjax.data.validation import check_fractions, handle_duplicates


def test_error_hierarchy():
    assert issubclass(RatingsError, ValueError)
    for cls in (MalformedFileError, ChecksumError, DataNotFoundError):
        assert issubclass(cls, RatingsError)
    assert issubclass(DataNotFoundError, FileNotFoundError)


@pytest.mark.parametrize(
    "rows,cols,vals,shape,kw,match",
    [
        ([0, 1], [0, 1], [1.0, np.inf], None, {}, r"non-finite rating inf at entry 1 \(row 1, column 1\)"),
        ([0, 1], [0, 1], [np.nan, 1.0], None, {}, "non-finite rating nan at entry 0"),
        ([0, 1], [0, -4], [1.0, 2.0], None, {}, "negative column id -4 at entry 1"),
        ([0, 1], [0, 7], [1.0, 2.0], (2, 5), {}, r"column id 7 at entry 1 is out of range for shape \(2, 5\)"),
        ([0, 1], [0, 1], [1.0, 2.0], (2, 0), {}, "shape must be two positive integers"),
        ([0, 1, 1], [0, 1], [1.0, 2.0, 3.0], None, {}, "disagree in length: 3, 2, 3"),
        ([[0, 1]], [[0, 1]], [[1.0, 2.0]], None, {}, "must be 1-d"),
        ([0.5, 1], [0, 1], [1.0, 2.0], None, {}, "row ids must be integers"),
        ([0, 1], [0, 1], ["a", "b"], None, {}, "values must be numeric"),
        ([0, 1], [0, 1], [1.0, 6.0], None, {"rating_scale": (1, 5)}, r"rating 6.0 at entry 1 .* outside the rating scale \[1, 5\]"),
        ([0, 0], [1, 1], [1.0, 2.0], None, {}, r"duplicate \(row, column\) pair \(0, 1\) at entry 1"),
        ([], [], [], None, {}, "empty data"),
    ],
)
def test_bad_arrays(rows, cols, vals, shape, kw, match):
    with pytest.raises(RatingsError, match=match):
        Ratings.create(rows, cols, vals, shape, **kw)


def test_duplicate_aggregation_brute_force():
    rng = np.random.default_rng(0)
    r = rng.integers(0, 4, 60)
    c = rng.integers(0, 3, 60)
    v = rng.normal(size=60)
    for mode in ("mean", "sum", "last"):
        rr, cc, vv = handle_duplicates(r, c, v, (4, 3), mode)
        for a, b, x in zip(rr, cc, vv):
            sel = v[(r == a) & (c == b)]
            ref = {"mean": sel.mean(), "sum": sel.sum(), "last": sel[-1]}[mode]
            assert x == pytest.approx(ref)
        assert len(rr) == len({(a, b) for a, b in zip(r, c)})
    with pytest.raises(ValueError, match="duplicates must be"):
        handle_duplicates(r, c, v, (4, 3), "first")


def test_check_fractions():
    np.testing.assert_allclose(check_fractions((0.75, 0.05, 0.2)), [0.75, 0.05, 0.2])
    with pytest.raises(ValueError, match=r"sum to 1, got \(0.5, 0.4\)"):
        check_fractions((0.5, 0.4))


def test_data_checksum():
    r = Ratings.create([0, 1, 2], [2, 0, 1], [1.0, 2.0, 3.0])
    h = data_checksum(r)
    assert h.startswith("sha256:") and len(h) == 7 + 64
    assert data_checksum(r.astype(np.float64)) == h  # dtype independent
    assert data_checksum(r.device_put()) == h  # host or device
    assert data_checksum(r.with_values(np.array([1.0, 2.0, 3.5], np.float32))) != h
    assert data_checksum(r.select([1, 0, 2])) != h  # order sensitive (documented)
    assert data_checksum(r.select([1, 0, 2]).sort()) == data_checksum(r.sort())
    bigger = Ratings.create([0, 1, 2], [2, 0, 1], [1.0, 2.0, 3.0], shape=(4, 4))
    assert data_checksum(bigger) != h  # shape is part of it


def test_file_checksums(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello")
    assert file_sha256(p) == hashlib.sha256(b"hello").hexdigest()
    verify_file(p, md5=hashlib.md5(b"hello").hexdigest(), size=5)
    with pytest.raises(ChecksumError, match=r"MD5 mismatch .* expected 0+, got 5d41"):
        verify_file(p, md5="0" * 32)
    with pytest.raises(ChecksumError, match="size mismatch"):
        verify_file(p, size=6)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "D:\\x", "", "a\x00b"])
def test_unsafe_archive_names(name):
    with pytest.raises(RatingsError, match="unsafe"):
        check_archive_names(["ok/file", name], "a.zip")


def test_safe_archive_names():
    check_archive_names(["ml-1m/", "ml-1m/ratings.dat", "ml-1m/..hidden"], "a.zip")
