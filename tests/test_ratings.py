import jax
import numpy as np
import pytest

import mfjax as mf
from mfjax.data import Ratings, RatingsError


def test_dense_roundtrip_and_pytree():
    X = np.array([[1.0, np.nan, 3.0], [np.nan, 5.0, 2.0]])
    r = Ratings.from_dense(X)
    assert r.shape == (2, 3) and r.nnz == 4
    Xd, W = r.to_dense()
    np.testing.assert_array_equal(np.asarray(W), np.isfinite(X).astype(np.float32))
    np.testing.assert_allclose(np.asarray(Xd)[np.isfinite(X)], X[np.isfinite(X)])
    leaves = jax.tree_util.tree_leaves(r)
    assert len(leaves) == 3
    total = jax.jit(lambda rr: rr.values.sum())(r)
    assert float(total) == pytest.approx(11.0)
    assert r.T.shape == (3, 2)


def test_coo_and_dense_loss_agree():
    rng = np.random.default_rng(0)
    X = rng.integers(1, 6, size=(7, 5)).astype(float)
    W = rng.random((7, 5)) < 0.5
    r = Ratings.from_dense(X, W)
    p = mf.init_factors(jax.random.key(1), r.shape, 3)
    Xd, Wd = r.to_dense()
    a = mf.losses.masked_sq_loss(p, r, 0.3)
    b = mf.losses.masked_sq_loss_dense(p, Xd, Wd, 0.3)
    ref = ((W * (X - np.asarray(p.U) @ np.asarray(p.V).T)) ** 2).sum() + 0.3 * (
        (np.asarray(p.U) ** 2).sum() + (np.asarray(p.V) ** 2).sum()
    )
    np.testing.assert_allclose(float(a), ref, rtol=1e-5)
    np.testing.assert_allclose(float(b), ref, rtol=1e-5)


@pytest.mark.parametrize(
    "rows,cols,vals,shape,match",
    [
        ([0, 1], [0, 1], [1.0, np.nan], None, "non-finite"),
        ([0, -1], [0, 1], [1.0, 2.0], None, "negative row"),
        ([0, 3], [0, 1], [1.0, 2.0], (2, 2), "out of range"),
        ([0, 0], [1, 1], [1.0, 2.0], None, "duplicate"),
        ([], [], [], None, "empty"),
        ([0, 1], [0], [1.0, 2.0], None, "disagree"),
    ],
)
def test_bad_input(rows, cols, vals, shape, match):
    with pytest.raises(RatingsError, match=match):
        Ratings.create(rows, cols, vals, shape)


def test_duplicates_aggregate():
    r = Ratings.create([0, 0, 1], [1, 1, 0], [1.0, 3.0, 2.0], duplicates="mean")
    assert r.nnz == 2
    assert sorted(np.asarray(r.values).tolist()) == [2.0, 2.0]
