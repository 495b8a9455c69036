"""Tests of mfjax.linesearch: conditions, references (scipy, optax, brute force), robustness.

Compile budget: each rule is compiled once per test (batches of problems go
through ``jit(vmap(...))``), so the file stays fast on a busy 2-core machine.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import mfjax.linesearch as ls
from mfjax.data import Ratings
from mfjax.losses import Factors, masked_mse, masked_sq_loss

C1, C2 = 1e-4, 0.9


def enable_x64():
    """float64 only inside the block (jax 0.10: ``jax.enable_x64``, formerly in jax.experimental)."""
    return jax.enable_x64(True)


# ----------------------------------------------------------------- test objectives


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def general_f(x, A, b, w):
    """Quadratic ``x'Ax/2 - b'x`` plus ``w`` times Rosenbrock: one compiled family for all problems."""
    return 0.5 * x @ A @ x - b @ x + w * rosenbrock(x)


def random_spd(rng, n, cond=100.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.geomspace(1.0, cond, n)) @ Q.T


def problem_batch(rng, n=6):
    """Rosenbrock (GD and unit-length directions) and random quadratics, float64 arrays."""
    xs, ps, As, bs, ws = [], [], [], [], []
    starts = [np.tile([-1.2, 1.0], n // 2), rng.uniform(-1.5, 1.5, n), rng.uniform(-0.5, 1.5, n)]
    for x in starts:
        g = np.asarray(jax.grad(rosenbrock)(jnp.asarray(x)))
        for p in (-g, -g / np.linalg.norm(g)):  # unit length: the step must grow
            xs.append(x), ps.append(p), As.append(np.zeros((n, n))), bs.append(np.zeros(n)), ws.append(1.0)
    for cond in (10.0, 100.0, 1000.0):
        A, b, x = random_spd(rng, n, cond), rng.standard_normal(n), rng.standard_normal(n)
        g = A @ x - b
        for p in (-g, -np.linalg.solve(A + np.eye(n), g)):
            xs.append(x), ps.append(p), As.append(A), bs.append(b), ws.append(0.0)
    return tuple(jnp.asarray(np.array(v)) for v in (xs, ps, As, bs, ws))


def batch_update(rule):
    """``jit(vmap(one update))`` over problems of :func:`general_f`."""

    @jax.jit
    @jax.vmap
    def run(x, p, A, b, w):
        f = lambda y: general_f(y, A, b, w)
        v, g = jax.value_and_grad(f)(x)
        u, s = rule.update(p, rule.init(x), x, value=v, grad=g, value_fn=f)
        return ls.get_linesearch_info(s), s.value, s.grad, optax.apply_updates(x, u)

    return run


_value_and_grad_general = jax.jit(jax.value_and_grad(general_f))


def phi(x, p, A, b, w, a):
    """``phi(a) = f(x + a p)``, ``phi'(a)`` and the gradient there (float64 inside enable_x64)."""
    v, g = _value_and_grad_general(jnp.asarray(x + a * p), A, b, w)
    g = np.asarray(g)
    return float(v), float(g @ p), g


# ----------------------------------------------------------------- conditions on accepted steps

LITERAL = dict(growth=None, interpolate=False, extrapolate=None)  # the slides' algorithms as written

COND_RULES = {
    "armijo": lambda: ls.armijo(C1, 0.5, max_iters=60, **LITERAL),
    "inverse_lipschitz": lambda: ls.inverse_lipschitz(0.5, max_iters=60, **LITERAL),
    "weak_wolfe": lambda: ls.weak_wolfe_bisection(C1, C2, max_iters=60, **LITERAL),
    "strong_wolfe": lambda: ls.strong_wolfe(C1, C2, 0.5, max_iters=60, **LITERAL),
    "zoom": lambda: ls.strong_wolfe_zoom(C1, C2, max_iters=60, growth=None, extrapolate=None),
    "zoom_tight_bisect": lambda: ls.strong_wolfe_zoom(C1, 0.01, max_iters=60, interpolation="bisection",
                                                      growth=None, extrapolate=None),
    # CHEAP (issue 11): warm start + extrapolation
    "armijo_default_x": lambda: ls.armijo(C1, 0.5, max_iters=60, **ls.CHEAP["armijo"]),
    "inverse_lipschitz_default_x": lambda: ls.inverse_lipschitz(0.5, max_iters=60, **ls.CHEAP["inverse_lipschitz"]),
    "weak_wolfe_default_x": lambda: ls.weak_wolfe_bisection(C1, C2, max_iters=60, **ls.CHEAP["weak_wolfe_bisection"]),
    "strong_wolfe_default_x": lambda: ls.strong_wolfe(C1, C2, 0.5, max_iters=60, **ls.CHEAP["strong_wolfe"]),
    "zoom_default_x": lambda: ls.strong_wolfe_zoom(C1, C2, max_iters=60, **ls.CHEAP["strong_wolfe_zoom"]),
    # WARM: warm starts and interpolation
    "armijo_default": lambda: ls.armijo(C1, 0.5, max_iters=60, **ls.WARM["armijo"]),
    "inverse_lipschitz_default": lambda: ls.inverse_lipschitz(0.5, max_iters=60, **ls.WARM["inverse_lipschitz"]),
    "weak_wolfe_default": lambda: ls.weak_wolfe_bisection(C1, C2, max_iters=60, **ls.WARM["weak_wolfe_bisection"]),
    "strong_wolfe_default": lambda: ls.strong_wolfe(C1, C2, 0.5, max_iters=60, **ls.WARM["strong_wolfe"]),
}


