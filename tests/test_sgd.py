"""SGD solver: hand formula for one rating, loss decrease, held-out RMSE, determinism, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mfjax.data import Ratings
from mfjax.losses import BiasedFactors, Factors, masked_sq_loss
from mfjax.solvers.sgd import sgd, sgd_step


def _hand_step(U, V, b, c, mean, i, j, x, a, li, lj, biased):
    """The lecture's per-rating update, written out in numpy."""
    U, V, b, c = U.copy(), V.copy(), b.copy(), c.copy()
    pred = U[i] @ V[j] + (mean + b[i] + c[j] if biased else 0.0)
    e = x - pred
    u_old = U[i].copy()
    U[i] = U[i] + a * (e * V[j] - li * U[i])
    V[j] = V[j] + a * (e * u_old - lj * V[j])
    if biased:
        b[i] = b[i] + a * (e - li * b[i])
        c[j] = c[j] + a * (e - lj * c[j])
    return U, V, b, c


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    U = rng.normal(size=(3, 2))
    V = rng.normal(size=(4, 2))
    return U, V


@pytest.mark.parametrize("biased", [False, True])
def test_per_rating_steps_are_the_hand_formula(tiny, biased):
    """batch_size=1: the two ratings of row 0 are applied one after the other by
    the lecture's update (one of the two orders, not simultaneously), with the
    regulariser l2 / n_i (n_0 = 2, n_2 = n_3 = 1) or l2 (``weighted_l2``)."""
    U, V = tiny
    b, c = np.array([0.1, -0.2, 0.3]), np.array([0.05, 0.0, -0.1, 0.2])
    mean = 3.0 if biased else 0.0
    train = Ratings.create([0, 0], [2, 3], [4.5, 2.0], (3, 4), dtype=np.float64)
    a, l2 = 0.1, 0.3
    with jax.enable_x64(True):
        if biased:
            init = BiasedFactors(jnp.asarray(U), jnp.asarray(V), jnp.asarray(b), jnp.asarray(c),
                                 jnp.asarray(mean))
        else:
            init = Factors(jnp.asarray(U), jnp.asarray(V))
        for weighted in (False, True):
            res = sgd(train, 2, key=jax.random.key(3), lr=a, l2=l2, num_steps=1,
                      biases=biased, weighted_l2=weighted, init=init, dtype=jnp.float64)
            got = [np.asarray(x) for x in res.params[:4]] if biased else \
                [np.asarray(res.params.U), np.asarray(res.params.V)]
            li = l2 if weighted else l2 / 2
            outs = []
            for order in ([(2, 4.5), (3, 2.0)], [(3, 2.0), (2, 4.5)]):
                st = (U, V, b, c)
                for j, x in order:
                    st = _hand_step(*st, mean, 0, j, x, a, li, l2, biased)
                outs.append(st[:4] if biased else st[:2])
            match = [all(np.allclose(g, h, rtol=1e-12, atol=0) for g, h in zip(got, o))
                     for o in outs]
            assert any(match), (weighted, got, outs)
    if not biased:
        # the minibatch update applies both at once: equals sgd_step, not the sequential ones
        with jax.enable_x64(True):
            res2 = sgd(train, 2, key=jax.random.key(3), lr=a, l2=l2, num_steps=1, init=init,
                       batch_size=2, dtype=jnp.float64)
            simul = sgd_step(init, jnp.array([0, 0]), jnp.array([2, 3]), jnp.array([4.5, 2.0]),
                             jnp.ones(2), a, jnp.full(2, l2 / 2), jnp.array([l2, l2]))
            np.testing.assert_allclose(np.asarray(res2.params.U), np.asarray(simul.U),
                                       rtol=1e-12)
            assert not np.allclose(np.asarray(res2.params.U), outs[0][0])


