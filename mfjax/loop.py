"""The training loop: ``fit`` (fixed steps, ``lax.scan``) and ``fit_until`` (tolerance, ``lax.while_loop``).

One step, for any optax optimizer (mfjax's ``chain(direction, step_rule)``,
``optax.adam``, ``optax.lbfgs``, a chain ending in an optax line search)::

    updates, state = optimizer.update(g, state, x, value=f, grad=g, value_fn=loss)
    x_new = optax.apply_updates(x, updates)
    f_new, g_new = optax.value_and_grad_from_state(loss)(x_new, state=state)

The last line reuses the value and gradient the line search stored at the
accepted point (its state's ``value``/``grad`` fields) and only evaluates
``loss`` when they are unknown (``+inf``) or when the optimizer stores none
(``optax.adam``).

The whole run is one compiled program: the step is scanned (``fit``) or
looped (``fit_until``) inside a single ``jax.jit`` whose static arguments
are the loss function, the optimizer and the sizes, so a second call with the
same objects and shapes does not recompile.  No host synchronisation happens
inside the loop; the optional held-out metric is computed inside the loop
every ``eval_every`` steps with ``lax.cond``.

Robustness: a step is *accepted* only when the step rule reports success
(``LineSearchInfo.success``; rules without diagnostics count as successful)
and the new parameters, value and gradient are finite.  Otherwise the loop
keeps the last accepted parameters and stops with a status
(:data:`STATUS_LINESEARCH_FAILED` or :data:`STATUS_NONFINITE`); in ``fit``
the remaining steps are no-ops.  The returned parameters are never NaN
unless the initial ones were.

Status codes (``FitResult.status``):

* ``0`` :data:`STATUS_CONVERGED` -- tolerance reached (``fit_until``).
* ``1`` :data:`STATUS_MAX_STEPS` -- step budget used up (``fit`` without failure).
* ``2`` :data:`STATUS_LINESEARCH_FAILED` -- the step rule reported failure.
* ``3`` :data:`STATUS_NONFINITE` -- non-finite parameters, value or gradient.
* ``4`` :data:`STATUS_DIVERGED` -- the loss grew past ``divergence_factor``
  times its initial value (that step is rejected), or the run ended more
  than 1% above its initial loss.

The codes are :class:`mfjax.core.Status` (``status_name(result.status)``
prints the name).

References:
  optax's ``value_and_grad_from_state`` and line-search protocol (DeepMind,
  "The DeepMind JAX Ecosystem", 2020); blackjax's ``init``/``step`` driver
  pattern (Cabezas et al., "BlackJAX: Composable Bayesian inference in JAX", 2024).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mfjax.core.checks import check_not_all_zero
from mfjax.core.progress import Progress, check_callback_every, emit_progress
from mfjax.core.status import STATUS_NAMES, Status
from mfjax.core.status import status_name as _status_name

__all__ = [
    "FitTrace",
    "FitResult",
    "fit",
    "compile_fit",
    "compile_fit_timed",
    "fit_until",
    "STATUS_CONVERGED",
    "STATUS_MAX_STEPS",
    "STATUS_LINESEARCH_FAILED",
    "STATUS_NONFINITE",
    "STATUS_DIVERGED",
    "STATUS_NAMES",
]

# The codes of mfjax.core.Status (one vocabulary for fit, the solvers and the CLI).
STATUS_CONVERGED = int(Status.CONVERGED)
STATUS_MAX_STEPS = int(Status.MAX_STEPS)
STATUS_LINESEARCH_FAILED = int(Status.LINESEARCH_FAILED)
STATUS_NONFINITE = int(Status.NONFINITE)
STATUS_DIVERGED = int(Status.DIVERGED)
_RUNNING = -1


class FitTrace(NamedTuple):
    """Per-step diagnostics, one entry per attempted step (length = step budget).

    Entries after the run stopped are padding: NaN for floats, ``-1`` for the
    counts, ``False`` for ``success``.

    Attributes:
      loss: ``f`` at the parameters after step ``t`` (NaN for a rejected step).
      grad_norm: ``||grad f||_2`` there.
      step_size: step taken by the step rule (NaN when the optimizer reports
        none, e.g. ``optax.adam``).
      num_fun_evals: cumulative function evaluations up to and including step
        ``t``: the line search's trials plus the loop's own evaluations
        (the initial one and any the line search did not store).
      num_grad_evals: cumulative gradient evaluations, same convention.
      success: the step was accepted.
      eval_metric: ``eval_fn(params)`` after step ``t`` on steps
        ``t + 1 = k * eval_every``; NaN elsewhere.
    """

    loss: jax.Array
    grad_norm: jax.Array
    step_size: jax.Array
    num_fun_evals: jax.Array
    num_grad_evals: jax.Array
    success: jax.Array
    eval_metric: jax.Array


class FitResult(NamedTuple):
    """Result of :func:`fit` / :func:`fit_until`.

    Attributes:
      params: last accepted parameters.
      state: optimizer state matching ``params``.
      trace: :class:`FitTrace`.
      status: int32 status code (see module docstring, :data:`STATUS_NAMES`).
      num_steps: number of steps attempted (entries of ``trace`` that are
        not padding); the last one is the failed step when ``status >= 2``.
      value: ``f(params)``.
      num_fun_evals: total function evaluations.
      num_grad_evals: total gradient evaluations.
    """

    params: Any
    state: Any
    trace: FitTrace
    status: jax.Array
    num_steps: jax.Array
    value: jax.Array
    num_fun_evals: jax.Array
    num_grad_evals: jax.Array

    @property
    def status_name(self) -> str:
        """The status as a word (``"converged"``, ``"diverged"``...; one host read)."""
        return _status_name(self.status)


class _Carry(NamedTuple):
    params: Any
    state: Any
    value: jax.Array
    grad: Any
    status: jax.Array  # _RUNNING while running
    step: jax.Array
    fe: jax.Array
    ge: jax.Array
    value0: jax.Array  # f at the initial parameters
    diverge_at: jax.Array  # a step to a value above this stops the run (Status.DIVERGED)


class _Info(NamedTuple):
    step_size: jax.Array
    num_fun_evals: jax.Array
    num_grad_evals: jax.Array
    success: jax.Array


# ------------------------------------------------------------------ helpers

class _BoundLoss:
    """``params -> loss_fn(params, *loss_args)``, exposing the problem's objective.

    ``objective`` is the first :class:`~mfjax.objective.MFObjective` (or
    :class:`~mfjax.objective.SideObjective`) in ``loss_args`` (traced: one compiled run serves every objective of the same
    shape) or ``loss_fn.objective`` (a :func:`mfjax.losses.masked_mse`
    closure); step rules that need the problem itself
    (:func:`mfjax.linesearch.exact_mf`, :func:`mfjax.optim.mf_preconditioner`
    built without ratings) read it from ``value_fn.objective``.
    """

    def __init__(self, loss_fn, loss_args):
        from mfjax.objective import MFObjective, SideObjective  # objective sits below the loop

        self._fn, self._args = loss_fn, loss_args
        found = [a for a in loss_args if isinstance(a, (MFObjective, SideObjective))]
        self.objective = found[0] if found else getattr(loss_fn, "objective", None)

    def __call__(self, params):
        return self._fn(params, *self._args)


def _bind(loss_fn, loss_args) -> _BoundLoss:
    return _BoundLoss(loss_fn, loss_args)


def _as_loss(loss_fn, loss_args):
    """``fit(objective, ...)``: an :class:`~mfjax.objective.MFObjective` (or a
    :class:`~mfjax.objective.SideObjective`) in place of a loss."""
    from mfjax.objective import MFObjective, SideObjective, loss, side_loss

    if isinstance(loss_fn, MFObjective):
        return loss, (loss_fn,) + tuple(loss_args)
    if isinstance(loss_fn, SideObjective):
        return side_loss, (loss_fn,) + tuple(loss_args)
    return loss_fn, tuple(loss_args)

def _tree_all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _tree_where(c, a, b):
    return jax.tree.map(lambda x, y: jnp.where(c, x, y), a, b)


def _stores_value_and_grad(state) -> bool:
    """Static check: does the optimizer state carry exactly one ``value`` and ``grad``?"""
    try:
        v = optax.tree.get(state, "value")
        g = optax.tree.get(state, "grad")
    except KeyError:  # several matches: ambiguous, recompute
        return False
    return v is not None and g is not None


def _linesearch_info(state) -> Optional[Any]:
    from mfjax.linesearch import get_linesearch_info  # lazy: mfjax.linesearch is a peer package

    return get_linesearch_info(state)


def _info(state, dtype) -> _Info:
    info = _linesearch_info(state)
    if info is None:
        return _Info(jnp.asarray(jnp.nan, dtype), jnp.asarray(0, jnp.int32),
                     jnp.asarray(0, jnp.int32), jnp.asarray(True))
    return _Info(
        jnp.asarray(info.step_size).astype(dtype),
        jnp.asarray(info.num_fun_evals).astype(jnp.int32),
        jnp.asarray(info.num_grad_evals).astype(jnp.int32),
        jnp.asarray(info.success).astype(bool),
    )


def _value_and_grad(value_fn, stored: bool):
    """``(x, state) -> (f, g, own_evals)``; reuses the state's value/grad when known."""
    if not stored:
        def vg(x, state):
            del state
            f, g = jax.value_and_grad(value_fn)(x)
            return f, g, jnp.asarray(1, jnp.int32)
        return vg

    from_state = optax.value_and_grad_from_state(value_fn)

    def vg(x, state):
        v = optax.tree.get(state, "value")
        own = (~jnp.isfinite(v)).astype(jnp.int32)  # same test as optax's cond
        f, g = from_state(x, state=state)
        return f, g, own
    return vg


