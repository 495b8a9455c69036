"""Learned quantization of continuous predictions: the smooth quantizer of DMF-D.

Levels ``I_1 < ... < I_d`` with constant spacing ``Delta`` and inner
boundaries ``b_1..b_{d-1}`` (the paper's ``b_0``/``b_d`` are taken as
``-inf``/``+inf`` so every real input is quantized).  The hard quantizer
(paper eq. 3)::

    Q_b(x) = I_v + Delta * H(x - b_v)      for q_v <= x < q_{v+1},

with ``q = [-inf, I_2, ..., I_{d-1}, +inf]``, and its smooth surrogate
(eq. 4), the heaviside ``H`` replaced by a logistic of slope ``lam``::

    G_{lam,b}(x) = I_v + Delta * sigmoid(lam (x - b_v))   for q_v <= x < q_{v+1}.

``G -> Q_b`` pointwise as ``lam -> inf`` (away from ``x = b_v``).  When every
``b_v`` lies in ``(I_v, I_{v+1})`` (e.g. the uniform quantizer,
``b_v = (I_v + I_{v+1}) / 2``) eq. 3 equals the interval form eq. 2
(``Q_b(x) = I_v`` for ``b_{v-1} <= x < b_v``), and with the uniform
boundaries it is rounding to the nearest level.

Everything here is plain JAX and works on any model's predictions: DMF-D uses
:func:`smooth_quantize` inside its training loss, and :func:`fit_boundaries`
learns ``b`` post hoc for a frozen model (e.g. ALS) on a validation set.

The logistic is evaluated as ``jax.nn.sigmoid(clip(lam (x - b), -80, 80))``:
no overflow to ``inf`` for any finite ``lam`` (tested at ``lam = 1e8``), and
the gradient ``lam sigmoid'(.)`` stays finite.

References:
  D. M. Nguyen, E. Tsiligianni, N. Deligiannis, "Matrix Factorization via Deep
  Learning", 2018 (eqs. 2-5); "Learning discrete matrix factorization models",
  IEEE Signal Processing Letters 25(5), 2018.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "check_levels",
    "check_boundaries",
    "uniform_boundaries",
    "quantize_hard",
    "smooth_quantize",
    "round_to_levels",
    "boundary_penalty",
    "exponential_lambda",
    "FitBoundariesResult",
    "fit_boundaries",
]

_ZMAX = 80.0  # |lam (x - b)| beyond this the logistic is 0/1 to float32 precision


def check_levels(levels) -> np.ndarray:
    """Validate quantization levels: >= 2, strictly increasing, equally spaced.

    Returns them as a float numpy array.  Raises ``ValueError`` naming the values.
    """
    lv = np.asarray(levels, dtype=np.float64).reshape(-1)
    if lv.size < 2:
        raise ValueError(f"need at least 2 quantization levels, got {lv.tolist()}")
    d = np.diff(lv)
    if np.any(d <= 0):
        raise ValueError(f"quantization levels must be strictly increasing, got {lv.tolist()}")
    if not np.allclose(d, d[0], rtol=1e-6, atol=1e-9):
        raise ValueError(
            f"quantization levels must be equally spaced (eq. 3 assumes a constant Delta), got {lv.tolist()}"
        )
    return lv


def uniform_boundaries(levels) -> np.ndarray:
    """The uniform quantizer's inner boundaries ``b_v = (I_v + I_{v+1}) / 2`` (``d - 1`` values)."""
    lv = check_levels(levels)
    return (lv[:-1] + lv[1:]) / 2.0


def _interval(x, levels):
    """Index ``v`` in ``0..d-2`` of the interval ``[q_v, q_{v+1})`` holding ``x``."""
    inner = levels[1:-1]
    v = jnp.searchsorted(inner, x, side="right")
    return jnp.clip(v, 0, levels.shape[0] - 2)


