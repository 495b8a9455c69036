"""Direction rules (mfjax.optim): the slides' formulas, optax equalities and differences, BFGS."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import mfjax.optim as mo
from mfjax.loop import STATUS_CONVERGED, fit_until
from mfjax.losses import Factors

# ----------------------------------------------------------------- helpers
_RNG = np.random.default_rng(0)
_GRADS = [
    Factors(_RNG.normal(size=(4, 2)).astype(np.float32), _RNG.normal(size=(3, 2)).astype(np.float32))
    for _ in range(5)
]
_PARAMS = Factors(np.zeros((4, 2), np.float32), np.zeros((3, 2), np.float32))


def _run(tx, grads=_GRADS):
    """Directions returned by ``tx`` for a fixed gradient sequence (flat numpy arrays)."""
    state = tx.init(_PARAMS)
    out = []
    for g in grads:
        p, state = tx.update(g, state, _PARAMS)
        out.append(np.concatenate([np.ravel(p.U), np.ravel(p.V)]))
    return np.stack(out)


def _flat_grads():
    return [np.concatenate([np.ravel(g.U), np.ravel(g.V)]).astype(np.float64) for g in _GRADS]


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ------------------------------------------------- slides' formulas (numpy)
def _ref_heavy_ball(beta):
    out, b = [], None
    for t, g in enumerate(_flat_grads()):
        b = g if t == 0 else beta * b + g
        out.append(-b)
    return np.stack(out)


def _ref_nesterov(beta):
    out, b = [], None
    for t, g in enumerate(_flat_grads()):
        b = g if t == 0 else beta * b + g
        out.append(-(g + beta * b))
    return np.stack(out)


def _ref_adagrad(alpha, eps):
    out, s = [], 0.0
    for g in _flat_grads():
        s = alpha * s + g * g
        out.append(-g / (np.sqrt(s) + eps))
    return np.stack(out)


def _ref_rmsprop(alpha, eps):
    out, v = [], 0.0
    for g in _flat_grads():
        v = alpha * v + (1 - alpha) * g * g
        out.append(-g / (np.sqrt(v) + eps))
    return np.stack(out)


def _ref_adam(b1, b2, eps):
    out, m, v = [], 0.0, 0.0
    for t, g in enumerate(_flat_grads(), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        out.append(-(m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
    return np.stack(out)


def test_gd_is_minus_gradient():
    _close(_run(mo.gd_direction()), -np.stack(_flat_grads()))


def test_heavy_ball_matches_slides_and_optax_trace():
    d = _run(mo.heavy_ball_direction(0.7))
    _close(d, _ref_heavy_ball(0.7))
    _close(d, -_run(optax.trace(decay=0.7, nesterov=False)))


def test_nesterov_matches_slides_and_coincides_with_optax():
    # The slides' g_t + beta b_t is exactly optax.trace(nesterov=True) (and so
    # optax.sgd(nesterov=True)); it differs from heavy ball.
    d = _run(mo.nesterov_direction(0.7))
    _close(d, _ref_nesterov(0.7))
    _close(d, -_run(optax.trace(decay=0.7, nesterov=True)))
    _close(d, _run(optax.sgd(1.0, momentum=0.7, nesterov=True)))
    assert np.max(np.abs(d - _ref_heavy_ball(0.7))) > 0.1


def test_adagrad_matches_slides_with_decay():
    _close(_run(mo.adagrad_direction(alpha=0.8, eps=1e-3)), _ref_adagrad(0.8, 1e-3))
    _close(_run(mo.adagrad_direction(alpha=1.0, eps=1e-8)), _ref_adagrad(1.0, 1e-8))


def test_adagrad_differs_from_optax_as_documented():
    ours = _run(mo.adagrad_direction(alpha=1.0, eps=0.0))
    # alpha = 1, eps = 0 and optax's accumulator starting at 0 with eps = 0: equal.
    _close(ours, -_run(optax.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)))
    # Default optax.adagrad: accumulator starts at 0.1, eps inside the root.
    opt = _run(optax.adagrad(1.0, initial_accumulator_value=0.1, eps=1e-7))
    gs = _flat_grads()
    s = 0.1 + np.cumsum(np.stack(gs) ** 2, axis=0)
    _close(opt, -np.stack(gs) / np.sqrt(s + 1e-7))
    assert np.max(np.abs(opt - ours)) > 1e-3
    # and the decay alpha < 1 has no optax counterpart in scale_by_rss
    assert np.max(np.abs(_run(mo.adagrad_direction(alpha=0.5, eps=0.0)) - ours)) > 1e-2


def test_rmsprop_eps_outside_root_and_optax_default_differs():
    eps = 0.1  # large eps makes the placement visible
    d = _run(mo.rmsprop_direction(alpha=0.9, eps=eps))
    _close(d, _ref_rmsprop(0.9, eps))
    _close(d, -_run(optax.scale_by_rms(decay=0.9, eps=eps, initial_scale=0.0, eps_in_sqrt=False)))
    # optax.rmsprop default: eps inside the root, g / sqrt(v + eps)
    opt = _run(optax.rmsprop(1.0, decay=0.9, eps=eps))
    v, ref = 0.0, []
    for g in _flat_grads():
        v = 0.9 * v + 0.1 * g * g
        ref.append(-g / np.sqrt(v + eps))
    _close(opt, np.stack(ref))
    assert np.max(np.abs(opt - d)) > 1e-2


def test_adam_matches_slides_and_optax():
    d = _run(mo.adam_direction(0.9, 0.99, 1e-6))
    _close(d, _ref_adam(0.9, 0.99, 1e-6))
    _close(d, _run(optax.adam(1.0, b1=0.9, b2=0.99, eps=1e-6)))


def test_registry_and_bad_arguments():
    assert set(mo.REGISTRY) == {"gd", "heavy_ball", "nesterov", "adagrad", "rmsprop", "adam", "bfgs", "cg"}
    for name in mo.REGISTRY:
        tx = mo.direction(name)
        assert isinstance(tx, optax.GradientTransformationExtraArgs)
        p, _ = tx.update(_GRADS[0], tx.init(_PARAMS), _PARAMS, value=1.0, grad=_GRADS[0],
                         value_fn=lambda x: 0.0)
        # every rule gives a descent direction on its first step
        assert float(optax.tree.vdot(p, _GRADS[0])) < 0
    with pytest.raises(KeyError, match="unknown direction rule 'sgd'"):
        mo.direction("sgd")
    with pytest.raises(ValueError, match="beta must be in .*got 1.5"):
        mo.heavy_ball_direction(1.5)
    with pytest.raises(ValueError, match="alpha must be in .*got 0.0"):
        mo.adagrad_direction(alpha=0.0)
    with pytest.raises(TypeError, match="linesearch must be an optax GradientTransformation"):
        mo.gd(linesearch="armijo")


def test_optimizer_is_chain_of_direction_and_step():
    opt = mo.heavy_ball(0.5, linesearch=optax.scale(0.1))  # any step-rule object
    ref = optax.sgd(0.1, momentum=0.5)
    _close(_run(opt), _run(ref))


# -------------------------------------------------------------------- BFGS
def test_bfgs_update_formula_and_secant_condition():
    rng = np.random.default_rng(1)
    n = 5
    A = rng.normal(size=(n, n))
    H = A @ A.T + n * np.eye(n)
    s, y = rng.normal(size=n), rng.normal(size=n)
    if s @ y < 0:
        y = -y
    Hn = np.asarray(mo.bfgs_inverse_update(jnp.asarray(H), jnp.asarray(s), jnp.asarray(y)))
    rho = 1.0 / (s @ y)
    I = np.eye(n)
    ref = (I - rho * np.outer(s, y)) @ H @ (I - rho * np.outer(y, s)) + rho * np.outer(s, s)
    _close(Hn, ref, 1e-4)
    _close(Hn @ y, s, 1e-4)  # secant condition H+ y = s


def test_bfgs_two_pass_update_equals_the_literal_update_and_direction():
    """The direction rule's update (one product ``H [y, g]`` + one fused pass, ``p`` from vectors) equals
    Algorithm 12 as written -- ``H+ = bfgs_inverse_update(H, s, y)``, ``p = -H+ g`` -- for an accepted pair,
    the first accepted pair with ``H_0`` reset to ``gamma0 I``, and a skipped pair with non-finite ``s``
    (``H`` kept exactly); float64 reference, float32 to float32 tolerance."""
    from mfjax.optim.directions import _bfgs_update_and_direction

    rng = np.random.default_rng(3)
    n = 40
    A = rng.normal(size=(n, n))
    H = A @ A.T / n + np.eye(n)
    s, y, g = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y = y if s @ y > 0 else -y
    sy = s @ y
    gamma0 = sy / (y @ y)
    f32 = lambda *a: tuple(jnp.asarray(v, jnp.float32) for v in a)  # noqa: E731
    for first, scale_init, H0 in ((False, True, H), (True, True, gamma0 * np.eye(n)), (True, False, H)):
        rho = 1.0 / sy
        I = np.eye(n)
        want = (I - rho * np.outer(s, y)) @ H0 @ (I - rho * np.outer(y, s)) + rho * np.outer(s, s)
        Hn, p = _bfgs_update_and_direction(*f32(H, s, y, g, sy), jnp.asarray(True), jnp.asarray(first), scale_init)
        _close(np.asarray(Hn), want, 1e-4)
        _close(np.asarray(p), -want @ g, 1e-4)
    bad = s.copy()
    bad[0] = np.inf
    Hn, p = _bfgs_update_and_direction(*f32(H, bad, y, g, np.inf), jnp.asarray(False), jnp.asarray(False), True)
    np.testing.assert_array_equal(np.asarray(Hn), np.asarray(jnp.asarray(H, jnp.float32)))
    _close(np.asarray(p), -H @ g, 1e-5)


def test_bfgs_skips_curvature_violating_updates():
    tx = mo.bfgs_direction(scale_init=True)
    x0 = jnp.array([0.0, 0.0, 0.0])
    x1 = jnp.array([1.0, 0.0, 0.0])
    g0 = jnp.array([1.0, 2.0, 3.0])
    g1 = jnp.array([0.0, 2.0, 3.0])  # s^T y = -1 < 0 : non-convex pair
    st = tx.init(x0)
    p0, st = tx.update(g0, st, x0)
    _close(np.asarray(p0), -np.asarray(g0))  # H_0 = I
    p1, st = tx.update(g1, st, x1)
    assert int(st.num_skipped) == 1
    _close(np.asarray(st.inv_hessian), np.eye(3))  # kept (no scaling either)
    _close(np.asarray(p1), -np.asarray(g1))
    # a valid pair is used: secant condition afterwards
    x2 = jnp.array([1.0, 1.0, 0.0])
    g2 = jnp.array([0.0, 4.0, 3.0])  # s = e2, y = 2 e2: s^T y = 2 > 0
    _, st = tx.update(g2, st, x2)
    assert int(st.num_skipped) == 1
    _close(np.asarray(st.inv_hessian @ (g2 - g1)), np.asarray(x2 - x1))
    assert np.all(np.isfinite(np.asarray(st.inv_hessian)))


def test_bfgs_zero_step_is_skipped_not_nan():
    tx = mo.bfgs_direction()
    x = jnp.ones(3)
    g = jnp.array([1.0, -1.0, 2.0])
    st = tx.init(x)
    _, st = tx.update(g, st, x)
    p, st = tx.update(g, st, x)  # s = y = 0
    assert int(st.num_skipped) == 1
    assert np.all(np.isfinite(np.asarray(p)))


def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


_ZOOM = optax.scale_by_zoom_linesearch(max_linesearch_steps=30, initial_guess_strategy="one")


def test_bfgs_vs_scipy_rosenbrock():
    with jax.enable_x64(True):
        x0 = jnp.array([-1.2, 1.0, -0.5, 0.8], jnp.float64)
        opt = mo.bfgs(linesearch=_ZOOM)
        res = fit_until(_rosen, opt, x0, max_steps=200, tol=1e-8)
        ref = scipy.optimize.minimize(
            lambda x: float(_rosen(jnp.asarray(x))), np.asarray(x0), method="BFGS",
            jac=lambda x: np.asarray(jax.grad(_rosen)(jnp.asarray(x))), options={"gtol": 1e-8},
        )
        assert res.params.dtype == jnp.float64
        assert int(res.status) == STATUS_CONVERGED
        _close(np.asarray(res.params), ref.x, 1e-5)
        _close(np.asarray(res.params), np.ones(4), 1e-5)
        # same order of iterations as scipy's BFGS
        assert int(res.num_steps) <= 2 * ref.nit + 10


def _exact_quadratic_step(A):
    """Test-only step rule: the exact minimiser along p of 1/2 x^T A x - b^T x."""

    from typing import NamedTuple

    class State(NamedTuple):
        value: jax.Array
        grad: jax.Array

    def init(params):
        return State(jnp.asarray(jnp.inf, params.dtype), jnp.zeros_like(params))

    def update(p, state, params, *, value, grad, value_fn, **kw):
        step = -jnp.vdot(grad, p) / jnp.vdot(p, A @ p)
        return step * p, State(jnp.asarray(jnp.inf, params.dtype), jnp.zeros_like(params))

    return optax.GradientTransformationExtraArgs(init, update)


def test_bfgs_quadratic_exact_steps_converges_in_n_iterations():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        n = 6
        M = rng.normal(size=(n, n))
        A = jnp.asarray(M @ M.T + 0.5 * np.eye(n))
        b = jnp.asarray(rng.normal(size=n))
        f = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
        x_star = np.linalg.solve(np.asarray(A), np.asarray(b))
        for scale_init in (False, True):
            opt = mo.bfgs(scale_init=scale_init, linesearch=_exact_quadratic_step(A))
            res = fit_until(f, opt, jnp.zeros(n), max_steps=3 * n, tol=1e-9)
            assert int(res.status) == STATUS_CONVERGED
            assert int(res.num_steps) <= n + 1
            _close(np.asarray(res.params), x_star, 1e-7)
        ref = scipy.optimize.minimize(lambda x: float(f(jnp.asarray(x))), np.zeros(n),
                                      jac=lambda x: np.asarray(jax.grad(f)(jnp.asarray(x))),
                                      method="BFGS", options={"gtol": 1e-9})
        _close(np.asarray(res.params), ref.x, 1e-6)


def _pair_sequence(n=25, steps=18, seed=5):
    """Points ``x_t`` of a random walk with gradients of a convex quadratic (so ``s.y > 0``), with one
    repeated point (a zero step: skipped pair) and one non-convex pair (``y`` negated: skipped)."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    A = M @ M.T / n + 0.1 * np.eye(n)
    xs = np.cumsum(rng.normal(size=(steps, n)), axis=0)
    xs[6] = xs[5]
    gs = xs @ A.T + rng.normal(size=n)
    gs[11] = gs[10] - (gs[11] - gs[10])
    return xs, gs


