"""Progress reports from inside compiled training loops (off by default, free when off).

:func:`mfjax.fit`, :func:`mfjax.fit_until` and the solver driver
(:func:`mfjax.solvers.run`, hence ``als``, ``sgd``, ``nmf``, ...) accept
``callback=`` and ``callback_every=k``.  With a callback the compiled
program calls it on the host (``jax.debug.callback``) after every ``k``-th
step, and once more on the step where the run stops (budget used up, a
failure, divergence), with a :class:`Progress` record.  Without one
(``callback=None``, the default) nothing is traced: the program is the
same as before, so there is no cost at all.

The callback receives host values (Python scalars) and must not call back
into JAX.  Under ``jax.vmap`` it is called once per batch member, and on
every step (a batched ``lax.cond`` evaluates both branches): filter on
``Progress.step`` there.  The
callback is a static argument of the compiled run, hashed like any static
argument: reuse one object (or use the hashable :class:`LogProgress`) to
avoid recompiling; a fresh :class:`TqdmProgress` per run recompiles that
run.  JAX does not write programs that contain host callbacks to the
persistent compilation cache, so runs with a callback compile on every
process start.

>>> import mfjax as mf
>>> seen = []
>>> train = mf.data.synthetic(m=30, n=20, rank=2, density=0.5, seed=0)
>>> res = mf.solvers.als(train, 2, l2=1.0, num_steps=4, callback=seen.append, callback_every=2)
>>> [p.step for p in seen], seen[-1].status
([2, 4], 'max_steps')
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mfjax.core.status import status_name

__all__ = ["Progress", "LogProgress", "TqdmProgress", "emit_progress", "check_callback_every"]

logger = logging.getLogger("mfjax")


class Progress(NamedTuple):
    """One progress report.

    Attributes:
      step: steps done so far (1-based; sweeps / epochs for the solvers).
      num_steps: the step budget.
      loss: training objective after the step (NaN for a rejected step).
      grad_norm: gradient norm (NaN where the run does not compute one).
      eval_metric: held-out metric of this step (NaN unless it was an
        evaluation step: choose ``callback_every`` as a multiple of ``eval_every``).
      status: ``"running"`` while the run goes on, else why it stopped
        (:func:`mfjax.core.status_name`).
    """

    step: Any
    num_steps: int
    loss: Any
    grad_norm: Any
    eval_metric: Any
    status: str


def check_callback_every(callback, every) -> int:
    """``callback_every`` as a positive int (validated only when a callback is given)."""
    if callback is None:
        return 1
    if not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    k = int(every)
    if k < 1:
        raise ValueError(f"callback_every must be >= 1, got {every}")
    return k


def _host(x):
    a = np.asarray(x)
    return a.item() if a.ndim == 0 else a


def emit_progress(callback: Optional[Callable[[Progress], None]], every: int, num_steps: int,
                  step, loss, grad_norm, metric, status, force=False, active=True) -> None:
    """Inside compiled code: report :class:`Progress` when ``step % every == 0``, at the end, or when ``force``.

    ``step`` is the 1-based step count (traced), ``status`` the traced int32
    status code (-1 while running); ``force`` (traced bool) reports a stop;
    nothing is reported while ``active`` (traced bool) is false.
    With ``callback=None`` this traces nothing.
    """
    if callback is None:
        return
    nan = jnp.asarray(jnp.nan, jnp.float32)
    grad_norm = nan if grad_norm is None else grad_norm
    metric = nan if metric is None else metric

    def host(step, loss, grad_norm, metric, status):
        st = np.asarray(status)
        name = status_name(st) if st.ndim == 0 else "batched"
        callback(Progress(_host(step), int(num_steps), _host(loss), _host(grad_norm),
                          _host(metric), name))

    due = ((step % every == 0) | (step == num_steps) | force) & active
    args = (step, loss, grad_norm, metric, jnp.asarray(status, jnp.int32))
    lax.cond(due, lambda a: jax.debug.callback(host, *a), lambda a: None, args)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.6g}"
    return str(x)


class LogProgress(NamedTuple):
    """A callback that logs each report to the ``mfjax`` logger (hashable: no recompilation).

    ``LogProgress("als")`` logs ``als step 10/50 loss 1234.5 held-out 0.912 (running)``
    at ``level`` (default ``logging.INFO``); configure logging to see it
    (``logging.basicConfig(level=logging.INFO)``).
    """

    name: str = "fit"
    level: int = logging.INFO

    def __call__(self, p: Progress) -> None:
        msg = f"{self.name} step {p.step}/{p.num_steps} loss {_fmt(p.loss)}"
        if not (isinstance(p.grad_norm, float) and math.isnan(p.grad_norm)):
            msg += f" |grad| {_fmt(p.grad_norm)}"
        if not (isinstance(p.eval_metric, float) and math.isnan(p.eval_metric)):
            msg += f" held-out {_fmt(p.eval_metric)}"
        logger.log(self.level, "%s (%s)", msg, p.status)


class TqdmProgress:
    """A tqdm bar driven by progress reports (``pip install tqdm``; falls back to logging).

    Use one per run and :meth:`close` it afterwards (or use it as a context
    manager)::

        with TqdmProgress(200, desc="gd+armijo") as bar:
            mf.fit(loss, opt, params, 200, callback=bar, callback_every=10)
    """

    def __init__(self, total: int, desc: str = "fit", **tqdm_kwargs):
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the experiments/test extras
            self._bar = None
            self._log = LogProgress(desc)
        else:
            self._bar = tqdm(total=int(total), desc=desc, unit="step", **tqdm_kwargs)
        self._done = 0

    def __call__(self, p: Progress) -> None:
        if self._bar is None:
            self._log(p)
            return
        step = int(np.max(p.step))
        self._bar.update(max(step - self._done, 0))
        self._done = max(step, self._done)
        post = {"loss": _fmt(float(np.mean(p.loss)))}
        if not np.all(np.isnan(p.eval_metric)):
            post["held-out"] = _fmt(float(np.nanmean(p.eval_metric)))
        if p.status != "running":
            post["status"] = p.status
        self._bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
