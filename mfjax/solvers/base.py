r"""The solver protocol and its one driver (ALS, SGD, NMF, SVD completion, vector descent).

A solver is a pair of pure functions (blackjax's ``init`` / ``step``)::

    state       = solver.init(params, problem, key)     # State: a NamedTuple with .params
    state, info = solver.step(state, problem)           # Info:  a NamedTuple with .loss

``problem`` -- the training data and the hyperparameters that are numbers
(an :class:`mfjax.objective.MFObjective` for ALS and SGD: ratings, ``l2``,
row weights) -- is an *argument* of ``step``, never a closure, so one
compiled run serves every fold of the same (padded) shape and every ``l2``.
``info.loss`` is the training objective after the step; other ``Info``
fields are the solver's own diagnostics (per-row iteration counts for
vector descent, ...).

:func:`run` drives any solver: ``num_steps`` steps in one jit-compiled
``lax.scan``, the held-out metric every ``eval_every`` steps, and a
finiteness check.  A step whose parameters or loss are not finite is
rejected: the run keeps the last good state, stops
(:attr:`mfjax.core.Status.NONFINITE`; :attr:`~mfjax.core.Status.DIVERGED`
when the loss exceeds ``divergence_factor`` times the first step's loss)
and the remaining steps are no-ops
(their trace entries are padding: NaN, ``False``).  Otherwise the status is
:attr:`~mfjax.core.Status.MAX_STEPS` (the budget ran out).  The trace uses
the names of :class:`mfjax.loop.FitTrace` where they mean the same
(``loss``, ``eval_metric``, ``success``).

The solver's ``step`` is a static argument of the compiled driver (hashed by
identity): the ``*_solver`` builders of :mod:`mfjax.solvers` cache their
``step`` functions, so equal settings give the same ``step`` and no
recompilation; a hand-written solver should likewise build its ``step`` once.

>>> import jax, mfjax as mf
>>> from mfjax.solvers import als_solver, run
>>> train = mf.data.synthetic(m=30, n=20, rank=2, density=0.4, seed=0)
>>> problem = mf.objective.mf_objective(train, l2=1.0)
>>> solver = als_solver()
>>> state = solver.init(mf.init_factors(jax.random.key(0), train.shape, 2), problem)
>>> res = run(solver, problem, state, 5, eval_set=train)
>>> res.trace.loss.shape, res.status_name, int(res.num_steps)
((5,), 'max_steps', 5)

References:
  Cabezas, A. et al. "BlackJAX: Composable Bayesian inference in JAX", 2024
  (the ``init`` / ``step`` / ``Info`` protocol).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core import Status, status_name, tree_all_finite, tree_where
from mfjax.core.progress import Progress, check_callback_every, emit_progress
from mfjax.data import Ratings
from mfjax.metrics import rmse

__all__ = ["Solver", "SolverTrace", "SolverResult", "RMSE", "run", "check_ratings", "time_steps", "StepTimes"]


class Solver(NamedTuple):
    """A solver: two pure functions (module docstring).

    Attributes:
      init: ``init(params, problem, key=None) -> State``; ``State`` is a
        NamedTuple of arrays with a ``params`` field.
      step: ``step(state, problem) -> (State, Info)``; ``Info`` is a
        NamedTuple of arrays with a scalar ``loss`` field.
    """

    init: Callable[..., Any]
    step: Callable[[Any, Any], tuple[Any, Any]]


class SolverTrace(NamedTuple):
    """Per-step trace (one entry per step of the budget; padding after a stop).

    Attributes:
      loss: training objective after step ``t``, shape (T,) (NaN: rejected or not run).
      eval_metric: held-out metric after step ``t`` on steps ``t + 1 = k *
        eval_every`` (NaN elsewhere and without an evaluation set).
      success: (T,) the step was run and accepted (finite).
      info: the solver's ``Info`` stacked over the steps (padding: NaN / -1 /
        ``False``), or ``None``.
    """

    loss: jax.Array
    eval_metric: jax.Array
    success: Optional[jax.Array] = None
    info: Any = None

    @property
    def eval_rmse(self) -> jax.Array:
        """Deprecated alias of :attr:`eval_metric` (the held-out RMSE by default)."""
        warnings.warn("SolverTrace.eval_rmse is deprecated; use SolverTrace.eval_metric",
                      DeprecationWarning, stacklevel=2)
        return self.eval_metric


class SolverResult(NamedTuple):
    """Result of :func:`run` and of every solver alias (``als``, ``sgd``, ``nmf``, ...).

    Attributes:
      params: last accepted parameters.
      trace: :class:`SolverTrace`.
      status: int32 :class:`mfjax.core.Status` code (``MAX_STEPS`` or ``NONFINITE``).
      num_steps: steps attempted (the last one is the rejected step when
        ``status == NONFINITE``).
      state: the final solver state (to continue with :func:`run`), or ``None``.
    """

    params: Any
    trace: SolverTrace
    status: Optional[jax.Array] = None
    num_steps: Optional[jax.Array] = None
    state: Any = None

    @property
    def status_name(self) -> str:
        """``status`` as a lower-case name (``"max_steps"``, ``"nonfinite"``); host read."""
        return "unknown" if self.status is None else status_name(self.status)


class RMSE(NamedTuple):
    """The default held-out metric: ``rmse(params, eval_set, clip=clip)``.

    A NamedTuple so that equal settings are equal static arguments of the
    compiled driver (no recompilation).  Any ``metric(params, eval_set) ->
    scalar`` that is hashable works in its place.
    """

    clip: Optional[tuple[float, float]] = None

    def __call__(self, params, eval_set) -> jax.Array:
        return rmse(params, eval_set, clip=self.clip)


def _padding_like(tree):
    """NaN / -1 / False leaves shaped like ``tree`` (the entries of steps not run)."""

    def pad(x):  # x: an array or a jax.ShapeDtypeStruct
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.full(x.shape, jnp.nan, x.dtype)
        if x.dtype == jnp.bool_:
            return jnp.zeros(x.shape, x.dtype)
        return jnp.full(x.shape, -1, x.dtype)

    return jax.tree_util.tree_map(pad, tree)


def _scan_body(problem, eval_set, divergence_factor, *, step, num_steps, metric, eval_every, info0, dtype,
               callback=None, callback_every=1):
    """The driver's scan body: ``(carry, t) -> (carry, (loss, eval, ok, info))`` for global step ``t``
    (steps ``t >= num_steps`` -- the padding of a timed run's last chunk -- are skipped and leave the carry)."""

    def attempt(state, ref):
        new, info = step(state, problem)
        finite = tree_all_finite(new.params) & jnp.isfinite(info.loss)
        diverging = finite & (info.loss > divergence_factor * ref)
        ok = finite & ~diverging
        info = tree_where(ok, info, _padding_like(info))
        return tree_where(ok, new, state), info, ok, diverging

    def skip(state, ref):
        del ref
        return state, _padding_like(info0), jnp.asarray(False), jnp.asarray(False)

    def evaluate(params, t, ok):
        nan = jnp.full((), jnp.nan, dtype)
        if eval_set is None:
            return nan
        due = ok if eval_every == 1 else ok & ((t + 1) % eval_every == 0)
        return jax.lax.cond(due, lambda: jnp.asarray(metric(params, eval_set), dtype),
                            lambda: nan)

    def body(carry, t):
        state, running, attempted, ref, diverged = carry
        live = t < num_steps
        go = running & live
        state, info, ok, div = jax.lax.cond(go, attempt, skip, state, ref)
        ev = evaluate(state.params, t, ok)
        attempted = attempted + go.astype(jnp.int32)
        loss = jnp.where(ok, info.loss, jnp.nan).astype(dtype)
        # the reference is the first accepted step's loss (solvers report the loss after a step)
        ref = jnp.where(ok & ~jnp.isfinite(ref), jnp.abs(loss), ref)
        if callback is not None:  # report steps that ran (``go``); a stop is reported at once
            stopped = go & ~ok
            code = jnp.where(stopped, jnp.where(div, jnp.int32(Status.DIVERGED), jnp.int32(Status.NONFINITE)),
                             jnp.where(t + 1 == num_steps, jnp.int32(Status.MAX_STEPS), jnp.int32(-1)))
            emit_progress(callback, callback_every, num_steps, t + 1, loss, None, ev, code,
                          force=stopped, active=go)
        running = jnp.where(live, running & ok, running)
        return (state, running, attempted, ref, diverged | div), (loss, ev, ok, info)

    return body


def _carry0(state, dtype):
    return (state, jnp.asarray(True), jnp.asarray(0, jnp.int32), jnp.full((), jnp.inf, dtype),
            jnp.asarray(False))


def _info0_dtype(step, state, problem):
    _, info0 = jax.eval_shape(step, state, problem)
    return info0, jnp.result_type(info0.loss.dtype, jnp.float32)


def _finish(carry, outputs) -> SolverResult:
    state, running, attempted, _, diverged = carry
    loss, ev, ok, info = outputs
    status = jnp.where(running, jnp.int32(Status.MAX_STEPS),
                       jnp.where(diverged, jnp.int32(Status.DIVERGED), jnp.int32(Status.NONFINITE)))
    return SolverResult(state.params, SolverTrace(loss, ev, ok, info), status, attempted, state)


_STATIC = ("step", "num_steps", "metric", "eval_every", "callback", "callback_every")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _run_jit(state, problem, eval_set, divergence_factor, *, step, num_steps, metric, eval_every,
             callback=None, callback_every=1):
    info0, dtype = _info0_dtype(step, state, problem)
    body = _scan_body(problem, eval_set, divergence_factor, step=step, num_steps=num_steps, metric=metric,
                      eval_every=eval_every, info0=info0, dtype=dtype, callback=callback,
                      callback_every=callback_every)
    carry, outputs = jax.lax.scan(body, _carry0(state, dtype), jnp.arange(num_steps, dtype=jnp.int32))
    return _finish(carry, outputs)


@functools.partial(jax.jit, static_argnames=("step",))
def _start_jit(state, problem, *, step):
    _, dtype = _info0_dtype(step, state, problem)
    return _carry0(state, dtype)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _chunk_jit(carry, ts, problem, eval_set, divergence_factor, *, step, num_steps, metric, eval_every,
               callback=None, callback_every=1):
    info0, dtype = _info0_dtype(step, carry[0], problem)
    body = _scan_body(problem, eval_set, divergence_factor, step=step, num_steps=num_steps, metric=metric,
                      eval_every=eval_every, info0=info0, dtype=dtype, callback=callback,
                      callback_every=callback_every)
    return jax.lax.scan(body, carry, ts)


class StepTimes:
    """What :func:`time_steps` measured: one entry per :func:`run` inside its block.

    Attributes:
      chunks: the number of timed pieces a run is split into (at most).
      runs: per run, a float numpy array of length ``num_steps``: seconds
        from the start of the run to the end of step ``t``, measured at the
        last step of each chunk, NaN inside a chunk (not measured).
    """

    def __init__(self, chunks: int):
        self.chunks = int(chunks)
        self.runs: list[np.ndarray] = []


_TIMER: contextvars.ContextVar = contextvars.ContextVar("mfjax_solver_step_times", default=None)


@contextlib.contextmanager
def time_steps(chunks: int = 20):
    """Measure the wall time of the steps of every :func:`run` (so of every solver alias) in the block.

    Inside the block :func:`run` scans its steps in at most ``chunks``
    compiled pieces of equal length and waits for each
    (``jax.block_until_ready``), reading the clock at its end; the steps
    and the result are those of an untimed run (one host synchronisation
    per chunk, nothing inside a chunk changes).  With ``chunks >= num_steps``
    every step is timed.

    Example::

        with mfjax.solvers.time_steps(chunks=20) as clock:
            res = mfjax.solvers.als(train, 5, l2=1.0, num_steps=10)
        clock.runs[-1]          # seconds after sweeps 1..10

    Yields:
      a :class:`StepTimes` filled as the runs finish.
    """
    if int(chunks) < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    timer = StepTimes(chunks)
    token = _TIMER.set(timer)
    try:
        yield timer
    finally:
        _TIMER.reset(token)


def _timed_programs(state, problem, eval_set, factor, length: int, static: dict, key, cache):
    """The timed run's two programs (start, chunk of ``length`` steps): jitted, or read from / written to
    the program ``cache`` under ``key`` (see :func:`run`'s ``program_key``)."""
    start = functools.partial(_start_jit, step=static["step"])
    chunk = functools.partial(_chunk_jit, **static)
    if key is None or cache is None or static["callback"] is not None or not cache.storable():
        return start, chunk
    carry = jax.eval_shape(start, state, problem)
    start = cache.compile(lambda: _start_jit.lower(state, problem, step=static["step"]),
                          ["solver_start", key], (state, problem))
    args = (carry, jax.ShapeDtypeStruct((length,), jnp.int32), problem, eval_set, factor)
    chunk = cache.compile(lambda: _chunk_jit.lower(*args, **static),
                          ["solver_chunk", key, length, static["num_steps"], static["eval_every"],
                           repr(static["metric"])], args)
    return start, chunk


def _run_timed(timer: StepTimes, state, problem, eval_set, factor, *, step, num_steps, metric, eval_every,
               callback=None, callback_every=1, program_key=None, program_cache=None):
    length = -(-num_steps // timer.chunks)
    static = dict(step=step, num_steps=num_steps, metric=metric, eval_every=eval_every, callback=callback,
                  callback_every=callback_every)
    start, chunk = _timed_programs(state, problem, eval_set, factor, length, static, program_key, program_cache)
    seconds = np.full(num_steps, np.nan)
    t0 = time.perf_counter()
    carry = start(state, problem)
    pieces = []
    for s in range(0, num_steps, length):
        carry, out = chunk(carry, jnp.arange(s, s + length, dtype=jnp.int32), problem, eval_set, factor)
        jax.block_until_ready((carry, out))
        k = min(length, num_steps - s)
        seconds[s + k - 1] = time.perf_counter() - t0
        pieces.append(jax.tree_util.tree_map(lambda x, k=k: np.asarray(x)[:k], out))  # host copies
    outputs = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)), *pieces)
    timer.runs.append(seconds)
    return _finish(carry, outputs)