def _norm(tree) -> jax.Array:
    return optax.tree.norm(tree)


def _record(value, gnorm, info, fe, ge, success, metric, dtype) -> FitTrace:
    return FitTrace(
        loss=jnp.asarray(value, dtype),
        grad_norm=jnp.asarray(gnorm, dtype),
        step_size=jnp.asarray(info.step_size, dtype),
        num_fun_evals=jnp.asarray(fe, jnp.int32),
        num_grad_evals=jnp.asarray(ge, jnp.int32),
        success=jnp.asarray(success, bool),
        eval_metric=jnp.asarray(metric, dtype),
    )


def _pad_record(dtype) -> FitTrace:
    nan = jnp.asarray(jnp.nan, dtype)
    m1 = jnp.asarray(-1, jnp.int32)
    return FitTrace(nan, nan, nan, m1, m1, jnp.asarray(False), nan)


def _init(value_fn, optimizer, params):
    state = optimizer.init(params)
    value, grad = jax.value_and_grad(value_fn)(params)
    dtype = jnp.result_type(value)
    return state, value, grad, dtype


def _make_step(value_fn, optimizer, eval_fn, eval_every, tol, rtol, stored, dtype,
               callback=None, callback_every=1, num_steps=0):
    """The body shared by ``fit`` and ``fit_until``: ``carry -> (carry, record)``."""
    vg = _value_and_grad(value_fn, stored)

    def step(c: _Carry):
        updates, new_state = optimizer.update(
            c.grad, c.state, c.params, value=c.value, grad=c.grad, value_fn=value_fn
        )
        new_params = optax.apply_updates(c.params, updates)
        new_value, new_grad, own = vg(new_params, new_state)
        info = _info(new_state, dtype)
        fe = c.fe + info.num_fun_evals + own
        ge = c.ge + info.num_grad_evals + own
        finite = (
            jnp.isfinite(new_value) & _tree_all_finite(new_grad) & _tree_all_finite(new_params)
        )
        diverging = finite & (new_value > c.diverge_at)
        accept = info.success & finite & ~diverging
        gnorm = _norm(new_grad)
        if tol is None:  # fit: fixed number of steps, no convergence test
            converged = jnp.asarray(False)
        else:
            stalled = (rtol > 0) & (jnp.abs(c.value - new_value) <= rtol * jnp.abs(new_value))
            converged = (gnorm <= tol) | stalled
        status = jnp.where(
            ~info.success,
            STATUS_LINESEARCH_FAILED,
            jnp.where(~finite, STATUS_NONFINITE,
                      jnp.where(diverging, STATUS_DIVERGED,
                                jnp.where(converged, STATUS_CONVERGED, _RUNNING))),
        ).astype(jnp.int32)
        params = _tree_where(accept, new_params, c.params)
        state = _tree_where(accept, new_state, c.state)
        value = jnp.where(accept, new_value, c.value)
        grad = _tree_where(accept, new_grad, c.grad)
        nan = jnp.asarray(jnp.nan, dtype)
        if eval_fn is None:
            metric = nan
        else:
            due = accept & ((c.step + 1) % eval_every == 0)
            metric = lax.cond(
                due, lambda p: jnp.asarray(eval_fn(p), dtype), lambda p: nan, new_params
            )
        rec = _record(
            jnp.where(accept, new_value, nan), jnp.where(accept, gnorm, nan), info, fe, ge,
            accept, metric, dtype,
        )
        new_c = c._replace(params=params, state=state, value=value, grad=grad, status=status,
                           step=c.step + 1, fe=fe, ge=ge)
        if callback is not None:
            last = (status == _RUNNING) & (new_c.step == num_steps)
            shown = jnp.where(last, _final_status(new_c), status)
            emit_progress(callback, callback_every, num_steps, new_c.step, rec.loss, rec.grad_norm,
                          metric, shown, force=status != _RUNNING)
        return new_c, rec

    return step


