"""Timestamps (parsing, Ratings, loaders) and the time-based splits leave_last_out / temporal_split."""

import jax
import numpy as np
import pytest

from mfjax.data import (
    MalformedFileError,
    Ratings,
    RatingsError,
    leave_last_out,
    load_movielens,
    load_triplets,
    parse_triplets,
    parse_triplets_fast,
    parse_triplets_precise,
    split,
    temporal_split,
)


# ------------------------------------------------------------------ parsing and loading
def test_fast_and_precise_timestamps_agree():
    rng = np.random.default_rng(0)
    u, i = rng.integers(1, 10**6, 300), rng.integers(1, 400, 300)
    v, t = rng.integers(1, 11, 300) / 2, rng.integers(9 * 10**8, 2 * 10**9, 300)
    data = "".join(f"{a}::{b}::{c}::{d}\n" for a, b, c, d in zip(u, i, v, t)).encode()
    fast = parse_triplets_fast(data, "::", False, timestamps=True)
    slow = parse_triplets_precise(data, "::", False, "x", timestamps=True)
    assert fast is not None
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.timestamps, t)
    assert parse_triplets(data).timestamps is None  # only on request
    # a fifth field after the timestamp is fine
    five = parse_triplets(b"1,2,3,40,x\n2,2,4,50,y\n", timestamps=True)
    assert five.timestamps.tolist() == [40, 50]


def test_bad_timestamps_are_named_and_ignored_unless_asked_for():
    with pytest.raises(MalformedFileError, match="line 2: timestamp '12x' is not a 64-bit integer"):
        parse_triplets(b"1,2,3,10\n2,2,4,12x\n", timestamps=True)
    with pytest.raises(MalformedFileError, match="no fourth field"):
        parse_triplets(b"1,2,3\n2,2,4\n", timestamps=True)
    assert parse_triplets(b"1,2,3,10\n2,2,4,12x\n").values.tolist() == [3.0, 4.0]


def test_load_triplets_keeps_timestamps_through_id_maps_and_duplicates(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"7,30,4,100\n3,30,2,50\n7,10,5,70\n7,30,1,60\n")
    r = load_triplets(p, timestamps=True, duplicates="mean")
    got = {(int(a), int(b)): int(t) for a, b, t in zip(r.rows, r.cols, r.timestamps)}
    assert got == {(1, 1): 100, (0, 1): 50, (1, 0): 70}  # the duplicate keeps its latest time
    last = load_triplets(p, timestamps=True, duplicates="last")
    assert {(int(a), int(b)): int(t) for a, b, t in zip(last.rows, last.cols, last.timestamps)}[(1, 1)] == 60
    assert load_triplets(p, duplicates="mean").timestamps is None
    q = tmp_path / "t.csv"
    q.write_bytes(b"3,10,1,5\n9,10,2,6\n")
    with pytest.warns(UserWarning, match="dropped"):
        test = load_triplets(q, timestamps=True, id_maps=(r.row_ids, r.col_ids), unknown="drop")
    assert test.timestamps.tolist() == [5]


# ------------------------------------------------------------------ the container
def test_ratings_carry_timestamps_through_transforms_and_jit():
    r = Ratings.create([0, 1, 1], [2, 0, 2], [4.0, 3.0, 5.0], timestamps=[30, 10, 20])
    assert r.select(np.array([2, 0])).timestamps.tolist() == [20, 30]
    assert r.T.timestamps.tolist() == [30, 10, 20] and r.sort(by="col").timestamps.tolist() == [10, 30, 20]
    assert r.with_values(r.values * 2).timestamps.tolist() == [30, 10, 20]
    assert len(jax.tree_util.tree_leaves(r)) == 4
    out = jax.jit(lambda q: q.with_values(q.values + q.timestamps))(r.device_put())
    assert out.values.tolist() == [34.0, 13.0, 25.0] and out.timestamps.tolist() == [30, 10, 20]
    plain = Ratings.create([0], [0], [1.0])
    assert plain.timestamps is None and len(jax.tree_util.tree_leaves(plain)) == 3
    # datetime64 is stored as int64 seconds; splits keep the timestamps
    d = Ratings.create([0, 1], [0, 0], [1.0, 2.0], timestamps=np.array(["2000-01-01", "2000-01-02"], "datetime64[D]"))
    assert d.timestamps.tolist() == [946684800, 946771200]
    assert sorted(np.concatenate([p.timestamps for p in split(r, (0.5, 0.5))]).tolist()) == [10, 20, 30]


@pytest.mark.parametrize("ts,match", [([1, 2], "2 entries but there are 3"), ([1.0, np.nan, 2.0], "non-finite"),
                                      ([True, False, True], "integers or real"), ([[1, 2, 3]], "1-d"),
                                      (["a", "b", "c"], "integers or real")])
def test_bad_timestamps_in_ratings(ts, match):
    with pytest.raises(RatingsError, match=match):
        Ratings.create([0, 1, 1], [2, 0, 2], [4.0, 3.0, 5.0], timestamps=ts)
    with pytest.raises(RatingsError, match=match):
        Ratings(np.array([0, 1, 1]), np.array([2, 0, 2]), np.array([4.0, 3.0, 5.0]), (2, 3), timestamps=ts)