def run(solver: Solver, problem, state, num_steps: int, *, eval_set=None, eval_every: int = 1,
        metric: Callable = RMSE(), divergence_factor: Optional[float] = 10.0,
        callback: Optional[Callable[[Progress], None]] = None, callback_every: int = 1,
        program_key=None, program_cache=None) -> SolverResult:
    """Run ``num_steps`` steps of ``solver`` from ``state`` in one compiled ``lax.scan``.

    Step ``t``: ``state, info = solver.step(state, problem)``; accepted when
    ``state.params`` and ``info.loss`` are finite, else the previous state
    is kept and the run stops (module docstring).  Compiled once per
    ``(solver.step, num_steps, metric, eval_every)`` and argument shapes:
    ``problem``, ``state`` and ``eval_set`` are traced.

    Args:
      solver: a :class:`Solver`.
      problem: the training problem passed to every ``step`` (a pytree).
      state: the initial state (``solver.init(params, problem, key)``).
      num_steps: step budget (sweeps for ALS, epochs for SGD, iterations for NMF).
      eval_set: optional held-out :class:`~mfjax.data.Ratings` (or an
        :class:`~mfjax.objective.MFObjective`, whose weights mask padding).
      eval_every: evaluate on steps ``t + 1 = k * eval_every``.
      metric: ``metric(params, eval_set) -> scalar``, hashable (default :class:`RMSE`).
      divergence_factor: a step whose loss exceeds this factor times the
        first step's loss is rejected and the run stops with
        :attr:`~mfjax.core.Status.DIVERGED` (``None`` disables; traced).
      callback: optional progress hook ``callback(Progress)``, called on the
        host every ``callback_every`` steps and at the stop
        (:mod:`mfjax.core.progress`); ``None`` traces nothing.
      callback_every: steps between progress reports.
      program_key: optional JSON-able description of everything static about
        ``solver.step`` (its settings; e.g. ``["sgd", batch_size, ...]``).  With
        it, the compiled run is read from / written to ``program_cache``
        (default :func:`mfjax.core.programs.default_cache`, set by
        :func:`mfjax.cli.enable_compile_cache`): a second process with the same
        key, argument shapes and mfjax source skips tracing, lowering and
        compilation (inside :func:`time_steps`: the start and chunk programs).
        Ignored with a ``callback`` or when no cache is set.  The key must change whenever the step
        function does; the solver aliases build theirs.
      program_cache: a :class:`mfjax.core.programs.ProgramCache` (overrides the default).

    Returns:
      :class:`SolverResult` (``state`` included, to continue the run).

    Raises:
      ValueError: ``num_steps < 1`` or ``eval_every < 1``.
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if int(eval_every) < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    factor = float("inf") if divergence_factor is None else float(divergence_factor)
    if not factor > 1.0:
        raise ValueError(f"divergence_factor must be > 1 (or None), got {divergence_factor!r}")
    extra = dict(callback=callback, callback_every=check_callback_every(callback, callback_every))
    if program_cache is None and program_key is not None:
        from mfjax.core import programs
        program_cache = programs.default_cache()
    timer = _TIMER.get()
    if timer is not None:  # inside ``time_steps``: the same steps in timed chunks
        return _run_timed(timer, state, problem, eval_set, factor, step=solver.step, num_steps=int(num_steps),
                          metric=metric, eval_every=int(eval_every), program_key=program_key,
                          program_cache=program_cache, **extra)
    static = dict(step=solver.step, num_steps=int(num_steps), metric=metric, eval_every=int(eval_every), **extra)
    if program_key is not None and program_cache is not None and callback is None and program_cache.storable():
        args = (state, problem, eval_set, factor)
        compiled = program_cache.compile(
            lambda: _run_jit.lower(*args, **static),
            ["solver_run", program_key, int(num_steps), int(eval_every), repr(metric)], args)
        return compiled(*args)
    return _run_jit(state, problem, eval_set, factor, **static)


def check_ratings(r: Ratings, what: str) -> np.ndarray:
    """Validate a solver's input ratings (at the API boundary, on the host); return the values.

    Raises ``TypeError`` when ``r`` is not :class:`~mfjax.data.Ratings` and
    ``ValueError`` naming the entry (index, row, column) for empty or
    non-finite data.  ``what`` names the input in the message ("training",
    "evaluation").  Never call it inside compiled code: it reads the values.
    """
    if not isinstance(r, Ratings):
        raise TypeError(f"{what} must be a mfjax.data.Ratings, got {type(r).__name__}")
    vals = np.asarray(r.values)
    if vals.size == 0:
        raise ValueError(f"{what} ratings are empty")
    bad = ~np.isfinite(vals)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} ratings contain a non-finite value {vals[k]} at entry {k} "
                         f"(row {int(np.asarray(r.rows)[k])}, col {int(np.asarray(r.cols)[k])})")
    return vals
