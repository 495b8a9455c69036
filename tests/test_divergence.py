"""Honest statuses: diverging runs say so, and a step rule built for another problem fails loudly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax as mf
from mfjax.core import Status, status_name


@pytest.fixture(scope="module")
def problem():
    train = mf.data.synthetic(m=60, n=40, rank=2, density=0.3, seed=0)
    p0 = mf.init_factors(jax.random.key(0), train.shape, 2)
    return train, p0


def test_a_diverging_step_stops_the_run(problem):
    train, p0 = problem
    loss = mf.losses.masked_mse(train, 0.1)
    f0 = float(loss(p0))
    res = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.constant(0.5)), p0, 20)
    assert int(res.status) == Status.DIVERGED and status_name(res.status) == "diverged"
    # the rejected step is not in the parameters: they stay finite and below the threshold
    assert np.isfinite(float(res.value)) and float(res.value) <= 10 * f0
    np.testing.assert_allclose(float(res.value), float(loss(res.params)), rtol=1e-4)
    assert int(res.num_steps) < 20


def test_divergence_test_can_be_disabled(problem):
    train, p0 = problem
    loss = mf.losses.masked_mse(train, 0.1)
    res = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.constant(0.5)), p0, 20,
                 divergence_factor=None)
    # without it the run goes on until the numbers overflow
    assert int(res.status) in (Status.NONFINITE, Status.DIVERGED)
    with pytest.raises(ValueError, match="divergence_factor"):
        mf.fit(loss, mf.optim.gd(), p0, 2, divergence_factor=0.5)


def test_ending_above_the_start_is_diverged_not_max_steps(problem):
    train, p0 = problem
    loss = mf.losses.masked_mse(train, 0.1)
    f0 = float(loss(p0))
    # a constant step that overshoots a little: after 3 steps the loss is above f0 but < 10 f0
    res = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.constant(0.02)), p0, 3)
    assert f0 * 1.01 < float(res.value) < 10 * f0
    assert int(res.status) == Status.DIVERGED and int(res.num_steps) == 3
    good = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.armijo()), p0, 5)
    assert int(good.status) == Status.MAX_STEPS and float(good.value) < f0


def test_fit_until_reports_divergence(problem):
    train, p0 = problem
    loss = mf.losses.masked_mse(train, 0.1)
    res = mf.fit_until(loss, mf.optim.gd(linesearch=mf.linesearch.constant(0.5)), p0,
                       max_steps=30, tol=1e-12)
    assert int(res.status) == Status.DIVERGED


def test_exact_step_for_another_problem_fails_instead_of_lying(problem):
    """Issue 12 #4: exact_mf(test) on the training loss used to report a wrong loss."""
    train, p0 = problem
    tr, te = mf.data.split(train, (0.7, 0.3), seed=0)
    loss = mf.losses.masked_mse(tr, 2.0)
    bad = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.exact_mf(te, 2.0)), p0, 10)
    assert int(bad.status) == Status.LINESEARCH_FAILED
    np.testing.assert_allclose(float(bad.value), float(loss(bad.params)), rtol=1e-5)
    good = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.exact_mf(tr, 2.0)), p0, 10)
    assert int(good.status) == Status.MAX_STEPS
    np.testing.assert_allclose(float(good.value), float(loss(good.params)), rtol=1e-4)
    # the problem-free form reads the right objective from the loss
    free = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.exact_mf()), p0, 10)
    np.testing.assert_allclose(float(free.value), float(good.value), rtol=1e-5)


def test_divergence_factor_is_traced(problem):
    train, p0 = problem
    loss = mf.losses.masked_mse(train, 0.1)
    opt = mf.optim.gd(linesearch=mf.linesearch.armijo())
    from mfjax.loop import _fit_jit

    mf.fit(loss, opt, p0, 3, divergence_factor=10.0)
    n = _fit_jit._cache_size()
    mf.fit(loss, opt, p0, 3, divergence_factor=100.0)
    assert _fit_jit._cache_size() == n


def test_solver_driver_reports_divergence(problem):
    """A solver step whose loss jumps past 10x the first step's is rejected: status diverged."""
    train, p0 = problem
    obj = mf.objective.mf_objective(train, 0.1)
    solver = mf.solvers.sgd_solver(lr=0.12, batch_size=64)
    state = solver.init(p0, obj, jax.random.key(0))
    res = mf.solvers.run(solver, obj, state, 30)
    assert status_name(res.status) == "diverged"
    ok = np.asarray(res.trace.success)
    assert not ok.all() and np.all(np.isfinite(np.asarray(res.trace.loss)[ok]))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in res.params)
    calm = mf.solvers.run(mf.solvers.als_solver(), obj, mf.solvers.als_solver().init(p0, obj), 3)
    assert status_name(calm.status) == "max_steps"
    with pytest.raises(ValueError, match="divergence_factor"):
        mf.solvers.run(solver, obj, state, 2, divergence_factor=1.0)
