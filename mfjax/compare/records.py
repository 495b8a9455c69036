"""What a comparison record must hold, and the statuses it may claim.

A run's record (``out_dir/runs/<name>.json``) is reused on resume only when
:func:`validate_record` accepts it (after the store's own checks: UTF-8,
complete JSON object, content checksum, configuration hash, data checksum;
see :func:`mfjax.store.inspect_record`).  A failed run (``error`` set) is
never reused: it is retried.

Divergence is judged on the compare side too, whatever the fit reported
(:func:`classify_status`): with :math:`f_0` the objective at the common
initialisation and :math:`f_T` at the final parameters, a run is
``diverged`` when

.. math::  f_T \\notin \\mathbb{R} \\quad\\text{or}\\quad f_T > c \\cdot \\max(|f_0|, \\epsilon),
           \\qquad c = 10 \\ (:data:`DIVERGENCE_FACTOR`),

unless the fit already reported ``diverged`` or ``nonfinite``.  A diverged
or non-finite run gets no clipped RMSE (``None``): clipping hides how far
off its predictions are.

>>> classify_status("max_steps", 100.0, 3.0e7)
'diverged'
>>> classify_status("max_steps", 100.0, float("nan"))
'diverged'
>>> classify_status("converged", 100.0, 5.0)
'converged'
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

from mfjax.core import STATUS_NAMES, Status

__all__ = ["DIVERGENCE_FACTOR", "REQUIRED_FIELDS", "FAILED_STATUSES", "classify_status", "validate_record",
           "error_record"]

#: A run whose final objective exceeds this many times its initial one is ``diverged``.
DIVERGENCE_FACTOR = 10.0

#: Fields every finished run's record carries (a stored record without one is recomputed).
REQUIRED_FIELDS = ("name", "spec", "status", "status_code", "initial_loss", "final_loss", "train_rmse",
                   "test_rmse", "test_rmse_clipped", "rating_scale", "fun_evals", "grad_evals", "wall_s",
                   "compile_s", "trace", "data_checksum", "config_hash")

#: Statuses whose runs get no clipped RMSE.
FAILED_STATUSES = (str(Status.DIVERGED), str(Status.NONFINITE))

_NUMERIC = ("initial_loss", "final_loss", "train_rmse", "test_rmse", "test_rmse_clipped", "wall_s", "compile_s")


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(float(x))


def classify_status(reported: str, initial_loss, final_loss, factor: float = DIVERGENCE_FACTOR) -> str:
    """The status a comparison shows: ``reported`` (a status name) unless the run diverged.

    Args:
      reported: the fit's / solver's status name.
      initial_loss: objective at the initialisation (``None`` / NaN: unknown).
      final_loss: objective at the final parameters (``None`` / NaN / inf: non-finite).
      factor: the divergence factor ``c``.

    Returns:
      ``"diverged"`` when the final objective is non-finite or above
      ``c * max(|f0|, tiny)``; ``reported`` otherwise, and always when the
      fit already said ``diverged`` or ``nonfinite``.
    """
    if reported in FAILED_STATUSES:
        return reported
    if not _finite(final_loss):
        return str(Status.DIVERGED)
    if _finite(initial_loss) and float(final_loss) > factor * max(abs(float(initial_loss)), 1e-30):
        return str(Status.DIVERGED)
    return reported


def validate_record(rec: dict, name: str | None = None) -> str | None:
    """Why a stored run record must not be reused (``None``: it may).

    Checks: the run's ``name``, every :data:`REQUIRED_FIELDS` field, a known
    status name, numbers (or ``None`` for non-finite values) where numbers
    belong, a trace holding ``loss`` and ``time_s`` (measured step times) lists, and a clipped RMSE only for a
    run that did not diverge.
    """
    if name is not None and rec.get("name") != name:
        return f"holds run {rec.get('name')!r}, not {name!r}"
    missing = [f for f in REQUIRED_FIELDS if f not in rec]
    if missing:
        return f"lacks {', '.join(missing)}"
    if rec["status"] not in STATUS_NAMES:
        return f"unknown status {rec['status']!r}"
    bad = [f for f in _NUMERIC if rec[f] is not None and not isinstance(rec[f], numbers.Real)]
    if bad:
        return f"non-numeric {', '.join(bad)}"
    trace = rec["trace"]
    if not isinstance(trace, dict) or not isinstance(trace.get("loss"), list):
        return "has no loss trace"
    if not isinstance(trace.get("time_s"), list):
        return "has no measured step times (trace time_s)"
    if rec["status"] in FAILED_STATUSES and rec["test_rmse_clipped"] is not None:
        return f"a {rec['status']} run with a clipped RMSE"
    return None


def error_record(spec, exc: BaseException, log: Callable[[str], None]) -> dict:
    """The record of a run that raised (retried on the next resume)."""
    rec = {"name": spec.name, "spec": dataclasses.asdict(spec), "status": "error", "status_code": -1,
           "error": f"{type(exc).__name__}: {exc}", "trace": {}}
    log(f"run {spec.name} failed: {rec['error']}")
    return rec