@pytest.fixture(scope="module")
def cond_results():
    rng = np.random.default_rng(0)
    with enable_x64():
        batch = problem_batch(rng)
        out = {name: jax.device_get(batch_update(make())(*batch)) for name, make in COND_RULES.items()}
        yield jax.device_get(batch), out


def test_accepted_steps_satisfy_their_conditions(cond_results):
    batch, results = cond_results
    with enable_x64():
        for full_name, (info, value, grad, x1) in results.items():
            name = full_name.split("_default")[0]
            literal = name == full_name
            c2 = 0.01 if "tight" in name else C2
            n_ok = 0
            for k, (x, p, A, b, w) in enumerate(zip(*batch)):
                a, ok = float(info.step_size[k]), bool(info.success[k])
                if not ok:
                    # only the shrink-only strong Wolfe may fail (its first trial is too short)
                    assert name == "strong_wolfe", (name, k)
                    np.testing.assert_array_equal(x1[k], x)
                    continue
                n_ok += 1
                f0, d0, g0 = phi(x, p, A, b, w, 0.0)
                fa, da, ga = phi(x, p, A, b, w, a)
                assert d0 < 0
                np.testing.assert_allclose(x1[k], x + a * p, rtol=1e-12)
                # stored value/grad are those at the accepted point
                np.testing.assert_allclose(value[k], fa, rtol=1e-12)
                np.testing.assert_allclose(grad[k], ga, rtol=1e-10, atol=1e-12)
                armijo_ok = fa <= f0 + C1 * a * d0
                if name == "armijo":
                    assert armijo_ok
                    if a < 1.0 and literal:  # maximal: the previous trial 2a violated Armijo
                        f2 = phi(x, p, A, b, w, 2 * a)[0]
                        assert not (f2 <= f0 + C1 * 2 * a * d0)
                    assert int(info.num_grad_evals[k]) == 1
                elif name == "inverse_lipschitz":
                    assert np.linalg.norm(g0 - ga) <= np.linalg.norm(a * p) / a * (1 + 1e-12)
                    if a < 1.0 and literal:
                        g2 = phi(x, p, A, b, w, 2 * a)[2]
                        assert np.linalg.norm(g0 - g2) > np.linalg.norm(p)
                elif name == "weak_wolfe":
                    assert armijo_ok and da >= C2 * d0
                else:
                    assert armijo_ok and abs(da) <= c2 * abs(d0), (name, k, a)
                assert int(info.num_fun_evals[k]) >= 1
            assert n_ok >= (9 if name == "strong_wolfe" else 12), (full_name, n_ok)


def test_zoom_agrees_with_scipy_line_search(cond_results):
    """scipy's strong Wolfe step satisfies the same conditions as ours; with a tight c2 on a
    quadratic (one line minimiser) both sit at the same step."""
    batch, results = cond_results
    with enable_x64():
        for name, c2 in [("zoom", C2), ("zoom_tight_bisect", 0.01)]:
            info = results[name][0]
            n_scipy_failed = 0
            for k, (x, p, A, b, w) in enumerate(zip(*batch)):
                f = lambda z: float(_value_and_grad_general(jnp.asarray(z), A, b, w)[0])
                fp = lambda z: np.asarray(_value_and_grad_general(jnp.asarray(z), A, b, w)[1])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # scipy's LineSearchWarning
                    a_sp = scipy.optimize.line_search(f, fp, x, p, c1=C1, c2=c2, maxiter=60)[0]
                assert bool(info.success[k])
                if a_sp is None:  # scipy gave up (it happens on Rosenbrock); ours is checked above
                    n_scipy_failed += 1
                    continue
                a = float(info.step_size[k])
                f0, d0, _ = phi(x, p, A, b, w, 0.0)
                for step in (a, a_sp):
                    fa, da, _ = phi(x, p, A, b, w, step)
                    assert fa <= f0 + C1 * step * d0 and abs(da) <= c2 * abs(d0) * (1 + 1e-9)
                if c2 == 0.01 and w == 0.0:
                    exact = -d0 / float(p @ A @ p)
                    np.testing.assert_allclose(a, a_sp, rtol=0.03)
                    np.testing.assert_allclose(a, exact, rtol=0.02)
            assert n_scipy_failed <= 2


DEFAULT_RULES = {  # the cheap settings (ls.WARM); the defaults are the literal algorithms
    name: (lambda f=getattr(ls, name), kw=ls.WARM[name]: f(**kw))
    for name in ("armijo", "inverse_lipschitz", "weak_wolfe_bisection", "strong_wolfe", "strong_wolfe_zoom")
}


def _gd_steps(rule, x0, A, b, w, num):
    """``num`` GD steps with ``rule`` (its warm starts active): the iterates and the infos."""
    f = lambda y: general_f(y, A, b, w)
    opt = optax.chain(optax.scale(-1.0), rule)

    def body(carry, _):
        x, s = carry
        v, g = jax.value_and_grad(f)(x)
        u, s = opt.update(g, s, x, value=v, grad=g, value_fn=f)
        return (optax.apply_updates(x, u), s), (x, ls.get_linesearch_info(s))

    (_, _), (xs, infos) = jax.lax.scan(body, (x0, opt.init(x0)), None, length=num)
    return xs, infos