def _factor(divergence_factor) -> float:
    """The divergence factor as a float (``inf`` disables the test)."""
    if divergence_factor is None:
        return float("inf")
    f = float(divergence_factor)
    if not f > 1.0:
        raise ValueError(f"divergence_factor must be > 1 (or None to disable), got {divergence_factor!r}")
    return f


def _check_common(num, name, eval_every):
    if int(num) < 0:
        raise ValueError(f"{name} must be >= 0, got {num}")
    if int(eval_every) < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")


def _start_status(value, grad) -> jax.Array:
    """``NONFINITE`` when the initial value or gradient is not finite, else running.

    A non-finite start (NaN in traced data, an invalid traced ``l2``, whose
    objective value is NaN, or an overflowing initialisation) stops the run
    before its first step instead of being reported as a line-search failure.
    """
    ok = jnp.isfinite(value) & _tree_all_finite(grad)
    return jnp.where(ok, _RUNNING, STATUS_NONFINITE).astype(jnp.int32)


def _carry0(params, state, value, grad, status, divergence_factor) -> _Carry:
    """The initial carry; ``diverge_at = factor * max(|f0|, tiny)`` (``+inf`` when f0 is not finite)."""
    tiny = jnp.finfo(value.dtype).tiny
    at = jnp.where(jnp.isfinite(value),
                   jnp.asarray(divergence_factor, value.dtype) * jnp.maximum(jnp.abs(value), tiny),
                   jnp.inf)
    zero, one = jnp.asarray(0, jnp.int32), jnp.asarray(1, jnp.int32)
    return _Carry(params, state, value, grad, jnp.asarray(status, jnp.int32), zero, one, one,
                  value, at.astype(value.dtype))


