"""Tests of the search kernels (mfjax.linesearch.kernels) and their two drivers.

The optax rules (``mfjax.linesearch.armijo`` ...) and the folded row loop of
vector descent (``mfjax.solvers.rowwise.folded``) run the same kernel
objects; these tests check the kernels' decisions on one-dimensional lines
and that both drivers take the same steps.
"""

import importlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mfjax.linesearch as ls
from mfjax.linesearch import kernels as K
from mfjax.linesearch.search import measure_trial

rw = importlib.import_module("mfjax.solvers.rowwise")


def _line(phi):
    """Trials of ``phi`` (a scalar function of the step) with values and slopes."""
    dphi = jax.grad(phi)

    def trial(a):
        a = jnp.asarray(a, jnp.float32)
        return K.make_trial(a, phi(a), jnp.isfinite(phi(a)), slope=dphi(a))

    return K.make_origin(phi(0.0), dphi(0.0)), trial


def _search(kernel, phi, prev=None):
    """Run ``kernel`` on the line ``phi`` with a Python loop; returns the accepted step and trials."""
    origin, trial = _line(phi)
    a, state = kernel.init(origin, prev)
    for n in range(1, kernel.max_trials + 1):
        dec, state = kernel.step(state, trial(a))
        if bool(dec.accept):
            return float(a), n
        if bool(dec.stop):
            break
        a = dec.next_step
    return None, n


def test_conditions_are_the_textbook_ones():
    origin = K.make_origin(jnp.asarray(1.0), jnp.asarray(-2.0))
    t = K.make_trial(jnp.asarray(0.5), jnp.asarray(0.1), jnp.asarray(True), slope=jnp.asarray(-0.5))
    assert bool(K.sufficient_decrease(origin, t, 0.5))          # 0.1 <= 1 - 0.5 * 0.5 * 2
    assert not bool(K.sufficient_decrease(origin, t._replace(value=jnp.asarray(0.6)), 0.5))
    assert bool(K.weak_curvature(origin, t, 0.9))               # -0.5 >= -1.8
    assert bool(K.strong_curvature(origin, t, 0.3))             # 0.5 <= 0.6
    assert not bool(K.strong_curvature(origin, t._replace(slope=jnp.asarray(0.7)), 0.3))
    lo, hi, nxt = K.bisection_bracket(0.0, jnp.inf, 1.0, jnp.asarray(True), jnp.asarray(False))
    assert (float(lo), float(hi), float(nxt)) == (1.0, np.inf, 2.0)      # grows while hi = inf
    lo, hi, nxt = K.bisection_bracket(1.0, jnp.inf, 4.0, jnp.asarray(False), jnp.asarray(False))
    assert (float(lo), float(hi), float(nxt)) == (1.0, 4.0, 2.5)         # then bisects
    assert not bool(K.can_start(K.make_origin(jnp.asarray(1.0), jnp.asarray(0.0))))
    assert not bool(K.can_start(K.make_origin(jnp.asarray(jnp.nan), jnp.asarray(-1.0))))


def test_kernels_find_their_steps_on_a_parabola():
    phi = lambda a: (a - 3.0) ** 2           # phi(0) = 9, phi'(0) = -6, minimum at 3
    # Armijo from 8 halves to 4 (phi(8) = 25 fails, phi(4) = 1 passes)
    assert _search(K.Backtracking(K.SufficientDecrease(1e-4), beta=0.5, initial_step=8.0), phi) == (4.0, 2)
    # warm start: min(2 * 1.5, 8) = 3, the exact minimiser
    assert _search(K.Backtracking(K.SufficientDecrease(1e-4), 0.5, 30, 8.0, growth=2.0), phi, 1.5) == (3.0, 1)
    # strong Wolfe as written: from 8, 4 has |phi'(4)| = 2 > 0.1 * 6, 2 has 2 too, 1 has 4: fails;
    # with c2 = 0.9 the step 4 is accepted
    assert _search(K.Backtracking(K.StrongWolfeConditions(1e-4, 0.9), 0.5, 30, 8.0), phi)[0] == 4.0
    assert _search(K.Backtracking(K.StrongWolfeConditions(1e-4, 0.1), 0.5, 4, 8.0), phi)[0] is None
    # bisection grows from 0.25 (phi'(0.25) = -5.5 < 0.9 phi'(0) = -5.4) to 0.5 (phi' = -5: accepted)
    assert _search(K.BisectionWolfe(1e-4, 0.9, 30, 0.25), phi) == (0.5, 2)
    # zoom reaches a strong Wolfe step from far below and from far above
    for a0 in (1e-3, 100.0):
        a, n = _search(ls.ZoomWolfe(1e-4, 0.1, 30, a0), phi)
        assert a is not None and abs(a - 3.0) <= 0.3 and n <= 20
    # the exact step needs phi''(0) = 2
    exact = K.ExactQuadratic()
    a, state = exact.init(K.make_origin(jnp.asarray(9.0), jnp.asarray(-6.0), curvature=jnp.asarray(2.0)), None)
    assert float(a) == 3.0
    dec, _ = exact.step(state, K.make_trial(a, jnp.asarray(0.0), jnp.asarray(True)))
    assert bool(dec.accept) and bool(dec.stop)


