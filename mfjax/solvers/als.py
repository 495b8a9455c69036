"""Alternating least squares (ALS) with missing entries, all rows at once.

Objective (the masked loss of :mod:`mfjax.losses.masked`, ``scale="sum"``)::

    f(U, V) = sum_{(i,j) in Omega} (x_ij - u_i . v_j)^2 + l2 (sum_i w_i ||u_i||^2 + sum_j w_j ||v_j||^2)

with ``w = 1`` (plain ridge; the lecture's ``1/2``-scaled objective has the
same minimiser for the same ``l2``) or, with ``weighted_l2=True``, ``w_i =
n_i`` and ``w_j = n_j``, the observed counts: the frequency-weighted
"ALS-WR" penalty of Zhou et al. (2008).

Half sweep.  For fixed ``V`` the objective separates over rows; setting the
gradient of row ``i``'s part to zero gives the regularised normal equations
(the lecture's "ALS with missing entries")::

    (V_{Omega_i}^T V_{Omega_i} + l2 w_i I) u_i = V_{Omega_i}^T x_{Omega_i}

where ``V_{Omega_i}`` stacks the rows ``v_j`` of the items rated by ``i``.
All ``m`` systems are built at once: the ``A_i`` and ``b_i`` are scatter-adds
(``jax.ops.segment_sum``) of the per-entry outer products ``v_j v_j^T`` and of
``x_ij v_j`` over the observed entries, processed in chunks inside a
``lax.scan`` (O(nnz r^2) work, O(m r^2 + chunk r^2) memory, no m x n array),
then solved by a batched Cholesky factorisation.  The column half is the
same function applied to the transposed ratings with the roles of ``U`` and
``V`` swapped (both factors are stored row-major).

Biases (``biases=True``).  The model is ``x_ij ~ mean + b_i + c_j + u_i . v_j``
(:class:`~mfjax.losses.BiasedFactors`; ``mean`` is the training mean, fixed).
The row half solves for ``[u_i, b_i]`` with features ``[v_j, 1]``, target
``x_ij - mean - c_j`` and ridge ``diag(l2, ..., l2, l2_bias) w_i``; the column
half is symmetric.

Empty rows / columns and singular systems.  A row with no training entry
has ``A_i = l2 w_i I`` and ``b_i = 0``; its optimum is ``u_i = 0`` (biases
0: the prediction falls back to the mean).  When the ridge is zero there
(``l2 = 0``, or ``weighted_l2`` where ``w_i = n_i = 0``) a unit ridge is
added for those rows only, which leaves the solution ``0`` unchanged and
keeps the Cholesky factorisation finite.  With ``l2 = 0`` a non-empty row
can still be singular (fewer ratings than the rank): rows with a zero ridge
(and any row whose Cholesky solve is not finite) are solved by a symmetric
eigendecomposition pseudo-inverse, i.e. the minimum-norm least-squares
solution (what ``numpy.linalg.lstsq`` returns); this costs one batched
``eigh`` per half sweep.  No NaN leaves the solver.

Conjugate-gradient ALS (``method="cg"``).  Instead of the exact solve,
each row takes ``cg_steps`` CG steps on the same system warm-started at the
current ``u_i`` (Takacs, Pilaszy & Tikk 2011; Pilaszy, Zibriczky & Tikk
2010); each matrix-vector product ``(V_O^T V_O + l2 w_i I) p = V_O^T (V_O p)
+ l2 w_i p`` is taken over the entries, ``4 nnz r`` flops a step per side,
and the Gram matrices are never formed.  Each CG step lowers the row's
quadratic, so the objective still never increases over sweeps; ``cg_steps
= r`` (``r + 1`` biased) is the exact solve in exact arithmetic.

Each exact half sweep minimises the objective in one block, so the
training loss never increases (up to round-off).  The whole run
(the training loss and the held-out RMSE after each sweep)
is one jit-compiled ``lax.scan`` of :func:`als_solver`'s step driven by
:func:`mfjax.solvers.run` (``num_steps`` sweeps).  The normal equations
and the ridge solves are the objective's (:mod:`mfjax.objective.curvature`);
the building blocks below accept an :class:`~mfjax.objective.MFObjective`
in place of the ratings (entry weights and row weights then apply).

References:
  Jaggi, M. "Matrix Factorizations", EPFL CS-433 lecture notes, 2024
  (ALS, ALS with missing entries).

  Zhou, Y., Wilkinson, D., Schreiber, R., Pan, R. "Large-scale parallel
  collaborative filtering for the Netflix prize", AAIM 2008 (ALS-WR).

  Koren, Y., Bell, R., Volinsky, C. "Matrix factorization techniques for
  recommender systems", IEEE Computer 42(8), 2009 (biases).

  Takacs, G., Pilaszy, I., Tikk, D. "Applications of the conjugate gradient
  method for implicit feedback collaborative filtering", RecSys 2011;
  Pilaszy, I., Zibriczky, D., Tikk, D. "Fast ALS-based tensor factorization
  for context-aware recommendation from implicit feedback", RecSys 2010.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from mfjax import objective as _objective
from mfjax.core import check_l2, check_not_all_zero
from mfjax.core.factors import BiasedFactors, Factors, init_biased_factors, init_factors, swap_factors
from mfjax.data.ratings import Ratings
from mfjax.objective import MFObjective, mf_objective
from mfjax.objective.curvature import NORMAL_EQUATIONS_CHUNK, cg_solve_rows
from mfjax.objective.gram import CG_CHUNK_ENTRIES
from mfjax.objective.curvature import normal_equations as _normal_equations
from mfjax.objective.curvature import solve_ridge_rows
from mfjax.solvers import _args
from mfjax.solvers._args import UNSET
from mfjax.solvers.als_gram import ALSProblem, als_problem, gram_step, shard_als_problem
from mfjax.solvers.base import RMSE, Solver, SolverResult, check_ratings, run

__all__ = [
    "als",
    "als_half_sweep",
    "als_update_rows",
    "als_update_cols",
    "als_sweep",
    "normal_equations",
    "solve_ridge_rows",
    "METHODS",
    "check_method",
]

Params = Union[Factors, BiasedFactors]

#: Entries per chunk when scatter-adding the outer products (memory: chunk x r^2).
CHUNK_SIZE = NORMAL_EQUATIONS_CHUNK

#: How a half sweep solves the rows' normal equations.
METHODS = ("cholesky", "cg")
#: Default number of conjugate-gradient steps per row and half sweep (``method="cg"``).
CG_STEPS = 3


def check_method(method, cg_steps=CG_STEPS):
    """Validate ``method`` / ``cg_steps``; return the CG steps (``None`` for ``"cholesky"``).

    Raises:
      ValueError: ``method`` not in :data:`METHODS`, or ``cg_steps`` not an integer >= 1.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(cg_steps, bool) or not isinstance(cg_steps, (int, np.integer)) or cg_steps < 1:
        raise ValueError(f"cg_steps must be an integer >= 1, got {cg_steps!r}")
    return int(cg_steps) if method == "cg" else None