def _final_status(c: _Carry) -> jax.Array:
    """``max_steps`` for a run that used its budget, ``diverged`` if it ended above its start.

    A run whose accepted loss ends more than 1% above the initial loss made
    no progress whatever its step count: it is reported as diverged
    (:attr:`mfjax.core.Status.DIVERGED`), never as a normal finish.
    """
    grew = c.value > c.value0 + 0.01 * jnp.abs(c.value0)
    done = jnp.where(grew, STATUS_DIVERGED, STATUS_MAX_STEPS)
    return jnp.where(c.status == _RUNNING, done, c.status).astype(jnp.int32)


def _result(c: _Carry, trace: FitTrace, final_status) -> FitResult:
    return FitResult(c.params, c.state, trace, final_status, c.step, c.value, c.fe, c.ge)


# ---------------------------------------------------------------------- fit
@functools.partial(
    jax.jit, static_argnames=("loss_fn", "optimizer", "num_steps", "eval_fn", "eval_every",
                              "callback", "callback_every")
)
def _fit_jit(params, loss_args, eval_args, divergence_factor=10.0, *, loss_fn, optimizer,
             num_steps, eval_fn, eval_every, callback=None, callback_every=1):
    value_fn = _bind(loss_fn, loss_args)
    efn = None if eval_fn is None else (lambda p: eval_fn(p, *eval_args))
    state, value, grad, dtype = _init(value_fn, optimizer, params)
    stored = _stores_value_and_grad(state)
    step = _make_step(value_fn, optimizer, efn, eval_every, None, None, stored, dtype,
                      callback, callback_every, num_steps)
    pad = _pad_record(dtype)

    def body(c, _):
        def skip(c):
            return c, pad
        return lax.cond(c.status == _RUNNING, step, skip, c)

    c0 = _carry0(params, state, value, grad, _start_status(value, grad), divergence_factor)
    c, trace = lax.scan(body, c0, None, length=num_steps)
    return _result(c, trace, _final_status(c))


