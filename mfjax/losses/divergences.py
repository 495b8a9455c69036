"""NMF divergences between the data and a factor model, over observed entries.

For data ``x`` and a prediction ``y = u_i . v_j`` (``Y = U V^T``), summed over
the observed entries ``Omega`` (COO form) or weighted by a 0/1 mask ``W``
(the documents' dense form)::

    L2:  D(X, Y) = sum_Omega (x - y)^2                 (no 1/2: slides eq. 11)
    L1:  D(X, Y) = sum_Omega |x - y|
    KL:  D(X, Y) = sum_Omega x log(x / y) - x + y      (generalized KL / I-divergence)
    IS:  D(X, Y) = sum_Omega x / y - log(x / y) - 1    (Itakura-Saito)

Each is ``>= 0`` with equality iff ``y = x`` on ``Omega`` (for KL and IS this
needs ``x, y >= 0``; they are the maximum-likelihood losses of Gaussian,
Laplace, Poisson and multiplicative-Gamma noise, see the SVD/NMF lecture).

Conventions:

* **L2** is *not* halved: it is exactly the data term of the masked squared
  loss :func:`mfjax.losses.masked.masked_sq_loss` (``l2=0``, ``scale="sum"``),
  which it calls; sklearn's NMF objective is half of it.
* **KL** uses ``0 log 0 = 0`` (so an entry with ``x = 0`` contributes ``y``)
  and floors the prediction at ``eps``: ``y <- max(y, eps)``, so a zero
  prediction gives a large finite value instead of ``inf``/``NaN``.
* **IS** is only defined for ``x > 0``; both ``x`` and ``y`` are floored at
  ``eps`` (document your data: :func:`mfjax.solvers.nmf` refuses zeros for IS).

The floors keep the value and the gradient finite; with ``y >= eps`` and
``x >= eps`` the floored divergence is still ``>= 0`` and zero at ``y = x``.

References:
  Lee, D. D., Seung, H. S. "Algorithms for non-negative matrix
  factorization", NIPS 2001.

  Fevotte, C., Bertin, N., Durrieu, J.-L. "Nonnegative matrix factorization
  with the Itakura-Saito divergence: with application to music analysis",
  Neural Computation 21(3), 2009.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from mfjax.data.ratings import Ratings
from mfjax.core.factors import Factors, predict, predict_dense
from mfjax.losses.masked import masked_sq_loss, masked_sq_loss_dense

__all__ = [
    "DEFAULT_EPS",
    "kl_elementwise",
    "is_elementwise",
    "l2_divergence",
    "l1_divergence",
    "kl_divergence",
    "is_divergence",
    "l2_divergence_dense",
    "l1_divergence_dense",
    "kl_divergence_dense",
    "is_divergence_dense",
    "divergence",
    "divergence_dense",
    "masked_divergence",
    "masked_divergence_dense",
    "l1_elementwise",
]

DEFAULT_EPS = 1e-10
"""Floor applied to predictions (KL, IS) and data (IS)."""


# ------------------------------------------------------------ elementwise


def kl_elementwise(x, y, eps=DEFAULT_EPS) -> jax.Array:
    """``x log(x / y) - x + y`` elementwise, with ``0 log 0 = 0`` and ``y <- max(y, eps)``.

    Equals ``scipy.special.kl_div(x, max(y, eps))`` for ``x >= 0``.
    """
    y = jnp.maximum(y, eps)
    return xlogy(x, x) - xlogy(x, y) - x + y


def is_elementwise(x, y, eps=DEFAULT_EPS) -> jax.Array:
    """``x / y - log(x / y) - 1`` elementwise, with ``x, y <- max(., eps)``."""
    x = jnp.maximum(x, eps)
    y = jnp.maximum(y, eps)
    q = x / y
    return q - jnp.log(q) - 1.0


def l1_elementwise(x, y) -> jax.Array:
    """``|x - y|`` elementwise."""
    return jnp.abs(x - y)


# ------------------------------------------------------------ the masked core
def masked_divergence(elementwise, params: Factors, ratings: Ratings, **kw) -> jax.Array:
    """``sum_Omega d(x_ij, u_i . v_j)`` for an elementwise divergence ``d(x, y, **kw)``.

    The one COO form behind :func:`l1_divergence`, :func:`kl_divergence` and
    :func:`is_divergence`; O(nnz r), no m x n array.
    """
    x = jnp.asarray(ratings.values)
    return jnp.sum(elementwise(x, predict(params, ratings.rows, ratings.cols), **kw))


def masked_divergence_dense(elementwise, params: Factors, X, W, **kw) -> jax.Array:
    """``sum W o d(X, U V^T)``, the documents' dense-mask form of :func:`masked_divergence`.

    Unobserved entries are excluded with ``where`` (not ``W * D``): they may
    hold ``inf`` (e.g. IS with ``x = 0``).
    """
    D = elementwise(X, predict_dense(params), **kw)
    return jnp.sum(jnp.where(W > 0, D, 0.0))


# ------------------------------------------------------------ COO (observed entries)
def l2_divergence(params: Factors, ratings: Ratings) -> jax.Array:
    """``sum_Omega (x - u_i . v_j)^2``: the masked squared loss with ``l2=0`` (not halved)."""
    return masked_sq_loss(params, ratings, 0.0, scale="sum")


def l1_divergence(params: Factors, ratings: Ratings) -> jax.Array:
    """``sum_Omega |x - u_i . v_j|``."""
    return masked_divergence(l1_elementwise, params, ratings)


def kl_divergence(params: Factors, ratings: Ratings, eps=DEFAULT_EPS) -> jax.Array:
    """Generalized KL ``sum_Omega x log(x/y) - x + y`` (see :func:`kl_elementwise`)."""
    return masked_divergence(kl_elementwise, params, ratings, eps=eps)


def is_divergence(params: Factors, ratings: Ratings, eps=DEFAULT_EPS) -> jax.Array:
    """Itakura-Saito ``sum_Omega x/y - log(x/y) - 1`` (see :func:`is_elementwise`)."""
    return masked_divergence(is_elementwise, params, ratings, eps=eps)


# ------------------------------------------------------------ dense mask (documents' form)
def l2_divergence_dense(params: Factors, X, W) -> jax.Array:
    """Dense-mask ``||W o (X - U V^T)||_F^2``: :func:`masked_sq_loss_dense` with ``l2=0``."""
    return masked_sq_loss_dense(params, X, W, 0.0, scale="sum")


def l1_divergence_dense(params: Factors, X, W) -> jax.Array:
    """Dense-mask ``sum W o |X - U V^T|``."""
    return masked_divergence_dense(l1_elementwise, params, X, W)


def kl_divergence_dense(params: Factors, X, W, eps=DEFAULT_EPS) -> jax.Array:
    """Dense-mask generalized KL."""
    return masked_divergence_dense(kl_elementwise, params, X, W, eps=eps)


def is_divergence_dense(params: Factors, X, W, eps=DEFAULT_EPS) -> jax.Array:
    """Dense-mask Itakura-Saito."""
    return masked_divergence_dense(is_elementwise, params, X, W, eps=eps)


_COO = {"l2": l2_divergence, "l1": l1_divergence, "kl": kl_divergence, "is": is_divergence}
_DENSE = {
    "l2": l2_divergence_dense,
    "l1": l1_divergence_dense,
    "kl": kl_divergence_dense,
    "is": is_divergence_dense,
}
_ALIASES = {"frobenius": "l2", "kullback-leibler": "kl", "itakura-saito": "is"}


def _canonical(name: str) -> str:
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in _COO:
        raise ValueError(
            f"unknown divergence {name!r}; choose one of 'l2' ('frobenius'), 'l1', "
            "'kl' ('kullback-leibler'), 'is' ('itakura-saito')"
        )
    return key


def divergence(name: str):
    """The COO divergence ``f(params, ratings) -> scalar`` named ``name``.

    ``name`` is one of ``"l2"`` (alias ``"frobenius"``), ``"l1"``, ``"kl"``
    (``"kullback-leibler"``), ``"is"`` (``"itakura-saito"``).
    """
    return _COO[_canonical(name)]


def divergence_dense(name: str):
    """The dense-mask divergence ``f(params, X, W) -> scalar`` named ``name``."""
    return _DENSE[_canonical(name)]