# ------------------------------------------------------------ building blocks
def normal_equations(F, ratings: Ratings, targets=None, *, chunk_size: int = CHUNK_SIZE):
    """The per-row Gram matrices, right-hand sides and counts of a half sweep.

    ``A_i = sum_{j in Omega_i} f_j f_j^T``, ``b_i = sum_{j in Omega_i} y_ij f_j``,
    ``n_i = |Omega_i|`` for every row ``i`` of ``ratings`` at once
    (:func:`mfjax.objective.normal_equations`).

    Args:
      F: (n, k) feature rows, indexed by ``ratings.cols``.
      ratings: the entries (or an :class:`~mfjax.objective.MFObjective`); rows index the systems.
      targets: (nnz,) ``y`` (default ``ratings.values``).
      chunk_size: entries per chunk of the scatter-add scan.

    Returns:
      ``(A (m, k, k), b (m, k), counts (m,))``.
    """
    obj = ratings if isinstance(ratings, MFObjective) else mf_objective(ratings, dtype=F.dtype)
    return _normal_equations(obj, F, targets, chunk_size=chunk_size)


def _ridge_scale(ratings, counts, weighted_l2: bool):
    """Per-row ridge multiplier: the objective's row weights, the counts (ALS-WR), or 1."""
    if isinstance(ratings, MFObjective) and ratings.row_weights is not None:
        return ratings.row_weights.astype(counts.dtype)[:, None]
    return counts[:, None] if weighted_l2 else 1.0