def fit(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    params,
    num_steps: int,
    *,
    loss_args: tuple = (),
    eval_fn: Optional[Callable[..., jax.Array]] = None,
    eval_args: tuple = (),
    eval_every: int = 1,
    divergence_factor: Optional[float] = 10.0,
    callback: Optional[Callable[[Progress], None]] = None,
    callback_every: int = 10,
) -> FitResult:
    """Run ``num_steps`` optimizer steps in one compiled ``lax.scan``.

    Each step: ``updates, state = optimizer.update(g, state, x, value=f,
    grad=g, value_fn=loss)``; ``x += updates``; ``f, g`` at the new point
    from the state (or evaluated).  A failed search or a non-finite point
    stops the run (later steps are no-ops) and keeps the last accepted
    parameters; ``status`` says why.

    Args:
      loss_fn: ``loss_fn(params, *loss_args) -> scalar``, or an
        :class:`mfjax.objective.MFObjective` (then the loss is
        :func:`mfjax.objective.loss` with the objective as a traced argument).
        Pass large data through ``loss_args`` (traced arguments) rather than a
        closure if you call ``fit`` with many different data sets: with
        ``fit(mfjax.objective.loss, opt, p, n, loss_args=(objective,))`` one
        compiled program serves every fold padded to the same size and every
        ``l2`` (:func:`mfjax.objective.bucket_size`).
      optimizer: any optax transformation; mfjax optimizers, ``optax.adam``,
        ``optax.lbfgs``, chains ending in an optax line search.
      params: initial parameters (any pytree, e.g. ``Factors``).
      num_steps: number of steps (static).
      loss_args: extra positional arguments of ``loss_fn``.
      eval_fn: optional held-out metric ``eval_fn(params, *eval_args) -> scalar``.
      eval_args: extra arguments of ``eval_fn``.
      eval_every: compute ``eval_fn`` after every ``eval_every``-th step.
      divergence_factor: stop with ``Status.DIVERGED`` (keeping the last
        accepted parameters) at a step whose loss exceeds ``factor * |f0|``;
        ``None`` disables the test.  A run that ends more than 1% above
        ``f0`` is also reported as diverged.  Traced: changing it does not
        recompile.
      callback: optional progress hook ``callback(Progress)`` called on the
        host every ``callback_every`` steps and when the run stops
        (:mod:`mfjax.core.progress`: :class:`~mfjax.core.progress.LogProgress`,
        :class:`~mfjax.core.progress.TqdmProgress`); ``None`` (default)
        traces nothing and costs nothing.
      callback_every: steps between progress reports.

    Returns:
      :class:`FitResult`; ``status`` is 1 (max steps) unless the run stopped
      or diverged (:class:`mfjax.core.Status`).

    ``loss_fn``, ``optimizer`` and ``eval_fn`` are static arguments of the
    compiled run (hashed by identity): reuse the same objects to avoid
    recompiling.  ``fit`` composes with ``jax.vmap`` over ``params``.

    Example::

        loss = mfjax.losses.masked_mse(train, l2=2.0)
        opt = mfjax.optim.gd(linesearch=mfjax.linesearch.inverse_lipschitz())
        res = mfjax.fit(loss, opt, params, 200, eval_fn=lambda p: mfjax.metrics.rmse(p, test))
    """
    _check_common(num_steps, "num_steps", eval_every)
    check_not_all_zero(params)
    loss_fn, loss_args = _as_loss(loss_fn, loss_args)
    return _fit_jit(
        params, tuple(loss_args), tuple(eval_args), _factor(divergence_factor),
        loss_fn=loss_fn, optimizer=optimizer,
        num_steps=int(num_steps), eval_fn=eval_fn, eval_every=int(eval_every),
        callback=callback, callback_every=check_callback_every(callback, callback_every),
    )