@pytest.fixture(scope="module")
def lowrank():
    """Synthetic rank-3 data with small noise, 80/20 split."""
    rng = np.random.default_rng(1)
    m, n, r = 120, 80, 3
    X = 3.0 + rng.normal(size=(m, r)) @ rng.normal(size=(r, n)) / np.sqrt(r) \
        + rng.normal(size=(m, 1)) * 0.5 + 0.05 * rng.normal(size=(m, n))
    rows, cols = np.nonzero(rng.random((m, n)) < 0.4)
    perm = rng.permutation(rows.size)
    k = int(0.8 * rows.size)
    tr, te = perm[:k], perm[k:]
    train = Ratings.create(rows[tr], cols[tr], X[rows[tr], cols[tr]], (m, n))
    test = Ratings.create(rows[te], cols[te], X[rows[te], cols[te]], (m, n))
    return train, test


@pytest.fixture(scope="module")
def biased_run(lowrank):
    train, test = lowrank
    return sgd(train, 3, key=jax.random.key(0), lr=0.03, l2=0.5, num_steps=25, biases=True,
               eval_set=test)


def test_loss_decreases_and_rmse_beats_mean(lowrank, biased_run):
    train, test = lowrank
    loss = np.asarray(biased_run.trace.loss)
    ev = np.asarray(biased_run.trace.eval_metric)
    assert loss.shape == ev.shape == (25,)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(ev))
    assert loss[-1] < 0.1 * loss[0]
    assert np.all(np.diff(loss[5:]) < 1e-3 * loss[0])  # essentially monotone once settled
    mean_rmse = np.sqrt(np.mean((np.asarray(test.values) - train.mean()) ** 2))
    assert ev[-1] < 0.25 * mean_rmse
    # the trace is the documented objective (masked_sq_loss, "sum" scale)
    np.testing.assert_allclose(loss[-1], float(masked_sq_loss(biased_run.params, train, 0.5)),
                               rtol=1e-5)


def test_deterministic_for_fixed_key(lowrank, biased_run):
    train, test = lowrank
    again = sgd(train, 3, key=jax.random.key(0), lr=0.03, l2=0.5, num_steps=25, biases=True,
                eval_set=test)
    np.testing.assert_array_equal(np.asarray(again.params.U), np.asarray(biased_run.params.U))
    np.testing.assert_array_equal(np.asarray(again.trace.loss), np.asarray(biased_run.trace.loss))
    other = sgd(train, 3, key=jax.random.key(1), lr=0.03, l2=0.5, num_steps=25, biases=True,
                eval_set=test)
    assert not np.array_equal(np.asarray(other.params.U), np.asarray(biased_run.params.U))


def test_minibatch_schedules_and_unbiased(lowrank):
    train, test = lowrank
    mean_rmse = np.sqrt(np.mean((np.asarray(test.values) - train.mean()) ** 2))
    # padded minibatches (nnz not a multiple of 64), per-epoch decay, Funk weighting
    res = sgd(train, 3, key=jax.random.key(0), lr=0.03, l2=0.02, num_steps=25, batch_size=64,
              biases=True, weighted_l2=True, decay=0.97, eval_set=test)
    assert float(res.trace.eval_metric[-1]) < 0.3 * mean_rmse
    # optax schedule callable (counted in minibatches)
    sched = optax.exponential_decay(0.03, transition_steps=1000, decay_rate=0.9)
    res2 = sgd(train, 3, key=jax.random.key(0), schedule=sched, l2=0.02, num_steps=25,
               batch_size=64, biases=True, weighted_l2=True, eval_set=test)
    assert float(res2.trace.eval_metric[-1]) < 0.3 * mean_rmse
    assert isinstance(res2.params, BiasedFactors)
    # unbiased model on centred data also learns
    res3 = sgd(train, 3, key=jax.random.key(0), lr=0.02, l2=0.5, num_steps=10,
               batch_size=64, eval_set=test)
    assert isinstance(res3.params, Factors)
    loss3 = np.asarray(res3.trace.loss)
    assert loss3[-1] < loss3[0]


