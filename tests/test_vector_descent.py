"""Tests of row-wise vector descent (mfjax.solvers.rowwise, Algorithm 13)."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mfjax.data import Ratings
from mfjax.losses import Factors, masked_sq_loss
from mfjax.solvers import _rows
from mfjax.solvers.base import _run_jit, run

# the package of the row solvers (mfjax.solvers.vector_descent is the function)
vd = importlib.import_module("mfjax.solvers.rowwise")

M, N, R = 23, 17, 4
L2 = 0.7


def enable_x64():
    return jax.enable_x64(True)


def _problem(seed=0, density=0.35, empty_row=5, empty_col=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    W = rng.random((M, N)) < density
    W[empty_row] = False
    W[:, empty_col] = False
    X = rng.normal(size=(M, R)) @ rng.normal(size=(R, N)) + 0.1 * rng.normal(size=(M, N))
    ratings = Ratings.from_dense(np.where(W, X, np.nan), dtype=dtype)
    U = rng.normal(size=(M, R))
    V = rng.normal(size=(N, R))
    return ratings, W, X, U, V


def _ridge_rows(W, X, V, l2):
    """Reference: np.linalg.solve of every row's normal equations (zeros if empty)."""
    out = np.zeros((W.shape[0], V.shape[1]))
    for i in range(W.shape[0]):
        Vi = V[W[i]]
        if Vi.shape[0] == 0 and l2 == 0:
            continue
        out[i] = np.linalg.solve(Vi.T @ Vi + l2 * np.eye(V.shape[1]), Vi.T @ X[i, W[i]])
    return out


_half = jax.jit(vd.row_half_sweep, static_argnames="row_solver")
_solve_rows = jax.jit(vd.solve_rows, static_argnums=0)
_stats = jax.jit(_rows.row_statistics)
_block_stats = jax.jit(_rows.block_statistics)


# ------------------------------------------------------------ statistics
def test_row_statistics_match_the_masked_loss_and_direct_form():
    with enable_x64():
        ratings, W, X, U, V = _problem()
        lay = _rows.build_row_layout(ratings, growth=1.5, min_cap=2)
        q = _stats(lay, jnp.asarray(V), L2)
        per_row = jax.vmap(_rows.quadratic_value)(jnp.asarray(U), q)
        total = float(per_row.sum() + L2 * np.sum(V * V))
        ref = float(masked_sq_loss(Factors(jnp.asarray(U), jnp.asarray(V)), ratings, L2))
        np.testing.assert_allclose(total, ref, rtol=1e-12)
        direct = _rows.direct_row_losses(lay, jnp.asarray(U), jnp.asarray(V), L2)
        np.testing.assert_allclose(np.asarray(direct), np.asarray(per_row), rtol=1e-10, atol=1e-10)
        # gradient of the quadratic = eq. 9 = jax.grad of the masked loss w.r.t. U
        gq = jax.vmap(jax.grad(_rows.quadratic_value))(jnp.asarray(U), q)
        gref = jax.grad(lambda U_: masked_sq_loss(Factors(U_, jnp.asarray(V)), ratings, L2))(jnp.asarray(U))
        np.testing.assert_allclose(np.asarray(gq), np.asarray(gref), rtol=1e-10, atol=1e-10)
        # groups of k rows (interleaved layout) give the same statistics, tail included
        for k in (7,):
            bl = _rows.build_block_layout(ratings, k)
            for g in range(bl.num_groups):
                qb = _block_stats(bl, g, jnp.asarray(V), L2)
                lo, hi = g * k, min(g * k + k, M)
                np.testing.assert_allclose(np.asarray(qb.A[: hi - lo]), np.asarray(q.A[lo:hi]), atol=1e-12)
                np.testing.assert_allclose(np.asarray(qb.b[: hi - lo]), np.asarray(q.b[lo:hi]), atol=1e-12)
                np.testing.assert_allclose(np.asarray(qb.c[: hi - lo]), np.asarray(q.c[lo:hi]))
                assert np.all(np.asarray(qb.count[hi - lo:]) == 0)