def _reference_bfgs(xs, gs, scale_init, memory=None):
    """The dense Algorithm 12 written out (float64): ``H`` from ``gamma0 I`` (first accepted pair) or ``I``,
    updated by :func:`bfgs_inverse_update` over the accepted pairs -- the last ``memory`` of them when given."""
    pairs, out, gamma = [], [], 1.0
    for t, (x, g) in enumerate(zip(xs, gs)):
        if t:
            s, y = x - xs[t - 1], g - gs[t - 1]
            if s @ y > 1e-8 * np.linalg.norm(s) * np.linalg.norm(y):
                if not pairs and scale_init:
                    gamma = (s @ y) / (y @ y)
                pairs.append((s, y))
        H = gamma * np.eye(len(x))
        for s, y in pairs[-memory:] if memory else pairs:
            H = np.asarray(mo.bfgs_inverse_update(H, s, y))
        out.append(-H @ g)
    return np.stack(out)


def _directions(tx, xs, gs):
    state, out = tx.init(jnp.asarray(xs[0])), []
    update = jax.jit(tx.update)
    for x, g in zip(xs, gs):
        p, state = update(jnp.asarray(g), state, jnp.asarray(x))
        out.append(np.asarray(p))
    return np.stack(out), state


def test_compact_bfgs_equals_dense_bfgs_and_drops_the_oldest_pair_when_full():
    """``bfgs_direction(memory=m)`` (compact representation) gives the dense rule's directions while at most ``m``
    pairs are accepted, skipped pairs included (float64, to 1e-9 relative); with a smaller ``m`` it equals BFGS
    from ``gamma0 I`` over the last ``m`` accepted pairs."""
    xs, gs = _pair_sequence()
    with jax.enable_x64(True):
        for scale_init in (True, False):
            want = _reference_bfgs(xs, gs, scale_init)
            dense, _ = _directions(mo.bfgs_direction(scale_init=scale_init), xs, gs)
            compact, st = _directions(mo.bfgs_direction(scale_init=scale_init, memory=len(xs)), xs, gs)
            scale = np.abs(want).max(axis=1, keepdims=True)
            np.testing.assert_allclose(dense / scale, want / scale, atol=1e-9)
            np.testing.assert_allclose(compact / scale, want / scale, atol=1e-9)
            assert int(st.num_skipped) == 2 and int(st.num_pairs) == len(xs) - 3
            for m in (1, 4):
                short, st = _directions(mo.bfgs_direction(scale_init=scale_init, memory=m), xs, gs)
                want_m = _reference_bfgs(xs, gs, scale_init, memory=m)
                np.testing.assert_allclose(short / scale, want_m / scale, atol=1e-9)
                assert int(st.num_pairs) == m
                assert not np.allclose(short[-1], want[-1], rtol=1e-3)  # a limited memory is a different rule
    # float32: the same directions to float32 tolerance
    compact32, _ = _directions(mo.bfgs_direction(memory=len(xs)), xs.astype(np.float32), gs.astype(np.float32))
    want = _reference_bfgs(xs, gs, True)
    scale = np.abs(want).max(axis=1, keepdims=True)
    np.testing.assert_allclose(compact32 / scale, want / scale, atol=2e-4)
    for bad in (0, -3, 2.5, True, None.__class__):
        with pytest.raises(ValueError, match="memory"):
            mo.compact_bfgs_direction(bad)


