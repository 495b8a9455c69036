"""The masked MF objective: one pytree, and the formulas that use it (each written once).

* :mod:`~mfjax.objective.problem` -- :class:`MFObjective` (data, ``l2``,
  scaling, entry and row weights as array leaves) and :func:`mf_objective`,
  :func:`bucket_size` (pad folds to one compiled shape).
* :mod:`~mfjax.objective.formulas` -- value, closed-form gradient,
  :func:`loss` for ``mf.fit(loss, opt, params, loss_args=(objective,))``,
  the regulariser.
* :mod:`~mfjax.objective.directional` -- the quartic along a direction
  (:func:`mfjax.linesearch.exact_mf`).
* :mod:`~mfjax.objective.curvature` -- per-row normal equations, ridge
  solves, Gauss-Newton diagonal and blocks (ALS, the preconditioner).
* :mod:`~mfjax.objective.sharded` -- the entries split over a device
  mesh (:func:`shard_objective`); every formula above then runs per device
  under ``jax.shard_map`` and sums with ``psum`` (:func:`entry_map`).
* :mod:`~mfjax.objective.rows` -- bucketed per-row layouts and row
  quadratics (vector descent).
* :mod:`~mfjax.objective.side` -- side features, ``U = P + X_u A``,
  ``V = Q + X_v B`` (:class:`SideObjective`, :func:`side_loss`,
  :func:`effective_factors`, cold start).

Losses (:mod:`mfjax.losses`), the exact line search, the preconditioner,
ALS and vector descent all call these; nothing else re-derives them.

>>> import jax, mfjax as mf
>>> train = mf.data.synthetic(m=30, n=20, rank=2, density=0.3, seed=0)
>>> obj = mf_objective(train, l2=0.5)
>>> p = mf.init_factors(jax.random.key(0), train.shape, rank=2)
>>> f, g = value_and_grad(obj, p)
>>> bool(abs(f - mf.losses.masked_sq_loss(p, train, 0.5)) < 1e-3)
True
"""

from mfjax.objective.curvature import (
    NORMAL_EQUATIONS_CHUNK,
    cg_solve_rows,
    cholesky_solve_columns,
    gauss_newton_blocks,
    gauss_newton_diagonal,
    normal_equations,
    ridge_weights,
    solve_ridge_rows,
)
from mfjax.objective.directional import grad_from_products, quartic_coefficients, quartic_with_products
from mfjax.objective.formulas import (
    grad,
    hyperparameters_valid,
    l2_penalty,
    l2_penalty_grad,
    loss,
    penalty,
    penalty_grad,
    sum_sq_residuals,
    value,
    value_from_sse,
    value_and_grad,
)
from mfjax.objective.problem import (SCALES, MFObjective, as_objective, bucket_size, check_factor_shapes,
                                     check_factors, mf_objective, row_counts)
from mfjax.objective.gram import GramLayout, build_gram_layout, build_gram_tiers, solve_rows, solve_rows_cg
from mfjax.objective.sharded import (
    entry_map,
    process_row_block,
    shard_local_objective,
    shard_objective,
    unshard_objective,
)
from mfjax.objective.rows import (
    BlockLayout,
    RowLayout,
    RowQuadratic,
    block_statistics,
    build_block_layout,
    build_row_layout,
    direct_row_losses,
    quadratic_increment,
    quadratic_value,
    row_statistics,
)
from mfjax.objective.side import (
    SideBiasedFactors,
    SideFactors,
    SideObjective,
    SideParams,
    cold_start_factors,
    effective_factors,
    init_side_factors,
    side_grad,
    side_grad_from_products,
    side_loss,
    side_objective,
    side_penalty,
    side_quartic_with_products,
    side_value,
    side_value_and_grad,
)

__all__ = [
    "MFObjective",
    "mf_objective",
    "as_objective",
    "check_factors",
    "check_factor_shapes",
    "bucket_size",
    "row_counts",
    "SCALES",
    "value",
    "value_from_sse",
    "value_and_grad",
    "hyperparameters_valid",
    "grad",
    "loss",
    "penalty",
    "penalty_grad",
    "l2_penalty",
    "l2_penalty_grad",
    "sum_sq_residuals",
    "quartic_coefficients",
    "quartic_with_products",
    "grad_from_products",
    "normal_equations",
    "solve_ridge_rows",
    "cholesky_solve_columns",
    "cg_solve_rows",
    "gauss_newton_diagonal",
    "gauss_newton_blocks",
    "ridge_weights",
    "NORMAL_EQUATIONS_CHUNK",
    "GramLayout",
    "build_gram_layout",
    "build_gram_tiers",
    "solve_rows",
    "solve_rows_cg",
    "shard_objective",
    "shard_local_objective",
    "process_row_block",
    "unshard_objective",
    "entry_map",
    "RowQuadratic",
    "quadratic_value",
    "quadratic_increment",
    "RowLayout",
    "build_row_layout",
    "row_statistics",
    "direct_row_losses",
    "BlockLayout",
    "build_block_layout",
    "block_statistics",
]

from mfjax.objective.side import __all__ as _side_all  # noqa: E402

__all__ += _side_all