@pytest.mark.parametrize("name", sorted(DEFAULT_RULES))
def test_default_rules_meet_their_conditions_at_every_step(name):
    """Over 25 warm-started GD steps (Rosenbrock, an ill-conditioned quadratic) every accepted
    step of a default rule meets the rule's acceptance conditions, and the search is cheap."""
    rng = np.random.default_rng(5)
    with enable_x64():
        n = 6
        A = random_spd(rng, n, cond=300.0)
        problems = [(np.tile([-1.2, 1.0], n // 2), np.zeros((n, n)), np.zeros(n), 1.0),
                    (rng.standard_normal(n), A, rng.standard_normal(n), 0.0)]
        run = jax.jit(jax.vmap(lambda x, A, b, w: _gd_steps(DEFAULT_RULES[name](), x, A, b, w, 25)))
        batch = [jnp.asarray(np.array(v)) for v in zip(*problems)]
        xs, infos = jax.device_get(run(*batch))
        for k, (_, A, b, w) in enumerate(problems):
            A, b = jnp.asarray(A), jnp.asarray(b)
            assert infos.success[k].all(), (name, k)
            trials = infos.num_fun_evals[k] - (1 if name == "armijo" else 0)
            assert trials[5:].mean() <= 3.0, (name, k, trials)
            for t in range(24):
                x, a = xs[k, t], float(infos.step_size[k, t])
                g = np.asarray(jax.grad(general_f)(jnp.asarray(x), A, b, w))
                p = -g
                np.testing.assert_allclose(xs[k, t + 1], x + a * p, rtol=1e-12, atol=1e-14)
                f0, d0, g0 = phi(x, p, A, b, w, 0.0)
                fa, da, ga = phi(x, p, A, b, w, a)
                if name == "inverse_lipschitz":
                    assert np.linalg.norm(g0 - ga) <= np.linalg.norm(p) * (1 + 1e-12), (k, t)
                    continue
                assert fa <= f0 + C1 * a * d0, (name, k, t)
                if name == "weak_wolfe_bisection":
                    assert da >= C2 * d0, (k, t)
                elif name != "armijo":
                    assert abs(da) <= C2 * abs(d0) * (1 + 1e-9), (name, k, t)


def test_armijo_equals_optax_backtracking():
    rng = np.random.default_rng(2)
    with enable_x64():
        A = jnp.asarray(random_spd(rng, 10, cond=50.0))
        b = jnp.asarray(rng.standard_normal(10))
        f = lambda x: 0.5 * x @ A @ x - b @ x
        ours = optax.chain(optax.scale(-1.0), ls.armijo(1e-4, 0.8, max_iters=40, initial_step=1.0, growth=1.5,
                                                        interpolate=False, extrapolate=None, grad_at="trial"))
        ours_end = optax.chain(optax.scale(-1.0), ls.armijo(1e-4, 0.8, max_iters=40, initial_step=1.0, growth=1.5,
                                                            interpolate=False, extrapolate=None, grad_at="end"))
        theirs = optax.chain(optax.scale(-1.0), optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=40, slope_rtol=1e-4, decrease_factor=0.8, increase_factor=1.5,
            max_learning_rate=1.0, store_grad=True))

        def stepper(opt):
            @jax.jit
            def step(x, s):
                v, g = jax.value_and_grad(f)(x)
                u, s = opt.update(g, s, x, value=v, grad=g, value_fn=f)
                return optax.apply_updates(x, u), s
            return step

        step_o, step_t, step_e = stepper(ours), stepper(theirs), stepper(ours_end)
        x_o = x_t = x_e = jnp.asarray(rng.standard_normal(10))
        s_o, s_t, s_e = ours.init(x_o), theirs.init(x_t), ours_end.init(x_e)
        for _ in range(8):
            x_o, s_o = step_o(x_o, s_o)
            x_t, s_t = step_t(x_t, s_t)
            x_e, s_e = step_e(x_e, s_e)
            io, it, ie = ls.get_linesearch_info(s_o), ls.get_linesearch_info(s_t), ls.get_linesearch_info(s_e)
            # grad_at="end": same steps, one more (value) evaluation at the accepted point
            np.testing.assert_allclose(ie.step_size, it.step_size, rtol=1e-14)
            assert int(ie.num_fun_evals) == int(it.num_fun_evals) + 1
            np.testing.assert_allclose(x_e, x_t, rtol=1e-13)
            np.testing.assert_allclose(s_e[1].grad, s_t[1].grad, rtol=1e-12)
            np.testing.assert_allclose(io.step_size, it.step_size, rtol=1e-14)
            assert int(io.num_fun_evals) == int(it.num_fun_evals)
            assert bool(io.success) and bool(it.success)
            np.testing.assert_allclose(x_o, x_t, rtol=1e-13)
            np.testing.assert_allclose(s_o[1].value, s_t[1].value, rtol=1e-13)
            np.testing.assert_allclose(s_o[1].grad, s_t[1].grad, rtol=1e-12)
        assert len({float(ls.get_linesearch_info(s_o).step_size), 1.0}) == 2  # backtracked at some point


def test_get_linesearch_info_maps_optax_zoom():
    f = lambda x: jnp.sum(jnp.arange(1.0, 5.0) * x * x) - jnp.sum(x)
    opt = optax.lbfgs()
    x = jnp.zeros(4)

    @jax.jit
    def step(x, s):
        v, g = jax.value_and_grad(f)(x)
        u, s = opt.update(g, s, x, value=v, grad=g, value_fn=f)
        return s

    info = ls.get_linesearch_info(step(x, opt.init(x)))
    assert int(info.num_fun_evals) == int(info.num_grad_evals) >= 1 and bool(info.success)
    assert float(info.step_size) > 0
    assert ls.get_linesearch_info(optax.adam(1e-3).init(x)) is None


# ----------------------------------------------------------------- robustness

_A3 = jnp.diag(jnp.array([1.0, 2.0, 3.0]))


@jax.custom_jvp
def _nan_grad_term(x, on):
    """Value 0, gradient NaN where ``on``."""
    return jnp.zeros((), x.dtype)


@_nan_grad_term.defjvp
def _nan_grad_term_jvp(primals, tangents):
    x, on = primals
    return _nan_grad_term(x, on), jnp.where(on, jnp.nan, 0.0) * jnp.sum(tangents[0])


def bad_f(x, mode):
    """Quadratic that, beyond radius 2, returns inf (mode 0), NaN (1), or a NaN gradient (2)."""
    q = 0.5 * x @ _A3 @ x
    far = jnp.sum(x * x) > 4.0
    v = jnp.where(far & (mode == 0), jnp.inf, q)
    v = jnp.where(far & (mode == 1), jnp.nan, v)
    return v + _nan_grad_term(x, far & (mode == 2))


def bad_batch_update(rule):
    @jax.jit
    @jax.vmap
    def run(x, p, mode):
        f = lambda y: bad_f(y, mode)
        v, g = jax.value_and_grad(f)(x)
        u, s = rule.update(p, rule.init(x), x, value=v, grad=g, value_fn=f)
        return ls.get_linesearch_info(s), s.value, s.grad, optax.apply_updates(x, u), v, g

    return run


SEARCHING = {
    "armijo": lambda **k: ls.armijo(initial_step=100.0, **k),
    "inverse_lipschitz": lambda **k: ls.inverse_lipschitz(initial_step=100.0, **k),
    "weak_wolfe_bisection": lambda **k: ls.weak_wolfe_bisection(initial_step=100.0, **k),
    "strong_wolfe": lambda **k: ls.strong_wolfe(initial_step=100.0, **k),
    "strong_wolfe_zoom": lambda **k: ls.strong_wolfe_zoom(initial_step=100.0, **k),
}


def test_nonfinite_trials_rejected_and_failures_reported():
    x = jnp.array([0.5, -0.4, 0.3])
    g = _A3 @ x
    # rows: descent direction with inf / NaN value / NaN gradient far out (success expected),
    # then an ascent direction and a NaN direction (failure expected).
    xs = jnp.stack([x] * 5)
    ps = jnp.stack([-g, -g, -g, g, jnp.array([jnp.nan, 1.0, 0.0])])
    modes = jnp.array([0, 1, 2, 1, 1])
    for name, make in SEARCHING.items():
        info, value, grad, x1, v0, g0 = jax.device_get(bad_batch_update(make(max_iters=40))(xs, ps, modes))
        for k in range(3):
            assert info.success[k], (name, k)
            assert np.isfinite(x1[k]).all() and np.sum(x1[k] ** 2) <= 4.0, (name, k)
            assert float(bad_f(jnp.asarray(x1[k]), modes[k])) < float(v0[k]), (name, k)
            assert np.isfinite(value[k]) and np.isfinite(grad[k]).all(), (name, k)
            assert info.num_fun_evals[k] >= 2, (name, k)  # the huge first trial was rejected
        for k in (3, 4):
            assert not info.success[k] and info.step_size[k] == 0.0, (name, k)
            assert info.num_fun_evals[k] == 0
            np.testing.assert_array_equal(x1[k], x)  # params unchanged, no NaN leaks
            np.testing.assert_allclose(value[k], v0[k])  # state keeps the current value/grad
            np.testing.assert_allclose(grad[k], g0[k])


def test_search_exhausted_is_a_failure():
    x = jnp.array([0.5, -0.4, 0.3])
    g = _A3 @ x
    xs, ps, modes = jnp.stack([x] * 3), jnp.stack([-g] * 3), jnp.array([0, 1, 2])
    for rule in (ls.armijo(initial_step=100.0, max_iters=1), ls.strong_wolfe_zoom(initial_step=100.0, max_iters=1),
                 ls.armijo(initial_step=1e6, max_iters=50, min_step=1e3),
                 # bracketing hits max_step before any strong Wolfe step: failure, not the cap
                 ls.strong_wolfe_zoom(initial_step=1e-3, max_step=4e-3, max_iters=50)):
        info, value, grad, x1, v0, g0 = jax.device_get(bad_batch_update(rule)(xs, ps, modes))
        assert not info.success.any() and (info.step_size == 0).all()
        assert (info.num_fun_evals < 50).all()
        np.testing.assert_array_equal(x1, xs)
        np.testing.assert_allclose(value, v0)


# ----------------------------------------------------------------- simple rules


def test_inverse_sqrt_and_constant_steps():
    x = jnp.ones(3)
    for rule, expect in [(ls.constant(0.3), lambda k: 0.3), (ls.inverse_sqrt(0.3), lambda k: 0.3 / np.sqrt(k))]:
        s = rule.init(x)
        for k in range(1, 5):
            u, s = rule.update(-x, s, x, value=jnp.inf, grad=x, value_fn=None)
            np.testing.assert_allclose(u, -expect(k) * x, rtol=1e-6)
            assert jnp.isinf(s.value)  # nothing evaluated: value_and_grad_from_state recomputes
            np.testing.assert_allclose(ls.get_linesearch_info(s).step_size, expect(k), rtol=1e-6)


def test_adaptive_gd_matches_reference_formula():
    rng = np.random.default_rng(3)
    with enable_x64():
        A = random_spd(rng, 6, cond=30.0)
        b = rng.standard_normal(6)
        f = lambda x: 0.5 * x @ jnp.asarray(A) @ x - jnp.asarray(b) @ x
        lam0 = 1e-3
        # numpy reference of Malitsky & Mishchenko (2020), Algorithm 1
        x0 = rng.standard_normal(6)
        x_prev, g_prev = x0, A @ x0 - b
        x = x_prev - lam0 * g_prev
        theta, lam_prev, lams = np.inf, lam0, [lam0]
        for _ in range(10):
            g = A @ x - b
            lam = min(np.sqrt(1 + theta) * lam_prev,
                      np.linalg.norm(x - x_prev) / (2 * np.linalg.norm(g - g_prev)))
            theta = lam / lam_prev
            x_prev, g_prev, lam_prev = x, g, lam
            x = x - lam * g
            lams.append(lam)
        opt = optax.chain(optax.scale(-1.0), ls.adaptive_gd(lam0))

        @jax.jit
        def step(y, s):
            v, g = jax.value_and_grad(f)(y)
            u, s = opt.update(g, s, y, value=v, grad=g, value_fn=f)
            return optax.apply_updates(y, u), s

        y = jnp.asarray(x0)
        s = opt.init(y)
        for k in range(11):
            y, s = step(y, s)
            np.testing.assert_allclose(ls.get_linesearch_info(s).step_size, lams[k], rtol=1e-10)
        np.testing.assert_allclose(y, x, rtol=1e-9)


# ----------------------------------------------------------------- exact MF step


def small_mf(rng, m=9, n=7, r=2, density=0.6, dtype=np.float64):
    X = rng.standard_normal((m, r)) @ rng.standard_normal((r, n)) + 3.0
    W = rng.random((m, n)) < density
    W[np.arange(m), np.arange(m) % n] = True
    rows, cols = np.nonzero(W)
    ratings = Ratings.create(rows, cols, X[rows, cols], (m, n), dtype=dtype)
    params = Factors(jnp.asarray(rng.standard_normal((m, r)), dtype), jnp.asarray(rng.standard_normal((n, r)), dtype))
    return ratings, params


def test_quartic_coefficients_match_loss():
    rng = np.random.default_rng(4)
    pts = np.array([-1.0, -0.5, 0.0, 0.7, 1.3])
    with enable_x64():
        ratings, _ = small_mf(rng)

        @functools.partial(jax.jit, static_argnames=("scale", "chunk"))
        def coeffs_and_values(params, P, l2, weights, scale, chunk):
            c = ls.mf_quartic_coefficients(params, P, ratings, l2, scale=scale, l2_weights=weights,
                                           chunk_size=chunk)
            vals = jax.vmap(lambda a: masked_sq_loss(
                jax.tree_util.tree_map(lambda u, d: u + a * d, params, P), ratings, l2, scale=scale,
                l2_weights=weights))(pts)
            return c, vals

        weights = (jnp.asarray(rng.uniform(0.5, 2, 9)), jnp.asarray(rng.uniform(0.5, 2, 7)))
        for scale, l2, w, chunk in [("sum", 0.0, None, None), ("sum", 2.0, None, 7), ("mean", 0.3, None, None),
                                    ("sum", 1.5, weights, 7)]:
            params, P = [Factors(jnp.asarray(rng.standard_normal((9, 2))), jnp.asarray(rng.standard_normal((7, 2))))
                         for _ in range(2)]
            c, vals = coeffs_and_values(params, P, l2, w, scale, chunk)
            ref = np.polynomial.polynomial.polyfit(pts, np.asarray(vals), 4)
            np.testing.assert_allclose(c, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())


def test_exact_mf_step_beats_dense_grid():
    rng = np.random.default_rng(5)
    with enable_x64():
        ratings, params0 = small_mf(rng)
        l2 = 0.5
        f = masked_mse(ratings, l2)
        rule = ls.exact_mf(ratings, l2)

        @jax.jit
        def update(x, p):
            v, g = jax.value_and_grad(f)(x)
            u, s = rule.update(p, rule.init(x), x, value=v, grad=g, value_fn=f)
            return ls.get_linesearch_info(s), s.value, optax.apply_updates(x, u)

        @jax.jit
        def on_ray(x, p, grid):
            return jax.vmap(lambda a: f(jax.tree_util.tree_map(lambda u, d: u + a * d, x, p)))(grid)

        slope_at = jax.jit(lambda x, p: sum(jnp.vdot(g, d) for g, d in zip(jax.grad(f)(x), p)))
        grad_f = jax.jit(jax.grad(f))

        for trial in range(5):
            x = jax.tree_util.tree_map(lambda u: u * rng.uniform(0.3, 1.5), params0)
            g = grad_f(x)
            p = jax.tree_util.tree_map(lambda u: -u, g)
            if trial == 1:  # a random descent direction
                p = jax.tree_util.tree_map(lambda u: u + 0.5 * jnp.asarray(rng.standard_normal(u.shape)) * jnp.std(u), p)
            if trial == 2:  # one factor fixed: a quadratic in a
                p = Factors(p.U, jnp.zeros_like(p.V))
            if trial == 3:
                p = Factors(jnp.zeros_like(p.U), p.V)
            if trial == 4:  # a long direction: the quartic terms dominate
                p = jax.tree_util.tree_map(lambda u: 30.0 * u, p)
            assert float(slope_at(x, p)) < 0
            info, value, x1 = update(x, p)
            a = float(info.step_size)
            assert bool(info.success)
            grid = np.linspace(0.0, 3.0 * a, 4001)
            vals = np.asarray(on_ray(x, p, jnp.asarray(grid)))
            f1 = float(on_ray(x1, p, jnp.zeros(1))[0])
            assert f1 <= vals.min() * (1 + 1e-12)
            assert abs(a - grid[np.argmin(vals)]) <= 2 * grid[1]
            np.testing.assert_allclose(value, f1, rtol=1e-12)
            # first-order optimality along the ray
            assert abs(float(slope_at(x1, p))) <= 1e-8 * abs(float(slope_at(x, p)))
        # ascent direction: no step, reported as failure
        info, _, x1 = update(x, g)
        assert not bool(info.success)
        np.testing.assert_array_equal(x1.U, x.U)


def test_exact_mf_stored_value_and_grad_equal_loss_and_jax_grad():
    """The value (quartic at a) and the gradient (from e0 + a e1 + a^2 e2) at the new point
    equal the loss and jax.grad of it there (float64), for every scale / weight / chunking
    variant, for a failed search (a = 0) and inside the MF fit loop with a CG direction."""
    import mfjax.optim as mo
    from mfjax.loop import fit

    rng = np.random.default_rng(11)
    with enable_x64():
        ratings, params0 = small_mf(rng)
        weights = (jnp.asarray(rng.uniform(0.5, 2, 9)), jnp.asarray(rng.uniform(0.5, 2, 7)))
        for scale, l2, w, chunk in [("sum", 0.7, None, None), ("mean", 0.3, None, 5),
                                    ("sum", 1.5, weights, 7), ("sum", 0.0, None, 4)]:
            f = lambda x, scale=scale, l2=l2, w=w: masked_sq_loss(x, ratings, l2, scale=scale,  # noqa: E731
                                                                 l2_weights=w)
            rule = ls.exact_mf(ratings, l2, scale=scale, l2_weights=w, chunk_size=chunk)

            @jax.jit
            def update(x, p, rule=rule, f=f):
                v, g = jax.value_and_grad(f)(x)
                u, s = rule.update(p, rule.init(x), x, value=v, grad=g, value_fn=f)
                x1 = optax.apply_updates(x, u)
                return s, x1, jax.value_and_grad(f)(x1)

            x = jax.tree_util.tree_map(lambda u: u * rng.uniform(0.5, 1.5), params0)
            g = jax.grad(f)(x)
            for p in (jax.tree_util.tree_map(lambda u: -u, g), g):  # descent, then ascent (fails)
                s, x1, (v1, g1) = update(x, p)
                info = ls.get_linesearch_info(s)
                assert bool(info.success) == (p is not g)
                assert (int(info.num_fun_evals), int(info.num_grad_evals)) == (2, 1)
                np.testing.assert_allclose(s.value, v1, rtol=1e-12)
                for a, b in zip(s.grad, g1):
                    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(b))))
                assert type(s.grad) is type(x)
        # in the loop: CG + exact steps; every stored value/grad is the loss/grad at the iterate
        f = masked_mse(ratings, 0.5)
        res = fit(f, mo.cg(linesearch=ls.exact_mf(ratings, 0.5)), params0, 15)
        assert bool(jnp.all(res.trace.success))
        np.testing.assert_allclose(res.value, f(res.params), rtol=1e-12)
        assert np.all(np.diff(np.asarray(res.trace.loss)) <= 0)