def test_compact_bfgs_in_a_fit_matches_dense_bfgs():
    """In a jitted fit on a small MF problem (Armijo steps), the compact rule's loss trace equals the dense one's."""
    from mfjax.core.factors import init_factors
    from mfjax.data import synthetic
    from mfjax.linesearch import armijo
    from mfjax.loop import fit
    from mfjax.losses import masked_sq_loss

    ratings = synthetic(m=30, n=20, rank=3, density=0.5, seed=0).device_put()
    params = init_factors(jax.random.key(1), ratings.shape, 3)
    loss = lambda p: masked_sq_loss(p, ratings, 0.1)  # noqa: E731
    traces = [fit(loss, optax.chain(mo.bfgs_direction(memory=m), armijo()), params, num_steps=40).trace.loss
              for m in (None, 40)]
    np.testing.assert_allclose(np.asarray(traces[1]), np.asarray(traces[0]), rtol=2e-5)
    assert float(traces[0][-1]) < 0.5 * float(traces[0][0])


def test_switch_runs_the_selected_rule():
    rules = [mo.gd_direction(), mo.heavy_ball_direction(0.7), mo.adagrad_direction(0.8, 1e-3)]
    _close(_run(mo.switch(rules, 1)), _ref_heavy_ball(0.7))
    _close(_run(mo.switch(rules, jnp.asarray(2))), _ref_adagrad(0.8, 1e-3))
    with pytest.raises(ValueError, match="at least one rule"):
        mo.switch([], 0)


