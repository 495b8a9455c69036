"""Held-out metrics: RMSE and MAE over observed entries.

``rmse = sqrt(mean_k (x_k - xhat_k)^2)``, ``mae = mean_k |x_k - xhat_k|``
over the entries of a :class:`~mfjax.data.Ratings`.  Predictions can be
clipped to the rating scale (``clip=(1, 5)``) and rounded to the nearest
level (``discrete=True``), the discrete-MC variant of the DMF paper; clipping
is applied before rounding.

The model predictions come from :func:`mfjax.losses.predict`, so ``params``
may be :class:`~mfjax.losses.Factors` (``u_i . v_j``) or
:class:`~mfjax.losses.BiasedFactors` (``mean + b_i + c_j + u_i . v_j``).

References:
  Nguyen, D. M., Tsiligianni, E., Deligiannis, N. "Matrix Factorization via
  Deep Learning", 2018 (RMSE / MAE, continuous and discrete).
"""

from __future__ import annotations

import jax.numpy as jnp

from mfjax.losses.masked import predict

__all__ = ["postprocess", "rmse", "mae", "rmse_from_predictions", "mae_from_predictions"]


def _check_clip(clip):
    if clip is None:
        return
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ValueError(f"clip must be a pair (lo, hi) of numbers, got {clip!r}") from None
    if not lo <= hi:
        raise ValueError(f"clip must satisfy lo <= hi, got {clip!r}")


def postprocess(pred, clip=None, discrete: bool = False):
    """Clip predictions to ``clip=(lo, hi)`` and optionally round to the nearest integer.

    Raises:
      ValueError: ``clip`` is not a pair with ``lo <= hi``.
    """
    _check_clip(clip)
    if clip is not None:
        pred = jnp.clip(pred, clip[0], clip[1])
    if discrete:
        pred = jnp.round(pred)
    return pred


def rmse_from_predictions(pred, values, clip=None, discrete: bool = False):
    """RMSE of given predictions against ``values``."""
    err = postprocess(pred, clip, discrete) - jnp.asarray(values)
    return jnp.sqrt(jnp.mean(err * err))


def mae_from_predictions(pred, values, clip=None, discrete: bool = False):
    """MAE of given predictions against ``values``."""
    err = postprocess(pred, clip, discrete) - jnp.asarray(values)
    return jnp.mean(jnp.abs(err))


def rmse(params, ratings, clip=None, discrete: bool = False):
    """RMSE of the factor model on the entries of ``ratings``.

    Example::

        mfjax.metrics.rmse(result.params, test, clip=(1, 5))
    """
    pred = predict(params, ratings.rows, ratings.cols)
    return rmse_from_predictions(pred, ratings.values, clip, discrete)


def mae(params, ratings, clip=None, discrete: bool = False):
    """MAE of the factor model on the entries of ``ratings``."""
    pred = predict(params, ratings.rows, ratings.cols)
    return mae_from_predictions(pred, ratings.values, clip, discrete)