def test_exact_mf_float32_matches_float64_rerun():
    """float32 run vs the same update in float64: value and gradient agree to float32
    rounding (no worse than the direct closed-form value_and_grad in float32)."""
    from mfjax.losses import masked_sq_value_and_grad

    rng = np.random.default_rng(12)
    ratings64, params64 = small_mf(rng, m=40, n=30, r=3, dtype=np.float32)  # float32 inputs for both runs
    l2 = 0.5

    def run(ratings, params):
        f = masked_mse(ratings, l2)
        rule = ls.exact_mf(ratings, l2, chunk_size=64)
        v, g = jax.value_and_grad(f)(params)
        p = jax.tree_util.tree_map(lambda u: -u, g)
        u, s = rule.update(p, rule.init(params), params, value=v, grad=g, value_fn=f)
        x1 = optax.apply_updates(params, u)
        return s.value, s.grad, masked_sq_value_and_grad(x1, ratings, l2), ls.get_linesearch_info(s).step_size

    r32 = Ratings(ratings64.rows, ratings64.cols, np.asarray(ratings64.values, np.float32), ratings64.shape)
    p32 = Factors(*(np.asarray(a, np.float32) for a in params64))
    v32, g32, (vd32, gd32), a32 = jax.jit(run)(r32, p32)
    with enable_x64():
        r64 = Ratings(jnp.asarray(ratings64.rows), jnp.asarray(ratings64.cols),
                      jnp.asarray(ratings64.values, jnp.float64), ratings64.shape)
        v64, g64, _, a64 = jax.jit(run)(r64, Factors(*(jnp.asarray(a, jnp.float64) for a in params64)))
        v64, g64, a64 = float(v64), [np.asarray(x) for x in g64], float(a64)
    assert g32[0].dtype == jnp.float32 and v32.dtype == jnp.float32
    np.testing.assert_allclose(float(a32), a64, rtol=1e-4)
    np.testing.assert_allclose(float(v32), v64, rtol=1e-5)
    for a, d, b in zip(g32, gd32, g64):
        err = np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)
        err_direct = np.linalg.norm(np.asarray(d, np.float64) - b) / np.linalg.norm(b)
        assert err <= 1e-4 and err <= 10 * err_direct + 1e-6, (err, err_direct)


