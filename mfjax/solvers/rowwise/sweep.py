"""Half-sweeps: every row problem of one factor solved with the other fixed (``vmap`` over rows)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mfjax.objective.rows import RowLayout, RowQuadratic, build_row_layout, quadratic_increment, row_statistics
from mfjax.solvers.rowwise.bfgs import quadratic_bfgs

__all__ = ["solve_rows", "row_half_sweep"]


def solve_rows(row_solver, U0, q: RowQuadratic):
    """Solve the row problems ``q`` (leading batch axis) from ``U0`` with ``vmap``.

    Row ``i`` minimises ``f_i(u) - f_i(U0_i)``
    (:func:`~mfjax.solvers._rows.quadratic_increment`): the same problem up to
    a constant, evaluated without the float32 cancellation of the full value.
    Rows with ``q.count == 0`` are set to ``0`` (their regularised optimum,
    and the minimum-norm minimiser when ``l2 = 0``) and reported converged.

    Returns:
      ``(U, RowInfo)`` with a leading row axis.
    """

    def one(u0, qi):
        if hasattr(row_solver, "solve_quadratic"):
            return row_solver.solve_quadratic(qi, u0)
        # f_i(u) - f_i(u0): same minimiser and gradient, no float32 cancellation
        return row_solver.solve(functools.partial(quadratic_increment, q=qi, u_ref=u0), u0)

    U, info = jax.vmap(one)(U0, q)
    empty = q.count == 0
    U = jnp.where(empty[:, None], jnp.zeros_like(U), U)
    info = info._replace(
        converged=info.converged | empty,
        success=info.success | empty,
        grad_norm=jnp.where(empty, 0.0, info.grad_norm).astype(info.grad_norm.dtype),
    )
    return U, info


def _as_row_layout(layout_or_ratings) -> RowLayout:
    if isinstance(layout_or_ratings, RowLayout):
        return layout_or_ratings
    return build_row_layout(layout_or_ratings)


def row_half_sweep(U, V, layout, l2, row_solver=None):
    """One half-sweep: every row of ``U`` minimised with ``V`` fixed (all rows in parallel).

    ``U_i <- argmin_u f_i(u)`` approximately, starting from the current
    ``U_i``, by ``row_solver`` (default :func:`quadratic_bfgs`: per-row BFGS with
    exact steps, ``r`` iterations: the ALS half-sweep up to rounding).  For
    the other half call it with ``(V, U, col_layout)`` where ``col_layout`` is
    built from ``ratings.T``.

    Args:
      U: ``(m, r)`` rows to update (the starting points).
      V: ``(n, r)`` the fixed factor.
      layout: :class:`~mfjax.solvers._rows.RowLayout` from
        ``build_row_layout(ratings)`` (or a ``Ratings``, converted on the
        host: not inside ``jit``).
      l2: the regularisation ``lambda`` of the sum-scaled loss.
      row_solver: :func:`quadratic_bfgs` (default), :func:`fixed_count` or :func:`folded`.

    Returns:
      ``(U_new, RowInfo)`` with per-row diagnostics.
    """
    layout = _as_row_layout(layout)
    if row_solver is None:
        row_solver = quadratic_bfgs(num_steps=U.shape[1])
    q = row_statistics(layout, V, l2)
    return solve_rows(row_solver, U, q)
