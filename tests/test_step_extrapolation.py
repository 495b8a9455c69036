"""Extrapolating step rules (issue 11): the cheap defaults and the slides' literal searches.

References: a float64 numpy re-implementation of the literal halving search
(the slides' Algorithms 1-4), the textbook conditions written out in numpy,
and the literal search's own steps (on a line whose acceptance set is an
interval, the extrapolating search from the literal grid takes the same step).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mfjax.linesearch as ls
from mfjax.linesearch import kernels as K

jax.config.update("jax_enable_x64", False)


def _problem(seed=0, n=12):
    """A smooth non-quadratic function (the MF loss's quartic shape): 0.5 x'Hx + 0.1 sum x^4."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    h = jnp.asarray(a @ a.T / n + 0.05 * np.eye(n), jnp.float32)
    f = lambda x: 0.5 * x @ h @ x + 0.1 * jnp.sum(x ** 4)
    return f, jnp.asarray(rng.normal(size=n) * 3, jnp.float32)


def _gd(rule, f, x, steps):
    """GD with ``rule``; per step (x, g, accepted step, f evals, g evals)."""
    opt = optax.chain(optax.scale(-1.0), rule)
    state = opt.init(x)
    upd = jax.jit(lambda g, s, x: opt.update(g, s, x, value=f(x), grad=g, value_fn=f))
    out = []
    for _ in range(steps):
        g = jax.grad(f)(x)
        u, state = upd(g, state, x)
        info = ls.get_linesearch_info(state)
        out.append((np.asarray(x, np.float64), np.asarray(g, np.float64), float(info.step_size),
                    int(info.num_fun_evals), int(info.num_grad_evals)))
        x = x + u
    return out


def _literal_reference(f, x, g, test, beta=0.5, a=1.0, max_trials=30):
    """The slides' search in numpy: halve from ``a`` until ``test(a)``; (step, trials)."""
    for n in range(1, max_trials + 1):
        if test(a):
            return a, n
        a *= beta
    return 0.0, max_trials


RULES = ["armijo", "inverse_lipschitz", "strong_wolfe", "weak_wolfe_bisection", "strong_wolfe_zoom"]


def _conditions(name, f, x, g, a, c1=1e-4, c2=0.9):
    """The accepted step's textbook conditions in float64 numpy (p = -g)."""
    p = -g
    fx = lambda y: float(f(jnp.asarray(y, jnp.float32)))
    gx = lambda y: np.asarray(jax.grad(f)(jnp.asarray(y, jnp.float32)), np.float64)
    y = x + a * p
    s0 = g @ p
    tol = 1e-5 * (abs(fx(x)) + 1)
    armijo = fx(y) <= fx(x) + c1 * a * s0 + tol
    if name == "armijo":
        return armijo
    if name == "inverse_lipschitz":
        return np.linalg.norm(gx(y) - g) <= np.linalg.norm(p) * (1 + 1e-4)
    slope = gx(y) @ p
    if name == "weak_wolfe_bisection":
        return armijo and slope >= c2 * s0 - 1e-4 * abs(s0)
    return armijo and abs(slope) <= c2 * abs(s0) + 1e-4 * abs(s0)


@pytest.mark.parametrize("name", RULES)
def test_cheap_steps_meet_the_rule_and_literal_option_is_the_slides_search(name):
    f, x0 = _problem()
    new = _gd(getattr(ls, name)(**ls.CHEAP[name]), f, x0, 12)
    for x, g, a, _, _ in new:
        assert a > 0 and _conditions(name, f, x, g, a), (name, a)
    # 1/L: CHEAP is the default; the others: LITERAL (Armijo: LITERAL's search with grad_at="auto", the same
    # steps; on this autodiff loss a vjp per trial instead of a final value_and_grad: one evaluation fewer)
    default = _gd(getattr(ls, name)(), f, x0, 12)
    settings = dict((ls.CHEAP if name == "inverse_lipschitz" else ls.LITERAL)[name])
    if name == "armijo":
        literal_steps = [r[2] for r in _gd(ls.armijo(**settings), f, x0, 12)]
        settings["grad_at"] = "trial"
        assert [r[2] for r in default] == literal_steps
    same = _gd(getattr(ls, name)(**settings), f, x0, 12)
    assert [r[2:] for r in default] == [r[2:] for r in same]
    literal = _gd(getattr(ls, name)(**ls.LITERAL[name]), f, x0, 12)
    if name == "strong_wolfe_zoom":
        return  # the zoom search is not a halving search; its literal form is checked in test_linesearch
    c1, c2 = 1e-4, 0.9
    for x, g, a, nf, ng in literal:
        p = -g
        fx = lambda y: float(f(jnp.asarray(y, jnp.float32)))
        gx = lambda y: np.asarray(jax.grad(f)(jnp.asarray(y, jnp.float32)), np.float64)
        tests = {
            "armijo": lambda b: fx(x + b * p) <= fx(x) + c1 * b * (g @ p),
            "inverse_lipschitz": lambda b: np.linalg.norm(gx(x + b * p) - g) <= np.linalg.norm(p),
            "strong_wolfe": lambda b: (fx(x + b * p) <= fx(x) + c1 * b * (g @ p)
                                       and abs(gx(x + b * p) @ p) <= c2 * abs(g @ p)),
            "weak_wolfe_bisection": lambda b: (fx(x + b * p) <= fx(x) + c1 * b * (g @ p)
                                               and gx(x + b * p) @ p >= c2 * (g @ p)),
        }
        ref, trials = _literal_reference(f, x, g, tests[name])
        assert a == ref                           # same accepted step: halving from 1
        assert nf == trials + (name == "armijo")  # and the same trial count (Armijo: + value+grad at the end)


def test_extrapolation_finds_the_literal_step_in_fewer_trials():
    """On a line whose Armijo set is an interval, warm start + extrapolation on the halving grid
    takes the literal search's step: the longest ``2^-k`` below the boundary."""
    phi = lambda a: (a - 0.01) ** 2 - 1e-4 + 0.0 * a    # Armijo holds on (0, ~0.02]
    origin = K.make_origin(phi(0.0), jax.grad(phi)(0.0))

    def run(kernel, prev):
        a, state = kernel.init(origin, None if prev is None else jnp.asarray(prev, jnp.float32))
        kept, n = None, 0
        for n in range(1, kernel.max_trials + 1):
            a32 = jnp.asarray(a, jnp.float32)
            dec, state = kernel.step(state, K.make_trial(a32, phi(a32), jnp.asarray(True)))
            if dec.keep is not None and bool(dec.keep):
                kept = float(a)
            if bool(dec.accept):
                return float(a), n
            if bool(dec.stop):
                break
            a = dec.next_step
        return kept, n

    literal, n_lit = run(K.Backtracking(), None)
    assert literal == 2.0 ** -6 and n_lit == 7
    new = K.Backtracking(growth=2.0, extrapolate=2.0)
    for prev in (2.0 ** -9, 2.0 ** -8, 2.0 ** -7, 2.0 ** -6, 2.0 ** -5, 2.0 ** -3):
        step, n = run(new, prev)
        assert step == literal, prev
        assert n < n_lit


def test_extrapolation_keeps_the_last_passing_trial_when_the_next_is_not_finite():
    """A trial that overflows ends the extrapolation: the step taken is the last finite passing one."""
    f = lambda x: jnp.where(jnp.sum(x ** 2) < 1.0, jnp.sum((x - 1.0) ** 2), jnp.inf)
    x = jnp.zeros(3)
    g = jax.grad(f)(x)                                     # p = -g = (2, 2, 2)
    rule = ls.armijo(growth=2.0, extrapolate=4.0, grad_at="trial")
    state = rule.init(x)._replace(step=jnp.asarray(0.05))
    # first trial 0.1 passes (|x|^2 = 0.12); the quadratic model predicts 0.4 passes, but |x|^2 = 1.92:
    # not finite, so the search ends with the kept 0.1 (2 values, the gradient of the kept trial only)
    u, state = rule.update(-g, state, x, value=f(x), grad=g, value_fn=f)
    info = ls.get_linesearch_info(state)
    assert bool(info.success) and float(info.step_size) == pytest.approx(0.1)
    assert int(info.num_fun_evals) == 2 and int(info.num_grad_evals) == 1
    np.testing.assert_allclose(state.grad, jax.grad(f)(x + u), rtol=1e-6)
    assert float(state.value) == pytest.approx(float(f(x + u)))


def test_predicted_decrease_is_exact_on_a_parabola():
    phi = lambda a: 2.0 * (a - 1.0) ** 2          # phi(0) = 2, phi'(0) = -4: Armijo boundary 2 (1 - c1)
    origin = K.make_origin(phi(0.0), jax.grad(phi)(0.0))
    t = K.make_trial(jnp.asarray(0.5), jnp.asarray(phi(0.5)), jnp.asarray(True), slope=jax.grad(phi)(0.5))
    c1 = 1e-4
    assert bool(K.predicted_decrease(origin, t, 1.999, c1)) and not bool(K.predicted_decrease(origin, t, 2.0, c1))
    # slope 4 (a - 1): |phi'(b)| <= 0.9 * 4 on [0.1, 1.9]
    assert bool(K.predicted_strong_curvature(origin, t, 1.85, 0.9))
    assert not bool(K.predicted_strong_curvature(origin, t, 1.95, 0.9))


def test_extrapolate_must_be_above_one():
    for name in RULES:
        with pytest.raises(ValueError, match="extrapolate"):
            getattr(ls, name)(extrapolate=1.0)
