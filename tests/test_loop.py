"""The training loop (mfjax.loop): optax optimizers in fit, statuses, traces, evaluation counts."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mfjax.linesearch as ls
import mfjax.optim as mo
from mfjax.loop import (
    STATUS_CONVERGED,
    STATUS_LINESEARCH_FAILED,
    STATUS_MAX_STEPS,
    STATUS_NONFINITE,
    fit,
    fit_until,
)

N = 8
_A = jnp.asarray(np.diag(np.linspace(1.0, 10.0, N)), jnp.float32)
_B = jnp.asarray(np.linspace(-1.0, 1.0, N), jnp.float32)


def quad(x):
    """Convex quadratic, minimiser A^{-1} b."""
    return 0.5 * x @ _A @ x - _B @ x


X0 = jnp.ones(N, jnp.float32)
X_STAR = np.linalg.solve(np.asarray(_A), np.asarray(_B))


# Shared optimizer objects (static arguments of the compiled loop: reuse avoids recompiles).
ADAM = optax.adam(1e-1)
LBFGS = optax.lbfgs()
BACKTRACK = optax.chain(optax.scale(-1.0), optax.scale_by_backtracking_linesearch(20, store_grad=True))
GD_ARMIJO = mo.gd(linesearch=ls.armijo())


@pytest.mark.parametrize("name,opt", [("adam", ADAM), ("lbfgs", LBFGS), ("backtracking", BACKTRACK)])
def test_optax_optimizers_run_in_fit(name, opt):
    res = fit(quad, opt, X0, 40)
    assert int(res.status) == STATUS_MAX_STEPS
    assert res.trace.loss.shape == (40,) and res.trace.eval_metric.shape == (40,)
    assert float(res.value) < float(quad(X0))
    np.testing.assert_allclose(float(res.value), float(quad(res.params)), rtol=1e-5)
    if name == "lbfgs":
        np.testing.assert_allclose(np.asarray(res.params), X_STAR, atol=1e-4)
    fe = np.asarray(res.trace.num_fun_evals)
    assert np.all(np.diff(fe) >= 0) and int(res.num_fun_evals) == fe[-1]
    if name == "adam":
        # no stored value: exactly one evaluation per step plus the initial one
        np.testing.assert_array_equal(fe, np.arange(2, 42))
        assert np.all(np.isnan(np.asarray(res.trace.step_size)))


class _StoreState(NamedTuple):
    value: jax.Array
    grad: jax.Array
    info: ls.LineSearchInfo


def _const_step(step, store):
    """Test step rule: constant step; with ``store`` it evaluates f, grad f at the
    new point itself, stores them and reports 2 function evaluations per update."""

    def init(x):
        return _StoreState(jnp.asarray(jnp.inf, x.dtype), jnp.zeros_like(x),
                           ls.LineSearchInfo(jnp.asarray(0.0, x.dtype), jnp.asarray(0, jnp.int32),
                                             jnp.asarray(0, jnp.int32), jnp.asarray(True)))

    def update(p, state, x, *, value, grad, value_fn, **kw):
        u = step * p
        if store:
            v, g = jax.value_and_grad(value_fn)(x + u)
            nf, ng = 2, 1
        else:
            v, g = jnp.asarray(jnp.inf, x.dtype), jnp.zeros_like(x)
            nf, ng = 0, 0
        info = ls.LineSearchInfo(jnp.asarray(step, x.dtype), jnp.asarray(nf, jnp.int32),
                                 jnp.asarray(ng, jnp.int32), jnp.asarray(True))
        return u, _StoreState(v, g, info)

    return optax.GradientTransformationExtraArgs(init, update)


def test_reuses_stored_value_and_grad_in_eval_counts():
    for store, per_step_fe, per_step_ge in ((True, 2, 1), (False, 1, 1)):
        opt = mo.make_optimizer(mo.gd_direction(), _const_step(0.05, store))
        res = fit(quad, opt, X0, 6)
        # initial evaluation + per step: the rule's own count, plus 1 (fun and
        # grad) from the loop only when the rule stored nothing
        np.testing.assert_array_equal(np.asarray(res.trace.num_fun_evals),
                                      1 + per_step_fe * np.arange(1, 7))
        np.testing.assert_array_equal(np.asarray(res.trace.num_grad_evals),
                                      1 + per_step_ge * np.arange(1, 7))
        x = X0
        for _ in range(6):
            x = x - 0.05 * jax.grad(quad)(x)
        np.testing.assert_allclose(np.asarray(res.params), np.asarray(x), rtol=1e-6)
        np.testing.assert_allclose(float(res.value), float(quad(x)), rtol=1e-6)


def test_no_recompile_on_second_call():
    traced = {"n": 0}

    def f(x):
        traced["n"] += 1
        return quad(x)

    opt = mo.heavy_ball(0.5, linesearch=ls.armijo())
    fit(f, opt, X0, 7)
    n1 = traced["n"]
    res = fit(f, opt, 2.0 * X0, 7)
    assert traced["n"] == n1
    assert float(res.value) < float(quad(2.0 * X0))


class _FailState(NamedTuple):
    value: jax.Array
    grad: jax.Array
    info: ls.LineSearchInfo


def _fail_after(k):
    """Test step rule: step 0.1 for k updates, then reports failure (step 0)."""

    def init(x):
        return _FailState(jnp.asarray(jnp.inf, x.dtype), jnp.zeros_like(x),
                          ls.LineSearchInfo(jnp.asarray(0.0, x.dtype), jnp.asarray(0, jnp.int32),
                                            jnp.asarray(0, jnp.int32), jnp.asarray(True)))

    def update(p, state, x, **kw):
        count = state.info.num_fun_evals  # reuse as a counter of updates
        ok = count < k
        step = jnp.where(ok, 0.1, 0.0).astype(x.dtype)
        return step * p, _FailState(jnp.asarray(jnp.inf, x.dtype), jnp.zeros_like(x),
                                    ls.LineSearchInfo(step, count + 1, jnp.asarray(0, jnp.int32), ok))

    return optax.GradientTransformationExtraArgs(init, update)


FAIL3 = mo.make_optimizer(mo.gd_direction(), _fail_after(3))


def test_status_on_linesearch_failure_keeps_last_good_params():
    res = fit(quad, FAIL3, X0, 8, eval_fn=quad, eval_every=2)
    assert int(res.status) == STATUS_LINESEARCH_FAILED
    assert int(res.num_steps) == 4  # 3 accepted + the failed one
    succ = np.asarray(res.trace.success)
    np.testing.assert_array_equal(succ, [True] * 3 + [False] * 5)
    loss = np.asarray(res.trace.loss)
    assert np.all(np.isfinite(loss[:3])) and np.all(np.isnan(loss[3:]))
    # params after exactly 3 GD steps of size 0.1
    x = X0
    for _ in range(3):
        x = x - 0.1 * jax.grad(quad)(x)
    np.testing.assert_allclose(np.asarray(res.params), np.asarray(x), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(res.params)))
    # eval every 2 steps, only on accepted steps: index 1 only (index 3 failed)
    ev = np.asarray(res.trace.eval_metric)
    assert np.isfinite(ev[1]) and np.all(np.isnan(np.delete(ev, 1)))
    np.testing.assert_allclose(ev[1], loss[1], rtol=1e-6)
    # fit_until: same stop
    res2 = fit_until(quad, FAIL3, X0, max_steps=20, tol=0.0)
    assert int(res2.status) == STATUS_LINESEARCH_FAILED and int(res2.num_steps) == 4
    np.testing.assert_allclose(np.asarray(res2.params), np.asarray(x), rtol=1e-6)
    assert np.all(np.asarray(res2.trace.num_fun_evals)[4:] == -1)


def _blows_up(x):
    # finite inside |x| < 3, NaN outside
    return jnp.where(jnp.all(jnp.abs(x) < 3.0), quad(x), jnp.nan)


def test_status_on_nonfinite_keeps_last_good_params():
    opt = optax.sgd(0.25)  # diverges on quad (largest curvature 10 > 2/0.25)
    res = fit(_blows_up, opt, X0, 30)
    assert int(res.status) == STATUS_NONFINITE
    k = int(res.num_steps)
    assert 1 <= k < 30
    p = np.asarray(res.params)
    assert np.all(np.isfinite(p)) and np.all(np.abs(p) < 3.0)
    assert np.isfinite(float(res.value))
    # the returned params are exactly k - 1 SGD steps
    x = X0
    for _ in range(k - 1):
        x = x - 0.25 * jax.grad(quad)(x)
    np.testing.assert_allclose(p, np.asarray(x), rtol=1e-5)
    assert np.all(np.isnan(np.asarray(res.trace.loss)[k - 1:]))


def test_fit_until_converges_and_pads():
    res = fit_until(quad, GD_ARMIJO, X0, max_steps=300, tol=1e-3, eval_fn=quad, eval_every=5)
    assert int(res.status) == STATUS_CONVERGED
    k = int(res.num_steps)
    assert 0 < k < 300
    assert res.trace.loss.shape == (300,)
    gn = np.asarray(res.trace.grad_norm)
    assert gn[k - 1] <= 1e-3 and np.all(gn[: k - 1] > 1e-3)
    assert np.all(np.isnan(gn[k:])) and np.all(np.asarray(res.trace.num_grad_evals)[k:] == -1)
    np.testing.assert_allclose(np.asarray(res.params), X_STAR, atol=1e-3)
    ev = np.asarray(res.trace.eval_metric)
    due = (np.arange(300) + 1) % 5 == 0
    assert np.all(np.isfinite(ev[due & (np.arange(300) < k)]))
    assert np.all(np.isnan(ev[~due]))
    # budget exhausted -> status 1; tolerance met at the start -> 0 steps
    res1 = fit_until(quad, GD_ARMIJO, X0, max_steps=3, tol=1e-4)
    assert int(res1.status) == STATUS_MAX_STEPS and int(res1.num_steps) == 3
    res0 = fit_until(quad, GD_ARMIJO, jnp.asarray(X_STAR, jnp.float32), max_steps=3, tol=1e-3)
    assert int(res0.status) == STATUS_CONVERGED and int(res0.num_steps) == 0


def test_vmap_and_float64():
    xs = jnp.stack([X0, -X0, 2 * X0])
    res = jax.vmap(lambda x: fit(quad, GD_ARMIJO, x, 6))(xs)
    assert res.params.shape == (3, N)
    for i in range(3):
        one = fit(quad, GD_ARMIJO, xs[i], 6)
        np.testing.assert_allclose(np.asarray(res.params[i]), np.asarray(one.params), rtol=1e-5)
    with jax.enable_x64(True):
        x64 = jnp.ones(N, jnp.float64)
        f64 = lambda x: 0.5 * x @ _A.astype(jnp.float64) @ x - _B.astype(jnp.float64) @ x  # noqa: E731
        r = fit(f64, GD_ARMIJO, x64, 6)
        assert r.params.dtype == jnp.float64 and r.trace.loss.dtype == jnp.float64
        assert r.value.dtype == jnp.float64


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_steps must be >= 0, got -1"):
        fit(quad, GD_ARMIJO, X0, -1)
    with pytest.raises(ValueError, match="eval_every must be >= 1, got 0"):
        fit(quad, GD_ARMIJO, X0, 3, eval_every=0)
    with pytest.raises(ValueError, match="tol and rtol must be >= 0"):
        fit_until(quad, GD_ARMIJO, X0, max_steps=3, tol=-1.0)
