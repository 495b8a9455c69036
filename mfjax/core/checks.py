"""Argument checks shared by losses, objective, step rules and solvers (one rule each)."""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["check_l2"]


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