def test_bad_input(lowrank):
    train, test = lowrank
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="rank"):
        sgd(train, 0, key=k, l2=0.02)
    with pytest.raises(ValueError, match="rank"):
        sgd(train, 81, key=k, l2=0.02)
    with pytest.raises(ValueError, match="lr"):
        sgd(train, 2, key=k, lr=0.0, l2=0.02)
    with pytest.raises(ValueError, match="l2"):
        sgd(train, 2, key=k, l2=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        sgd(train, 2, key=k, l2=0.02, batch_size=0)
    with pytest.raises(ValueError, match="decay"):
        sgd(train, 2, key=k, l2=0.02, decay=1.5)
    bad = train.with_values(np.where(np.arange(train.nnz) == 5, np.nan, train.values))
    with pytest.raises(ValueError, match="non-finite value nan at entry 5"):
        sgd(bad, 2, key=k, l2=0.02)
    with pytest.raises(FloatingPointError, match="diverged"):
        sgd(train, 3, key=k, lr=5.0, l2=0.02, num_steps=25, batch_size=64, biases=True,
            weighted_l2=True, eval_set=test)


def test_random_order_is_a_permutation():
    from mfjax.solvers.sgd import random_order

    for n in (1, 2, 5, 64, 1000, 4099):
        p = np.asarray(random_order(jax.random.key(n), n))
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    a = np.asarray(random_order(jax.random.key(0), 4099))
    b = np.asarray(random_order(jax.random.key(1), 4099))
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(a, np.arange(4099))[0, 1]) < 0.1


def _np_full_batch_epochs(U, V, b, c, mean, rows, cols, x, a, decay, l2, weighted, epochs):
    """numpy re-implementation of ``batch_size >= nnz`` (one simultaneous step per epoch)
    and of the running loss trace: the epoch's residuals (before its step) plus the
    regulariser after it."""
    m, n = U.shape[0], V.shape[0]
    n_i = np.bincount(rows, minlength=m).astype(float)
    n_j = np.bincount(cols, minlength=n).astype(float)
    w_i = n_i if weighted else np.ones(m)
    w_j = n_j if weighted else np.ones(n)
    l_i = l2 * w_i / np.maximum(n_i, 1)
    l_j = l2 * w_j / np.maximum(n_j, 1)
    losses = []
    for ep in range(epochs):
        lr = a * decay ** ep
        e = x - (mean + b[rows] + c[cols] + np.sum(U[rows] * V[cols], axis=1))
        dU, dV = np.zeros_like(U), np.zeros_like(V)
        db, dc = np.zeros_like(b), np.zeros_like(c)
        np.add.at(dU, rows, lr * (e[:, None] * V[cols] - l_i[rows, None] * U[rows]))
        np.add.at(dV, cols, lr * (e[:, None] * U[rows] - l_j[cols, None] * V[cols]))
        np.add.at(db, rows, lr * (e - l_i[rows] * b[rows]))
        np.add.at(dc, cols, lr * (e - l_j[cols] * c[cols]))
        U, V, b, c = U + dU, V + dV, b + db, c + dc
        pen = l2 * (np.sum(w_i * (np.sum(U * U, 1) + b * b))
                    + np.sum(w_j * (np.sum(V * V, 1) + c * c)))
        losses.append(np.sum(e * e) + pen)
    return U, V, b, c, np.array(losses)


