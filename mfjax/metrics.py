"""Held-out metrics: RMSE and MAE over observed entries.

``rmse = sqrt(mean_k (x_k - xhat_k)^2)``, ``mae = mean_k |x_k - xhat_k|``
over the entries of a :class:`~mfjax.data.Ratings`.  Predictions can be
clipped to the rating scale (``clip=(1, 5)``) and rounded to the nearest
level (``discrete=True``), the discrete-MC variant of the DMF paper; clipping
is applied before rounding.

Bad inputs (checked on the static shapes, so also under ``jit``): no entries
at all (an empty test split) raise ``ValueError`` instead of returning the
NaN of an empty mean; predictions and values of different shapes raise
instead of broadcasting.  NaN predictions give a NaN metric (clipping and
rounding keep NaN): a broken model is never scored on the entries where it
happens to be finite.

The model predictions come from :func:`mfjax.losses.predict`, so ``params``
may be :class:`~mfjax.losses.Factors` (``u_i . v_j``) or
:class:`~mfjax.losses.BiasedFactors` (``mean + b_i + c_j + u_i . v_j``).

References:
  Nguyen, D. M., Tsiligianni, E., Deligiannis, N. "Matrix Factorization via
  Deep Learning", 2018 (RMSE / MAE, continuous and discrete).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mfjax.core.factors import predict

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


def _check_entries(pred, values, weights) -> None:
    """Refuse empty or mismatched inputs (static shapes: works under ``jit``)."""
    ps, vs = jnp.shape(pred), jnp.shape(values)
    if ps != vs:
        raise ValueError(f"predictions of shape {ps} and values of shape {vs} differ; "
                         "pass one prediction per rated entry")
    if weights is not None and jnp.shape(weights) != vs:
        raise ValueError(f"weights of shape {jnp.shape(weights)} do not match values of shape {vs}")
    if int(np.prod(vs)) == 0:
        raise ValueError("no entries to score (the ratings are empty, e.g. a zero-size split): "
                         "RMSE / MAE are undefined")


def _mean(a, weights):
    if weights is None:
        return jnp.mean(a)
    w = jnp.asarray(weights, a.dtype)
    return jnp.sum(w * a) / jnp.sum(w)


def rmse_from_predictions(pred, values, clip=None, discrete: bool = False, weights=None):
    r"""RMSE of given predictions against ``values`` (``weights``: optional entry weights).

    .. math:: \sqrt{\textstyle\sum_k w_k (\hat x_k - x_k)^2 / \sum_k w_k}

    Raises:
      ValueError: no entries, or ``pred`` / ``values`` / ``weights`` of
        different shapes.  A NaN prediction gives NaN (see the module).

    >>> float(rmse_from_predictions(jnp.array([1.0, 3.0]), jnp.array([2.0, 3.0])))  # doctest: +ELLIPSIS
    0.7071067...
    >>> float(rmse_from_predictions(jnp.array([jnp.nan, 3.0]), jnp.array([2.0, 3.0]), clip=(1, 5)))
    nan
    """
    _check_entries(pred, values, weights)
    err = postprocess(pred, clip, discrete) - jnp.asarray(values)
    return jnp.sqrt(_mean(err * err, weights))


def mae_from_predictions(pred, values, clip=None, discrete: bool = False, weights=None):
    """MAE of given predictions against ``values`` (``weights``: optional entry weights).

    Raises:
      ValueError: as :func:`rmse_from_predictions` (no entries, shapes differ).
    """
    _check_entries(pred, values, weights)
    err = postprocess(pred, clip, discrete) - jnp.asarray(values)
    return _mean(jnp.abs(err), weights)


def rmse(params, ratings, clip=None, discrete: bool = False):
    """RMSE of the factor model on the entries of ``ratings``.

    ``ratings`` may also be an :class:`~mfjax.objective.MFObjective` (its
    entry weights then weight the mean, so padding entries do not count).

    Example::

        mfjax.metrics.rmse(result.params, test, clip=(1, 5))
    """
    pred = predict(params, ratings.rows, ratings.cols)
    return rmse_from_predictions(pred, ratings.values, clip, discrete,
                                 getattr(ratings, "weights", None))


def mae(params, ratings, clip=None, discrete: bool = False):
    """MAE of the factor model on the entries of ``ratings`` (or an objective's, weighted)."""
    pred = predict(params, ratings.rows, ratings.cols)
    return mae_from_predictions(pred, ratings.values, clip, discrete,
                                getattr(ratings, "weights", None))