def test_minimize_quartic_against_numpy_roots():
    rng = np.random.default_rng(6)
    with enable_x64():
        coeffs = []
        for k in range(300):
            c = rng.standard_normal(5) * rng.choice([1e-3, 1.0, 1e3], 5)
            c[4] = abs(c[4]) * (1e-9 if k % 10 == 0 else 1.0)  # some near-quadratics
            c[1] = -abs(c[1])
            if k % 10 == 1:  # exact quadratics
                c[3] = c[4] = 0.0
                c[2] = abs(c[2])
            coeffs.append(c)
        coeffs = np.array(coeffs)
        a, dec, ok = jax.device_get(jax.jit(jax.vmap(ls.minimize_quartic))(jnp.asarray(coeffs)))
        for c, ai, di, oki in zip(coeffs, a, dec, ok):
            P = np.polynomial.Polynomial(c)
            cands = [0.0] + [r.real for r in P.deriv().roots() if abs(r.imag) <= 1e-7 * max(1, abs(r)) and r.real > 0]
            ref = min(P(x) - c[0] for x in cands)
            assert oki == (ref < 0)
            assert di <= ref + 1e-9 * max(1.0, abs(ref)), (c, ai, cands)
            np.testing.assert_allclose(di, P(ai) - c[0], rtol=1e-9, atol=1e-12)