# ------------------------------------------------------------ half sweep
@pytest.mark.parametrize("which", ["quadratic", "fixed", "folded"])
def test_half_sweep_equals_ridge_solution_and_als(which):
    from mfjax.solvers.als import als_half_sweep

    with enable_x64():
        ratings, W, X, U, V = _problem()
        solver = {"quadratic": vd.quadratic_bfgs(num_steps=R, rtol=1e-12),
                  "fixed": vd.fixed_count(num_steps=R, rtol=1e-12),
                  "folded": vd.folded(max_iters=R, rtol=1e-12)}[which]
        lay = _rows.build_row_layout(ratings)
        Un, info = _half(jnp.asarray(U), jnp.asarray(V), lay, L2, row_solver=solver)
        ref = _ridge_rows(W, X, V, L2)
        np.testing.assert_allclose(np.asarray(Un), ref, atol=1e-9)
        U_als = als_half_sweep(jnp.asarray(V), ratings, L2)
        np.testing.assert_allclose(np.asarray(Un), np.asarray(U_als), atol=1e-9)
        assert bool(info.success.all()) and bool(info.converged.all())
        # BFGS + exact steps: at most r iterations per row (finite termination)
        assert int(info.num_iters.max()) <= R
        if which != "quadratic":
            return
        # the columns: same routine on the transposed ratings
        Vn, _ = _half(jnp.asarray(V), Un, _rows.build_row_layout(ratings.T), L2, row_solver=solver)
        np.testing.assert_allclose(np.asarray(Vn), _ridge_rows(W.T, X.T, np.asarray(Un), L2), atol=1e-9)


def test_bfgs_exact_finishes_in_r_iterations_on_one_row():
    with enable_x64():
        rng = np.random.default_rng(3)
        r = 7
        B = rng.normal(size=(30, r))
        A = B.T @ B + 0.1 * np.eye(r)
        b = rng.normal(size=r)
        q = _rows.RowQuadratic(jnp.asarray(A), jnp.asarray(b), jnp.asarray(1.0), jnp.asarray(30))
        fun = lambda u: _rows.quadratic_value(u, q)
        u0 = jnp.asarray(rng.normal(size=r))
        g0 = np.linalg.norm(jax.grad(fun)(u0))
        us = []
        for solver in (vd.fixed_count(num_steps=r, rtol=0.0), vd.folded(max_iters=r, rtol=0.0)):
            u, info = jax.jit(solver.solve, static_argnums=0)(fun, u0)
            assert int(info.num_iters) <= r
            assert float(info.grad_norm) <= 1e-9 * g0
            np.testing.assert_allclose(np.asarray(u), np.linalg.solve(A, b), rtol=1e-9)
            us.append(u)
        # the fast path on (A, b): same result, at most r iterations, no value evaluations
        u, info = jax.jit(vd.quadratic_bfgs(num_steps=r, rtol=0.0).solve_quadratic)(q, u0)
        assert int(info.num_iters) <= r and int(info.num_fun_evals) == 0
        assert float(info.grad_norm) <= 1e-9 * g0
        np.testing.assert_allclose(np.asarray(u), np.asarray(us[0]), rtol=1e-9)
        # ... and the same iterates as the generic path after each of k < r steps
        for k in (3,):
            u_fast, _ = vd.quadratic_bfgs(num_steps=k, rtol=0.0).solve_quadratic(q, u0)
            u_gen, _ = vd.fixed_count(num_steps=k, rtol=0.0).solve(fun, u0)
            np.testing.assert_allclose(np.asarray(u_fast), np.asarray(u_gen), rtol=1e-9, atol=1e-12)


def test_folded_and_fixed_library_searches_decrease_row_losses():
    from mfjax import linesearch as ls
    from mfjax.optim import directions as dirs

    with enable_x64():
        ratings, W, X, U, V = _problem(seed=1)
        lay = _rows.build_row_layout(ratings)
        q = _stats(lay, jnp.asarray(V), L2)
        f0 = jax.vmap(_rows.quadratic_value)(jnp.asarray(U), q)
        ref = _ridge_rows(W, X, V, L2)
        solvers = [
            vd.fixed_count(optax.chain(dirs.gd_direction(), ls.armijo()), num_steps=30),
            vd.fixed_count(optax.chain(dirs.bfgs_direction(), ls.weak_wolfe_bisection()), num_steps=30,
                           rtol=1e-10),
            vd.folded(dirs.bfgs_direction(), vd.armijo_search(), max_iters=40, rtol=1e-8),
            vd.folded(dirs.heavy_ball_direction(0.5), vd.weak_wolfe_search(), max_iters=40),
        ]
        results = [_solve_rows(s, jnp.asarray(U), q) for s in solvers]
        for k, (Un, info) in enumerate(results):
            f1 = jax.vmap(_rows.quadratic_value)(Un, q)
            assert np.all(np.isfinite(np.asarray(Un)))
            assert np.all(np.asarray(f1) <= np.asarray(f0) + 1e-9)
            assert np.all(np.asarray(info.num_fun_evals) >= 1)
            # heavy ball's -b_t need not be a descent direction: those rows fail (reported)
            assert bool(info.success.all()) or k == 3
        # the quasi-Newton ones reach the ridge solution
        for Un, _ in (results[1], results[2]):
            np.testing.assert_allclose(np.asarray(Un), ref, atol=1e-5)