def compile_fit(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    params,
    loss_args: tuple = (),
    eval_args: tuple = (),
    *,
    num_steps: int,
    eval_fn: Optional[Callable[..., jax.Array]] = None,
    eval_every: int = 1,
    divergence_factor: Optional[float] = 10.0,
    callback: Optional[Callable[[Progress], None]] = None,
    callback_every: int = 10,
) -> Callable[..., FitResult]:
    """Compile :func:`fit` ahead of time (``jax.jit(...).lower(...).compile()``).

    Returns ``run(params, loss_args, eval_args) -> FitResult`` for arguments of
    the same shapes and dtypes, so that benchmarks time the run apart from
    the compilation::

        run = compile_fit(loss, opt, params, (train, l2), num_steps=200)
        result = run(params, (train, l2), ())
    """
    _check_common(num_steps, "num_steps", eval_every)
    loss_fn, loss_args = _as_loss(loss_fn, loss_args)
    factor = _factor(divergence_factor)
    compiled = _fit_jit.lower(
        params, tuple(loss_args), tuple(eval_args), factor, loss_fn=loss_fn, optimizer=optimizer,
        num_steps=int(num_steps), eval_fn=eval_fn, eval_every=int(eval_every),
        callback=callback, callback_every=check_callback_every(callback, callback_every),
    ).compile()

    def run(params, loss_args: tuple = (), eval_args: tuple = ()) -> FitResult:
        return compiled(params, tuple(loss_args), tuple(eval_args), factor)

    return run


# ------------------------------------------------------- timed (chunked) fit
@functools.partial(jax.jit, static_argnames=("loss_fn", "optimizer"))
def _fit_start_jit(params, loss_args, divergence_factor, *, loss_fn, optimizer):
    value_fn = _bind(loss_fn, loss_args)
    state, value, grad, _ = _init(value_fn, optimizer, params)
    return _carry0(params, state, value, grad, _start_status(value, grad), divergence_factor)


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "optimizer", "length", "eval_fn", "eval_every", "callback",
                              "callback_every", "num_steps")
)
def _fit_chunk_jit(c, active, loss_args, eval_args, *, loss_fn, optimizer, length, eval_fn,
                   eval_every, callback=None, callback_every=1, num_steps=0):
    """``length`` steps of :func:`fit`'s scan from the carry ``c``; only the first ``active`` run."""
    value_fn = _bind(loss_fn, loss_args)
    efn = None if eval_fn is None else (lambda p: eval_fn(p, *eval_args))
    dtype = c.value.dtype
    step = _make_step(value_fn, optimizer, efn, eval_every, None, None,
                      _stores_value_and_grad(c.state), dtype, callback, callback_every, num_steps)
    pad = _pad_record(dtype)

    def body(c, i):
        def skip(c):
            return c, pad
        return lax.cond((c.status == _RUNNING) & (i < active), step, skip, c)

    return lax.scan(body, c, jnp.arange(length, dtype=jnp.int32))