# ------------------------------------------------------ nonlinear CG
CG_BETAS = ("pr+", "hs+", "fr", "dy")


def _ref_cg(grads, beta):
    """Textbook nonlinear CG directions for a fixed gradient sequence (numpy, float64):
    the preconditioned reference with the identity (z = g)."""
    return _pcg_ref(grads, grads, beta)


def test_cg_first_step_is_gd_and_matches_formulas():
    for beta in CG_BETAS:
        got = _run(mo.cg_direction(beta))
        _close(got[0], -_flat_grads()[0])
        _close(got, _ref_cg(_flat_grads(), beta), 1e-4)
        assert all(float(np.dot(p, g)) < 0 for p, g in zip(got, _flat_grads()))  # descent
    # periodic restart: every second update is -g
    got = _run(mo.cg_direction("pr+", restart_every=2))
    for k in (0, 2, 4):
        _close(got[k], -_flat_grads()[k])
    with pytest.raises(ValueError, match="beta must be one of"):
        mo.cg_direction("pr")
    with pytest.raises(ValueError, match="restart_every"):
        mo.cg_direction(restart_every=0)


def test_cg_restarts_when_not_descent():
    # FR: g1 = (1, 0), p1 = (-1, 0); g2 = (-1, 1): beta = 2, -g2 + 2 p1 = (-1, -1) has
    # g2 . p = 0 (not a descent direction), so the rule restarts with p2 = -g2.
    tx = mo.cg_direction("fr")
    x = jnp.zeros(2)
    s = tx.init(x)
    p1, s = tx.update(jnp.array([1.0, 0.0]), s, x)
    g2 = jnp.array([-1.0, 1.0])
    p2, s = tx.update(g2, s, x)
    np.testing.assert_allclose(p2, -g2)
    assert int(s.num_restarts) == 1
    # a regular CG step is not counted as a restart
    g3 = jnp.array([0.5, 0.5])
    p3, s = tx.update(g3, s, x)
    np.testing.assert_allclose(p3, -g3 + (0.5 / 2.0) * p2)
    assert float(jnp.vdot(p3, g3)) < 0 and int(s.num_restarts) == 1