def test_exact_quadratic_step():
    a, ok = ls.exact_quadratic_step(jnp.array([-2.0, 1.0, -1.0]), jnp.array([4.0, 1.0, 0.0]))
    np.testing.assert_allclose(a, [0.25, 0.0, 0.0])
    np.testing.assert_array_equal(ok, [True, False, False])


# ----------------------------------------------------------------- composition, jit, vmap, dtype


def _fit(opt, f, x, steps):
    vag = optax.value_and_grad_from_state(f)

    def body(carry, _):
        x, s = carry
        v, g = vag(x, state=s)
        u, s = opt.update(g, s, x, value=v, grad=g, value_fn=f)
        return (optax.apply_updates(x, u), s), v

    (x, s), vals = jax.lax.scan(body, (x, opt.init(x)), None, length=steps)
    return x, s, vals


MONOTONE = {"armijo", "weak_wolfe_bisection", "strong_wolfe", "strong_wolfe_zoom", "exact_mf"}


def test_every_rule_in_a_chain_decreases_mf_loss_under_jit_vmap_and_keeps_dtype():
    rng = np.random.default_rng(7)
    ratings, params = small_mf(rng, m=12, n=10, r=3, dtype=np.float32)
    f = masked_mse(ratings, 0.1)
    x0 = jax.tree_util.tree_map(lambda u: 0.5 * u, params)
    x1 = jax.tree_util.tree_map(lambda u: 0.3 * u[::-1], params)
    batch = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), x0, x1)
    swapped = jax.tree_util.tree_map(lambda a: a[::-1], batch)
    f0 = np.array([float(f(x0)), float(f(x1))])
    for name, make in ls.REGISTRY.items():
        opt = optax.chain(optax.scale(-1.0), make(ratings=ratings, l2=0.1))
        run = jax.jit(jax.vmap(lambda x: _fit(opt, f, x, 15)))
        xb, sb, vals = run(batch)
        assert xb.U.dtype == jnp.float32 and sb[1].value.dtype == jnp.float32, name
        info = ls.get_linesearch_info(sb)
        assert info.step_size.dtype == jnp.float32 and info.num_fun_evals.dtype == jnp.int32, name
        assert bool(info.success.all()), name
        fx = np.array([float(f(jax.tree_util.tree_map(lambda u: u[k], xb))) for k in range(2)])
        assert np.isfinite(fx).all() and (fx < f0).all(), (name, f0, fx)
        if name in MONOTONE:
            assert (np.diff(np.asarray(vals), axis=1) <= 1e-5 * f0[:, None]).all(), name
        # each problem in the batch advances on its own: swapping the batch swaps the results
        xs = run(swapped)[0]
        np.testing.assert_allclose(xs.U[::-1], xb.U, rtol=1e-6, atol=1e-6, err_msg=name)
        # float64 in, float64 out (traced only, no compile)
        with enable_x64():
            r64, p64 = small_mf(np.random.default_rng(7), m=12, n=10, r=3, dtype=np.float64)
            f64 = masked_mse(r64, 0.1)
            opt64 = optax.chain(optax.scale(-1.0), make(ratings=r64, l2=0.1))
            out = jax.eval_shape(lambda x: _fit(opt64, f64, x, 3), p64)
            assert out[0].U.dtype == jnp.float64 and out[1][1].value.dtype == jnp.float64, name
            assert ls.get_linesearch_info(out[1]).step_size.dtype == jnp.float64, name


