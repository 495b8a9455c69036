"""DSGD (Gemulla et al. 2011): the stratified schedule against references, on one device.

The mesh run (one block per device, ``ppermute`` of the V blocks) is checked
against this one-device run in tests/test_sharded.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax as mf
balanced_blocks = mf.solvers.balanced_blocks


@pytest.fixture(scope="module")
def data():
    r = mf.data.synthetic(90, 70, rank=3, density=0.15, seed=3)
    return mf.data.split(r, (0.9, 0.1), seed=0)


def _p0(shape, rank=3, seed=0):
    return mf.init_factors(jax.random.key(seed), shape, rank, scale=0.3)


def test_one_block_full_batch_is_a_full_batch_sgd_epoch(data):
    train, _ = data
    p0 = _p0(train.shape)
    big = 1 << 20
    a = mf.solvers.dsgd(train, 3, l2=1.0, lr=0.01, num_steps=3, blocks=1, batch_size=big, init=p0)
    b = mf.solvers.sgd(train, 3, l2=1.0, lr=0.01, num_steps=3, batch_size=big, init=p0)
    np.testing.assert_allclose(a.trace.loss, b.trace.loss, rtol=1e-5)
    np.testing.assert_allclose(a.params.U, b.params.U, atol=1e-5)


def _reference_epoch(U, V, rows, cols, vals, rb, cb, lr, l2):
    """numpy: the d strata, each block one simultaneous (full-block) update, regulariser l2 / n_i."""
    U, V = U.astype(np.float64).copy(), V.astype(np.float64).copy()
    m, n = U.shape[0], V.shape[0]
    n_i = np.maximum(np.bincount(rows, minlength=m), 1)
    n_j = np.maximum(np.bincount(cols, minlength=n), 1)
    d = len(rb) - 1
    bi = np.searchsorted(rb, rows, side="right") - 1
    bj = np.searchsorted(cb, cols, side="right") - 1
    for s in range(d):
        for a in range(d):
            k = (bi == a) & (bj == (a + s) % d)
            i, j, x = rows[k], cols[k], vals[k]
            e = x - np.sum(U[i] * V[j], axis=1)
            dU = lr * (e[:, None] * V[j] - (l2 / n_i[i])[:, None] * U[i])
            dV = lr * (e[:, None] * U[i] - (l2 / n_j[j])[:, None] * V[j])
            np.add.at(U, i, dU)
            np.add.at(V, j, dV)
    return U, V


@pytest.mark.parametrize("d", [2, 3])
def test_strata_match_a_numpy_reference(data, d):
    train, _ = data
    p0 = _p0(train.shape)
    res = mf.solvers.dsgd(train, 3, l2=0.5, lr=0.02, num_steps=1, blocks=d, batch_size=1 << 20, init=p0)
    rows, cols, vals = (np.asarray(a) for a in (train.rows, train.cols, train.values))
    rb = balanced_blocks(np.bincount(rows, minlength=train.shape[0]), d)
    cb = balanced_blocks(np.bincount(cols, minlength=train.shape[1]), d)
    U, V = _reference_epoch(np.asarray(p0.U), np.asarray(p0.V), rows, cols, vals, rb, cb, 0.02, 0.5)
    np.testing.assert_allclose(res.params.U, U, atol=1e-5)
    np.testing.assert_allclose(res.params.V, V, atol=1e-5)


def test_balanced_blocks_split_by_ratings_not_rows():
    counts = np.array([100, 1, 1, 1, 1, 1, 1, 94])
    b = balanced_blocks(counts, 2)
    assert b[0] == 0 and b[-1] == 8
    sums = [counts[b[k]:b[k + 1]].sum() for k in range(2)]
    assert max(sums) <= 106 and min(sums) >= 94
    assert list(balanced_blocks(np.ones(10), 5)) == [0, 2, 4, 6, 8, 10]


@pytest.mark.parametrize("biases", [False, True])
def test_dsgd_learns_like_sgd(biases):
    r = mf.data.synthetic(400, 300, rank=4, density=0.08, seed=1)
    train, test = mf.data.split(r, (0.9, 0.1), seed=0)
    kw = dict(l2=2.0, lr=0.02, num_steps=12, batch_size=8, biases=biases, eval_set=test)
    ref = mf.solvers.sgd(train, 4, **kw)
    res = mf.solvers.dsgd(train, 4, blocks=3, **kw)
    mean_rmse = float(jnp.sqrt(jnp.mean((test.values - train.values.mean()) ** 2)))
    got, want = float(res.trace.eval_metric[-1]), float(ref.trace.eval_metric[-1])
    assert got < 0.95 * mean_rmse and abs(got - want) < 0.03, (got, want, mean_rmse)
    assert np.all(np.diff(np.asarray(res.trace.loss)) < 0)  # the objective falls every epoch here


def test_bad_arguments_are_named(data):
    train, _ = data
    with pytest.raises(ValueError, match="blocks"):
        mf.solvers.dsgd(train, 3, blocks=0)
    with pytest.raises(ValueError, match="blocks"):
        mf.solvers.dsgd(train, 3, blocks=10_000)
    with pytest.raises(ValueError, match="lr"):
        mf.solvers.dsgd(train, 3, lr=0.0)
    with pytest.raises(ValueError, match="l2"):
        mf.solvers.dsgd(train, 3, l2=-1.0)
