"""Classical solvers on one protocol and one driver (:mod:`.base`).

Every solver is ``Solver(init, step)``: ``state = init(params, problem, key)``,
``state, info = step(state, problem)``; :func:`run` scans ``step`` in one
compiled program and returns a :class:`SolverResult` (final parameters,
:class:`SolverTrace` with ``loss`` / ``eval_metric`` / ``success``, an honest
``status``).  The aliases build a solver and call the driver, with one
vocabulary (``num_steps``, keyword ``l2``, ``key``, ``eval_set``):

- :func:`als` alternating least squares with missing entries (:mod:`.als`; :func:`als_solver`)
- :func:`sgd` per-rating / minibatch SGD (:mod:`.sgd`; :func:`sgd_solver`)
- :func:`nmf` masked multiplicative updates for L2, L1, KL, IS (:mod:`.nmf`; :func:`nmf_solver`)
- :func:`power_iteration_svd`, :func:`svd_complete` SVD by power iteration with deflation
  (:mod:`.svd`; :func:`svd_solver`)
- :func:`vector_descent` row-wise vector descent, Algorithm 13 (:mod:`.rowwise`)
- :func:`side_als` ALS with side features ``U = P + X_u A`` (:mod:`.als_side`;
  :func:`side_als_solver`, :func:`side_fold_in` for new users / items)

>>> import mfjax as mf
>>> train = mf.data.synthetic(m=30, n=20, rank=2, density=0.4, seed=0)
>>> res = mf.solvers.als(train, 2, l2=1.0, num_steps=3, eval_set=train)
>>> res.trace.eval_metric.shape, res.status_name
((3,), 'max_steps')
"""

from mfjax.solvers.als import (
    METHODS,
    ALSInfo,
    ALSState,
    check_method,
    als,
    als_half_sweep,
    als_objective,
    als_solver,
    als_sweep,
    als_update_cols,
    als_update_rows,
    normal_equations,
    solve_ridge_rows,
)
from mfjax.solvers.als_gram import ALSProblem, als_problem, shard_als_problem
from mfjax.solvers.base import RMSE, Solver, SolverResult, SolverTrace, StepTimes, run, time_steps
from mfjax.solvers.dsgd import DSGDLayout, DSGDProblem, balanced_blocks, dsgd, dsgd_problem, dsgd_solver
from mfjax.solvers.als_perprocess import PartALSProblem, als_parts, part_als_problem, process_mesh
from mfjax.solvers.dsgd_parts import PartDSGDProblem, dsgd_parts, part_dsgd_problem
from mfjax.solvers.rowwise.parts import part_vector_descent_problem, vector_descent_parts
from mfjax.solvers.nmf import (
    NMF_LOSSES,
    NMFInfo,
    NMFProblem,
    NMFState,
    nmf,
    nmf_init,
    nmf_problem,
    nmf_solver,
    nndsvd,
)
from mfjax.solvers.rowwise import (
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
    vector_descent_problem,
    vector_descent_solver,
    weak_wolfe_search,
)
from mfjax.solvers.als_side import (
    SideALSInfo,
    SideALSState,
    SideRMSE,
    side_als,
    side_als_objective,
    side_als_solver,
    side_als_sweep,
    side_fold_in,
    side_update_cols,
    side_update_rows,
)
from mfjax.solvers.sgd import (
    SGDInfo,
    SGDProblem,
    SGDState,
    as_sgd_problem,
    random_order,
    sgd,
    sgd_problem,
    sgd_solver,
    sgd_step,
)
from mfjax.solvers.svd import (
    FILLS,
    SVDInfo,
    SVDProblem,
    SVDState,
    TruncatedSVD,
    power_iteration_svd,
    power_iteration_svd_operator,
    svd_complete,
    svd_fill,
    svd_solver,
)

__all__ = [
    "METHODS",
    "check_method",
    # protocol and driver
    "Solver",
    "SolverResult",
    "SolverTrace",
    "RMSE",
    "run",
    "time_steps",
    "StepTimes",
    # ALS
    "als",
    "als_solver",
    "als_objective",
    "als_problem",
    "ALSProblem",
    "shard_als_problem",
    "dsgd",
    "dsgd_problem",
    "dsgd_solver",
    "DSGDProblem",
    "DSGDLayout",
    "balanced_blocks",
    # per-process data (each process holds only its rows)
    "als_parts",
    "part_als_problem",
    "PartALSProblem",
    "dsgd_parts",
    "part_dsgd_problem",
    "PartDSGDProblem",
    "vector_descent_parts",
    "part_vector_descent_problem",
    "process_mesh",
    "ALSState",
    "ALSInfo",
    "als_half_sweep",
    "als_sweep",
    "als_update_rows",
    "als_update_cols",
    "normal_equations",
    "solve_ridge_rows",
    # SGD
    "sgd",
    "sgd_solver",
    "sgd_problem",
    "SGDProblem",
    "as_sgd_problem",
    "SGDState",
    "SGDInfo",
    "sgd_step",
    "random_order",
    # NMF
    "nmf",
    "nmf_solver",
    "nmf_problem",
    "NMFProblem",
    "NMFState",
    "NMFInfo",
    "nmf_init",
    "nndsvd",
    "NMF_LOSSES",
    # SVD
    "TruncatedSVD",
    "power_iteration_svd",
    "power_iteration_svd_operator",
    "svd_complete",
    "svd_solver",
    "svd_fill",
    "SVDProblem",
    "SVDState",
    "SVDInfo",
    "FILLS",
    # vector descent
    "vector_descent",
    "vector_descent_problem",
    "vector_descent_solver",
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

from mfjax.solvers.als_side import __all__ as _side_all  # noqa: E402

__all__ += _side_all