def test_cg_descent_under_armijo_on_rosenbrock():
    import mfjax.linesearch as ls

    f = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)  # noqa: E731
    for beta in ("pr+", "hs+"):
        tx, rule = mo.cg_direction(beta), ls.armijo()
        x = jnp.array([-1.2, 1.0, -0.5, 0.8])
        st, sr = tx.init(x), rule.init(x)
        upd = jax.jit(lambda x, st, sr: _cg_armijo_step(f, tx, rule, x, st, sr))
        for _ in range(40):
            x, st, sr, slope = upd(x, st, sr)
            assert float(slope) < 0


def _cg_armijo_step(f, tx, rule, x, st, sr):
    v, g = jax.value_and_grad(f)(x)
    p, st = tx.update(g, st, x)
    u, sr = rule.update(p, sr, x, value=v, grad=g, value_fn=f)
    return x + u, st, sr, jnp.vdot(g, p)


def test_cg_quadratic_exact_steps_converges_in_n_iterations():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        n = 7
        M = rng.normal(size=(n, n))
        A = jnp.asarray(M @ M.T + 0.5 * np.eye(n))
        b = jnp.asarray(rng.normal(size=n))
        f = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
        x_star = np.linalg.solve(np.asarray(A), np.asarray(b))
        for beta in CG_BETAS:
            opt = mo.cg(beta, linesearch=_exact_quadratic_step(A))
            res = fit_until(f, opt, jnp.zeros(n), max_steps=3 * n, tol=1e-8)
            assert int(res.status) == STATUS_CONVERGED, beta
            assert int(res.num_steps) <= n, (beta, int(res.num_steps))
            _close(np.asarray(res.params), x_star, 1e-7)
        # gradient descent with the same exact steps is far from converged after n steps
        res = fit_until(f, mo.gd(linesearch=_exact_quadratic_step(A)), jnp.zeros(n), max_steps=n, tol=1e-8)
        assert int(res.status) != STATUS_CONVERGED


