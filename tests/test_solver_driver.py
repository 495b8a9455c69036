"""The solver protocol and driver: one trace type, honest status, no recompilation, aliases."""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax as mf
from mfjax.core import Status
from mfjax.data import Ratings
from mfjax.loop import FitTrace
from mfjax.objective import bucket_size
from mfjax.solvers import (
    Solver,
    SolverTrace,
    als,
    als_objective,
    als_solver,
    nmf,
    nmf_problem,
    nmf_solver,
    run,
    sgd,
    sgd_problem,
    sgd_solver,
    svd_complete,
    svd_fill,
    svd_solver,
)
from mfjax.solvers.base import _run_jit


def _data(seed=0, m=40, n=30, density=0.4):
    rng = np.random.default_rng(seed)
    X = 3.0 + rng.normal(size=(m, 3)) @ rng.normal(size=(3, n)) / 2
    mask = rng.random((m, n)) < density
    test = rng.random((m, n)) < 0.25
    return Ratings.from_dense(X, mask & ~test), Ratings.from_dense(X, mask & test)


def _start(train, rank=3, seed=0):
    return mf.init_factors(jax.random.key(seed), train.shape, rank)


def test_run_trace_status_and_info():
    train, test = _data()
    obj = als_objective(train, l2=0.5)
    solver = als_solver()
    res = run(solver, obj, solver.init(_start(train), obj), 6, eval_set=test)
    assert set(SolverTrace._fields) >= {"loss", "eval_metric", "success"}
    assert {"loss", "eval_metric", "success"} <= set(FitTrace._fields)  # the same names as mf.fit
    assert res.trace.loss.shape == res.trace.eval_metric.shape == (6,)
    assert int(res.status) == Status.MAX_STEPS and res.status_name == "max_steps"
    assert int(res.num_steps) == 6 and bool(np.all(res.trace.success))
    np.testing.assert_array_equal(np.asarray(res.trace.info.loss), np.asarray(res.trace.loss))
    np.testing.assert_allclose(float(res.trace.eval_metric[-1]),
                               float(mf.metrics.rmse(res.params, test)), rtol=1e-5)
    # the state continues the run: 6 + 4 sweeps == 10 sweeps
    more = run(solver, obj, res.state, 4)
    ten = run(solver, obj, solver.init(_start(train), obj), 10)
    np.testing.assert_allclose(np.asarray(more.params.U), np.asarray(ten.params.U), rtol=1e-5,
                               atol=1e-6)


def test_eval_every():
    train, test = _data()
    obj = als_objective(train, l2=0.5)
    solver = als_solver()
    res = run(solver, obj, solver.init(_start(train), obj), 7, eval_set=test, eval_every=3)
    ev = np.asarray(res.trace.eval_metric)
    assert np.all(np.isfinite(ev[[2, 5]])) and np.all(np.isnan(np.delete(ev, [2, 5])))
    none = run(solver, obj, solver.init(_start(train), obj), 2)
    assert np.all(np.isnan(np.asarray(none.trace.eval_metric)))
    with pytest.raises(ValueError, match="num_steps"):
        run(solver, obj, solver.init(_start(train), obj), 0)
    with pytest.raises(ValueError, match="eval_every"):
        run(solver, obj, solver.init(_start(train), obj), 2, eval_every=0)


class _State(NamedTuple):
    params: jax.Array
    t: jax.Array


class _Info(NamedTuple):
    loss: jax.Array
    count: jax.Array


def _blow_up_at(k):
    """A toy solver: x <- 2 x, non-finite at step ``k`` (0-based)."""

    def init(params, problem=None, key=None):
        return _State(params, jnp.asarray(0, jnp.int32))

    def step(state, problem):
        x = jnp.where(state.t == k, jnp.nan, 2.0 * state.params)
        return _State(x, state.t + 1), _Info(jnp.sum(x), state.t)

    return Solver(init, step)


def test_nonfinite_step_keeps_last_good_state_and_stops():
    solver = _blow_up_at(3)
    res = run(solver, None, solver.init(jnp.ones(2)), 6)
    assert int(res.status) == Status.NONFINITE and res.status_name == "nonfinite"
    assert int(res.num_steps) == 4  # the rejected step is counted as attempted
    np.testing.assert_array_equal(np.asarray(res.params), [8.0, 8.0])
    np.testing.assert_array_equal(np.asarray(res.trace.success), [1, 1, 1, 0, 0, 0])
    loss = np.asarray(res.trace.loss)
    np.testing.assert_array_equal(loss[:3], [4.0, 8.0, 16.0])
    assert np.all(np.isnan(loss[3:]))
    np.testing.assert_array_equal(np.asarray(res.trace.info.count), [0, 1, 2, -1, -1, -1])


def test_sgd_divergence_status_through_the_driver_and_error_through_the_alias():
    train, test = _data()
    obj = sgd_problem(train, l2=0.02)
    solver = sgd_solver(lr=5.0, batch_size=64)
    res = run(solver, obj, solver.init(_start(train), obj, jax.random.key(0)), 25)
    assert int(res.status) == Status.NONFINITE
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in res.params)
    with pytest.raises(FloatingPointError, match="diverged"):
        sgd(train, 3, key=jax.random.key(0), lr=5.0, l2=0.02, num_steps=25, batch_size=64)