def als_half_sweep(V, ratings: Ratings, l2=0.0, *, weighted_l2: bool = False,
                   chunk_size: int = CHUNK_SIZE) -> jax.Array:
    """``U = argmin_U f(U, V)`` for fixed ``V``: every row's ridge regression at once.

    ``u_i = (V_{Omega_i}^T V_{Omega_i} + l2 w_i I)^{-1} V_{Omega_i}^T x_{Omega_i}``
    with ``w_i = 1`` or ``n_i`` (``weighted_l2``).  For the columns call it
    with ``(U, ratings.T)``.

    Args:
      V: (n, r) fixed factor.
      ratings: (m, n) entries.
      l2: ridge weight (>= 0).

    Returns:
      U: (m, r); rows without entries are 0.

    Example::

        U = als_half_sweep(V, train, l2=0.1)
        V = als_half_sweep(U, train.T, l2=0.1)
    """
    _check_l2(l2)
    A, b, n = normal_equations(V, ratings, chunk_size=chunk_size)
    ridge = l2 * _ridge_scale(ratings, n, weighted_l2)
    return solve_ridge_rows(A, b, ridge, n)


_swap = swap_factors


def _solve_rows(F, ratings, y, ridge_diag, weighted_l2, x0, cg_steps, chunk_size):
    """The rows' systems with features ``F`` and targets ``y``: Cholesky, or CG from ``x0``."""
    obj = ratings if isinstance(ratings, MFObjective) else mf_objective(ratings, dtype=F.dtype)
    if cg_steps is None:
        A, b, n = normal_equations(F, obj, y, chunk_size=chunk_size)
        return solve_ridge_rows(A, b, ridge_diag * _ridge_scale(obj, n, weighted_l2), n)
    n = _objective.row_counts(obj)[0].astype(F.dtype) if weighted_l2 else None
    ridge = ridge_diag * _ridge_scale(obj, n, weighted_l2)
    return cg_solve_rows(obj, F, y, ridge, x0, cg_steps, chunk_size=chunk_size)


def als_update_rows(params: Params, ratings: Ratings, l2=0.0, *, l2_bias=None,
                    weighted_l2: bool = False, chunk_size: int = CHUNK_SIZE,
                    method: str = "cholesky", cg_steps: int = CG_STEPS) -> Params:
    """Minimisation over the row block (``U``, and ``row_bias`` if biased).

    For :class:`BiasedFactors` the systems are in ``[u_i, b_i]`` with features
    ``[v_j, 1]``, targets ``x_ij - mean - c_j`` and ridge
    ``diag(l2, ..., l2, l2_bias) w_i``.  ``method="cholesky"`` solves them
    exactly; ``method="cg"`` takes ``cg_steps`` conjugate-gradient steps per
    row from the current ``[u_i, b_i]`` (module docstring), which lowers the
    objective without reaching the block minimum unless ``cg_steps`` is the
    system size.
    """
    _check_l2(l2)
    if l2_bias is not None:
        _check_l2(l2_bias, "l2_bias")
    steps = check_method(method, cg_steps)
    V = params.V
    if not isinstance(params, BiasedFactors):
        if steps is None:
            return Factors(als_half_sweep(V, ratings, l2, weighted_l2=weighted_l2,
                                          chunk_size=chunk_size), V)
        y = jnp.asarray(ratings.values).astype(V.dtype)
        return Factors(_solve_rows(V, ratings, y, jnp.asarray(l2, V.dtype), weighted_l2, params.U, steps,
                                   chunk_size), V)
    lb = l2 if l2_bias is None else l2_bias
    F = jnp.concatenate([V, jnp.ones((V.shape[0], 1), V.dtype)], axis=1)
    y = jnp.asarray(ratings.values).astype(V.dtype) - params.mean - params.col_bias[ratings.cols]
    diag = jnp.concatenate([jnp.full((V.shape[1],), l2, V.dtype), jnp.full((1,), lb, V.dtype)])
    x0 = jnp.concatenate([params.U, params.row_bias[:, None].astype(V.dtype)], axis=1)
    sol = _solve_rows(F, ratings, y, diag[None, :], weighted_l2, x0, steps, chunk_size)
    return BiasedFactors(sol[:, :-1], V, sol[:, -1], params.col_bias, params.mean)