# ------------------------------------------- Gauss-Newton preconditioners (MF)
def _small_mf(rng, m=7, n=5, r=2, density=0.6, empty_row=True):
    from mfjax.data.ratings import Ratings

    X = rng.standard_normal((m, r)) @ rng.standard_normal((r, n)) + 3.0
    W = rng.random((m, n)) < density
    W[np.arange(m - 1), np.arange(m - 1) % n] = True
    if empty_row:
        W[m - 1] = False  # a row without observations
    rows, cols = np.nonzero(W)
    ratings = Ratings.create(rows, cols, X[rows, cols], (m, n), dtype=np.float64)
    params = Factors(jnp.asarray(rng.standard_normal((m, r))), jnp.asarray(rng.standard_normal((n, r))))
    return ratings, params


def _pcg_ref(grads, zs, beta):
    """Preconditioned nonlinear CG (Nocedal-Wright Alg. 5.3 form) in numpy."""
    out, g0, z0, p0 = [], None, None, None
    for t, (g, z) in enumerate(zip(grads, zs)):
        if t == 0:
            p = -z
        else:
            y = g - g0
            b = {"fr": z @ g / (z0 @ g0), "pr+": max(0.0, z @ y / (z0 @ g0)),
                 "hs+": max(0.0, z @ y / (p0 @ y)), "dy": z @ g / (p0 @ y)}[beta]
            p = -z + b * p0
            if not g @ p < 0:
                p = -z
        out.append(p)
        g0, z0, p0 = g, z, p
    return np.stack(out)