def test_extra_args_are_forwarded_like_optax():
    def f(x, scale):
        return scale * jnp.sum(x * x)

    x = jnp.ones(3)
    rule = ls.armijo()
    s = rule.init(x)
    v, g = jax.value_and_grad(f)(x, 2.0)
    u, s = rule.update(-g, s, x, value=v, grad=g, value_fn=f, scale=2.0)
    assert bool(ls.get_linesearch_info(s).success)
    np.testing.assert_allclose(s.value, f(x + u, 2.0))
    with pytest.raises(TypeError, match="bogus"):
        rule.update(-g, s, x, value=v, grad=g, value_fn=f, scale=2.0, bogus=1)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="beta"):
        ls.armijo(beta=1.5)
    with pytest.raises(ValueError, match="c1 < c2"):
        ls.strong_wolfe_zoom(c1=0.5, c2=0.1)
    with pytest.raises(ValueError, match="max_iters"):
        ls.inverse_lipschitz(max_iters=0)
    with pytest.raises(ValueError, match="scale"):
        ls.exact_mf(small_mf(np.random.default_rng(0))[0], scale="median")
    with pytest.raises(ValueError, match="needs the problem"):
        ls.REGISTRY["exact_mf"]()


@pytest.mark.parametrize("rule,kernel_cls", [
    ("weak_wolfe_bisection", "BisectionWolfe"), ("strong_wolfe", "Backtracking")])