def als_update_cols(params: Params, ratings: Ratings, l2=0.0, *, l2_bias=None,
                    weighted_l2: bool = False, chunk_size: int = CHUNK_SIZE,
                    method: str = "cholesky", cg_steps: int = CG_STEPS) -> Params:
    """Minimisation over the column block: :func:`als_update_rows` on ``ratings.T``."""
    return _swap(als_update_rows(_swap(params), ratings.T, l2, l2_bias=l2_bias,
                                 weighted_l2=weighted_l2, chunk_size=chunk_size,
                                 method=method, cg_steps=cg_steps))


def als_sweep(params: Params, ratings: Ratings, l2=0.0, *, l2_bias=None,
              weighted_l2: bool = False, chunk_size: int = CHUNK_SIZE,
              method: str = "cholesky", cg_steps: int = CG_STEPS) -> Params:
    """One ALS sweep: rows (``U``) then columns (``V``) (exact, or CG: :func:`als_update_rows`)."""
    kw = dict(l2_bias=l2_bias, weighted_l2=weighted_l2, chunk_size=chunk_size, method=method,
              cg_steps=cg_steps)
    params = als_update_rows(params, ratings, l2, **kw)
    return als_update_cols(params, ratings, l2, **kw)


# ----------------------------------------------------------------- the solver

__all__ += ["als_solver", "ALSState", "ALSInfo", "als_objective"]

#: The default ``l2`` of ``als`` until this release (omitting ``l2`` now warns).
_OLD_DEFAULT_L2 = 0.1


def _check_l2(l2, name: str = "l2") -> None:
    """:func:`mfjax.core.check_l2` with the argument order of the building blocks above."""
    check_l2(name, l2)


class ALSState(NamedTuple):
    """State of :func:`als_solver`: just the factors (the sweep is exact, it keeps no memory).

    Attributes:
      params: :class:`Factors` or :class:`BiasedFactors`.
    """

    params: Params


class ALSInfo(NamedTuple):
    """Diagnostics of one ALS sweep.

    Attributes:
      loss: the objective ``f`` after the sweep (:func:`mfjax.objective.value`).
    """

    loss: jax.Array


def als_objective(train: Ratings, *, l2=0.0, l2_bias=None, weighted_l2: bool = False,
                  dtype=None, pad_to: int | None = None) -> MFObjective:
    """The problem ALS solves, as an :class:`~mfjax.objective.MFObjective` ("sum" scale).

    ``f = sum_Omega (x_ij - xhat_ij)^2 + l2 (sum_i w_i ||u_i||^2 + sum_j w_j ||v_j||^2)``
    with ``w = 1``, or ``w_i = n_i``, ``w_j = n_j`` (the counts) when
    ``weighted_l2`` (ALS-WR).  ``pad_to`` pads the entries with weight-0
    ones (:func:`mfjax.objective.bucket_size`) so that folds share one program.
    """
    obj = mf_objective(train, l2, l2_bias=l2_bias, dtype=dtype, pad_to=pad_to)
    if weighted_l2:
        obj = obj.replace(**dict(zip(("row_weights", "col_weights"), _objective.row_counts(obj))))
    return obj


def _als_init(params, problem=None, key=None) -> ALSState:
    del problem, key
    return ALSState(params)


@functools.lru_cache(maxsize=None)
def _sweep_step(chunk_size: int, method: str = "cholesky", cg_steps: int = CG_STEPS):
    """The cached ``step`` of :func:`als_solver` (equal settings: the same function, no recompile)."""
    steps = check_method(method, cg_steps)

    def step(state: ALSState, problem):
        if isinstance(problem, ALSProblem):  # the Gram-layout fast path (same systems)
            p, loss = gram_step(state.params, problem, cg_steps=steps)
            return ALSState(p), ALSInfo(loss)
        s = problem.data_weight
        p = als_sweep(state.params, problem, problem.l2 / s, l2_bias=problem.l2_bias / s,
                      weighted_l2=problem.row_weights is not None, chunk_size=chunk_size,
                      method=method, cg_steps=cg_steps)
        return ALSState(p), ALSInfo(_objective.value(problem, p))

    return step