def test_non_finite_trials_are_rejected():
    origin = K.make_origin(jnp.asarray(1.0), jnp.asarray(-1.0), direction_norm=jnp.asarray(1.0))
    bad = K.make_trial(jnp.asarray(1.0), jnp.asarray(jnp.nan), jnp.asarray(False), slope=jnp.asarray(0.0),
                       grad_change=jnp.asarray(jnp.nan))
    for kernel in (K.Backtracking(), K.BisectionWolfe(), ls.ZoomWolfe(),
                   K.Backtracking(interpolate=True), K.Backtracking(K.LipschitzEstimate(), interpolate=True),
                   K.Backtracking(K.StrongWolfeConditions(), interpolate=True),
                   K.BisectionWolfe(interpolate=True)):
        _, state = kernel.init(origin, None)
        dec, _ = kernel.step(state, bad)
        assert not bool(dec.accept)
        assert float(dec.next_step) < 1.0       # the step shrinks away from the bad trial


def _quad_origin_trial(phi, dphi, a):
    origin = K.make_origin(jnp.asarray(phi(0.0)), jnp.asarray(dphi(0.0)))
    return origin, K.make_trial(jnp.asarray(a), jnp.asarray(phi(a)), jnp.asarray(True), slope=jnp.asarray(dphi(a)))


def test_interpolation_steps_are_the_analytic_minimisers():
    with jax.enable_x64(True):
        # a parabola is its own quadratic (and cubic) model: both give its minimiser 3 from any trial
        phi, dphi = (lambda a: 2.0 * (a - 3.0) ** 2 + 1.0), (lambda a: 4.0 * (a - 3.0))
        for a in (0.5, 8.0, 40.0):
            origin, trial = _quad_origin_trial(phi, dphi, a)
            assert float(K.quadratic_step(origin, trial)) == pytest.approx(3.0, rel=1e-12)
            assert float(K.cubic_step(origin, trial)) == pytest.approx(3.0, rel=1e-12)
        # a cubic phi(a) = a^3 - 6 a^2 + 5 a + 2: local minimiser (6 + sqrt(21)) / 3 from (0, a) data
        phi, dphi = (lambda a: a ** 3 - 6 * a ** 2 + 5 * a + 2), (lambda a: 3 * a ** 2 - 12 * a + 5)
        x_star = (6 + np.sqrt(21.0)) / 3
        for a in (2.0, 7.0):
            origin, trial = _quad_origin_trial(phi, dphi, a)
            assert float(K.cubic_step(origin, trial)) == pytest.approx(x_star, rel=1e-12)
            assert float(ls.cubic_minimizer(0.0, phi(0.0), dphi(0.0), a, phi(a), dphi(a))) == pytest.approx(
                x_star, rel=1e-12)
        # no minimiser: phi(a) below the tangent at 0 -> NaN, the kernel falls back to beta a
        origin = K.make_origin(jnp.asarray(1.0), jnp.asarray(-1.0))
        below = K.make_trial(jnp.asarray(2.0), jnp.asarray(-5.0), jnp.asarray(True))
        assert np.isnan(float(K.quadratic_step(origin, below)))