# ------------------------------------------------------------------ splits
def random_timed(seed, m=12, n=15, density=0.5, distinct_times=6):
    rng = np.random.default_rng(seed)
    rr, cc = np.nonzero(rng.random((m, n)) < density)
    perm = rng.permutation(rr.size)  # entries in no particular order
    rr, cc = rr[perm], cc[perm]
    t = rng.integers(0, distinct_times, rr.size)  # few distinct times: many ties
    return Ratings.create(rr, cc, rng.integers(1, 6, rr.size).astype(float), (m, n), timestamps=t)


def ref_leave_last_out(r, n):
    test = set()
    for u in range(r.shape[0]):
        ent = [(int(t), int(c)) for rr, c, t in zip(r.rows, r.cols, r.timestamps) if rr == u]
        if len(ent) > n:
            test |= {(u, c) for t, c in sorted(ent)[-n:]}
    return test


def _pairs(r):
    return {(int(a), int(b)) for a, b in zip(r.rows, r.cols)}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 3])
def test_leave_last_out_matches_reference(seed, n):
    r = random_timed(seed)
    train, test = leave_last_out(r, n)
    assert _pairs(test) == ref_leave_last_out(r, n)
    assert train.nnz + test.nnz == r.nnz and not (_pairs(train) & _pairs(test))
    counts = r.row_counts()
    np.testing.assert_array_equal(test.row_counts(), np.where(counts > n, n, 0))
    # every test entry is at least as late as every training entry of its user
    for u in range(r.shape[0]):
        tr_t, te_t = train.timestamps[train.rows == u], test.timestamps[test.rows == u]
        if te_t.size and tr_t.size:
            assert tr_t.max() <= te_t.min()
    # independent of the order of the entries (ties broken by the column)
    shuffled = r.select(np.random.default_rng(9).permutation(r.nnz))
    assert _pairs(leave_last_out(shuffled, n)[1]) == _pairs(test)


def test_leave_last_out_small_users_stay_in_train_and_errors():
    r = Ratings.create([0, 0, 1], [0, 1, 0], [1.0, 2.0, 3.0], timestamps=[5, 5, 1])
    train, test = leave_last_out(r)
    assert _pairs(test) == {(0, 1)} and _pairs(train) == {(0, 0), (1, 0)}  # tie at t=5: larger column is later
    with pytest.raises(RatingsError, match="no timestamps"):
        leave_last_out(Ratings.create([0], [0], [1.0]))
    with pytest.raises(ValueError, match="positive integer"):
        leave_last_out(r, 0)


@pytest.mark.parametrize("seed", range(3))
def test_temporal_split_cutoff_and_fraction(seed):
    r = random_timed(seed, distinct_times=5)
    train, test = temporal_split(r, cutoff=3)
    assert (train.timestamps < 3).all() and (test.timestamps >= 3).all()
    assert train.nnz + test.nnz == r.nnz
    for f in (0.0, 0.3, 1.0):
        tr, te = temporal_split(r, f)
        assert te.nnz == int(np.rint(f * r.nnz)) and tr.nnz + te.nnz == r.nnz
        if tr.nnz and te.nnz:
            assert tr.timestamps.max() <= te.timestamps.min()
        # reference: sort by (time, row, col), the last k are test
        key = sorted(zip(r.timestamps.tolist(), r.rows.tolist(), r.cols.tolist()))
        want = {(a, b) for _, a, b in key[len(key) - te.nnz:]}
        assert _pairs(te) == want
    with pytest.raises(ValueError, match="exactly one"):
        temporal_split(r)
    with pytest.raises(ValueError, match="exactly one"):
        temporal_split(r, 0.2, cutoff=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        temporal_split(r, 1.5)


def test_temporal_split_datetime_cutoff():
    r = Ratings.create([0, 1], [0, 0], [1.0, 2.0], timestamps=np.array(["2000-01-01", "2000-01-03"], "datetime64[D]"))
    train, test = temporal_split(r, cutoff=np.datetime64("2000-01-02"))
    assert train.rows.tolist() == [0] and test.rows.tolist() == [1]


# ------------------------------------------------------------------ real data
@pytest.mark.movielens
def test_movielens_1m_timestamps_and_leave_one_out(ml1m_dir):
    r = load_movielens("ml-1m", ml1m_dir)
    assert r.timestamps.dtype == np.int64 and r.timestamps.shape == (1_000_209,)
    assert (int(r.timestamps.min()), int(r.timestamps.max())) == (956703932, 1046454590)
    # the first line of ratings.dat: 1::1193::5::978300760
    k = int(np.flatnonzero((r.row_ids.to_original(r.rows) == 1) & (r.col_ids.to_original(r.cols) == 1193))[0])
    assert int(r.timestamps[k]) == 978300760
    train, test = leave_last_out(r)
    assert test.nnz == 6040 and (test.row_counts() == 1).all()  # every ML-1M user has >= 20 ratings
    tr, te = temporal_split(r, 0.2)
    assert te.nnz == 200_042 and tr.timestamps.max() <= te.timestamps.min()