def test_failing_search_keeps_old_value_and_is_reported():
    from mfjax import linesearch as ls

    with enable_x64():
        ratings, W, X, U, V = _problem(seed=2)
        lay = _rows.build_row_layout(ratings)
        ascent = optax.with_extra_args_support(optax.scale(1.0))  # p = +g: no descent
        for s in (vd.fixed_count(optax.chain(ascent, ls.armijo()), num_steps=3),
                  vd.folded(ascent, vd.armijo_search(), max_iters=3),
                  vd.folded(ascent, vd.exact_search(), max_iters=3)):
            Un, info = vd.row_half_sweep(jnp.asarray(U), jnp.asarray(V), lay, L2, s)
            nonempty = W.any(axis=1)
            np.testing.assert_array_equal(np.asarray(Un)[nonempty], U[nonempty])
            assert not np.asarray(info.success)[nonempty].any()
            assert np.asarray(info.success)[~nonempty].all()
            assert np.all(np.asarray(Un)[~nonempty] == 0)
        # too few trials: the folded Armijo search fails on steep rows, keeps them
        s = vd.folded(vd._default_direction(), vd.armijo_search(max_trials=1, initial_step=1e3),
                      max_iters=3)
        Un, info = vd.row_half_sweep(jnp.asarray(U), jnp.asarray(V), lay, L2, s)
        failed = ~np.asarray(info.success)
        assert failed.any()
        assert np.all(np.isfinite(np.asarray(Un)))


@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_empty_rows_end_at_zero_without_nan(l2):
    with enable_x64():
        ratings, W, X, U, V = _problem(seed=4)
        lay = _rows.build_row_layout(ratings)
        for solver in (vd.fixed_count(num_steps=R), vd.folded(max_iters=R)):
            Un, info = _half(jnp.asarray(U), jnp.asarray(V), lay, l2, row_solver=solver)
            assert np.all(np.isfinite(np.asarray(Un)))
            np.testing.assert_array_equal(np.asarray(Un)[5], 0.0)
            assert bool(info.success[5]) and bool(info.converged[5])
        res = vd.vector_descent(ratings, R, l2=l2, num_steps=2, key=jax.random.PRNGKey(0))
        assert np.all(np.isfinite(np.asarray(res.params.U)))
        np.testing.assert_array_equal(np.asarray(res.params.U)[5], 0.0)
        np.testing.assert_array_equal(np.asarray(res.params.V)[3], 0.0)