def compile_fit_timed(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    params,
    loss_args: tuple = (),
    eval_args: tuple = (),
    *,
    num_steps: int,
    eval_fn: Optional[Callable[..., jax.Array]] = None,
    eval_every: int = 1,
    divergence_factor: Optional[float] = 10.0,
    chunks: int = 20,
    callback: Optional[Callable[[Progress], None]] = None,
    callback_every: int = 10,
    program_cache=None,
    program_key=None,
):
    """:func:`compile_fit` with measured wall time: the scan runs in ``chunks`` compiled pieces.

    The ``num_steps`` steps are split into ``ceil(num_steps / L)`` chunks of
    ``L = ceil(num_steps / chunks)`` steps (one compiled program, the last
    chunk runs only its remaining steps).  The host waits for each chunk
    (``jax.block_until_ready``) and reads the clock there, so the cost of
    timing is one synchronisation per chunk; inside a chunk nothing changes.
    The steps, the trace and the status are those of :func:`fit`.

    Returns:
      ``run(params, loss_args, eval_args) -> (FitResult, seconds)``:
      ``seconds`` is a float numpy array of length ``num_steps``: the wall
      time from the start of the run (initial value and gradient included) to
      the end of step ``t``, measured at the last step of every chunk and NaN
      at the steps inside a chunk (not measured; never interpolated).
      ``callback`` / ``callback_every``: the progress hook of :func:`fit`.

    ``program_cache``: an optional :class:`mfjax.core.programs.ProgramCache`;
    with it the two compiled programs (start and chunk) are read from disk
    when an earlier process stored them under ``program_key`` (no tracing,
    lowering or compilation) and written there otherwise.  ``program_key``
    (JSON-able) must identify everything static about the run that the
    arguments' shapes do not: ``loss_fn``, ``optimizer`` (with any data it
    closes over) and ``eval_fn``; the sizes, chunking and argument
    signatures are added here.  Not used with a ``callback`` (a host
    callback cannot be stored).
    """
    import numpy as np

    _check_common(num_steps, "num_steps", eval_every)
    if int(chunks) < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    num_steps = int(num_steps)
    loss_fn, loss_args = _as_loss(loss_fn, loss_args)
    factor = _factor(divergence_factor)
    if num_steps == 0:
        run0 = compile_fit(loss_fn, optimizer, params, loss_args, eval_args, num_steps=0, eval_fn=eval_fn,
                           eval_every=eval_every, divergence_factor=divergence_factor)
        return lambda params, loss_args=(), eval_args=(): (run0(params, loss_args, eval_args), np.zeros(0))
    length = math.ceil(num_steps / int(chunks))
    starts = list(range(0, num_steps, length))
    every = check_callback_every(callback, callback_every)

    def lower_start():
        return _fit_start_jit.lower(params, tuple(loss_args), factor, loss_fn=loss_fn, optimizer=optimizer)

    def lower_chunk():
        c0 = start(params, tuple(loss_args), factor)  # one value and gradient: the carry's shapes and shardings
        return _fit_chunk_jit.lower(c0, jnp.int32(0), tuple(loss_args), tuple(eval_args), loss_fn=loss_fn,
                                    optimizer=optimizer, length=length, eval_fn=eval_fn,
                                    eval_every=int(eval_every), callback=callback, callback_every=every,
                                    num_steps=num_steps)

    if program_cache is None or callback is not None:
        start = lower_start().compile()
        chunk = lower_chunk().compile()
    else:  # the carry's signature follows from the start program's key and arguments
        sig = (params, tuple(loss_args), tuple(eval_args), factor)
        start = program_cache.compile(lower_start, ["fit_start", program_key], sig,
                                      call_args=(params, tuple(loss_args), factor))
        carry = start.out_tree.unflatten([0] * start.out_tree.num_leaves)  # the carry's structure
        chunk = program_cache.compile(
            lower_chunk, ["fit_chunk", program_key, length, int(eval_every), num_steps], sig,
            call_args=(carry, 0, tuple(loss_args), tuple(eval_args)))

    def run(params, loss_args: tuple = (), eval_args: tuple = ()):
        loss_args, eval_args = tuple(loss_args), tuple(eval_args)
        seconds = np.full(num_steps, np.nan)
        t0 = time.perf_counter()
        c = start(params, loss_args, factor)
        pieces = []
        for s in starts:
            active = min(length, num_steps - s)
            c, tr = chunk(c, jnp.int32(active), loss_args, eval_args)
            jax.block_until_ready((c, tr))
            seconds[s + active - 1] = time.perf_counter() - t0
            pieces.append(jax.tree.map(lambda x, k=active: np.asarray(x)[:k], tr))  # host copies: no new programs
        trace = jax.tree.map(lambda *xs: jnp.asarray(np.concatenate(xs)), *pieces)
        return _result(c, trace, _final_status(c)), seconds

    return run