def test_second_fold_and_second_l2_do_not_recompile():
    """Folds padded to one bucket and any l2 share one compiled driver (ALS and SGD)."""
    folds = [_data(seed)[0] for seed in (1, 2, 3)]
    size = bucket_size(max(f.nnz for f in folds))
    assert len({f.nnz for f in folds}) > 1
    for solver, build, key in ((als_solver(), als_objective, None),
                               (sgd_solver(lr=0.02, batch_size=32), sgd_problem,
                                jax.random.key(0))):
        before = None
        for i, (fold, l2) in enumerate(zip(folds, (0.1, 0.7, 3.0))):
            obj = build(fold, l2=l2, pad_to=size)
            res = run(solver, obj, solver.init(_start(fold), obj, key), 3)
            assert bool(np.all(np.isfinite(np.asarray(res.trace.loss))))
            if i == 0:
                before = _run_jit._cache_size()
        assert _run_jit._cache_size() == before, "a second fold / l2 recompiled the driver"
    # a second learning rate lives in the SGD state: no recompilation either
    obj = sgd_problem(folds[0], l2=0.1, pad_to=size)
    n0 = _run_jit._cache_size()
    for lr in (0.01, 0.03):
        s = sgd_solver(lr=lr, batch_size=32)
        run(s, obj, s.init(_start(folds[0]), obj, jax.random.key(0)), 3)
    assert _run_jit._cache_size() == n0
    # the aliases are cached too: a second l2 does not recompile
    als(folds[0], 3, l2=0.1, num_steps=2)
    n1 = _run_jit._cache_size()
    als(folds[0], 3, l2=0.9, num_steps=2)
    assert _run_jit._cache_size() == n1


def test_padding_does_not_change_the_solution():
    train, _ = _data()
    for biased in (False, True):
        p0 = _start(train)
        if biased:
            p0 = mf.losses.BiasedFactors(p0.U, p0.V, jnp.zeros(train.shape[0]),
                                         jnp.zeros(train.shape[1]), jnp.asarray(train.mean()))
        plain = als_objective(train, l2=0.3, weighted_l2=True)
        padded = als_objective(train, l2=0.3, weighted_l2=True, pad_to=bucket_size(train.nnz) + 8)
        a = run(als_solver(), plain, als_solver().init(p0, plain), 3)
        b = run(als_solver(), padded, als_solver().init(p0, padded), 3)
        np.testing.assert_allclose(np.asarray(a.params.U), np.asarray(b.params.U), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(np.asarray(a.trace.loss), np.asarray(b.trace.loss), rtol=1e-5)


def test_aliases_are_the_driver():
    train, test = _data()
    res = als(train, 3, l2=0.5, num_steps=4, key=jax.random.key(2), eval_set=test)
    obj = mf.solvers.als_problem(als_objective(train, l2=0.5))  # the alias's Gram path
    p0 = mf.init_factors(jax.random.key(2), train.shape, 3)
    ref = run(als_solver(), obj, als_solver().init(p0, obj), 4, eval_set=test)
    np.testing.assert_array_equal(np.asarray(res.params.U), np.asarray(ref.params.U))
    np.testing.assert_array_equal(np.asarray(res.trace.eval_metric),
                                  np.asarray(ref.trace.eval_metric))
    # NMF and SVD completion through the driver
    prob = nmf_problem(train, l2=0.1)
    p = mf.solvers.nmf_init(train, 3, "random", key=jax.random.key(0))
    r = run(nmf_solver("l2"), prob, nmf_solver("l2").init(p, prob), 5)
    r2 = nmf(train, 3, l2=0.1, num_steps=5, init=p)
    np.testing.assert_array_equal(np.asarray(r.params.U), np.asarray(r2.params.U))
    s = svd_complete(train, 3, "row_mean", num_refits=2, eval_set=test)
    assert s.trace.loss.shape == (3,) and int(s.status) == Status.MAX_STEPS
    fill = svd_fill(train, 3, "row_mean")
    prob = mf.solvers.SVDProblem(train.device_put(), jnp.asarray(1e-5))
    s2 = run(svd_solver(300), prob, svd_solver(300).init(fill, prob), 3)
    np.testing.assert_array_equal(np.asarray(s.trace.loss), np.asarray(s2.trace.loss))
    for r in (res, r2, s, sgd(train, 3, key=jax.random.key(0), l2=0.1, num_steps=2)):
        assert r.status_name == "max_steps"


def test_deprecated_vocabulary_warns_and_matches():
    train, test = _data()
    new = als(train, 3, l2=0.5, num_steps=3, eval_set=test)
    with pytest.warns(DeprecationWarning):
        old = als(train, 3, 0.5, 3, eval=test)
    np.testing.assert_array_equal(np.asarray(old.params.U), np.asarray(new.params.U))
    with pytest.warns(DeprecationWarning, match="eval_metric"):
        ev = old.trace.eval_rmse
    np.testing.assert_array_equal(np.asarray(ev), np.asarray(new.trace.eval_metric))
    with pytest.warns(DeprecationWarning, match="num_sweeps"):
        als(train, 3, l2=0.5, num_sweeps=2)
    with pytest.warns(DeprecationWarning, match="num_epochs"):
        sgd(train, 3, key=jax.random.key(0), l2=0.1, num_epochs=1)
    with pytest.warns(DeprecationWarning, match="num_iters"):
        nmf(train, 3, num_iters=2)
    with pytest.warns(DeprecationWarning, match="eval_set"):
        svd_complete(train, 3, eval=test)
    with pytest.warns(DeprecationWarning, match="default"):  # l2 omitted: old default, warned
        als(train, 3, num_steps=1)
    with pytest.raises(TypeError, match="num_sweeps"):
        als(train, 3, l2=0.5, num_steps=2, num_sweeps=2)
    with pytest.raises(TypeError, match="multiple values"):
        als(train, 3, 0.5, l2=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new vocabulary is silent
        als(train, 3, l2=0.5, num_steps=1, eval_set=test).trace.eval_metric
        nmf(train, 3, num_steps=1, eval_set=test)
