"""Argument checks shared by losses, objective, step rules and solvers (one rule each)."""

from __future__ import annotations

import jax
import numpy as np

from mfjax.core.factors import Factors

__all__ = ["check_l2", "check_not_all_zero"]


def check_l2(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` (a regularisation weight) is finite and ``>= 0``.

    Traced values (inside ``jit``) and ``None`` are not checked.  Arrays are
    checked element-wise (per-row weights).

    >>> check_l2("l2", 0.5)
    >>> check_l2("l2", -1.0)
    Traceback (most recent call last):
    ...
    ValueError: l2 (lambda) must be >= 0, got -1.0
    """
    if value is None or isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    if not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"{name} (lambda) must be a number, got {value!r}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} (lambda) must be finite and >= 0, got {value}")
    if np.any(v < 0):
        raise ValueError(f"{name} (lambda) must be >= 0, got {value}")


def check_not_all_zero(params, name: str = "initial factors") -> None:
    """Raise ``ValueError`` if ``params`` are plain factors with ``U = 0`` and ``V = 0``.

    ``U = V = 0`` is a stationary point of every masked MF loss (the
    gradients ``-2 s E V + 2 l2 U`` and ``-2 s E^T U + 2 l2 V`` both vanish)
    and a fixed point of ALS (a ridge solve against ``V = 0`` gives
    ``U = 0``) and of SGD: a run started there reports ``converged`` after
    0 steps or never moves.  Only concrete :class:`Factors` are checked;
    :class:`BiasedFactors` with ``U = V = 0`` are a biases-only start (the
    biases learn, the interaction stays 0, which is sometimes wanted), and
    other pytrees and traced values pass.

    >>> from mfjax.core.factors import Factors
    >>> check_not_all_zero(Factors(np.zeros((3, 2)), np.zeros((4, 2))))
    Traceback (most recent call last):
    ...
    ValueError: initial factors: all zero (U = 0 and V = 0), a stationary point of the MF loss that no gradient method, ALS or SGD leaves; initialise with mfjax.init_factors(key, ratings.shape, rank)
    """
    if type(params) is not Factors:
        return
    U, V = params.U, params.V
    if isinstance(U, jax.core.Tracer) or isinstance(V, jax.core.Tracer):
        return
    if np.size(U) and not np.any(np.asarray(U)) and not np.any(np.asarray(V)):
        raise ValueError(f"{name}: all zero (U = 0 and V = 0), a stationary point of the MF "
                         "loss that no gradient method, ALS or SGD leaves; initialise with "
                         "mfjax.init_factors(key, ratings.shape, rank)")