def check_boundaries(boundaries) -> None:
    """Refuse concrete boundaries that are not finite and non-decreasing.

    Eq. 3 only equals the interval form (eq. 2) for ordered boundaries; out of
    order ones would silently quantize to other levels, so they raise
    (``ValueError`` naming the first pair out of order) rather than being
    sorted behind the caller's back.  Traced boundaries (inside ``jit``, e.g.
    while :func:`fit_boundaries` learns them) are not checked.

    >>> check_boundaries([1.5, 2.5, 3.5, 4.5])
    >>> check_boundaries([1.5, 3.5, 2.5, 4.5])
    Traceback (most recent call last):
      ...
    ValueError: quantizer boundaries must be non-decreasing, got [1.5, 3.5, 2.5, 4.5] (b_2 = 3.5 > b_3 = 2.5); sort them, or start from uniform_boundaries(levels)
    """
    if isinstance(boundaries, jax.core.Tracer):
        return
    b = np.asarray(boundaries, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(b)):
        raise ValueError(f"quantizer boundaries must be finite, got {b.tolist()}")
    drops = np.flatnonzero(np.diff(b) < 0)
    if drops.size:
        v = int(drops[0])
        raise ValueError(
            f"quantizer boundaries must be non-decreasing, got {b.tolist()} "
            f"(b_{v + 1} = {b[v]:g} > b_{v + 2} = {b[v + 1]:g}); sort them, or start from "
            "uniform_boundaries(levels)")


def _prep(x, boundaries, levels):
    levels_np = check_levels(levels)
    levels = jnp.asarray(levels_np, dtype=jnp.result_type(x, jnp.float32))
    b = jnp.asarray(boundaries, dtype=levels.dtype)
    if b.shape != (levels.shape[0] - 1,):
        raise ValueError(
            f"boundaries must have d-1 = {levels.shape[0] - 1} entries for {levels.shape[0]} levels, "
            f"got shape {b.shape}"
        )
    check_boundaries(boundaries)
    delta = float(levels_np[1] - levels_np[0])
    return jnp.asarray(x, levels.dtype), b, levels, delta


def quantize_hard(x, boundaries, levels):
    """The hard quantizer ``Q_b`` (eq. 3): ``I_v + Delta H(x - b_v)`` on interval ``v``.

    Args:
      x: predictions, any shape.
      boundaries: inner boundaries ``b_1..b_{d-1}``, shape (d-1,).
      levels: equally spaced levels ``I_1..I_d``.
    Returns:
      array like ``x`` with values in ``levels``.

    >>> quantize_hard(jnp.array([1.2, 2.6, 4.9]), jnp.array([1.5, 2.5, 3.5, 4.5]), (1, 2, 3, 4, 5)).tolist()
    [1.0, 3.0, 5.0]
    """
    x, b, levels, delta = _prep(x, boundaries, levels)
    v = _interval(x, levels)
    return levels[v] + delta * (x >= b[v]).astype(x.dtype)


def smooth_quantize(x, boundaries, levels, lam):
    """The smooth quantizer ``G_{lam,b}`` (eq. 4), differentiable in ``x`` and ``b``.

    ``G(x) = I_v + Delta sigmoid(lam (x - b_v))`` on interval ``v``; the
    logistic argument is clipped to ``[-80, 80]`` so any finite ``lam`` is safe.
    At ``x = b_v`` it is half-way between the levels; as ``lam -> inf`` it
    tends to :func:`quantize_hard`.

    >>> b, lv = jnp.array([1.5, 2.5, 3.5, 4.5]), (1, 2, 3, 4, 5)
    >>> smooth_quantize(jnp.array([2.5, 2.6]), b, lv, 1e4).tolist()
    [2.5, 3.0]
    """
    x, b, levels, delta = _prep(x, boundaries, levels)
    v = _interval(x, levels)
    z = jnp.clip(jnp.asarray(lam, x.dtype) * (x - b[v]), -_ZMAX, _ZMAX)
    return levels[v] + delta * jax.nn.sigmoid(z)


def round_to_levels(x, levels):
    """Rounding baseline: the nearest level (``Q_b`` with the uniform boundaries), clipped to the range.

    >>> round_to_levels(jnp.array([0.2, 3.4, 3.6, 7.0]), (1, 2, 3, 4, 5)).tolist()
    [1.0, 3.0, 4.0, 5.0]
    """
    return quantize_hard(x, uniform_boundaries(levels), levels)