# ---------------------------------------------------------------- fit_until
@functools.partial(
    jax.jit, static_argnames=("loss_fn", "optimizer", "max_steps", "eval_fn", "eval_every",
                              "callback", "callback_every")
)
def _fit_until_jit(params, tol, rtol, loss_args, eval_args, divergence_factor=10.0, *, loss_fn,
                   optimizer, max_steps, eval_fn, eval_every, callback=None, callback_every=1):
    value_fn = _bind(loss_fn, loss_args)
    efn = None if eval_fn is None else (lambda p: eval_fn(p, *eval_args))
    state, value, grad, dtype = _init(value_fn, optimizer, params)
    stored = _stores_value_and_grad(state)
    step = _make_step(value_fn, optimizer, efn, eval_every, tol, rtol, stored, dtype,
                      callback, callback_every, max_steps)
    pad = _pad_record(dtype)
    buf = jax.tree.map(lambda x: jnp.full((max_steps,), x, x.dtype), pad)

    start = _start_status(value, grad)  # NONFINITE wins over an (all-NaN) gradient test
    status0 = jnp.where((start == _RUNNING) & (_norm(grad) <= tol), STATUS_CONVERGED,
                        start).astype(jnp.int32)
    c0 = _carry0(params, state, value, grad, status0, divergence_factor)

    def cond(cb):
        c, _ = cb
        return (c.status == _RUNNING) & (c.step < max_steps)

    def body(cb):
        c, b = cb
        i = c.step
        c, rec = step(c)
        b = jax.tree.map(lambda arr, v: arr.at[i].set(v), b, rec)
        return c, b

    c, trace = lax.while_loop(cond, body, (c0, buf))
    return _result(c, trace, _final_status(c))


def fit_until(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    params,
    *,
    max_steps: int,
    tol: float = 1e-6,
    rtol: float = 0.0,
    loss_args: tuple = (),
    eval_fn: Optional[Callable[..., jax.Array]] = None,
    eval_args: tuple = (),
    eval_every: int = 1,
    divergence_factor: Optional[float] = 10.0,
    callback: Optional[Callable[[Progress], None]] = None,
    callback_every: int = 10,
) -> FitResult:
    """Run until ``||grad f|| <= tol`` or ``|f_prev - f| <= rtol |f|``, a failure, or ``max_steps``.

    One compiled ``lax.while_loop``; the trace buffers have length
    ``max_steps`` (NaN / -1 padded after ``num_steps``).  Status 0 when a
    tolerance was met (also when the initial point already meets ``tol``,
    with ``num_steps = 0``), 1 when ``max_steps`` ran out, 2/3 on failure,
    4 when the loss diverged (see :func:`fit`'s ``divergence_factor``).
    ``tol`` and ``rtol`` are traced (changing them does not recompile).

    Args: as :func:`fit`, plus
      max_steps: step budget (static: sizes the trace buffers).
      tol: absolute gradient-norm tolerance.
      rtol: relative decrease tolerance: stop (status 0) when
        ``|f_prev - f| <= rtol |f|`` after an accepted step; 0 disables it.
      callback, callback_every: progress hook, as in :func:`fit`.
    """
    _check_common(max_steps, "max_steps", eval_every)
    check_not_all_zero(params)
    if not tol >= 0 or not rtol >= 0:
        raise ValueError(f"tol and rtol must be >= 0, got tol={tol}, rtol={rtol}")
    loss_fn, loss_args = _as_loss(loss_fn, loss_args)
    return _fit_until_jit(
        params, tol, rtol, tuple(loss_args), tuple(eval_args), _factor(divergence_factor),
        loss_fn=loss_fn,
        optimizer=optimizer, max_steps=int(max_steps), eval_fn=eval_fn,
        eval_every=int(eval_every),
        callback=callback, callback_every=check_callback_every(callback, callback_every),
    )