def test_gauss_newton_diagonal_and_blocks_equal_the_exact_hessian_blocks():
    from mfjax.losses import masked_sq_loss

    with jax.enable_x64(True):
        rng = np.random.default_rng(11)
        R, (U, V) = _small_mf(rng)
        m, n, r = U.shape[0], V.shape[0], U.shape[1]
        wts = (jnp.asarray(rng.random(m) + 0.5), jnp.asarray(rng.random(n) + 0.5))
        for scale, l2, l2w in (("sum", 2.0, None), ("mean", 0.3, wts), ("sum", 0.0, None)):
            kw = dict(scale=scale, l2_weights=l2w)
            # For fixed V the Hessian wrt U is exactly block diagonal (and symmetrically).
            HU = jax.hessian(lambda A: masked_sq_loss(Factors(A, V), R, l2, **kw))(U)
            HV = jax.hessian(lambda B: masked_sq_loss(Factors(U, B), R, l2, **kw))(V)
            d = mo.mf_gauss_newton_diagonal(Factors(U, V), R, l2, chunk_size=3, **kw)
            (AU, rU, nU), (AV, rV, nV) = mo.mf_gauss_newton_blocks(Factors(U, V), R, l2,
                                                                   chunk_size=4, **kw)
            for H, dd, A, rid, k in ((HU, d.U, AU, rU, m), (HV, d.V, AV, rV, n)):
                H = np.asarray(H)
                blocks = np.stack([H[i, :, i, :] for i in range(k)])
                _close(np.asarray(A) + np.stack([np.diag(x) for x in np.asarray(rid)]), blocks, 1e-9)
                _close(np.asarray(dd), np.stack([np.diag(b) for b in blocks]), 1e-9)
                off = H.copy()
                for i in range(k):
                    off[i, :, i, :] = 0
                assert np.abs(off).max() == 0
            # the empty row: d = 2 l2 w_i, count 0
            _close(np.asarray(d.U[m - 1]), np.full(r, 2 * l2 * (1.0 if l2w is None else float(wts[0][m - 1]))))
            assert float(nU[m - 1]) == 0


def test_preconditioned_cg_formulas_and_identity_reduces_to_cg():
    # identity preconditioner: exactly the plain CG rule
    for beta in CG_BETAS:
        _close(_run(mo.cg_direction(beta, preconditioner=optax.identity())), _run(mo.cg_direction(beta)))
    # a fixed positive diagonal M^{-1} = D: the preconditioned formulas
    D = Factors(np.linspace(0.2, 3.0, 8).reshape(4, 2).astype(np.float32),
                np.linspace(0.5, 1.5, 6).reshape(3, 2).astype(np.float32))
    scale_by_D = optax.stateless(lambda g, params=None: jax.tree.map(jnp.multiply, g, D))
    Dflat = np.concatenate([np.ravel(D.U), np.ravel(D.V)]).astype(np.float64)
    grads = _flat_grads()
    for beta in CG_BETAS:
        got = _run(mo.cg_direction(beta, preconditioner=scale_by_D))
        _close(got, _pcg_ref(grads, [Dflat * g for g in grads], beta), 1e-4)
        assert all(float(np.dot(p, g)) < 0 for p, g in zip(got, grads))


def test_mf_preconditioned_directions_are_descent():
    with jax.enable_x64(True):
        rng = np.random.default_rng(12)
        R, p0 = _small_mf(rng)
        for l2 in (1.5, 0.0):
            from mfjax.losses import masked_mse

            grad = jax.jit(jax.grad(masked_mse(R, l2)))
            for kind in ("diagonal", "block"):
                pre = mo.mf_preconditioner(R, l2, kind=kind)
                rules = [optax.chain(pre, mo.gd_direction()), mo.cg_direction("pr+", preconditioner=pre)]
                for rule in rules:
                    x, st = p0, rule.init(p0)
                    update = jax.jit(rule.update)  # one program per rule, not op-by-op dispatch
                    for _ in range(4):
                        g = grad(x)
                        p, st = update(g, st, x)
                        assert all(np.isfinite(np.asarray(a)).all() for a in p)
                        assert float(optax.tree.vdot(g, p)) < 0, (l2, kind)
                        x = jax.tree.map(lambda a, b: a + 1e-3 * b, x, p)
        with pytest.raises(ValueError, match="kind"):
            mo.mf_preconditioner(R, 1.0, kind="full")