def test_interpolating_kernels_on_a_parabola():
    phi = lambda a: (a - 3.0) ** 2           # phi(0) = 9, phi'(0) = -6, minimum at 3
    # Armijo from 8: the quadratic model's minimiser 3 (inside [0.8, 4]) in one rejection
    assert _search(K.Backtracking(K.SufficientDecrease(1e-4), 0.5, 30, 8.0, interpolate=True), phi) == (3.0, 2)
    # from 100 the model step 3 is clipped to 0.1 * 100 = 10, then the model gives 3
    assert _search(K.Backtracking(K.SufficientDecrease(1e-4), 0.5, 30, 100.0, interpolate=True), phi) == (3.0, 3)
    # strong Wolfe with cubic interpolation, c2 = 0.1 (the literal search fails here, see above)
    a, n = _search(K.Backtracking(K.StrongWolfeConditions(1e-4, 0.1), 0.5, 4, 8.0, interpolate=True), phi)
    assert a == pytest.approx(3.0, rel=1e-6) and n == 2
    # bisection weak Wolfe: 8 violates Armijo and brackets [0, 8]; the cubic through both ends is
    # the parabola's minimiser 3, the literal midpoint is 4 (both weak Wolfe steps)
    a, n = _search(K.BisectionWolfe(1e-4, 0.1, 30, 8.0, interpolate=True), phi)
    assert a == pytest.approx(3.0, rel=1e-6) and n == 2
    assert _search(K.BisectionWolfe(1e-4, 0.1, 30, 8.0), phi) == (4.0, 2)


def test_warm_starts_reuse_the_previous_step():
    phi = lambda a: (a - 3.0) ** 2
    origin, _ = _line(phi)
    for kernel in (K.Backtracking(growth=2.0), K.Backtracking(growth=2.0, interpolate=True),
                   K.BisectionWolfe(growth=2.0), ls.ZoomWolfe(growth=2.0)):
        assert float(kernel.init(origin, jnp.asarray(0.25))[0]) == 0.5      # growth * previous step
        assert float(kernel.init(origin, jnp.asarray(4.0))[0]) == 1.0       # capped at initial_step
        assert float(kernel.init(origin, jnp.asarray(jnp.inf))[0]) == 1.0   # no step yet: cold start
    for kernel in (K.Backtracking(), K.BisectionWolfe(), ls.ZoomWolfe()):  # the literal searches: cold
        assert float(kernel.init(origin, jnp.asarray(0.25))[0]) == 1.0
    # the interpolating 1/L test passes 1/L_loc of the accepted trial to the next search:
    # grad f(x) = A x along p: ||Delta g|| = a ||A p||, so 1/L_loc = ||p|| / ||A p|| whatever a
    # (here ||p|| = 2, ||A p|| = 16: 1/L_loc = 0.125)
    o = K.make_origin(jnp.asarray(1.0), jnp.asarray(-1.0), direction_norm=jnp.asarray(2.0))
    t = K.make_trial(jnp.asarray(0.1), jnp.asarray(0.5), jnp.asarray(True), grad_change=jnp.asarray(0.1 * 16.0))
    warm_1l = K.Backtracking(K.LipschitzEstimate(), growth=1.0, interpolate=True)
    dec, _ = warm_1l.step(o, t)
    assert bool(dec.accept) and float(dec.warm) == pytest.approx(0.125)
    dec, _ = K.Backtracking(K.LipschitzEstimate()).step(o, t)
    assert dec.warm is None                                               # literal: the accepted step
    # rejected: the next trial is safety / L_loc directly
    dec, _ = warm_1l.step(o, t._replace(step=jnp.asarray(1.0), grad_change=jnp.asarray(16.0)))
    assert not bool(dec.accept) and float(dec.next_step) == pytest.approx(0.95 * 0.125)
    # far too short (a L_loc = 0.16 < 1/2): retried at 0.95 / L_loc (at most 10 a) instead of taken
    dec, _ = warm_1l.step(o, t._replace(step=jnp.asarray(0.02), grad_change=jnp.asarray(0.02 * 16.0)))
    assert not bool(dec.accept) and float(dec.next_step) == pytest.approx(0.95 * 0.125)


def test_kernels_are_hashable_values_so_solvers_do_not_recompile():
    assert rw.armijo_search() == rw.armijo_search() and hash(rw.armijo_search()) == hash(rw.armijo_search())
    assert rw.folded(search=rw.weak_wolfe_search()) == rw.folded(search=rw.weak_wolfe_search())
    assert isinstance(ls.ZoomWolfe(), ls.SearchKernel) and not isinstance("armijo", ls.SearchKernel)


