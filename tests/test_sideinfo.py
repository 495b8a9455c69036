"""Tests of side features in MF (mfjax.objective.side, mfjax.solvers.als_side; issue 14 part 2).

References: the plain objective (zero features), ``jax.grad`` in float64
(closed-form gradient), direct evaluation along a line (the quartic),
exact block optimality (ALS), plain ALS (no features).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax as mf
from mfjax import objective as O
from mfjax.data import Ratings
from mfjax.losses import BiasedFactors, Factors

M, N, R, DU, DV = 12, 9, 3, 4, 3


def problem(seed=0, density=0.5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    mask = rng.random((M, N)) < density
    mask[5, :] = False  # a user without ratings (cold start)
    rows, cols = np.nonzero(mask)
    vals = rng.normal(3.0, 1.0, rows.size).astype(dtype)
    return Ratings(rows.astype(np.int32), cols.astype(np.int32), vals, (M, N)), rng


def random_params(rng, side, biased, dtype=jnp.float64):
    p = O.init_side_factors(jax.random.key(1), side, R, biased=biased, mean=3.0, dtype=dtype)
    return jax.tree.map(lambda a: (a + 0.3 * rng.normal(size=a.shape)).astype(dtype), p)


def max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) if x.size else 0.0
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def plain_of(p):
    if isinstance(p, O.SideBiasedFactors):
        return BiasedFactors(p.P, p.Q, p.row_bias, p.col_bias, p.mean)
    return Factors(p.P, p.Q)


# ------------------------------------------------------ zero features = plain MF
@pytest.mark.parametrize("biased", [False, True])
def test_zero_features_equal_plain_mf_value_and_gradient(biased):
    with jax.enable_x64(True):
        r, rng = problem()
        obj = O.mf_objective(r, 0.4, l2_bias=0.2, chunk_size=8)
        side = O.side_objective(obj, np.zeros((M, DU)), np.zeros((N, DV)), l2_side=0.3, l2_side_bias=0.5)
        p = random_params(rng, side, biased)
        v, g = O.side_value_and_grad(side, p)
        v0, g0 = O.value_and_grad(obj, plain_of(p))
        maps = 0.3 * (jnp.sum(p.A ** 2) + jnp.sum(p.B ** 2))
        if biased:
            maps += 0.5 * (jnp.sum(p.A_bias ** 2) + jnp.sum(p.B_bias ** 2))
        np.testing.assert_allclose(float(v), float(v0 + maps), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(g.P), np.asarray(g0.U), atol=1e-10)
        np.testing.assert_allclose(np.asarray(g.Q), np.asarray(g0.V), atol=1e-10)
        np.testing.assert_allclose(np.asarray(g.A), np.asarray(0.6 * p.A), atol=1e-10)
        if biased:
            np.testing.assert_allclose(np.asarray(g.row_bias), np.asarray(g0.row_bias), atol=1e-10)
            np.testing.assert_allclose(float(g.mean), float(g0.mean), atol=1e-9)
        # absent features (d = 0) are the same problem
        none = O.side_objective(obj, l2_side=0.3)
        q = O.init_side_factors(jax.random.key(2), none, R, biased=biased)
        np.testing.assert_allclose(float(O.side_value(none, q)), float(O.value(obj, plain_of(q))), rtol=1e-6)


@pytest.mark.parametrize("rule", ["armijo", "exact_mf"])
def test_zero_features_fit_trajectory_equals_plain(rule):
    r, rng = problem(1, dtype=np.float32)
    obj = O.mf_objective(r, 0.5)
    side = O.side_objective(obj, np.zeros((M, DU)), np.zeros((N, DV)))
    p = O.init_side_factors(jax.random.key(0), side, R)
    ls = mf.linesearch.armijo() if rule == "armijo" else mf.linesearch.exact_mf()
    opt = mf.optim.gd(linesearch=ls)
    res_side = mf.fit(side, opt, p, 25)
    res_plain = mf.fit(obj, opt, plain_of(p), 25)
    np.testing.assert_allclose(np.asarray(res_side.trace.loss), np.asarray(res_plain.trace.loss), rtol=2e-5)
    np.testing.assert_allclose(np.asarray(res_side.params.P), np.asarray(res_plain.params.U), atol=2e-4)
    assert float(jnp.max(jnp.abs(res_side.params.A))) == 0.0


# --------------------------------------------------------- gradient vs autodiff
@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("scale", ["sum", "mean"])
def test_closed_form_gradient_matches_autodiff_float64(biased, scale):
    with jax.enable_x64(True):
        r, rng = problem(2)
        w = (jnp.asarray(rng.random(M) + 0.5), jnp.asarray(rng.random(N) + 0.5))
        side = O.side_objective(r, rng.normal(size=(M, DU)), rng.normal(size=(N, DV)), 0.4, l2_side=0.2,
                                l2_side_bias=0.7, l2_bias=0.3, scale=scale, l2_weights=w, chunk_size=8)
        p = random_params(rng, side, biased)
        v, g = jax.jit(O.side_value_and_grad)(side, p)
        ga = jax.grad(lambda q: O.side_value(side, q))(p)
        gl = jax.grad(O.side_loss)(p, side)  # the fit-ready loss: closed form through custom_vjp
        assert type(g) is type(p)
        assert max_diff(g, ga) < 1e-10
        assert max_diff(gl, g) < 1e-12
        np.testing.assert_allclose(float(v), float(O.side_value(side, p)), rtol=1e-12)


@pytest.mark.parametrize("biased", [False, True])
def test_quartic_along_direction_and_gradient_from_products(biased):
    with jax.enable_x64(True):
        r, rng = problem(3)
        side = O.side_objective(r, rng.normal(size=(M, DU)), rng.normal(size=(N, DV)), 0.4, l2_side=0.2)
        p = random_params(rng, side, biased)
        d = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), p)
        c, es = O.side_quartic_with_products(side, p, d)
        for t in (0.0, 0.25, -0.6, 1.3):
            ref = O.side_value(side, jax.tree.map(lambda a, b: a + t * b, p, d))
            np.testing.assert_allclose(float(np.polyval(np.asarray(c)[::-1], t)), float(ref), rtol=1e-11)
        new = jax.tree.map(lambda a, b: a + 0.25 * b, p, d)
        assert max_diff(O.side_grad_from_products(side, new, es, 0.25), O.side_grad(side, new)) < 1e-9


# -------------------------------------------------------------- fit and step rules
@pytest.mark.parametrize("biased", [False, True])
def test_fit_reduces_loss_with_several_step_rules(biased):
    r, rng = problem(4, dtype=np.float32)
    side = O.side_objective(r, rng.normal(size=(M, DU)), rng.random((N, DV)) < 0.5, 0.5)
    p = O.init_side_factors(jax.random.key(0), side, R, biased=biased, mean=3.0)
    L = mf.linesearch
    opts = {"gd+armijo": mf.optim.gd(linesearch=L.armijo()),
            "gd+exact": mf.optim.gd(linesearch=L.exact_mf()),
            "cg+strong_wolfe": mf.optim.cg(linesearch=L.strong_wolfe_zoom()),
            "heavy_ball+1/L": mf.optim.heavy_ball(linesearch=L.inverse_lipschitz())}
    f0 = float(O.side_value(side, p))
    for name, opt in opts.items():
        res = mf.fit(O.side_loss, opt, p, 30, loss_args=(side,))
        # momentum directions may stop a step rule early (not a descent direction): never NaN / divergence
        assert res.status_name in (("max_steps",) if name.startswith(("gd", "cg")) else
                                   ("max_steps", "linesearch_failed")), (name, res.status_name)
        assert float(res.value) < 0.5 * f0, name
        assert float(jnp.max(jnp.abs(res.params.A))) > 0, name  # the feature maps are learned
        np.testing.assert_allclose(float(res.value), float(O.side_value(side, res.params)), rtol=1e-4)


def test_exact_mf_with_fixed_side_objective_and_preconditioner_refuses():
    r, rng = problem(5, dtype=np.float32)
    side = O.side_objective(r, rng.normal(size=(M, DU)), None, 0.5)
    p = O.init_side_factors(jax.random.key(0), side, R)
    res = mf.fit(O.side_loss, mf.optim.gd(linesearch=mf.linesearch.exact_mf(side)), p, 10, loss_args=(side,))
    assert float(res.value) < float(O.side_value(side, p))
    with pytest.raises(TypeError, match="Factors"):
        opt = optax_chain_precond()
        mf.fit(O.side_loss, opt, p, 2, loss_args=(side,))


def optax_chain_precond():
    import optax

    return optax.chain(mf.optim.mf_preconditioner(), mf.optim.gd(linesearch=mf.linesearch.armijo()))


# ------------------------------------------------------------------------ ALS
@pytest.mark.parametrize("biased", [False, True])
def test_side_als_monotone_and_blockwise_exact(biased):
    with jax.enable_x64(True):
        r, rng = problem(6)
        Xu, Xv = rng.normal(size=(M, DU)), rng.normal(size=(N, DV))
        res = mf.solvers.side_als(r, R, Xu, Xv, l2=0.5, l2_side=0.2, biases=biased, num_steps=12)
        loss = np.asarray(res.trace.loss)
        assert np.all(np.diff(loss) <= 1e-10 * np.abs(loss[1:])), loss
        side = mf.solvers.side_als_objective(r, Xu, Xv, l2=0.5, l2_side=0.2)
        # step 1 alone: zero gradient in (P, beta); steps 1-2: zero gradient in (A, a)
        g1 = O.side_grad(side, mf.solvers.side_update_rows(res.params, side, maps=False))
        g2 = O.side_grad(side, mf.solvers.side_update_rows(res.params, side))
        assert float(jnp.max(jnp.abs(g1.P))) < 1e-9 and float(jnp.max(jnp.abs(g2.A))) < 1e-9
        g3 = O.side_grad(side, mf.solvers.side_update_cols(res.params, side))
        assert float(jnp.max(jnp.abs(g3.B))) < 1e-9
        if biased:
            assert float(jnp.max(jnp.abs(g1.row_bias))) < 1e-9 and float(jnp.max(jnp.abs(g2.A_bias))) < 1e-9


@pytest.mark.parametrize("biased", [False, True])
def test_side_als_without_features_is_plain_als(biased):
    with jax.enable_x64(True):
        r, _ = problem(7)
        res = mf.solvers.side_als(r, R, l2=0.5, biases=biased, num_steps=4, key=jax.random.key(3))
        key = jax.random.key(3)
        init = (mf.losses.init_biased_factors(key, r.shape, R, mean=r.mean(), dtype=jnp.float64) if biased
                else mf.init_factors(key, r.shape, R, dtype=jnp.float64))
        ref = mf.solvers.als(r, R, l2=0.5, biases=biased, num_steps=4, init=init)
        eff = O.effective_factors(res.params, mf.solvers.side_als_objective(r))
        assert max_diff(eff, ref.params) < 1e-8
        np.testing.assert_allclose(np.asarray(res.trace.loss), np.asarray(ref.trace.loss), rtol=1e-10)


def test_side_als_compiles_once_for_every_l2():
    """l2 / l2_side are traced: a second fit of the same shapes reuses the compiled sweep loop."""
    from mfjax.solvers import base

    r, rng = problem(11, dtype=np.float32)
    Xu, Xv = rng.normal(size=(M, DU)).astype(np.float32), rng.normal(size=(N, DV)).astype(np.float32)
    first = mf.solvers.side_als(r, R, Xu, Xv, l2=0.5, l2_side=1.0, num_steps=3)
    before = base._run_jit._cache_size()
    second = mf.solvers.side_als(r, R, Xu, Xv, l2=2.0, l2_side=5.0, num_steps=3)
    assert base._run_jit._cache_size() == before
    assert float(second.trace.loss[-1]) != float(first.trace.loss[-1])  # the new l2 was used


# ------------------------------------------------------------------ cold start
def test_cold_start_uses_features_and_fold_in_solves_the_row():
    with jax.enable_x64(True):
        r, rng = problem(8)
        Xu, Xv = rng.normal(size=(M, DU)), rng.normal(size=(N, DV))
        res = mf.solvers.side_als(r, R, Xu, Xv, l2=0.5, l2_side=0.1, biases=True, num_steps=8)
        side = mf.solvers.side_als_objective(r, Xu, Xv, l2=0.5, l2_side=0.1)
        p = res.params
        # user 5 has no training ratings: P_5 = 0, beta_5 = 0, its factor is X_u[5] A
        np.testing.assert_allclose(np.asarray(p.P[5]), 0.0, atol=1e-12)
        eff = O.effective_factors(p, side)
        (u_new, b_new), items = O.cold_start_factors(p, user_features=Xu[5:6])
        assert items is None
        np.testing.assert_allclose(np.asarray(u_new[0]), np.asarray(eff.U[5]), atol=1e-12)
        np.testing.assert_allclose(float(b_new[0]), float(eff.row_bias[5]), atol=1e-12)
        assert float(jnp.linalg.norm(u_new)) > 0  # the features carry information
        # other features give another prediction
        (u_other, _), _ = O.cold_start_factors(p, user_features=Xu[6:7])
        assert float(jnp.linalg.norm(u_other - u_new)) > 1e-6
        # fold in user 5 from three revealed ratings
        revealed = Ratings(np.array([5, 5, 5, 0], np.int32), np.array([0, 2, 4, 1], np.int32),
                           np.array([4.0, 2.0, 5.0, 1.0]), (M, N))
        folded = mf.solvers.side_fold_in(p, side, revealed, rows=[5])
        assert float(jnp.linalg.norm(folded.P[5])) > 0
        np.testing.assert_array_equal(np.asarray(folded.P[0]), np.asarray(p.P[0]))  # not listed: unchanged
        np.testing.assert_array_equal(np.asarray(folded.A), np.asarray(p.A))
        # P_5 minimises the user's ridge problem on the revealed entries
        only5 = O.side_objective(revealed.select(np.array([0, 1, 2])), Xu, Xv, 0.5, l2_side=0.1)
        g = O.side_grad(only5, folded)
        assert float(jnp.max(jnp.abs(g.P[5]))) < 1e-9 and abs(float(g.row_bias[5])) < 1e-9


# ------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    r, rng = problem(9, dtype=np.float32)
    with pytest.raises(ValueError, match="user features have 11 rows but the ratings have 12"):
        O.side_objective(r, np.zeros((M - 1, DU)))
    with pytest.raises(ValueError, match="item features have 3 rows"):
        O.side_objective(r, None, np.zeros((3, DV)))
    bad = np.zeros((M, DU))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite value nan at row 2, column 1"):
        O.side_objective(r, bad)
    with pytest.raises(ValueError, match="2-D"):
        O.side_objective(r, np.zeros(M))
    with pytest.raises(ValueError, match="l2_side"):
        O.side_objective(r, np.zeros((M, DU)), l2_side=-1.0)
    side = O.side_objective(r, np.zeros((M, DU)), np.zeros((N, DV)))
    with pytest.raises(TypeError, match="SideFactors"):
        O.side_value(side, mf.init_factors(jax.random.key(0), r.shape, R))
    p = O.init_side_factors(jax.random.key(0), side, R)
    with pytest.raises(ValueError, match="A has shape"):
        O.side_value(side, p._replace(A=jnp.zeros((DU + 1, R))))
    with pytest.raises(ValueError, match=r"shape \(k, 4\)"):
        O.cold_start_factors(p, user_features=np.zeros((2, DU + 2)))
    with pytest.raises(ValueError, match="non-finite"):
        mf.solvers.side_als(r, R, bad, l2=1.0, num_steps=1)
    with pytest.raises(ValueError, match="revealed ratings have shape"):
        mf.solvers.side_fold_in(p, side, Ratings(np.array([0]), np.array([0]), np.array([1.0]), (3, 3)), rows=[0])
