"""Argument handling shared by the solver aliases (host side, at the API boundary only).

One vocabulary for ``als``, ``sgd``, ``nmf``, ``svd_complete``: ``num_steps``,
keyword-only ``l2``, ``key``, ``eval_set``.  The old names (``num_sweeps``,
``num_epochs``, ``num_iters``, ``eval``, positional ``l2``) are accepted for
one release with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np

from mfjax.core import Status
from mfjax.solvers.base import SolverResult, check_ratings

__all__ = ["UNSET", "renamed", "eval_alias", "default_changed", "legacy_positional", "check_rank", "check_eval_set",
           "float_dtype", "raise_if_nonfinite", "check_num_steps"]


class _Unset:
    """Marker of an argument that was not passed."""

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET = _Unset()


def _warn(msg: str) -> None:
    warnings.warn(msg, DeprecationWarning, stacklevel=4)


def renamed(fn: str, new: str, new_value, old: str, old_value, default):
    """The value of a renamed keyword: ``new_value``, else ``old_value`` (warns), else ``default``.

    Raises:
      TypeError: both names were passed.
    """
    if old_value is UNSET:
        return default if new_value is UNSET else new_value
    if new_value is not UNSET:
        raise TypeError(f"{fn}() got both {new}= and its deprecated alias {old}=")
    _warn(f"{fn}(..., {old}=) is deprecated; use {new}=")
    return old_value


def eval_alias(fn: str, eval_set, eval_old):
    """``eval_set``, or the deprecated ``eval=`` (it shadows a builtin); ``None`` when neither."""
    return renamed(fn, "eval_set", UNSET if eval_set is None else eval_set, "eval", eval_old, None)


def default_changed(fn: str, name: str, old_default, new_default) -> None:
    """Warn that ``name`` was omitted and its default changes from ``old_default`` to ``new_default``."""
    _warn(f"{fn}() without {name}= uses the old default {name}={old_default}; the default "
          f"becomes {name}={new_default} (the same for every solver) in the next release: "
          f"pass {name}= explicitly")


def legacy_positional(fn: str, args: tuple, names: tuple[str, ...], given: dict) -> dict:
    """Map deprecated positional arguments (after ``train, rank``) to their keyword names.

    ``given`` holds the keyword values (``UNSET`` when not passed); a name
    passed both ways raises ``TypeError``.
    """
    if not args:
        return {}
    if len(args) > len(names):
        raise TypeError(f"{fn}() takes at most {2 + len(names)} positional arguments "
                        f"({2 + len(args)} given)")
    out = dict(zip(names, args))
    for k in out:
        if given.get(k, UNSET) is not UNSET:
            raise TypeError(f"{fn}() got multiple values for argument {k!r}")
    _warn(f"passing {', '.join(out)} to {fn}() by position is deprecated; use keywords")
    return out


def check_rank(rank, shape) -> int:
    m, n = shape
    if not (isinstance(rank, (int, np.integer)) and 1 <= rank <= min(m, n)):
        raise ValueError(f"rank must be an integer in 1..min(m, n) = {min(m, n)} for shape "
                         f"{(m, n)}, got {rank!r}")
    return int(rank)


def check_num_steps(num_steps, old: str) -> int:
    if int(num_steps) < 1:
        raise ValueError(f"num_steps ({old}) must be >= 1, got {num_steps}")
    return int(num_steps)


def check_eval_set(eval_set, train, check=check_ratings):
    """Validate the held-out set (same shape as ``train``); ``None`` passes."""
    if eval_set is None:
        return None
    check(eval_set, "evaluation")
    if tuple(eval_set.shape) != tuple(train.shape):
        raise ValueError(f"eval shape {tuple(eval_set.shape)} differs from train shape "
                         f"{tuple(train.shape)}")
    return eval_set


def float_dtype(train, dtype=None):
    """``dtype``, else the ratings' float dtype (float32 for integer data), canonicalised."""
    if dtype is None:
        dtype = np.asarray(train.values).dtype
        if not np.issubdtype(dtype, np.floating):
            dtype = np.dtype(np.float32)
    return jax.dtypes.canonicalize_dtype(dtype)  # float64 only when x64 is enabled


def raise_if_nonfinite(res: SolverResult, what: str, unit: str, hint: str = "") -> SolverResult:
    """The aliases' contract: a non-finite run raises ``FloatingPointError`` (one host read).

    (Drive the solver with :func:`mfjax.solvers.run` to get the
    ``Status.NONFINITE`` result and the last good parameters instead.)
    """
    if int(res.status) == int(Status.NONFINITE):
        t = int(res.num_steps) - 1
        raise FloatingPointError(f"{what}: training loss became non-finite at {unit} {t}{hint}")
    return res
