"""Optimizers = ``optax.chain(direction_rule, step_rule)``.

Each constructor returns an :class:`optax.GradientTransformationExtraArgs`
that runs in :func:`mfjax.fit` / :func:`mfjax.fit_until` or any optax loop::

    opt = mfjax.optim.heavy_ball(0.9, linesearch=mfjax.linesearch.armijo())
    result = mfjax.fit(loss, opt, params, num_steps=100)

The step rule is passed as an *object* (any optax line search or mfjax step
rule), never as a string.  ``linesearch=None`` picks a documented default:
Armijo backtracking for the first-order rules, the strong-Wolfe zoom search
for BFGS and nonlinear CG (whose updates want Wolfe steps; on the masked MF
loss pass ``linesearch=mfjax.linesearch.exact_mf(ratings, l2)``).

References:
  Beresnev, Klyushev, "Recommendation systems via approximate matrix
  factorization" (slides), 2024, Algorithms 5, 7-12.
"""

from __future__ import annotations

import optax

from mfjax.optim import directions as _d

__all__ = ["gd", "heavy_ball", "nesterov", "adagrad", "rmsprop", "adam", "bfgs", "cg", "make_optimizer"]


def _default(name: str):
    import mfjax.linesearch as ls  # lazy: the step rules live in their own package

    if name in ("bfgs", "cg"):
        return ls.strong_wolfe_zoom()
    return ls.armijo()


def make_optimizer(direction_rule, linesearch) -> optax.GradientTransformationExtraArgs:
    """``optax.chain(direction_rule, linesearch)`` with type checks.

    Raises:
      TypeError: ``linesearch`` (or ``direction_rule``) is not an optax
        transformation, e.g. a string.
    """
    for what, obj in (("direction_rule", direction_rule), ("linesearch", linesearch)):
        if not (hasattr(obj, "init") and hasattr(obj, "update")):
            raise TypeError(
                f"{what} must be an optax GradientTransformation object (e.g. "
                f"mfjax.linesearch.armijo()), got {obj!r}"
            )
    return optax.chain(direction_rule, linesearch)


def _build(name, rule, linesearch):
    return make_optimizer(rule, _default(name) if linesearch is None else linesearch)


def gd(*, linesearch=None):
    """Gradient descent (Algorithm 5): ``p = -g``, step from ``linesearch``."""
    return _build("gd", _d.gd_direction(), linesearch)


def heavy_ball(beta: float = 0.9, *, linesearch=None):
    """Heavy ball (Algorithm 7): ``b_t = beta b_{t-1} + g_t``, ``p = -b_t``."""
    return _build("heavy_ball", _d.heavy_ball_direction(beta), linesearch)


def nesterov(beta: float = 0.9, *, linesearch=None):
    """Nesterov (Algorithm 8): ``p = -(g_t + beta b_t)``."""
    return _build("nesterov", _d.nesterov_direction(beta), linesearch)


def adagrad(alpha: float = 1.0, eps: float = 1e-8, *, linesearch=None):
    """AdaGrad with accumulator decay (Algorithm 9): ``p = -g / (sqrt(s) + eps)``."""
    return _build("adagrad", _d.adagrad_direction(alpha, eps), linesearch)


def rmsprop(alpha: float = 0.9, eps: float = 1e-8, *, linesearch=None):
    """RMSProp (Algorithm 10), eps outside the root."""
    return _build("rmsprop", _d.rmsprop_direction(alpha, eps), linesearch)


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, linesearch=None):
    """Adam (Algorithm 11), bias-corrected."""
    return _build("adam", _d.adam_direction(b1, b2, eps), linesearch)


def bfgs(curvature_eps: float = 1e-8, scale_init: bool = True, *, memory: int | None = None, linesearch=None):
    """BFGS (Algorithm 12) with a curvature safeguard: dense ``H``, or the compact representation with room for
    ``memory`` pairs; see :func:`bfgs_direction`."""
    return _build("bfgs", _d.bfgs_direction(curvature_eps, scale_init, memory), linesearch)


def cg(beta: str = "pr+", restart_every: int | None = None, *, preconditioner=None,
       linesearch=None):
    """Nonlinear conjugate gradients (PR+ by default); see :func:`cg_direction`.

    Example (the exact step on the masked MF loss; optionally preconditioned
    by the Gauss-Newton diagonal, :func:`mfjax.optim.mf_preconditioner`)::

        opt = mfjax.optim.cg(linesearch=mfjax.linesearch.exact_mf(train, l2=2.0))
        opt = mfjax.optim.cg(preconditioner=mfjax.optim.mf_preconditioner(train, 2.0),
                             linesearch=mfjax.linesearch.exact_mf(train, l2=2.0))
    """
    return _build("cg", _d.cg_direction(beta, restart_every, preconditioner=preconditioner),
                  linesearch)
