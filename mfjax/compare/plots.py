"""Plots of a comparison (matplotlib's Agg backend, imported on first use).

Five PNGs in the output directory: loss against iteration, wall time and
function evaluations, held-out RMSE and step size against iteration.
"""

from __future__ import annotations

import io
import pathlib
from typing import Sequence

import numpy as np

from mfjax.store import atomic_write_bytes

__all__ = ["plot_results"]


def plot_results(results: Sequence[dict], out_dir) -> list[pathlib.Path]:
    """PNG plots: loss vs iteration / wall time / function evaluations, held-out RMSE, step sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    ok = [r for r in results if not r.get("error") and r.get("trace")]
    panels = [
        ("loss_vs_iter.png", "iteration", None, "loss", True),
        ("loss_vs_time.png", "wall time (s; run time spread evenly over the steps)", "time", "loss", True),
        ("loss_vs_evals.png", "function evaluations", "fun_evals", "loss", True),
        ("test_rmse.png", "iteration", None, "eval_rmse", False),
        ("step_size.png", "iteration", None, "step_size", True),
    ]
    paths = []
    for fname, xlabel, xkey, ykey, logy in panels:
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in ok:
            y = np.asarray([np.nan if v is None else v for v in r["trace"].get(ykey, [])], dtype=float)
            if y.size == 0 or not np.isfinite(y).any():
                continue
            if xkey is None:
                x = np.arange(1, y.size + 1)
            elif xkey == "time":
                x = np.linspace(r["wall_s"] / y.size, r["wall_s"], y.size)
            else:
                x = np.asarray(r["trace"][xkey], dtype=float)
            m = np.isfinite(y)
            ax.plot(x[m], y[m], label=r["name"], lw=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ykey)
        if logy:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        paths.append(atomic_write_bytes(out_dir / fname, buf.getvalue()))
    return paths