@pytest.mark.parametrize("weighted", [False, True])
def test_running_loss_and_full_batch_match_numpy(weighted):
    """batch_size >= nnz: every epoch is one simultaneous step over all entries, whatever
    the order; the running loss trace is sum_k e_k^2 (before the step) + the penalty after."""
    rng = np.random.default_rng(5)
    m, n, r, k = 7, 6, 3, 25
    flat = rng.choice(m * n, size=k, replace=False)
    rows, cols = flat // n, flat % n
    x = rng.uniform(1, 5, size=k)
    train = Ratings.create(rows, cols, x, (m, n), dtype=np.float64)
    U, V = rng.normal(size=(m, r)) * 0.3, rng.normal(size=(n, r)) * 0.3
    b, c = rng.normal(size=m) * 0.1, rng.normal(size=n) * 0.1
    mean = float(np.mean(x))
    with jax.enable_x64(True):
        init = BiasedFactors(*(jnp.asarray(t) for t in (U, V, b, c)), jnp.asarray(mean))
        res = sgd(train, r, key=jax.random.key(0), lr=0.05, l2=0.1, decay=0.8, num_steps=4,
                  batch_size=1000, biases=True, weighted_l2=weighted, init=init,
                  dtype=jnp.float64, loss_trace="running")
        exact = sgd(train, r, key=jax.random.key(0), lr=0.05, l2=0.1, decay=0.8, num_steps=4,
                    batch_size=1000, biases=True, weighted_l2=weighted, init=init,
                    dtype=jnp.float64)
    U2, V2, b2, c2, losses = _np_full_batch_epochs(U, V, b, c, mean, rows, cols, x, 0.05, 0.8,
                                                   0.1, weighted, 4)
    for got, want in zip(res.params[:4], (U2, V2, b2, c2)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(res.trace.loss), losses, rtol=1e-12)
    # same parameters with the exact trace; its loss is the objective *after* the step
    np.testing.assert_array_equal(np.asarray(exact.params.U), np.asarray(res.params.U))
    w = (np.bincount(rows, minlength=m).astype(float), np.bincount(cols, minlength=n).astype(float))
    with jax.enable_x64(True):
        want_exact = masked_sq_loss(exact.params, train, 0.1,
                                    l2_weights=w if weighted else None)
    np.testing.assert_allclose(float(exact.trace.loss[-1]), float(want_exact), rtol=1e-12)


def test_running_loss_tracks_exact_loss(lowrank):
    """Same run, two traces: the running estimate lags the exact objective (it uses
    residuals from before each minibatch's update) but converges to it."""
    train, test = lowrank
    kw = dict(key=jax.random.key(0), lr=0.03, l2=0.5, num_steps=25, biases=True,
              batch_size=16, eval_set=test)
    ex = sgd(train, 3, **kw)
    ru = sgd(train, 3, loss_trace="running", **kw)
    np.testing.assert_array_equal(np.asarray(ex.params.U), np.asarray(ru.params.U))
    np.testing.assert_array_equal(np.asarray(ex.trace.eval_metric), np.asarray(ru.trace.eval_metric))
    le, lr_ = np.asarray(ex.trace.loss), np.asarray(ru.trace.loss)
    assert np.all(lr_[:5] > le[:5])  # early epochs: the running sum lags (larger)
    np.testing.assert_allclose(lr_[-1], le[-1], rtol=0.02)
    with pytest.raises(ValueError, match="loss_trace"):
        sgd(train, 3, key=jax.random.key(0), l2=0.02, loss_trace="sometimes")


def test_epoch_order_visits_every_entry_once():
    """The keyed mixed-radix Feistel network is a bijection of [0, a b) for any sides,
    and one epoch of sgd visits each entry exactly once (B = 1, lr tiny: the
    first-order change of each bias is lr * (sum of its residuals))."""
    from mfjax.solvers.sgd import _feistel, _order_domain

    keys = jax.random.bits(jax.random.key(0), (4,), jnp.uint32)
    for a, b in [(1, 1), (2, 1), (1, 5), (3, 2), (65, 64), (7, 130)]:
        p = np.asarray(_feistel(jnp.arange(a * b, dtype=jnp.uint32), keys, a, b))
        np.testing.assert_array_equal(np.sort(p), np.arange(a * b))
    for n in (1, 2, 5, 17, 800167):
        a, b = _order_domain(n)
        assert n <= a * b < n + a
    rng = np.random.default_rng(2)
    m, n, k = 5, 4, 13
    flat = rng.choice(m * n, size=k, replace=False)
    rows, cols = flat // n, flat % n
    x = rng.uniform(1, 5, size=k)
    train = Ratings.create(rows, cols, x, (m, n), dtype=np.float64)
    with jax.enable_x64(True):
        zero = BiasedFactors(jnp.zeros((m, 2)), jnp.zeros((n, 2)), jnp.zeros(m), jnp.zeros(n),
                             jnp.asarray(0.0))
        res = sgd(train, 2, key=jax.random.key(1), lr=1e-9, l2=0.0, num_steps=1, biases=True,
                  init=zero, dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(res.params.row_bias) / 1e-9,
                               np.bincount(rows, weights=x, minlength=m), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.params.col_bias) / 1e-9,
                               np.bincount(cols, weights=x, minlength=n), rtol=1e-6)