def test_wolfe_searches_skip_the_gradient_where_the_slope_is_not_read(rule, kernel_cls, monkeypatch):
    """The bisection weak Wolfe and shrink-only strong Wolfe searches evaluate a trial's gradient only where
    sufficient decrease holds (``slope_needed``): the same trials, steps, losses and gradients as the search
    that evaluates it at every trial, with fewer gradient evaluations (GD on a masked MF loss, literal and
    extrapolating settings)."""
    from mfjax.core.factors import init_factors
    from mfjax.data import synthetic
    from mfjax.linesearch import kernels
    from mfjax.loop import fit

    import mfjax.optim as mo

    ratings = synthetic(m=40, n=30, rank=3, density=0.3, seed=1).device_put()
    p0 = init_factors(jax.random.key(2), ratings.shape, 3)
    loss = functools.partial(masked_sq_loss, ratings=ratings, l2=0.5)

    def run(**opts):
        res = fit(loss, optax.chain(mo.gd_direction(), getattr(ls, rule)(**opts)), p0, num_steps=25)
        return res.trace, res.params

    for opts in (ls.LITERAL[rule], ls.CHEAP[rule]):
        lazy, p_lazy = run(**opts)
        with monkeypatch.context() as mp:
            mp.delattr(getattr(kernels, kernel_cls), "slope_needed")
            eager, p_eager = run(**opts)
        np.testing.assert_array_equal(np.asarray(lazy.num_fun_evals), np.asarray(eager.num_fun_evals))
        np.testing.assert_allclose(np.asarray(lazy.step_size), np.asarray(eager.step_size), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(lazy.loss), np.asarray(eager.loss), rtol=1e-6)
        for a, b in zip(p_lazy, p_eager):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert int(np.sum(lazy.num_grad_evals)) < int(np.sum(eager.num_grad_evals))
        assert np.all(np.asarray(eager.num_grad_evals) == np.asarray(eager.num_fun_evals))


def test_armijo_auto_grad_takes_the_vjp_route_for_autodiff_losses_only():
    """``grad_at="auto"`` (the default): an autodiff loss gets a vjp per trial (no final ``value_and_grad``:
    one evaluation fewer per step), a loss with a custom VJP (``mfjax.objective.loss``, whose forward pass is
    the closed-form value and gradient) the final ``value_and_grad``; the same steps in every case."""
    from mfjax import objective
    from mfjax.core.factors import init_factors
    from mfjax.data import synthetic
    from mfjax.linesearch.search import has_custom_vjp
    from mfjax.loop import fit

    import mfjax.optim as mo

    ratings = synthetic(m=40, n=30, rank=3, density=0.3, seed=1).device_put()
    p0 = init_factors(jax.random.key(2), ratings.shape, 3)
    autodiff = functools.partial(masked_sq_loss, ratings=ratings, l2=0.5)
    obj = objective.mf_objective(ratings, 0.5)
    closed = lambda p: objective.loss(p, obj)  # noqa: E731
    assert not has_custom_vjp(autodiff, p0) and has_custom_vjp(closed, p0)
    assert has_custom_vjp(jax.jit(closed), p0)  # found inside a jitted call too

    def trace(loss, **kw):
        return fit(loss, optax.chain(mo.gd_direction(), ls.armijo(**kw)), p0, num_steps=15).trace

    for loss, same_as in ((autodiff, "trial"), (closed, "end")):
        auto, want, other = trace(loss), trace(loss, grad_at=same_as), trace(
            loss, grad_at="end" if same_as == "trial" else "trial")
        np.testing.assert_array_equal(np.asarray(auto.num_fun_evals), np.asarray(want.num_fun_evals))
        np.testing.assert_array_equal(np.asarray(auto.num_grad_evals), np.asarray(want.num_grad_evals))
        assert not np.array_equal(np.asarray(auto.num_fun_evals), np.asarray(other.num_fun_evals))
        for t in (want, other):
            np.testing.assert_allclose(np.asarray(auto.step_size), np.asarray(t.step_size), rtol=1e-6)
            np.testing.assert_allclose(np.asarray(auto.loss), np.asarray(t.loss), rtol=1e-5)
    with pytest.raises(ValueError, match="grad_at"):
        ls.armijo(grad_at="sometimes")
