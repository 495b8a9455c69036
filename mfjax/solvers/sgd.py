"""Stochastic gradient descent for matrix factorization (the lecture's SGD).

Model.  ``x_ij ~ u_i . v_j`` (``Factors(U, V)``), or with ``biases=True`` the
biased model of Funk / Koren ("SVD" in scikit-surprise)::

    x_ij ~ mu + b_i + c_j + u_i . v_j

with ``mu`` the training mean (fixed), ``b`` row and ``c`` column biases.

Update.  For one observed rating ``(i, j)`` with error ``e = x_ij - xhat_ij``
and step size ``a`` (the lecture's stochastic gradient of
``f_ij = 1/2 (x_ij - u_i . v_j)^2`` plus the regulariser's share)::

    u_i <- u_i + a (e v_j - l_i u_i)
    v_j <- v_j + a (e u_i - l_j v_j)          (both with the old u_i, v_j)
    b_i <- b_i + a (e - l_i b_i),  c_j <- c_j + a (e - l_j c_j)   (biases=True)

The regulariser's share decides which objective SGD minimises:

* ``weighted_l2=False`` (default, the SVD/NMF lecture's rule): ``l_i = l2 / n_i``,
  ``l_j = l2 / n_j`` (``n_i`` = observed ratings of row ``i``), so one epoch's
  expected update is a gradient step on
  ``1/2 [sum_Omega e_ij^2 + l2 (||U||^2 + ||V||^2 (+ ||b||^2 + ||c||^2))]``,
  i.e. half of :func:`mfjax.losses.masked_sq_loss` with the same ``l2``.
* ``weighted_l2=True`` (Funk / scikit-surprise): ``l_i = l_j = l2`` at every
  rating, which minimises the frequency-weighted objective
  ``1/2 [sum_Omega e_ij^2 + l2 sum_i n_i ||u_i||^2 + l2 sum_j n_j ||v_j||^2 (+ biases)]``.

Minibatches.  With ``batch_size=B`` the entries of an epoch (a fresh random
order per epoch, from ``key``) are cut into batches of ``B``; all
entries of a batch read the same parameters and their updates are added
(scatter-add), i.e. ``B`` per-rating steps taken in parallel (the step size
keeps its per-rating meaning).  ``B=1`` is the faithful sequential
per-rating SGD; it is still one jit-compiled ``lax.scan`` over the entries
(a few microseconds per rating on CPU).  The epoch's order is a keyed
bijection of ``a b >= nnz`` slots (``a = ceil(sqrt(nnz))``, a mixed-radix
Feistel network, see :func:`_feistel`; O(nnz), no sort); the ``< a`` slots
beyond ``nnz``, and the tail that fills the last batch, are masked-out
entries, so an epoch has ``ceil(a b / B)`` batches, some with a few
masked-out entries.  A popular item can occur many times in one batch
and receives the sum of those updates, so large batches need a smaller
``lr`` than ``B`` suggests (on ML-1M, ``B=4096, lr=0.05`` is fine and
``B=16384, lr=0.1`` diverges -- reported as an error, not as NaN factors).

Step sizes.  ``lr`` is the constant step; ``decay=g`` multiplies it by ``g``
after every epoch (Koren's 0.9 rule); a callable ``schedule(step) -> lr``
(any optax schedule, ``step`` counting minibatches from 0) replaces both.
``adaptive=True`` divides each row's step by ``sqrt(G_z)``, its accumulated
mean squared gradient (LIBMF's per-row AdaGrad, Chin et al. 2015).

One epoch is one step of :func:`sgd_solver` (the protocol of
:mod:`mfjax.solvers.base`); the whole run (all epochs, the per-epoch training
loss and held-out RMSE) is one jit-compiled ``lax.scan`` of the driver
:func:`mfjax.solvers.run`, with no host round trip; each epoch gathers its
data into batch order once, then scans over the batches.  The problem is an
:class:`mfjax.objective.MFObjective` (ratings, ``l2``, row weights; padding
entries have weight 0) and the step sizes live in the state, so a second
fold of the same padded size, a second ``l2`` or a second ``lr`` reuse the
compiled run.  The trace
loss is the objective above without the factor ``1/2``:

* ``loss_trace="exact"`` (default): :func:`mfjax.losses.masked_sq_loss`
  (``"sum"`` scale, ``l2_weights`` = the counts when ``weighted_l2``) after
  each epoch -- one extra pass over all entries (on ML-1M, r=32, B=4096,
  one core: 4 epochs cost 0.59 s CPU with it, 0.37 s with the running trace);
* ``loss_trace="running"``: ``sum_k e_k^2 + l2 sum_rows w ||z||^2`` with
  ``e_k`` the residual of entry ``k`` computed in its minibatch *before*
  that minibatch's update (a by-product of the step) and the penalty of the
  parameters at the end of the epoch.  A running estimate: it mixes
  parameters from the whole epoch and is larger than the exact value while
  the loss is still falling fast; it converges to it.

Internally the rows of ``U`` and ``V`` (and the biases, as an extra column)
live in one stacked buffer so that XLA updates it in place.

References:
  Funk, S. "Netflix Update: Try This at Home", 2006.

  Koren, Y., Bell, R., Volinsky, C. "Matrix factorization techniques for
  recommender systems", IEEE Computer 42(8), 2009.

  Jaggi, M. "Matrix Factorizations", EPFL CS-433 lecture notes, 2024.

  Chin, W.-S., Zhuang, Y., Juan, Y.-C., Lin, C.-J. "A learning-rate schedule
  for stochastic gradient methods to matrix factorization", PAKDD 2015
  (``adaptive=True``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax import objective as _objective
from mfjax.core import check_l2, check_not_all_zero
from mfjax.data.ratings import Ratings
from mfjax.losses.masked import BiasedFactors, Factors, init_biased_factors, init_factors
from mfjax.solvers import _args
from mfjax.solvers._args import UNSET
from mfjax.solvers.base import RMSE, Solver, SolverResult, check_ratings, run
from mfjax.solvers.sgd_kernel import (
    SGDProblem,
    _regularisers,
    _stack,
    _unstack,
    _update,
    as_sgd_problem,
    sgd_problem,
    sgd_step,
)
from mfjax.solvers.shuffle import _feistel, _order_domain, random_order

__all__ = ["sgd", "sgd_solver", "sgd_problem", "SGDProblem", "as_sgd_problem", "SGDState", "SGDInfo",
           "sgd_step", "random_order"]

Params = Factors | BiasedFactors

#: The default ``l2`` of ``sgd`` until this release (omitting ``l2`` now warns).
_OLD_DEFAULT_L2 = 0.02

#: The trace losses of :func:`sgd_solver`.
LOSS_TRACES = ("exact", "running")


# ----------------------------------------------------------------- the solver
class SGDState(NamedTuple):
    """State of :func:`sgd_solver` between epochs.

    Attributes:
      params: :class:`Factors` or :class:`BiasedFactors` (the mean stays fixed).
      key: PRNG key of the run; epoch ``e`` shuffles with ``fold_in(key, e)``.
      step: int32 minibatches done (the ``schedule``'s argument).
      epoch: int32 epochs done.
      lr: the constant step size ``a`` (traced: a second ``lr`` does not recompile).
      decay: the per-epoch factor ``g`` (step ``a g^epoch``).
      accum: ``adaptive=True`` only: ``(m + n,)`` accumulated mean squared
        gradient ``G`` of each row of ``U`` then ``V`` (starts at 1); else ``None``.
    """

    params: Params
    key: jax.Array
    step: jax.Array
    epoch: jax.Array
    lr: jax.Array
    decay: jax.Array
    accum: jax.Array | None = None


class SGDInfo(NamedTuple):
    """Diagnostics of one SGD epoch.

    Attributes:
      loss: training objective after the epoch (``"exact"``) or the running
        estimate (``"running"``; module docstring).
      lr: the step size at the epoch's first minibatch.
    """

    loss: jax.Array
    lr: jax.Array


@functools.lru_cache(maxsize=None)
def _epoch_step(batch_size: int, schedule, loss_trace: str, adaptive: bool = False):
    """The cached ``step`` of :func:`sgd_solver` (one epoch; static settings only)."""

    def step(state: SGDState, problem):
        problem = as_sgd_problem(problem)
        obj = problem.objective
        params = state.params
        m, _ = obj.shape
        Z0 = _stack(params)
        dtype = Z0.dtype
        biased = isinstance(params, BiasedFactors)
        mean = params.mean if biased else jnp.asarray(0.0, dtype)
        reg_f, reg_b = _regularisers(problem, dtype)

        # the epoch's order: a keyed bijection of the slots [0, a b) (a b >= N,
        # see _feistel); slots >= N, the tail that fills the last batch and
        # the problem's padding (weight 0) are masked-out entries (no-ops:
        # they read entry N - 1 with weight 0)
        nnz = obj.num_entries
        a, b = _order_domain(nnz)
        slots = a * b
        nb = -(-slots // batch_size)
        total = nb * batch_size
        keys = jax.random.bits(jax.random.fold_in(state.key, state.epoch), (4,), jnp.uint32)
        perm = _feistel(jnp.arange(slots, dtype=jnp.uint32), keys, a, b).astype(jnp.int32)
        perm = jnp.concatenate([perm, jnp.arange(slots, total, dtype=jnp.int32)])
        # the data of the whole epoch, gathered once into batch order
        at = jnp.minimum(perm, nnz - 1)
        idx = jnp.concatenate([obj.rows[at].reshape(nb, batch_size),
                               (obj.cols[at] + m).reshape(nb, batch_size)], axis=1)
        xs = obj.values[at].astype(dtype).reshape(nb, batch_size)
        msk = jnp.where(perm < nnz, obj.weights[at].astype(dtype), 0.0).reshape(nb, batch_size)
        lr_epoch = state.lr * state.decay ** state.epoch.astype(dtype)
        is_bias = jnp.arange(Z0.shape[1]) == Z0.shape[1] - 1

        def lr_at(step):
            return lr_epoch if schedule is None else jnp.asarray(schedule(step), dtype)

        def batch(c, inp):
            Z, G, step, sse = c
            ix, x, mk = inp
            mk2 = jnp.concatenate([mk, mk])
            reg = reg_f[ix] * mk2
            if biased:  # the bias column carries l2_bias
                reg = jnp.where(is_bias, (reg_b[ix] * mk2)[:, None], reg[:, None])
            if adaptive:
                Z, e, G = _update(Z, ix, x, mk, lr_at(step), reg, mean, biased, accum=G)
            else:
                Z, e = _update(Z, ix, x, mk, lr_at(step), reg, mean, biased)
            return (Z, G, step + 1, sse + jnp.sum(e * e)), None

        G0 = _initial_accum(params) if adaptive and state.accum is None else state.accum
        (Z, G, step, sse), _ = jax.lax.scan(batch, (Z0, G0, state.step, jnp.zeros((), dtype)),
                                            (idx, xs, msk))
        p = _unstack(Z, params, m)
        if loss_trace == "exact":
            loss = _objective.value(obj, p)
        else:  # "running": residuals seen during the epoch + exact penalty at its end
            loss = obj.data_weight.astype(dtype) * sse + _objective.penalty(obj, p)
        new = SGDState(p, state.key, step, state.epoch + 1, state.lr, state.decay, G if adaptive else None)
        return new, SGDInfo(loss, lr_at(state.step))

    return step


def _initial_accum(params: Params) -> jax.Array:
    """LIBMF's starting accumulator: ``G = 1`` for every row of ``U`` and ``V`` (the first step is ``lr``)."""
    return jnp.ones((params.U.shape[0] + params.V.shape[0],), params.U.dtype)


def sgd_solver(*, lr: float = 0.01, decay: float = 1.0, batch_size: int = 1,
               schedule: Callable[[Any], Any] | None = None, loss_trace: str = "exact",
               adaptive: bool = False) -> Solver:
    """SGD as a :class:`~mfjax.solvers.base.Solver`: one step is one shuffled epoch.

    The problem is an :class:`SGDProblem` (:func:`sgd_problem`; the row
    counts computed once) or an :class:`~mfjax.objective.MFObjective` (counted
    every epoch).
    ``lr`` and ``decay`` go into the state (traced); ``batch_size``,
    ``schedule`` and ``loss_trace`` shape the compiled epoch (static; equal
    settings share one compiled ``step``).

    Args:
      lr: constant step size ``a`` (> 0); decay: per-epoch factor in (0, 1].
      batch_size: entries updated together (1 = sequential per-rating SGD).
      schedule: optional optax-style ``step -> lr`` (hashable; replaces ``lr``, ``decay``).
      loss_trace: ``"exact"`` or ``"running"`` (module docstring).
      adaptive: per-row adaptive steps ``lr / sqrt(G_z)`` (LIBMF; see :func:`sgd`).

    Returns:
      ``Solver(init, step)``: ``init(params, problem, key) -> SGDState``,
      ``step(state, problem) -> (SGDState, SGDInfo)``.

    Example::

        solver = sgd_solver(lr=0.05, batch_size=4096)
        obj = sgd_problem(train, l2=0.05)
        res = mfjax.solvers.run(solver, obj, solver.init(params, obj, key), 10, eval_set=test)
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if loss_trace not in LOSS_TRACES:
        raise ValueError(f"loss_trace must be 'exact' or 'running', got {loss_trace!r}")
    step = _epoch_step(int(batch_size), schedule, loss_trace, bool(adaptive))

    def init(params: Params, problem=None, key=None) -> SGDState:
        del problem
        key = jax.random.key(0) if key is None else key
        dtype = params.U.dtype
        zero = jnp.asarray(0, jnp.int32)
        accum = _initial_accum(params) if adaptive else None
        return SGDState(params, key, zero, zero, jnp.asarray(0.0 if schedule is not None else lr,
                                                             dtype), jnp.asarray(decay, dtype), accum)

    return Solver(init, step)


@functools.partial(jax.jit, static_argnames=("shape", "rank", "biases", "scale", "dtype"))
def _random_params(key, mean, *, shape, rank, biases, scale, dtype):
    """The random start, one compiled program (eagerly it is about ten small ones)."""
    if biases:
        return init_biased_factors(key, shape, rank, mean=mean, scale=scale, dtype=dtype)
    return init_factors(key, shape, rank, scale=scale, dtype=dtype)


def _initial_params(train, rank, biases, init, key, init_scale, dtype):
    m, n = train.shape
    if init is None:
        return _random_params(key, np.asarray(train.mean() if biases else 0.0, np.dtype(dtype)),
                              shape=(m, n), rank=rank, biases=biases, scale=init_scale,
                              dtype=np.dtype(dtype))
    check_not_all_zero(init, "init")
    U, V = jnp.asarray(init.U, dtype), jnp.asarray(init.V, dtype)
    if U.shape != (m, rank) or V.shape != (n, rank):
        raise ValueError(
            f"init factors have shapes {U.shape}, {V.shape}; expected {(m, rank)}, {(n, rank)}")
    if not biases:
        if isinstance(init, BiasedFactors):
            raise ValueError("init is BiasedFactors but biases=False")
        return Factors(U, V)
    if isinstance(init, BiasedFactors):
        return BiasedFactors(U, V, jnp.asarray(init.row_bias, dtype),
                             jnp.asarray(init.col_bias, dtype), jnp.asarray(init.mean, dtype))
    return BiasedFactors(U, V, jnp.zeros((m,), dtype), jnp.zeros((n,), dtype),
                         jnp.asarray(train.mean(), dtype))


def sgd(
    train: Ratings,
    rank: int,
    *,
    key=None,
    lr: float = 0.01,
    l2=UNSET,
    l2_bias=None,
    num_steps: int = UNSET,
    batch_size: int = 1,
    biases: bool = False,
    weighted_l2: bool = False,
    decay: float = 1.0,
    schedule: Callable[[Any], Any] | None = None,
    eval_set: Ratings | None = None,
    eval_every: int = 1,
    clip: tuple[float, float] | None = None,
    init: Factors | BiasedFactors | None = None,
    init_scale: float = 0.1,
    dtype=jnp.float32,
    loss_trace: str = "exact",
    adaptive: bool = False,
    num_epochs: int = UNSET,
    eval: Ratings | None = UNSET,  # noqa: A002  (deprecated alias of eval_set)
    callback=None,
    callback_every: int = 1,
) -> SolverResult:
    """Fit ``X ~ U V^T`` (optionally with biases) by shuffled-epoch SGD.

    A thin alias: :func:`sgd_problem` + :func:`sgd_solver` + :func:`mfjax.solvers.run`.

    Args:
      train: observed training ratings.
      rank: number of latent factors ``r`` (``1 <= r <= min(m, n)``).
      key: PRNG key (initialisation and the per-epoch permutations; default
        ``jax.random.key(0)``).
      lr: constant step size ``a`` (> 0).
      l2: regularisation ``lambda >= 0`` (see ``weighted_l2``).  Omitting it
        keeps the old default 0.02 with a ``DeprecationWarning``; it will
        become 0.0, the default of every solver.
      l2_bias: ridge of the biases (default ``l2``).
      num_steps: passes over the training entries (epochs); default 20.
      batch_size: entries updated together (1 = sequential per-rating SGD).
      biases: fit the biased model ``mean + b_i + c_j + u_i . v_j``.
      weighted_l2: ``False``: ``l2/n_i`` per rating (uniform objective, the
        lecture); ``True``: ``l2`` per rating (Funk / surprise).
      decay: multiply the step by ``decay`` after each epoch (1 = constant).
      schedule: optional optax-style schedule ``step -> lr`` (step counts
        minibatches); replaces ``lr`` and ``decay``.
      eval_set: optional held-out ratings; their RMSE is traced per epoch.
      eval_every: trace the held-out RMSE every this many epochs.
      callback: optional progress hook ``callback(Progress)`` every ``callback_every``
        epochs and at the stop (:mod:`mfjax.core.progress`, :func:`mfjax.solvers.run`); off by default.
      callback_every: epochs between progress reports.
      clip: clip predictions to ``(lo, hi)`` for the traced RMSE.
      init: optional starting ``Factors`` / ``BiasedFactors``.
      init_scale: std of the random normal initial factors (biases start at 0).
      dtype: float dtype of the parameters.
      loss_trace: ``"exact"`` (default): the trace's loss is the objective
        after each epoch, one extra pass over the training entries
        (:func:`mfjax.losses.masked_sq_loss`); ``"running"``: a running
        estimate at no extra pass, ``sum_k e_k^2`` over the epoch's
        entries, each residual ``e_k`` taken when its minibatch was visited
        (before that minibatch's update, so with parameters that drift
        during the epoch; it lags the exact value, by more in early epochs),
        plus the exact regulariser of the parameters at the epoch's end.
        Both detect divergence.
      adaptive: per-row adaptive step sizes (LIBMF's learning-rate schedule,
        Chin, Zhuang, Juan & Lin 2015): each row ``z`` of ``[U, b]`` and of
        ``[V, c]`` keeps ``G_z`` (starting at 1) and steps ``lr / sqrt(G_z)``;
        after each of its updates ``G_z += ||g_z||^2 / c``, with ``g_z`` that
        update's gradient (``-(e p - l z)``) and ``c`` its length.  Rows that
        are updated often take smaller steps, so a larger ``lr`` (LIBMF's
        default 0.1) is stable; ``decay`` and ``schedule`` still scale ``lr``.
      num_epochs, eval: deprecated aliases of ``num_steps``, ``eval_set``.

    Returns:
      :class:`SolverResult` with ``params`` a :class:`Factors` (or
      :class:`BiasedFactors` when ``biases``), ``status`` ``MAX_STEPS`` and the
      per-epoch trace (training objective without the 1/2, held-out RMSE
      ``eval_metric`` or NaN).

    Raises:
      ValueError: bad rank, ``lr <= 0``, ``l2 < 0``, ``num_steps < 1``,
        ``batch_size < 1``, ``decay`` outside (0, 1], empty or non-finite data.
      FloatingPointError: the run diverged (non-finite loss); lower ``lr``.

    Example::

        res = mfjax.solvers.sgd(train, 10, key=jax.random.key(0), lr=0.01,
                                l2=0.05, num_steps=20, biases=True, eval_set=test)
        res.trace.eval_metric[-1]
    """
    num_steps = _args.renamed("sgd", "num_steps", num_steps, "num_epochs", num_epochs, 20)
    eval_set = _args.eval_alias("sgd", eval_set, eval)
    if l2 is UNSET:
        _args.default_changed("sgd", "l2", _OLD_DEFAULT_L2, 0.0)
        l2 = _OLD_DEFAULT_L2
    rank = _args.check_rank(rank, train.shape)
    if schedule is None and not lr > 0:
        raise ValueError(f"lr (step size) must be > 0, got {lr}")
    check_l2("l2", l2)
    check_l2("l2_bias", l2_bias)
    num_steps = _args.check_num_steps(num_steps, "num_epochs")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    if loss_trace not in LOSS_TRACES:
        raise ValueError(f"loss_trace must be 'exact' or 'running', got {loss_trace!r}")
    check_ratings(train, "training")
    _args.check_eval_set(eval_set, train)
    # the epoch is cut from a ab >= nnz slots (see _feistel): a batch never needs more
    a, b = _order_domain(train.nnz)
    batch_size = int(min(batch_size, a * b))

    key = jax.random.key(0) if key is None else key
    k_init, k_run = jax.random.split(key)
    params = _initial_params(train, rank, biases, init, k_init, init_scale, dtype)
    problem = sgd_problem(train, l2=l2, l2_bias=l2_bias, weighted_l2=weighted_l2,
                         dtype=np.dtype(dtype))
    solver = sgd_solver(lr=lr, decay=decay, batch_size=batch_size, schedule=schedule,
                        loss_trace=loss_trace, adaptive=adaptive)
    eval_d = eval_set.astype(np.dtype(dtype)).device_put() if eval_set is not None else None
    # the step is determined by these settings (a schedule is a function: not keyed, not stored)
    key_ = None if schedule is not None else ["sgd", batch_size, loss_trace, bool(adaptive)]
    res = run(solver, problem, solver.init(params, problem, k_run), num_steps, eval_set=eval_d,
              eval_every=eval_every, metric=RMSE(None if clip is None else tuple(map(float, clip))),
              callback=callback, callback_every=callback_every, program_key=key_)
    return _args.raise_if_nonfinite(res, "SGD diverged", "epoch",
                                    f" (lr={lr}, batch_size={batch_size}); lower the step size")