def _row_problem(seed=0, r=4):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(3 * r, r))
    A = jnp.asarray(B.T @ B / r + 0.1 * np.eye(r))
    b = jnp.asarray(rng.normal(size=r))
    f = lambda u: u @ A @ u - 2 * b @ u
    return f, jnp.asarray(rng.normal(size=r)), jnp.linalg.solve(A, b)


_LITERAL = dict(growth=None, interpolate=False)
_WARM = dict(growth=2.0, interpolate=True)


@pytest.mark.parametrize("name,opts", [("armijo", _LITERAL), ("wolfe", _LITERAL), ("armijo", _WARM),
                                       ("wolfe", _WARM)])
def test_folded_loop_and_optax_rule_take_the_same_steps(name, opts):
    """One kernel, two drivers: GD + the search per row gives the same iterates either way
    (the slides' searches and the warm-started interpolating ones: the warm start hint travels
    through both drivers)."""
    from mfjax.optim import gd_direction

    with jax.enable_x64(True):
        f, u0, _ = _row_problem()
        if name == "armijo":
            search = rw.armijo_search(initial_step=1.0, **opts)
            rule = ls.armijo(initial_step=1.0, extrapolate=None, **opts)   # the row loop does not extrapolate
        else:
            search = rw.weak_wolfe_search(initial_step=0.01, **opts)
            rule = ls.weak_wolfe_bisection(initial_step=0.01, extrapolate=None, **opts)
        u_fold, info_fold = rw.folded(gd_direction(), search, max_iters=6, rtol=0.0).solve(f, u0)
        u_fix, info_fix = rw.fixed_count(optax.chain(gd_direction(), rule), 6, rtol=0.0).solve(f, u0)
        assert int(info_fold.num_iters) == int(info_fix.num_iters) == 6
        np.testing.assert_allclose(np.asarray(u_fold), np.asarray(u_fix), rtol=1e-12, atol=1e-14)


def test_any_kernel_folds_into_the_row_loop():
    """The zoom kernel, never written for vector descent, runs in the folded loop."""
    with jax.enable_x64(True):
        f, u0, u_star = _row_problem(seed=3)
        u, info = rw.folded(search=ls.ZoomWolfe(1e-4, 0.9, 20), max_iters=20, rtol=1e-10).solve(f, u0)
        assert bool(info.success)
        np.testing.assert_allclose(np.asarray(u), np.asarray(u_star), atol=1e-6)


def test_measure_trial_reads_only_what_the_kernel_needs():
    f = lambda x: jnp.sum(x ** 2)
    x = jnp.array([1.0, 2.0])
    g = 2 * x
    vg = jax.value_and_grad(f)
    t, _, _ = measure_trial(K.Backtracking(), vg, x, g, jnp.asarray(0.5), -g)
    assert np.isnan(float(t.slope)) and np.isnan(float(t.grad_change))
    t, xt, gt = measure_trial(K.BisectionWolfe(), vg, x, g, jnp.asarray(0.25), -g)
    np.testing.assert_allclose(np.asarray(xt), [0.5, 1.0])
    assert float(t.slope) == pytest.approx(float(jnp.vdot(gt, -g)))
    t, _, _ = measure_trial(K.Backtracking(K.LipschitzEstimate()), vg, x, g, jnp.asarray(0.25), -g)
    assert float(t.grad_change) == pytest.approx(float(jnp.linalg.norm(g - gt)))


def test_unified_state_and_deprecated_aliases():
    x = jnp.ones(3)
    for rule in (ls.armijo(), ls.inverse_lipschitz(), ls.strong_wolfe(), ls.weak_wolfe_bisection(),
                 ls.strong_wolfe_zoom()):
        assert isinstance(rule.init(x), ls.SearchState)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert ls.BacktrackingState is ls.SearchState
        assert ls.WolfeState is ls.SearchState
        from mfjax.linesearch.backtracking import BacktrackingState  # noqa: F401
        assert rw.FoldedSearch is ls.SearchKernel
    assert len(w) == 4 and all(issubclass(x.category, DeprecationWarning) for x in w)