def als_solver(*, chunk_size: int = CHUNK_SIZE, method: str = "cholesky", cg_steps: int = CG_STEPS) -> Solver:
    r"""ALS as a :class:`~mfjax.solvers.base.Solver`: one step is one sweep (rows, then columns).

    The problem is an :class:`~mfjax.objective.MFObjective` (build it with
    :func:`als_objective`), or that objective with its Gram layouts
    (:func:`~mfjax.solvers.als_gram.als_problem`: the same sweep, faster); a step minimises ``f`` exactly over ``U`` (and
    the row biases), then over ``V``: the normal equations
    ``(A_i + (l2 / s) w_i I) u_i = b_i`` of :func:`als_update_rows` with the
    objective's data weight ``s``, ``l2``, ``l2_bias`` and entry weights
    (padding has weight 0).  The ridge is frequency-weighted (ALS-WR, ``w_i
    = n_i``) when the objective carries row weights; those are taken to be
    the counts.  Every number of the problem is traced, so a second ``l2``
    or fold of the same shape reuses the compiled run.

    With ``method="cg"`` each half sweep takes ``cg_steps`` conjugate-gradient
    steps per row from the current factors instead of the exact solve (module
    docstring): O(nnz r) a step, the training objective still never increases.

    Args:
      chunk_size: entries per chunk when building the normal equations (static).
      method: ``"cholesky"`` (exact) or ``"cg"`` (static).
      cg_steps: CG steps per row and half sweep with ``method="cg"`` (static, >= 1).

    Returns:
      ``Solver(init, step)``: ``init(params, problem, key=None) -> ALSState``
      (``key`` unused), ``step(state, problem) -> (ALSState, ALSInfo)``.

    Raises:
      ValueError: an unknown ``method`` or ``cg_steps < 1``.
    """
    check_method(method, cg_steps)
    return Solver(_als_init, _sweep_step(int(chunk_size), method, int(cg_steps)))


def _initial_params(train, rank, biases, init, key, dtype):
    m, n = train.shape
    if init is None:
        key = jax.random.key(0) if key is None else key
        if biases:
            return init_biased_factors(key, (m, n), rank, mean=train.mean(), dtype=dtype)
        return init_factors(key, (m, n), rank, dtype=dtype)
    if biases != isinstance(init, BiasedFactors):
        raise ValueError(f"init is {type(init).__name__} but biases={biases}")
    _objective.check_factor_shapes((m, n), init, rank)
    check_not_all_zero(init, "init")
    return init


