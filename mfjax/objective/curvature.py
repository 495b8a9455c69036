r"""Per-row normal equations and Gauss-Newton blocks of the masked MF objective, once.

With ``V`` fixed, row ``i``'s part of the objective is the ridge problem::

    f_i(u) = s sum_{k: i_k = i} w_k (x_k - u . v_{j_k})^2 + l2 rho_i |u|^2,

whose normal equations are ``(s A_i + l2 rho_i I) u = s b_i`` with the
(weighted) Gram matrix and right-hand side::

    A_i = sum_k w_k v_{j_k} v_{j_k}^T,   b_i = sum_k w_k y_k v_{j_k}   (y = x by default).

The Gauss-Newton block of ``f`` for row ``i`` is ``H_i = 2 s A_i + 2 l2 rho_i I``
(exactly the Hessian of the loss in ``u_i`` for fixed ``V``) and its
diagonal ``2 s sum_k w_k v_{j_k}^2 + 2 l2 rho_i``.  ALS solves the normal
equations of every row at once, the Gauss-Newton preconditioner inverts the
blocks, and the column side is the same code on ``objective.T``.

References:
  Zhou, Wilkinson, Schreiber, Pan, "Large-scale parallel collaborative
  filtering for the Netflix prize", AAIM 2008.
  Buchanan, Fitzgibbon, "Damped Newton algorithms for matrix factorization
  with missing data", CVPR 2005.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mfjax.core.chunks import chunk_entries
from mfjax.objective.problem import MFObjective
from mfjax.objective.sharded import entry_map

__all__ = [
    "NORMAL_EQUATIONS_CHUNK",
    "normal_equations",
    "solve_ridge_rows",
    "gauss_newton_diagonal",
    "gauss_newton_blocks",
    "ridge_weights",
    "cg_ridge_rows",
    "residual_rows",
    "cg_solve_rows",
]

#: Entries per chunk when scatter-adding outer products (memory: chunk x r^2).
NORMAL_EQUATIONS_CHUNK = 32768


def normal_equations(obj: MFObjective, F, targets=None, *,
                     chunk_size: int = NORMAL_EQUATIONS_CHUNK):
    """The per-row Gram matrices, right-hand sides and counts (unscaled; module docstring).

    Args:
      obj: the objective; its rows index the systems, its columns index ``F``.
      F: (n, k) feature rows (``V``, or ``[V, 1]`` for the biased model).
      targets: optional (N,) ``y`` (default the stored values).
      chunk_size: entries per chunk of the scatter-add scan.

    Returns:
      ``(A (m, k, k), b (m, k), counts (m,))``.
    """
    return entry_map(lambda o, f, y: _local_normal_equations(o, f, y, chunk_size), obj, F,
                     local_in=obj.values if targets is None else targets)


def _local_normal_equations(obj: MFObjective, F, y, chunk_size):
    m = obj.shape[0]
    k = F.shape[1]
    r, c, yy, w = chunk_entries(obj.rows, obj.cols, jnp.asarray(y).astype(F.dtype),
                                chunk_size=chunk_size, weights=obj.weights, dtype=F.dtype)

    def body(acc, chunk):
        rr, cc, yk, wk = chunk
        f = F[cc]
        fw = f * wk[:, None]
        A, b, n = acc
        A = A + jax.ops.segment_sum(fw[:, :, None] * f[:, None, :], rr, num_segments=m)
        b = b + jax.ops.segment_sum(fw * yk[:, None], rr, num_segments=m)
        n = n + jax.ops.segment_sum(wk, rr, num_segments=m)
        return (A, b, n), None

    init = (jnp.zeros((m, k, k), F.dtype), jnp.zeros((m, k), F.dtype), jnp.zeros((m,), F.dtype))
    (A, b, n), _ = jax.lax.scan(body, init, (r, c, yy, w))
    return A, b, n


def _pinv_solve(A, b):
    """Minimum-norm least-squares solutions of symmetric PSD systems (batched)."""
    evals, evecs = jnp.linalg.eigh(A)
    k = A.shape[-1]
    cutoff = jnp.finfo(A.dtype).eps * k * jnp.max(jnp.abs(evals), axis=-1, keepdims=True)
    inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0), 0.0)
    coef = jnp.einsum("...kj,...k->...j", evecs, b) * inv
    return jnp.einsum("...kj,...j->...k", evecs, coef)


def cholesky_solve_columns(M, b):
    """``M_i^{-1} b_i`` for a batch of SPD ``M`` (B, k, k), column by column in JAX, no LAPACK call.

    Cholesky-Banachiewicz, ``M = L L^T``: column ``j`` of ``L`` is
    ``(M_{:,j} - L L_{j,:}^T) / sqrt(.)_j`` on and below the diagonal (the rows of
    ``L`` are zero right of the diagonal, so the product sums over ``p < j`` only),
    then the two triangular solves, each a ``fori_loop`` over the ``k`` columns
    vectorised over the batch.  Same flops as LAPACK's ``potrf`` + ``potrs``, slower
    on a CPU (about 5x at k = 64), used where the batched LAPACK kernels must not run:
    several virtual CPU devices in one process, where jaxlib's batched ``potrf``
    splits its batch over the shared intra-op thread pool and blocks on it, so
    that two devices' kernels waiting for each other's queued tasks deadlock
    (:func:`mfjax.solvers.als` on a mesh, BENCHMARKS.md).  A non-SPD ``M`` gives NaN.
    """
    k = M.shape[-1]
    idx = jnp.arange(k)

    def column(j, L):
        v = M[:, :, j] - jnp.einsum("bip,bp->bi", L, L[:, j, :])
        c = jnp.where(idx[None, :] >= j, v / jnp.sqrt(v[:, j])[:, None], 0.0)
        return L.at[:, :, j].set(c)

    L = jax.lax.fori_loop(0, k, column, jnp.zeros_like(M))

    def forward(j, y):
        return y.at[:, j].set((b[:, j] - jnp.einsum("bp,bp->b", L[:, j, :], y)) / L[:, j, j])

    y = jax.lax.fori_loop(0, k, forward, jnp.zeros_like(b))

    def backward(t, x):
        j = k - 1 - t
        return x.at[:, j].set((y[:, j] - jnp.einsum("bp,bp->b", L[:, :, j], x)) / L[:, j, j])

    return jax.lax.fori_loop(0, k, backward, jnp.zeros_like(b))


def solve_ridge_rows(A, b, ridge, counts=None, *, lapack: bool = True):
    """Solve ``(A_i + diag(ridge_i)) x_i = b_i`` for all rows (batched Cholesky).

    Rows with ``counts == 0`` and a zero ridge get a unit ridge (their
    ``b_i = 0``, so the solution stays 0).  Rows whose ridge has a zero entry
    (possibly singular) or whose Cholesky solve is not finite are solved by
    an eigendecomposition pseudo-inverse instead: the minimum-norm
    least-squares solution, as ``numpy.linalg.lstsq``.

    Args:
      A: (m, k, k) symmetric PSD; b: (m, k); ridge: broadcastable to (m, k);
      counts: optional (m,) observed counts.
      lapack: ``False``: the Cholesky solve by :func:`cholesky_solve_columns`
        instead of LAPACK (the mesh path on CPU devices; static).
    """
    m, k = b.shape
    ridge = jnp.broadcast_to(jnp.asarray(ridge, A.dtype), (m, k))
    if counts is not None:
        ridge = jnp.where((counts == 0)[:, None] & (ridge <= 0), 1.0, ridge)
    M = A + jax.vmap(jnp.diag)(ridge)
    if lapack:
        L = jnp.linalg.cholesky(M)
        x = jax.scipy.linalg.cho_solve((L, True), b[..., None])[..., 0]
    else:
        x = cholesky_solve_columns(M, b)
    bad = ~jnp.all(jnp.isfinite(x), axis=-1) | jnp.any(ridge <= 0, axis=-1)
    return jax.lax.cond(
        jnp.any(bad),
        lambda: jnp.where(bad[:, None], _pinv_solve(M, b), x),
        lambda: x,
    )


def cg_ridge_rows(apply, x0, r0, steps: int):
    r"""``steps`` conjugate-gradient steps on every row's SPD system ``M_i x_i = c_i`` at once.

    Row ``i`` runs its own CG (Hestenes & Stiefel 1952) from ``x0_i`` with
    residual ``r0_i = c_i - M_i x0_i``::

        p = r;  repeat steps times:
            q = M p,  alpha = r.r / p.q,  x += alpha p,  r -= alpha q,
            beta = r_new.r_new / r.r,  p = r + beta p

    (row-wise dot products).  Each step minimises the quadratic ``x^T M x / 2
    - c^T x`` over ``x0 + span{r0, M r0, ...}``, so the row's objective never
    increases, and after ``k`` steps a ``k x k`` system is solved exactly (in
    exact arithmetic).  A row whose ``p.q`` or ``r.r`` is 0 (zero residual:
    already solved, or an empty row with a zero ridge) takes step 0 and stays
    finite.  ``steps`` is static: the loop is a :func:`jax.lax.fori_loop`.

    Args:
      apply: ``P (m, k) -> M P`` row by row (``M_i p_i``), never forming ``M_i``.
      x0, r0: ``(m, k)`` start and its residual.
      steps: number of CG steps (>= 0).
    """
    dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)  # noqa: E731

    def safe_div(a, b):
        ok = b > 0
        return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)

    def body(_, carry):
        x, r, p, rr = carry
        q = apply(p)
        alpha = safe_div(rr, dot(p, q))
        x, r = x + alpha * p, r - alpha * q
        rr_new = dot(r, r)
        return x, r, r + safe_div(rr_new, rr) * p, rr_new

    x, *_ = jax.lax.fori_loop(0, int(steps), body, (x0, r0, r0, dot(r0, r0)))
    return x


def residual_rows(obj: MFObjective, F, X, targets=None, *, chunk_size: int = NORMAL_EQUATIONS_CHUNK):
    r"""``g_i = sum_k w_k (y_k - f_{j_k} . x_i) f_{j_k}`` for every row, and the counts ``n_i``.

    The data part of row ``i``'s normal-equation residual, ``b_i - A_i x_i``,
    over the entries (O(nnz k) work, chunked like :func:`normal_equations`;
    ``A_i`` is never formed).  With ``targets = 0`` it is ``-A_i x_i``.

    Returns:
      ``(g (m, k), counts (m,))``.
    """
    y = jnp.zeros_like(obj.values) if targets is None else targets
    return entry_map(lambda o, f, x, yy: _local_residual(o, f, x, yy, chunk_size), obj, F, X, local_in=y)


def _local_residual(obj: MFObjective, F, X, y, chunk_size):
    m, k = X.shape
    r, c, yy, w = chunk_entries(obj.rows, obj.cols, jnp.asarray(y).astype(F.dtype),
                                chunk_size=chunk_size, weights=obj.weights, dtype=F.dtype)

    def body(acc, chunk):
        rr, cc, yk, wk = chunk
        f = F[cc]
        e = wk * (yk - jnp.sum(f * X[rr], axis=-1))
        g, n = acc
        return (g + jax.ops.segment_sum(e[:, None] * f, rr, num_segments=m),
                n + jax.ops.segment_sum(wk, rr, num_segments=m)), None

    (g, n), _ = jax.lax.scan(body, (jnp.zeros((m, k), F.dtype), jnp.zeros((m,), F.dtype)), (r, c, yy, w))
    return g, n


def cg_solve_rows(obj: MFObjective, F, targets, ridge, X0, steps: int, *,
                  chunk_size: int = NORMAL_EQUATIONS_CHUNK):
    r"""``steps`` CG steps on ``(A_i + diag(ridge_i)) x_i = b_i`` for all rows, warm-started at ``X0``.

    The systems of :func:`normal_equations` + :func:`solve_ridge_rows`, but
    each matrix-vector product ``A_i p_i = sum_k w_k (f_{j_k} . p_i) f_{j_k}``
    is taken over the entries (:func:`residual_rows`), so a step costs
    O(nnz k) instead of the O(nnz k^2) of building ``A``.  Rows without
    entries start (and stay) at 0, like the direct solve.

    Args:
      obj: the objective (rows index the systems); F: ``(n, k)`` features;
      targets: ``(N,)`` ``y`` (``None``: the values); ridge: broadcastable to
      ``(m, k)``; X0: ``(m, k)`` start; steps: CG steps (static).
    """
    m, k = X0.shape
    ridge = jnp.broadcast_to(jnp.asarray(ridge, F.dtype), (m, k))
    y = obj.values if targets is None else targets
    g, n = residual_rows(obj, F, X0, y, chunk_size=chunk_size)
    live = (n > 0)[:, None]
    x0 = jnp.where(live, X0.astype(F.dtype), 0.0)
    r0 = jnp.where(live, g - ridge * x0, 0.0)
    zeros = jnp.zeros_like(y)
    apply = lambda P: ridge * P - residual_rows(obj, F, P, zeros, chunk_size=chunk_size)[0]  # noqa: E731
    return cg_ridge_rows(apply, x0, r0, steps)


def ridge_weights(obj: MFObjective, dtype):
    """``(2 l2 rho (m,), 2 l2 gamma (n,))``: the regulariser's part of the Gauss-Newton diagonal."""
    m, n = obj.shape
    lam = obj.l2.astype(dtype)
    wr = jnp.ones((m,), dtype) if obj.row_weights is None else obj.row_weights.astype(dtype)
    wc = jnp.ones((n,), dtype) if obj.col_weights is None else obj.col_weights.astype(dtype)
    return 2.0 * lam * wr, 2.0 * lam * wc


