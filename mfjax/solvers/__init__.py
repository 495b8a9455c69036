"""Classical solvers, all jit-compiled and returning :class:`SolverResult`
(final parameters + per-iteration :class:`SolverTrace`):

- :func:`als` alternating least squares with missing entries (:mod:`.als`)
- :func:`sgd` per-rating / minibatch SGD (:mod:`.sgd`)
- :func:`nmf` masked multiplicative updates for L2, L1, KL, IS (:mod:`.nmf`)
- :func:`power_iteration_svd`, :func:`svd_complete` SVD by power iteration with deflation (:mod:`.svd`)
- :func:`vector_descent` row-wise vector descent, Algorithm 13 (:mod:`.vector_descent`)
"""

from mfjax.solvers.als import als, als_half_sweep, als_sweep, als_update_cols, als_update_rows
from mfjax.solvers.base import SolverResult, SolverTrace
from mfjax.solvers.nmf import NMF_LOSSES, nmf, nmf_init, nndsvd
from mfjax.solvers.sgd import random_order, sgd, sgd_step
from mfjax.solvers.svd import TruncatedSVD, power_iteration_svd, power_iteration_svd_operator, svd_complete
from mfjax.solvers.vector_descent import (
    BlockSchedule,
    RowInfo,
    VectorDescentInfo,
    algorithm13_schedule,
    armijo_search,
    default_block_sizes,
    exact_quadratic_linesearch,
    exact_search,
    fixed_count,
    folded,
    interleaved_blocks,
    quadratic_bfgs,
    row_half_sweep,
    solve_rows,
    vector_descent,
    weak_wolfe_search,
)

__all__ = [
    "SolverResult",
    "SolverTrace",
    "als",
    "als_half_sweep",
    "als_sweep",
    "als_update_rows",
    "als_update_cols",
    "sgd",
    "sgd_step",
    "random_order",
    "nmf",
    "nmf_init",
    "nndsvd",
    "NMF_LOSSES",
    "TruncatedSVD",
    "power_iteration_svd",
    "power_iteration_svd_operator",
    "svd_complete",
    "vector_descent",
    "row_half_sweep",
    "default_block_sizes",
    "algorithm13_schedule",
    "fixed_count",
    "folded",
    "quadratic_bfgs",
    "armijo_search",
    "weak_wolfe_search",
    "exact_search",
    "exact_quadratic_linesearch",
    "solve_rows",
    "interleaved_blocks",
    "BlockSchedule",
    "RowInfo",
    "VectorDescentInfo",
]
