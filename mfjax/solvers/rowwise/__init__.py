"""Row-wise vector descent (slides, Algorithm 13, eqs. 7-10).

With ``V`` fixed the masked loss splits into ``m`` independent problems in
``R^r``, one per row of ``U`` (slides eq. 7), and with ``U`` fixed into ``n``
problems, one per row of ``V`` (eq. 8)::

    f_i(u) = ||W_i o (X_i - u V^T)||^2 + l2 ||u||^2 = u^T A_i u - 2 b_i^T u + c_i,
    grad f_i(u) = 2 (A_i u - b_i)                                         (eq. 9)

(:mod:`mfjax.objective.rows` computes the sufficient statistics
``(A_i, b_i, c_i)`` of all rows from a sparse bucketed layout; afterwards each
function or gradient evaluation of a row costs O(r^2)).  Vector descent runs
a few iterations of *any* optimizer x step rule of the library on each row
problem -- per-row BFGS with its r x r inverse Hessian included -- instead of
ALS's closed-form solve ``u = A_i^{-1} b_i``.  With BFGS and exact steps a
row problem is solved in at most ``r`` iterations (finite termination on a
quadratic), i.e. the half-sweep then equals the ALS half-sweep.

Modules:

* :mod:`.info` -- :class:`RowInfo`, the per-row diagnostics;
* :mod:`.bfgs` -- :func:`quadratic_bfgs` (default row solver): per-row BFGS
  with exact steps on ``(A_i, b_i)`` directly, no loss values;
* :mod:`.fixed` -- :func:`fixed_count`: ``num_steps`` iterations of any optax
  optimizer (``optax.chain(direction, step_rule)``) per row; under ``vmap``
  every row waits for the slowest row's search at each iteration;
* :mod:`.folded` -- :func:`folded`: the line search (a kernel of
  :mod:`mfjax.linesearch.kernels`) folded into the row solver's single
  ``while_loop`` (the optimistix design), so under ``vmap`` each row
  advances on its own;
* :mod:`.sweep` -- :func:`solve_rows`, :func:`row_half_sweep`;
* :mod:`.schedules` -- Algorithm 13's order (:func:`algorithm13_schedule`,
  :func:`interleaved_blocks`);
* :mod:`.solver` -- :func:`vector_descent_solver` (one step = one sweep, on
  the :func:`mfjax.solvers.run` driver), :func:`vector_descent_problem` and
  the alias :func:`vector_descent`, in the ``"parallel"`` schedule (all
  rows, then all columns) or Algorithm 13's ``"interleaved"`` one.

The row solvers hold no search code: the step rules are the kernels of
:mod:`mfjax.linesearch` (the exact row step is
:func:`mfjax.linesearch.exact_quadratic_linesearch` /
:class:`mfjax.linesearch.ExactQuadratic`).

Failures are data: a row whose search fails keeps its last accepted value
and is flagged in :class:`RowInfo`; rows without observations are set to
their regularised optimum ``0`` (also for ``l2 = 0``, where ``0`` is the
minimum-norm minimiser) without NaN.

References:
  Beresnev, Klyushev, "Recommendation systems via approximate matrix
  factorization" (slides), 2024, eqs. 7-10 and Algorithm 13.
  Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006 (BFGS finite
  termination on quadratics with exact line searches, Ch. 6).
  Rader, Lyons, Kidger, "Optimistix: modular optimisation in JAX and
  Equinox", 2024 (searches folded into the solver loop).
"""

import warnings

from mfjax.linesearch.kernels import SearchKernel
from mfjax.linesearch.quadratic import exact_quadratic_linesearch
from mfjax.solvers.rowwise.bfgs import QuadraticBFGS, quadratic_bfgs
from mfjax.solvers.rowwise.fixed import FixedCount, _default_direction, default_row_optimizer, fixed_count  # noqa: F401
from mfjax.solvers.rowwise.folded import Folded, armijo_search, exact_search, folded, weak_wolfe_search
from mfjax.solvers.rowwise.info import RowInfo
from mfjax.solvers.rowwise.schedules import (
    BlockSchedule,
    algorithm13_schedule,
    default_block_sizes,
    interleaved_blocks,
)
from mfjax.solvers.rowwise.solver import (
    SweepInfo,
    VectorDescentInfo,
    VectorDescentProblem,
    VectorDescentState,
    vector_descent,
    vector_descent_problem,
    vector_descent_solver,
)
from mfjax.solvers.rowwise.sweep import row_half_sweep, solve_rows


def __getattr__(name):
    if name == "FoldedSearch":
        warnings.warn("mfjax.solvers.rowwise.FoldedSearch is deprecated: a folded search is any "
                      "mfjax.linesearch.SearchKernel (armijo_search() returns one)",
                      DeprecationWarning, stacklevel=2)
        return SearchKernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RowInfo",
    "FixedCount",
    "Folded",
    "QuadraticBFGS",
    "quadratic_bfgs",
    "fixed_count",
    "folded",
    "armijo_search",
    "weak_wolfe_search",
    "exact_search",
    "exact_quadratic_linesearch",
    "default_row_optimizer",
    "solve_rows",
    "row_half_sweep",
    "algorithm13_schedule",
    "BlockSchedule",
    "interleaved_blocks",
    "default_block_sizes",
    "VectorDescentInfo",
    "VectorDescentProblem",
    "VectorDescentState",
    "SweepInfo",
    "vector_descent",
    "vector_descent_problem",
    "vector_descent_solver",
]