def test_block_preconditioner_with_exact_step_is_an_als_half_sweep():
    import mfjax.linesearch as ls
    from mfjax.losses import masked_mse
    from mfjax.solvers import als_update_cols, als_update_rows

    with jax.enable_x64(True):
        rng = np.random.default_rng(13)
        R, x = _small_mf(rng)
        l2 = 0.7
        g = jax.grad(masked_mse(R, l2))(x)
        opt = optax.chain(mo.mf_preconditioner(R, l2, kind="block"), mo.gd_direction(),
                          ls.exact_mf(R, l2))
        for g_half, ref in ((Factors(g.U, jnp.zeros_like(g.V)), als_update_rows(x, R, l2)),
                            (Factors(jnp.zeros_like(g.U), g.V), als_update_cols(x, R, l2))):
            upd, st = opt.update(g_half, opt.init(x), x)
            new = optax.apply_updates(x, upd)
            _close(np.asarray(new.U), np.asarray(ref.U), 1e-8)
            _close(np.asarray(new.V), np.asarray(ref.V), 1e-8)
            assert abs(float(ls.get_linesearch_info(st).step_size) - 1.0) < 1e-8


def test_mf_preconditioned_cg_fit_decreases_and_compiles_once():
    import mfjax.linesearch as ls
    from mfjax.loop import fit
    from mfjax.losses import masked_mse

    rng = np.random.default_rng(14)
    R, x0 = _small_mf(rng, m=12, n=9, r=3, empty_row=True)
    R = R.astype(np.float32)
    x0 = Factors(x0.U.astype(jnp.float32), x0.V.astype(jnp.float32))
    loss = masked_mse(R, 1.0)
    traced = {"n": 0}

    def f(p):
        traced["n"] += 1
        return loss(p)

    for kind in ("diagonal", "block"):
        opt = mo.cg(preconditioner=mo.mf_preconditioner(R, 1.0, kind=kind), linesearch=ls.exact_mf(R, 1.0))
        res = fit(f, opt, x0, 15)
        tr = np.asarray(res.trace.loss)
        assert np.all(np.diff(tr) <= 1e-4 * tr[:-1]) and tr[-1] < 0.5 * float(loss(x0)), kind
        n1 = traced["n"]
        res2 = fit(f, opt, Factors(2.0 * x0.U, x0.V), 15)
        assert traced["n"] == n1
        assert float(res2.value) < float(loss(Factors(2.0 * x0.U, x0.V)))


def test_mf_preconditioner_refresh_every_reuses_the_stored_curvature():
    with jax.enable_x64(True):
        rng = np.random.default_rng(15)
        R, x = _small_mf(rng)
        g = Factors(jnp.ones_like(x.U), jnp.ones_like(x.V))
        x2 = Factors(2.0 * x.U, 0.5 * x.V)
        for kind in ("diagonal", "block"):
            fresh = mo.mf_preconditioner(R, 1.0, kind=kind)
            lazy = mo.mf_preconditioner(R, 1.0, kind=kind, refresh_every=2)
            s = lazy.init(x)
            z0, s = lazy.update(g, s, x)
            z1, s = lazy.update(g, s, x2)   # reuses M(x)
            z2, s = lazy.update(g, s, x2)   # rebuilt at x2
            ref0, _ = fresh.update(g, fresh.init(x), x)
            ref2, _ = fresh.update(g, fresh.init(x2), x2)
            for a, b in ((z0, ref0), (z1, ref0), (z2, ref2)):
                _close(np.asarray(a.U), np.asarray(b.U), 1e-10)
                _close(np.asarray(a.V), np.asarray(b.V), 1e-10)
            assert np.abs(np.asarray(ref2.U) - np.asarray(ref0.U)).max() > 1e-3
        with pytest.raises(ValueError, match="refresh_every"):
            mo.mf_preconditioner(R, 1.0, refresh_every=0)