def gauss_newton_diagonal(obj: MFObjective, params, chunk_size: int | None = None):
    r"""Diagonal of the per-row Gauss-Newton blocks, ``(dU (m, r), dV (n, r))``.

    ``d_ik = 2 s sum_k w_k v_{j_k, c}^2 + 2 l2 rho_i`` (and the column
    analogue), one chunked pass with two ``segment_sum`` scatter-adds.
    """
    U, V = params
    dt = jnp.result_type(obj.values.dtype, U.dtype)
    sU, sV = entry_map(lambda o, u, v: _local_squares(o, u, v, dt, chunk_size), obj, U, V)
    s = obj.data_weight.astype(dt)
    rr, rc = ridge_weights(obj, dt)
    return ((2.0 * s * sU + rr[:, None]).astype(U.dtype),
            (2.0 * s * sV + rc[:, None]).astype(V.dtype))


def _local_squares(obj: MFObjective, U, V, dt, chunk_size):
    m, n = obj.shape
    rows, cols, w = chunk_entries(obj.rows, obj.cols, weights=obj.weights, dtype=dt,
                                  chunk_size=obj.chunk_size if chunk_size is None else chunk_size)

    def body(acc, xs):
        r, c, wk = xs
        dU, dV = acc
        vc, ur = V[c].astype(dt), U[r].astype(dt)
        dU = dU + jax.ops.segment_sum(wk[:, None] * vc * vc, r, num_segments=m)
        dV = dV + jax.ops.segment_sum(wk[:, None] * ur * ur, c, num_segments=n)
        return (dU, dV), None

    (sU, sV), _ = jax.lax.scan(body, (jnp.zeros(U.shape, dt), jnp.zeros(V.shape, dt)),
                               (rows, cols, w))
    return sU, sV


def gauss_newton_blocks(obj: MFObjective, params, chunk_size: int = NORMAL_EQUATIONS_CHUNK):
    r"""The per-row Gauss-Newton blocks ``H = A + diag(ridge)`` of ``U``'s and ``V``'s rows.

    Returns:
      ``((A_U, ridge_U, n_U), (A_V, ridge_V, n_V))``: ``A_U`` (m, r, r) is
      ``2 s`` times the Gram matrices, ``ridge_U`` (m, r) is ``2 l2 rho_i``,
      ``n_U`` (m,) the row counts; the same for ``V``.
    """
    U, V = params
    m, n = obj.shape
    r = U.shape[1]
    dt = jnp.result_type(U.dtype, V.dtype)
    s = obj.data_weight.astype(dt)
    rr, rc = ridge_weights(obj, dt)
    AU, _, nU = normal_equations(obj, V, chunk_size=chunk_size)
    AV, _, nV = normal_equations(obj.T, U, chunk_size=chunk_size)
    return ((2.0 * s * AU, jnp.broadcast_to(rr[:, None], (m, r)), nU),
            (2.0 * s * AV, jnp.broadcast_to(rc[:, None], (n, r)), nV))