# -------------------------------------------------------------- schedule
def _literal_algorithm13(m, n, k_u, k_v):
    """Algorithm 13 transcribed literally (1-based as in the slides), returned 0-based."""
    out = []
    d = k_u + k_v
    for t in range(0, n + m - 1 + 1):
        r = t % d
        if r < k_u:
            i = k_u * (t // d) + r + 1
            if i > m:
                continue
            out.append(("U", i - 1))
        else:
            j = k_v * (t // d) + r - k_u + 1
            if j > n:
                continue
            out.append(("V", j - 1))
    return out


@pytest.mark.parametrize("m,n,k_u,k_v", [
    (10, 10, 1, 1), (10, 10, 2, 1), (7, 3, 2, 1), (3, 7, 1, 2), (6040, 3706, 8, 5),
    (13, 5, 3, 1), (5, 13, 1, 3), (1, 1, 1, 1), (11, 4, 5, 3),
])
def test_schedule_matches_literal_algorithm13(m, n, k_u, k_v):
    assert vd.algorithm13_schedule(m, n, k_u, k_v) == _literal_algorithm13(m, n, k_u, k_v)
    full = vd.algorithm13_schedule(m, n, k_u, k_v, complete=True)
    literal = _literal_algorithm13(m, n, k_u, k_v)
    assert full[: len(literal)] == literal  # extension keeps Algorithm 13's first n + m steps
    assert sorted(i for s, i in full if s == "U") == list(range(m))
    assert sorted(j for s, j in full if s == "V") == list(range(n))


def test_interleaved_sweep_equals_sequential_reference():
    with enable_x64():
        ratings, W, X, U, V = _problem(seed=5)
        k_u, k_v = 3, 2
        res = vd.vector_descent(ratings, R, l2=L2, num_steps=1, schedule="interleaved",
                                k_u=k_u, k_v=k_v, init=Factors(U, V),
                                row_solver=vd.fixed_count(num_steps=R, rtol=1e-12))
        Ur, Vr = U.copy(), V.copy()
        for side, idx in vd.algorithm13_schedule(M, N, k_u, k_v, complete=True):
            if side == "U":
                Ur[idx] = _ridge_rows(W[idx:idx + 1], X[idx:idx + 1], Vr, L2)[0]
            else:
                Vr[idx] = _ridge_rows(W.T[idx:idx + 1], X.T[idx:idx + 1], Ur, L2)[0]
        np.testing.assert_allclose(np.asarray(res.params.U), Ur, atol=1e-8)
        np.testing.assert_allclose(np.asarray(res.params.V), Vr, atol=1e-8)


def test_parallel_sweeps_equal_als_and_decrease_loss():
    with enable_x64():
        ratings, W, X, U, V = _problem(seed=6)
        res, info = vd.vector_descent(ratings, R, l2=L2, num_steps=3, init=Factors(U, V),
                                      row_solver=vd.folded(max_iters=R, rtol=1e-12),
                                      eval_set=ratings, return_info=True)
        Ur, Vr = U, V
        for _ in range(3):
            Ur = _ridge_rows(W, X, Vr, L2)
            Vr = _ridge_rows(W.T, X.T, Ur, L2)
        np.testing.assert_allclose(np.asarray(res.params.U), Ur, atol=1e-8)
        np.testing.assert_allclose(np.asarray(res.params.V), Vr, atol=1e-8)
        loss = np.asarray(res.trace.loss)
        assert np.all(np.diff(loss) <= 1e-9)
        np.testing.assert_allclose(loss[-1], float(masked_sq_loss(Factors(jnp.asarray(Ur), jnp.asarray(Vr)), ratings, L2)),
                                   rtol=1e-10)
        assert np.all(np.isfinite(np.asarray(res.trace.eval_metric)))
        assert int(np.asarray(info.failed).sum()) == 0
        assert info.rows.num_iters.shape == (M,) and info.cols.num_iters.shape == (N,)
        assert res.status_name == "max_steps" and int(res.num_steps) == 3


def test_solver_on_the_driver_equals_the_alias_and_reports_divergence():
    ratings, W, X, U, V = _problem(dtype=np.float32, seed=3)
    init = Factors(jnp.asarray(U, jnp.float32), jnp.asarray(V, jnp.float32))
    alias = vd.vector_descent(ratings, R, l2=0.5, num_steps=4, init=init)
    problem = vd.vector_descent_problem(ratings, 0.5)
    solver = vd.vector_descent_solver(rank=R)
    res = run(solver, problem, solver.init(init), 4, eval_set=ratings)
    np.testing.assert_allclose(np.asarray(res.params.U), np.asarray(alias.params.U), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(res.trace.loss), np.asarray(alias.trace.loss), rtol=1e-5)
    assert res.trace.info.fun_evals.shape == (4,) and res.status_name == "max_steps"
    # a sweep that ascends (gradient *ascent* rows) is rejected as diverged, factors stay finite
    ascent = optax.chain(optax.scale(-1.0), optax.scale(-100.0))
    bad = vd.vector_descent_solver(vd.fixed_count(ascent, num_steps=3))
    out = run(bad, problem, bad.init(init), 5)
    assert out.status_name in ("diverged", "nonfinite") and int(out.num_steps) < 5
    assert bool(jnp.all(jnp.isfinite(out.params.U)))


def test_float32_default_solver_fits_synthetic_low_rank_and_compiles_once():
    rng = np.random.default_rng(7)
    m, n, r = 60, 40, 3
    X = rng.normal(size=(m, r)) @ rng.normal(size=(r, n))
    W = rng.random((m, n)) < 0.5
    ratings = Ratings.from_dense(np.where(W, X, np.nan))
    for schedule in ("parallel", "interleaved"):
        before = _run_jit._cache_size()
        for seed in (1, 2):  # second call: no recompilation
            res = vd.vector_descent(ratings, r, l2=1e-3, num_steps=15, schedule=schedule,
                                    key=jax.random.PRNGKey(seed))
            assert res.params.U.dtype == jnp.float32
            pred = np.asarray(res.params.U @ res.params.V.T)
            assert np.sqrt(np.mean((pred - X)[W] ** 2)) < 1e-2
        assert _run_jit._cache_size() == before + 1


def test_half_sweep_jit_compiles_once():
    ratings, W, X, U, V = _problem(dtype=np.float32)
    U, V = jnp.asarray(U, jnp.float32), jnp.asarray(V, jnp.float32)
    lay = _rows.build_row_layout(ratings)
    f = jax.jit(vd.row_half_sweep, static_argnames="row_solver")
    before = f._cache_size()
    f(U, V, lay, L2, row_solver=vd.fixed_count(num_steps=R))
    f(U + 1.0, V * 2.0, lay, 0.3, row_solver=vd.fixed_count(num_steps=R))  # equal solver: cached
    assert f._cache_size() == before + 1


def test_bad_input_errors():
    ratings, *_ = _problem()
    with pytest.raises(ValueError, match="l2"):
        vd.vector_descent(ratings, R, l2=-1.0, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="schedule"):
        vd.vector_descent(ratings, R, l2=1.0, schedule="random", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="k_u"):
        vd.interleaved_blocks(5, 5, 0, 1)
    with pytest.raises(TypeError, match="search"):
        vd.folded(search="armijo")
    with pytest.raises(ValueError, match="num_steps"):
        vd.fixed_count(num_steps=0)