def boundary_penalty(boundaries, reference, reduce: str = "mean"):
    """``||b - b~||^2`` (eq. 5; ``reduce="sum"``) or its mean (the authors' code, ``"mean"``)."""
    d = jnp.asarray(boundaries) - jnp.asarray(reference, dtype=jnp.asarray(boundaries).dtype)
    if reduce == "mean":
        return jnp.mean(d * d)
    if reduce == "sum":
        return jnp.sum(d * d)
    raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")


def exponential_lambda(lam0: float = 0.1, growth: float = 1.015, every: int = 1,
                       lam_max: float = 1e30) -> Callable:
    """Slope schedule ``lam(t) = min(lam0 * growth ** floor(t / every), lam_max)``.

    The authors start at 0.1 and multiply by 1.015 once per (their) epoch.
    """
    if lam0 <= 0 or growth < 1 or every < 1:
        raise ValueError(
            f"need lam0 > 0, growth >= 1, every >= 1; got lam0={lam0}, growth={growth}, every={every}"
        )
    log_g = float(np.log(growth))
    log_max = float(np.log(lam_max))

    def schedule(t):
        k = jnp.floor(jnp.asarray(t, jnp.float32) / every)
        return jnp.exp(jnp.minimum(np.log(lam0) + k * log_g, log_max))

    return schedule


class FitBoundariesResult(NamedTuple):
    """What :func:`fit_boundaries` returns: the selected boundaries and the per-step traces."""

    boundaries: jax.Array  # learned inner boundaries (d-1,): the iterate with the lowest hard MSE
    loss: jax.Array        # smooth objective per step (steps,)
    hard_mse: jax.Array    # mean((Q_b(pred) - target)^2) of the iterate before each step (steps,)


def fit_boundaries(pred, target, levels, *, init=None, steps: int = 500, lam0: float = 0.5,
                   lam_end: float = 1e4, gamma2: float = 0.1, learning_rate: float = 0.01,
                   penalty_reduce: str = "mean") -> FitBoundariesResult:
    """Learn quantizer boundaries for fixed continuous predictions (post-hoc DMF-D quantizer).

    Minimises ``mean((G_{lam_t,b}(pred) - target)^2) + gamma2 pen(b - b~)`` over
    ``b`` with Adam while ``lam_t`` grows geometrically from ``lam0`` to
    ``lam_end``; ``b~`` is the uniform quantizer.  The iterate with the
    lowest *hard* error ``mean((Q_b(pred) - target)^2)`` is returned (the
    start, ``init`` or uniform, included), so the fitted quantizer is never
    worse than its start on the fitting data.  Fit on a validation split,
    then apply :func:`quantize_hard` to the test predictions.  One
    ``lax.scan``, compiled once.
    """
    lv = check_levels(levels)
    b_ref = jnp.asarray(uniform_boundaries(lv), jnp.float32)
    if init is not None:
        check_boundaries(init)
    b0 = b_ref if init is None else jnp.asarray(init, jnp.float32)
    pred = jnp.asarray(pred, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ratio = (lam_end / lam0) ** (1.0 / max(steps - 1, 1))
    opt = optax.adam(learning_rate)

    def objective(b, lam):
        g = smooth_quantize(pred, b, lv, lam)
        return jnp.mean((g - target) ** 2) + gamma2 * boundary_penalty(b, b_ref, penalty_reduce)

    def hard(b):
        return jnp.mean((quantize_hard(pred, b, lv) - target) ** 2)

    def body(carry, t):
        b, s, best_b, best = carry
        h = hard(b)
        better = h < best
        best_b = jnp.where(better, b, best_b)
        best = jnp.where(better, h, best)
        lam = lam0 * ratio ** t.astype(jnp.float32)
        val, g = jax.value_and_grad(objective)(b, lam)
        upd, s = opt.update(g, s, b)
        return (optax.apply_updates(b, upd), s, best_b, best), (val, h)

    def run(b):
        carry = (b, opt.init(b), b, jnp.asarray(jnp.inf, jnp.float32))
        (b, _, best_b, best), (losses, hards) = jax.lax.scan(body, carry, jnp.arange(steps))
        h = hard(b)
        best_b = jnp.where(h < best, b, best_b)
        return best_b, losses, hards

    best_b, losses, hards = jax.jit(run)(b0)
    return FitBoundariesResult(best_b, losses, hards)