def als(
    train: Ratings,
    rank: int,
    *legacy,
    l2=UNSET,
    num_steps: int = UNSET,
    weighted_l2: bool = False,
    biases: bool = False,
    l2_bias=None,
    init: Params | None = None,
    key=None,
    eval_set: Ratings | None = None,
    eval_every: int = 1,
    clip: tuple[float, float] | None = None,
    chunk_size: int = CHUNK_SIZE,
    gram: bool = True,
    mesh=None,
    num_sweeps: int = UNSET,
    eval: Ratings | None = UNSET,  # noqa: A002  (deprecated alias of eval_set)
    callback=None,
    callback_every: int = 1,
    method: str = "cholesky",
    cg_steps: int = CG_STEPS,
) -> SolverResult:
    """Alternating least squares on the observed entries (see the module docstring).

    A thin alias: :func:`als_objective` + :func:`~mfjax.solvers.als_gram.als_problem`
    + :func:`als_solver` + :func:`mfjax.solvers.run`.

    Args:
      train: training ratings (m x n).
      rank: number of latent factors ``r``, ``1 <= r <= min(m, n)``.
      l2: ridge weight ``lambda >= 0`` in the "sum" scaling of
        :func:`mfjax.losses.masked_sq_loss` (keyword).  Omitting it keeps the
        old default 0.1 with a ``DeprecationWarning``; it will become 0.0, the
        default of every solver.
      num_steps: number of full sweeps (rows then columns); default 20.
      weighted_l2: frequency-weighted ridge ``lambda n_i`` (ALS-WR).
      biases: fit the biased model ``mean + b_i + c_j + u_i . v_j``
        (``mean`` = training mean, fixed); returns :class:`BiasedFactors`.
      l2_bias: ridge on the biases (default ``l2``).
      init: starting parameters (only ``V`` and, if biased, ``col_bias``
        matter: the first half sweep solves for ``U``); default random
        ``N(0, 1/r)`` factors from ``key``.
      key: PRNG key for the default init (default ``jax.random.key(0)``).
      eval_set: held-out ratings; their RMSE after each sweep is traced.
      eval_every: trace the held-out RMSE every this many sweeps.
      callback: optional progress hook ``callback(Progress)`` every ``callback_every``
        sweeps and at the stop (:mod:`mfjax.core.progress`, :func:`mfjax.solvers.run`); off by default.
      callback_every: sweeps between progress reports.
      clip: clip predictions to ``(lo, hi)`` for the traced RMSE.
      chunk_size: entries per chunk when building the normal equations
        (the scatter-add path, ``gram=False``).
      gram: build the normal equations from dense batched Gram products over
        segments of each row's entries (:func:`~mfjax.solvers.als_gram.als_problem`;
        the same systems, ~4-5x faster at rank 64) instead of scatter-adding
        per-entry outer products.
      mesh: a :class:`jax.sharding.Mesh`: each device solves its own rows
        (:func:`~mfjax.solvers.als_gram.shard_als_problem`; implies ``gram``).
      method: ``"cholesky"`` (default): each half sweep solves the rows'
        normal equations exactly; ``"cg"``: ``cg_steps`` conjugate-gradient
        steps per row, warm-started at the current factors, never forming
        the Gram matrices (module docstring; Takacs et al. 2011).
      cg_steps: CG steps per row and half sweep (``method="cg"``; >= 1).
      num_sweeps, eval: deprecated aliases of ``num_steps``, ``eval_set``
        (``l2`` and ``num_sweeps`` by position too).

    Returns:
      :class:`~mfjax.solvers.base.SolverResult` with ``params`` (``Factors``
      or ``BiasedFactors``), ``status`` ``MAX_STEPS`` and a trace of length
      ``num_steps``: the training objective (:func:`mfjax.losses.masked_sq_loss`,
      "sum" scale, with the weighted penalty when ``weighted_l2``) and the
      held-out RMSE (``eval_metric``; NaN without ``eval_set``).

    Raises:
      ValueError: rank out of range, ``l2 < 0`` / non-finite, ``num_steps < 1``,
        non-finite ratings, ``eval_set`` of another shape, an unknown
        ``method``, ``cg_steps < 1``.
      FloatingPointError: a sweep produced non-finite factors.

    Example::

        res = mfjax.solvers.als(train, rank=10, l2=0.05, weighted_l2=True,
                                biases=True, num_steps=20, eval_set=test)
        res.trace.eval_metric[-1]
    """
    pos = _args.legacy_positional("als", legacy, ("l2", "num_steps"),
                                  {"l2": l2, "num_steps": num_steps})
    l2, num_steps = pos.get("l2", l2), pos.get("num_steps", num_steps)
    num_steps = _args.renamed("als", "num_steps", num_steps, "num_sweeps", num_sweeps, 20)
    eval_set = _args.eval_alias("als", eval_set, eval)
    if l2 is UNSET:
        _args.default_changed("als", "l2", _OLD_DEFAULT_L2, 0.0)
        l2 = _OLD_DEFAULT_L2
    check_ratings(train, "training")
    rank = _args.check_rank(rank, train.shape)
    _check_l2(l2)
    _check_l2(l2_bias, "l2_bias")
    check_method(method, cg_steps)
    num_steps = _args.check_num_steps(num_steps, "num_sweeps")
    _args.check_eval_set(eval_set, train)
    dtype = _args.float_dtype(train)
    params = _initial_params(train, rank, biases, init, key, dtype)
    problem = als_objective(train, l2=l2, l2_bias=l2_bias, weighted_l2=weighted_l2, dtype=dtype)
    layout = {} if method == "cholesky" else {"chunk_entries": CG_CHUNK_ENTRIES}  # CG: cache-sized chunks
    if mesh is not None:
        problem = shard_als_problem(problem, mesh, **layout)
    elif gram:
        problem = als_problem(problem, **layout)
    solver = als_solver(chunk_size=int(chunk_size), method=method, cg_steps=cg_steps)
    res = run(solver, problem, solver.init(params, problem),
              num_steps, eval_set=None if eval_set is None else eval_set.device_put(),
              eval_every=eval_every, metric=RMSE(None if clip is None else
                                                 (float(clip[0]), float(clip[1]))),
              callback=callback, callback_every=callback_every,
              program_key=None if mesh is not None else ["als", int(chunk_size), method, int(cg_steps), bool(gram)])
    return _args.raise_if_nonfinite(res, "ALS", "sweep")
