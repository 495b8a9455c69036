"""Reporting a comparison: the plain-text table and ``results.json`` / ``results.csv``.

Statuses print as names (``max_steps``, ``linesearch_failed``, ``diverged``,
...; see :class:`mfjax.core.Status`); records of older files that hold an
integer code are named the same way.  Diverged and non-finite runs sort
after the others and show no clipped RMSE; the table says which rating
scale the clipped RMSE used.

>>> print(status_label({"status": 1}), status_label({"status": "converged"}), status_label({"error": "boom"}))
max_steps converged error
"""

from __future__ import annotations

import csv
import io
import pathlib
from typing import Sequence

from mfjax.compare.records import FAILED_STATUSES
from mfjax.core import status_name
from mfjax.store import atomic_write_json, atomic_write_text

__all__ = ["COLUMNS", "status_label", "summarize", "write_tables"]

#: Columns of ``results.csv`` (then ``error``).
COLUMNS = ["name", "status", "final_loss", "train_rmse", "test_rmse", "test_rmse_clipped", "fun_evals",
           "grad_evals", "wall_s", "initial_loss", "reported_status", "rating_scale"]


def status_label(rec: dict) -> str:
    """The status name of a record: ``"error"`` for a failed run, ``"skipped"`` for a skipped one, else its
    (named) ``status``."""
    if rec.get("error"):
        return "error"
    if rec.get("skipped"):
        return "skipped"
    s = rec.get("status")
    if isinstance(s, str):
        return s
    if s is None:
        return "unknown"
    try:
        return status_name(s)
    except ValueError:
        return str(s)


def _order(r: dict) -> tuple:
    """Sort key: finished runs by test RMSE, then diverged / non-finite runs, then failed, then skipped runs."""
    rmse = r.get("test_rmse")
    return (bool(r.get("skipped")), bool(r.get("error")), status_label(r) in FAILED_STATUSES, not isinstance(rmse, (int, float)),
            rmse if isinstance(rmse, (int, float)) else 0.0)


def _num(v, fmt: str, missing: str = "nan") -> str:
    width = fmt.split(".")[0].rstrip("dfgs") or "0"
    return format(v, fmt) if isinstance(v, (int, float)) else format(missing, f">{width}s")


def _scales(results: Sequence[dict]) -> str:
    scales = sorted({tuple(r["rating_scale"]) for r in results if r.get("rating_scale")})
    return ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in scales) or "none (not recorded)"


def summarize(results: Sequence[dict]) -> str:
    """A plain-text table sorted by test RMSE (diverged runs, then failed runs with their error, then skipped
    runs with the reason, last)."""
    head = (f"{'run':34s} {'status':>17s} {'final loss':>12s} {'test RMSE':>9s} {'clipped':>8s} {'f evals':>8s} "
            f"{'g evals':>8s} {'wall s':>7s}")
    lines = [head, "-" * len(head)]
    for r in sorted(results, key=_order):
        if r.get("error"):
            lines.append(f"{r['name']:34s} {'error':>17s}  {r['error'][:60]}")
            continue
        if r.get("skipped"):
            lines.append(f"{r['name']:34s} {'skipped':>17s}  {r['skipped'][:60]}")
            continue
        lines.append(
            f"{r['name']:34s} {status_label(r):>17s} {_num(r.get('final_loss'), '12.5g')} "
            f"{_num(r.get('test_rmse'), '9.4f')} {_num(r.get('test_rmse_clipped'), '8.4f', 'n/a')} "
            f"{r.get('fun_evals', 0):>8d} {r.get('grad_evals', 0):>8d} {_num(r.get('wall_s'), '7.2f')}"
        )
    lines.append(f"clipped: predictions clipped to the rating scale {_scales(results)}; "
                 "n/a for diverged / non-finite runs")
    return "\n".join(lines)


def _cell(rec: dict, column: str):
    if column == "status":
        return status_label(rec)
    v = rec.get(column)
    if column == "rating_scale" and isinstance(v, list):
        return ";".join(format(x, "g") for x in v)
    return v


def write_tables(results: Sequence[dict], out_dir) -> None:
    """``results.json`` (everything, traces included) and ``results.csv`` (summary, status by name; then the
    ``error`` and, for a skipped run, the ``skipped`` reason)."""
    out_dir = pathlib.Path(out_dir)
    atomic_write_json(out_dir / "results.json", list(results))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS + ["error", "skipped"])
    for r in results:
        row = [_cell(r, c) for c in COLUMNS]
        w.writerow(row + [r.get("error"), r.get("skipped")])
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
