r"""Figures of a comparison: one style per run, suboptimality on log-y, measured time.

Used by ``mfjax compare`` (:func:`plot_results` writes PNG and PDF files) and
by the notebooks (:func:`figure` returns a :class:`matplotlib.figure.Figure`;
in Jupyter it renders inline).  Matplotlib is imported on first use and no
backend is selected: figures are built with :class:`matplotlib.figure.Figure`
directly (no pyplot state), so the module works headless and inline alike.

**Styles** (:func:`base_style`, :func:`assign_styles`).  A run's style is a
function of its *name* only, never of its position in a list:

- the *family* (the direction rule of ``gd+armijo``, ``optax-lbfgs``,
  ``solver-als``; :func:`run_family`) picks the colour and the marker:
  family number ``i`` in :data:`FAMILIES` gets colour ``PALETTE[i % 7]``
  (Okabe & Ito's colour-blind-safe palette without its yellow) and marker
  ``MARKERS[i // 7]``; an unknown family gets a number from a SHA-256 of
  its name (stable across processes, unlike ``hash``);
- the *step rule* (``armijo``; :func:`run_step`) picks the line style:
  number ``k`` in :data:`STEPS` (``None`` -- optax baselines and solvers --
  is solid); a step rule with options (``inverse_lipschitz(growth=2)``) or
  an unknown one gets ``k = 1 + SHA-256(name) % 9``.  :func:`linestyle`
  is injective over all ``k >= 0``: ten hand-made dash patterns, then
  ``(k - 7, 1.5, 1, 1.5)`` dash-dots of growing length.

Every pair of registered names (:data:`FAMILIES` x :data:`STEPS`) has its
own (colour, marker, line style).  Within one figure :func:`assign_styles`
guarantees uniqueness for any names, however many: the names are taken in
sorted order, each keeps its base style unless an earlier name holds it,
and a colliding name keeps its family's colour and marker and takes the
next free hand-made line style after its own (``k + 1, k + 2, ...`` modulo
10), then the first free generated one ``k = 10, 11, ...`` (infinitely
many, so never a repeat).  A run therefore has the same style in every figure unless a
figure also holds an alphabetically earlier name that collides with it.

**y axis**: ``f - f*`` on a log scale (:func:`suboptimality`), ``f*`` the best
loss seen over all runs of the comparison minus ``EPS_REL * |best|``, or a
known optimum; ``relative=True`` plots ``(f - f*) / |f*|``.

**Time axis**: the *measured* wall time of each run's steps (the record's
``trace["time_s"]``: :func:`mfjax.loop.compile_fit_timed` and
:func:`mfjax.solvers.time_steps` read the clock at the end of each timed
chunk of the compiled scan).  Points are drawn only where a time was
measured; nothing is interpolated or spread over the steps.

**Solvers** (ALS sweeps, SGD epochs, NMF updates) are drawn against their
own unit on their own panel, never on the optimizers' iteration axis.

**In parallel** (:func:`plot_pool`, ``plot_results(..., executor=pool)``).
Matplotlib's text layout makes the five figures cost seconds on one core;
``mfjax compare`` starts a pool of worker processes (spawned, never forked:
the parent runs JAX's threads) when it begins; at the lowest CPU priority,
in the background while the runs compute, each worker imports matplotlib and
this module -- not JAX, nor the mfjax package -- and renders a tiny figure,
then waits idle for tasks.
:func:`plot_results` then sends one task per figure (:func:`render_figure`:
one figure kind in every format, written atomically) with the styles of the
parent's :func:`assign_styles`, so the files are those of the serial path.
A pool that cannot take or finish a task (shut down, a worker died, a
pickling error) costs nothing but time: the figures it did not write are
rendered in the calling process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import io
import logging
import math
import os
import pathlib
import sys
import time
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from mfjax.store import atomic_write_bytes

__all__ = ["PALETTE", "MARKERS", "FAMILIES", "STEPS", "EPS_REL", "FIGURES", "Style", "run_family", "run_step",
           "linestyle", "base_style", "assign_styles", "solver_unit", "is_solver", "reference_loss",
           "suboptimality", "problem_title", "fit_record", "figure", "mean_predictor_rmse", "plot_results",
           "render_figure", "plot_pool", "PLOT_WORKERS"]

_LOG = logging.getLogger("mfjax")

#: Okabe & Ito (2008) colour-blind-safe colours, yellow left out (unreadable as a thin line on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Known run families, in the order that numbers them (colour ``i % 7``, marker ``i // 7``).
FAMILIES = ("gd", "heavy_ball", "nesterov", "adagrad", "rmsprop", "adam", "bfgs",
            "cg", "gn_block", "gn_diagonal", "optax-lbfgs", "optax-adam", "solver-als", "solver-sgd",
            "solver-dsgd", "solver-vector_descent", "solver-nmf")
#: Known step rules, numbering the line styles (``None``: no step rule, solid).
STEPS = (None, "constant", "inverse_sqrt", "inverse_lipschitz", "armijo", "weak_wolfe_bisection",
         "strong_wolfe", "strong_wolfe_zoom", "adaptive_gd", "exact_mf")
_DASHES = ((), (5, 2), (1, 1.5), (6, 2, 1, 2), (10, 3), (3, 1, 1, 1, 1, 1), (6, 2, 1, 2, 1, 2), (2, 3),
           (8, 2, 2, 2), (4, 4))
#: ``f* = best - EPS_REL * max(|best|, 1e-30)``: the best run ends at ``EPS_REL`` relative suboptimality.
EPS_REL = 1e-6
_UNITS = {"als": "sweep", "vector_descent": "sweep", "sgd": "epoch", "dsgd": "epoch", "nmf": "update"}
_SOLVER_NAMES = {"als": "ALS", "vector_descent": "vector descent", "sgd": "SGD", "dsgd": "DSGD",
                 "nmf": "NMF"}


class Style(NamedTuple):
    """A run's look: matplotlib ``color``, ``linestyle`` (``(offset, dashes)``) and ``marker``;
    ``key`` is the line-style number (:func:`linestyle`)."""

    color: str
    linestyle: tuple
    marker: str
    key: int

    def kwargs(self) -> dict:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def run_family(name: str) -> str:
    """``"gd+armijo"`` -> ``"gd"``; ``"optax-lbfgs"``, ``"solver-als"``: the name itself."""
    return name.split("+", 1)[0]


def run_step(name: str) -> str | None:
    """``"gd+armijo"`` -> ``"armijo"``, ``"gd+inverse_lipschitz(growth=2)"`` -> that step string; else ``None``."""
    return name.split("+", 1)[1] if "+" in name else None


def linestyle(k: int) -> tuple:
    """Line style number ``k`` as ``(0, dashes)``; distinct for every ``k >= 0`` (module docstring)."""
    if k < 0:
        raise ValueError(f"line style number must be >= 0, got {k}")
    if k < len(_DASHES):
        return (0, _DASHES[k]) if _DASHES[k] else "-"
    return (0, (float(k - 7), 1.5, 1.0, 1.5))


def _family_index(family: str) -> int:
    if family in FAMILIES:
        return FAMILIES.index(family)
    room = len(PALETTE) * len(MARKERS) - len(FAMILIES)
    return len(FAMILIES) + _digest(family) % room


def _step_index(step: str | None) -> int:
    if step in STEPS:
        return STEPS.index(step)
    return 1 + _digest(step) % (len(_DASHES) - 1)  # one of the hand-made dash patterns


def base_style(name: str) -> Style:
    """The style of run ``name`` alone (colour, marker from its family; line style from its step rule)."""
    i = _family_index(run_family(name))
    k = _step_index(run_step(name))
    return Style(PALETTE[i % len(PALETTE)], linestyle(k), MARKERS[(i // len(PALETTE)) % len(MARKERS)], k)


def assign_styles(names: Iterable[str]) -> dict[str, Style]:
    """Styles of the runs of one figure: :func:`base_style`, made unique (module docstring)."""
    out, taken = {}, set()
    for name in sorted(set(names)):
        s = base_style(name)
        k = s.key
        if (s.color, s.marker, k) in taken:  # the next free hand-made pattern, then the generated ones
            free = [j for j in ((k + i) % len(_DASHES) for i in range(1, len(_DASHES)))
                    if (s.color, s.marker, j) not in taken]
            k = free[0] if free else len(_DASHES)
            while (s.color, s.marker, k) in taken:
                k += 1
            s = s._replace(linestyle=linestyle(k), key=k)
        taken.add((s.color, s.marker, k))
        out[name] = s
    return out


# ------------------------------------------------------------------ records
def is_solver(rec: Mapping) -> bool:
    """A classical solver's record (its steps are sweeps / epochs, not optimizer iterations)."""
    spec = rec.get("spec") or {}
    return spec.get("kind") == "solver" or str(rec.get("name", "")).startswith("solver-")


def _solver(rec: Mapping) -> str:
    spec = rec.get("spec") or {}
    return spec.get("solver") or str(rec.get("name", "")).removeprefix("solver-")


def solver_unit(rec_or_name) -> str:
    """The unit of a solver's steps: ``"sweep"`` (ALS, vector descent), ``"epoch"`` (SGD), ``"update"`` (NMF)."""
    name = rec_or_name if isinstance(rec_or_name, str) else _solver(rec_or_name)
    return _UNITS.get(name.removeprefix("solver-").split("+")[0], "step")


def _arr(trace: Mapping, key: str) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in trace.get(key, [])], dtype=float)


def _usable(results: Iterable[Mapping]) -> list[Mapping]:
    return [r for r in results if not r.get("error") and isinstance(r.get("trace"), Mapping)
            and len(r["trace"].get("loss", []))]


def reference_loss(results: Sequence[Mapping], f_star: float | None = None) -> float:
    """``f*``: ``f_star`` when given, else the lowest finite loss of any run (trace, initial or
    final) minus ``EPS_REL * max(|best|, 1e-30)``."""
    if f_star is not None:
        return float(f_star)
    vals = []
    for r in _usable(results):
        vals.extend(_arr(r["trace"], "loss").tolist())
        vals.extend(v for v in (r.get("final_loss"), r.get("initial_loss")) if isinstance(v, (int, float)))
    vals = np.asarray(vals, dtype=float)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        raise ValueError("no finite loss in any run: nothing to plot against f*")
    best = float(vals.min())
    return best - EPS_REL * max(abs(best), 1e-30)


def suboptimality(loss, f_star: float, relative: bool = False) -> np.ndarray:
    """``f - f*`` (``relative``: divided by ``|f*|``); NaN where it is not positive or not finite."""
    y = np.asarray(loss, dtype=float) - f_star
    if relative:
        y = y / max(abs(f_star), 1e-30)
    return np.where(np.isfinite(y) & (y > 0), y, np.nan)


def problem_title(problem: Mapping | None) -> str:
    """``"synthetic: 600×400, rank 5, λ = 2 (sum), 10800 train / 1200 test ratings"`` from ``Problem.describe()``."""
    if not problem:
        return ""
    parts = [str(problem.get("data", "?"))]
    shape = problem.get("shape")
    desc = []
    if shape:
        desc.append(f"{shape[0]}×{shape[1]}")
    if problem.get("rank") is not None:
        desc.append(f"rank {problem['rank']}")
    if problem.get("l2") is not None:
        desc.append(f"λ = {problem['l2']:g}" + (f" ({problem['scale']} scale)" if problem.get("scale") else ""))
    if problem.get("train_nnz") is not None:
        desc.append(f"{problem['train_nnz']} train / {problem.get('test_nnz', '?')} test ratings")
    return parts[0] + (": " + ", ".join(desc) if desc else "")


def fit_record(name: str, result, *, seconds=None, initial_loss: float | None = None, problem=None) -> dict:
    """A plot record (the comparison's record format) from a :func:`mfjax.fit` ``FitResult`` or a
    solver's ``SolverResult``: ``name`` picks the style (``"gd+armijo"``, ``"solver-als"``);
    ``seconds``: measured times per step (:func:`mfjax.loop.compile_fit_timed`,
    :func:`mfjax.solvers.time_steps`), ``None`` for none."""
    tr = result.trace
    loss = np.asarray(tr.loss, dtype=float)
    T = loss.size
    solver = not hasattr(tr, "num_fun_evals")
    nan = np.full(T, np.nan)
    trace = {"loss": loss, "eval_rmse": np.asarray(tr.eval_metric, dtype=float),
             "time_s": nan if seconds is None else np.asarray(seconds, dtype=float)}
    if solver:
        trace.update(step_size=nan, fun_evals=nan, grad_evals=nan, grad_norm=nan)
    else:
        trace.update(step_size=np.asarray(tr.step_size, dtype=float),
                     fun_evals=np.asarray(tr.num_fun_evals, dtype=float),
                     grad_evals=np.asarray(tr.num_grad_evals, dtype=float),
                     grad_norm=np.asarray(tr.grad_norm, dtype=float))
    spec = {"kind": "solver", "solver": name.removeprefix("solver-")} if solver else {"kind": "opt"}
    return {"name": name, "spec": spec, "trace": trace, "initial_loss": initial_loss, "error": None,
            **({"problem": dict(problem)} if problem else {})}


# ------------------------------------------------------------------ figures
#: The figures :func:`plot_results` writes: ``kind -> file stem`` (``.png`` and ``.pdf``).
FIGURES = {"loss_vs_iter": "loss_vs_iter", "loss_vs_time": "loss_vs_time", "loss_vs_evals": "loss_vs_evals",
           "test_rmse": "test_rmse", "step_size": "step_size"}
_TITLES = {"loss_vs_iter": "Training objective", "loss_vs_time": "Training objective against measured time",
           "loss_vs_evals": "Training objective against function evaluations",
           "test_rmse": "Held-out RMSE", "step_size": "Step size taken"}


def _label(rec: Mapping) -> str:
    status = rec.get("status")
    return rec["name"] + (f"  ({status})" if status in ("diverged", "nonfinite", "linesearch_failed") else "")


def _xy(rec: Mapping, kind: str, f_star: float, relative: bool):
    """The (x, y) of one run in figure ``kind`` (None: the run has nothing there)."""
    tr = rec["trace"]
    loss = _arr(tr, "loss")
    T = loss.size
    steps = np.arange(1, T + 1, dtype=float)
    f0 = rec.get("initial_loss")
    with_start = not is_solver(rec) and isinstance(f0, (int, float)) and math.isfinite(f0)
    if kind in ("loss_vs_iter", "loss_vs_time", "loss_vs_evals"):
        y = loss
        if kind == "loss_vs_iter":
            x = steps
            x0 = 0.0
        elif kind == "loss_vs_time":
            x = _arr(tr, "time_s")
            if x.size != T:
                return None
            x0 = 0.0
            with_start = False  # the time axis is logarithmic: the start (t = 0) is not on it
        else:
            if is_solver(rec):
                return None
            x = _arr(tr, "fun_evals")
            x0 = 1.0
        if with_start:
            x, y = np.concatenate([[x0], x]), np.concatenate([[f0], y])
        y = suboptimality(y, f_star, relative)
    elif kind == "test_rmse":
        x, y = steps, _arr(tr, "eval_rmse")
    elif kind == "step_size":
        if is_solver(rec):
            return None
        x, y = steps, _arr(tr, "step_size")
        y = np.where(y > 0, y, np.nan)
    else:
        raise ValueError(f"unknown figure {kind!r}; known: {sorted(FIGURES)}")
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    return x[ok], y[ok]


def _draw(ax, x, y, style: Style, label: str):
    every = max(1, len(x) // 8)
    ax.plot(x, y, label=label, lw=1.6, ms=4.5, markevery=every, markerfacecolor="white", **style.kwargs())


def _ylabel(kind: str, relative: bool, f_star_given: bool) -> str:
    if kind.startswith("loss"):
        note = "f* given" if f_star_given else "f* = best loss seen"
        return f"(f − f*) / |f*|   ({note})" if relative else f"f − f*   ({note})"
    return {"test_rmse": "held-out RMSE", "step_size": "step size"}[kind]


def figure(results: Sequence[Mapping], kind: str = "loss_vs_iter", *, f_star: float | None = None,
           relative: bool = False, title: str | None = None, baselines: Mapping[str, float] | None = None,
           styles: Mapping | None = None):
    """One figure of a comparison (a :class:`matplotlib.figure.Figure`, not registered with pyplot;
    in Jupyter it displays inline as a PNG).

    Args:
      results: run records (:func:`mfjax.compare.run_grid`, :func:`fit_record`); failed runs are left out.
      kind: ``"loss_vs_iter"`` (optimizers against iterations, solvers on a panel of their own against
        sweeps / epochs), ``"loss_vs_time"`` (every run against its measured time), ``"loss_vs_evals"``
        (optimizers against function evaluations), ``"test_rmse"`` (held-out RMSE; panels as
        ``loss_vs_iter``), ``"step_size"`` (optimizers).
      f_star: a known optimum (default: :func:`reference_loss`).
      relative: plot ``(f - f*) / |f*|``.
      title: the first title line (default: the figure's subject); the problem
        (:func:`problem_title` of the records' ``problem``) is the second.
      baselines: horizontal reference lines on the RMSE figure, e.g. ``{"mean predictor": 1.02}``.
      styles: run name -> :class:`Style` (default :func:`assign_styles` of the figure's runs).
    """
    Figure = _figure_class()
    runs = _usable(results)
    fstar = reference_loss(runs, f_star) if kind.startswith("loss") and runs else 0.0
    styles = dict(styles) if styles is not None else assign_styles(r["name"] for r in runs)
    curves = [(r, xy) for r in runs for xy in [_xy(r, kind, fstar, relative)] if xy is not None]
    opt = [(r, xy) for r, xy in curves if not is_solver(r)]
    sol = [(r, xy) for r, xy in curves if is_solver(r)]
    split = kind in ("loss_vs_iter", "test_rmse") and opt and sol
    fig = Figure(figsize=(11.5, 5.0) if split else (8.5, 5.0))
    if split:
        ax_o, ax_s = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": (2.2, 1)})
        panels = [(ax_o, opt), (ax_s, sol)]
    else:
        ax = fig.subplots()
        panels = [(ax, curves)]
    logy = kind.startswith("loss") or kind == "step_size"
    for ax, group in panels:
        for r, (x, y) in group:
            _draw(ax, x, y, styles.get(r["name"]) or base_style(r["name"]), _label(r))
        if logy:
            ax.set_yscale("log")
        if kind == "loss_vs_time" and group:
            ax.set_xscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=10)
    for ax, group in panels:
        if kind == "loss_vs_time":
            ax.set_xlabel("wall time since the run's start (s, log; measured at the end of each timed chunk)",
                          fontsize=11)
        elif kind == "loss_vs_evals":
            ax.set_xlabel("function evaluations", fontsize=11)
        elif group and all(is_solver(r) for r, _ in group):
            units = sorted({solver_unit(r) for r, _ in group})
            ax.set_xlabel(" / ".join(units) + " (solver)", fontsize=11)
        else:
            ax.set_xlabel("iteration (optimizer step)", fontsize=11)
    panels[0][0].set_ylabel(_ylabel(kind, relative, f_star is not None), fontsize=11)
    if kind == "test_rmse" and baselines:
        for i, (bname, value) in enumerate(sorted(baselines.items())):
            for ax, _ in panels:
                ax.axhline(value, color="0.45", lw=1.2, ls=(0, (2, 2 + i)),
                           label=f"{bname} ({value:.3f})" if ax is panels[0][0] else None)
    if split:
        panels[0][0].set_title("optimizers", fontsize=11)
        panels[1][0].set_title("solvers (own units)", fontsize=11)
    handles, labels = [], []
    for ax, _ in panels:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    names = {r["name"] for r in runs}
    order = sorted(range(len(labels)), key=lambda i: labels[i].split("  (")[0] not in names)  # baselines last
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if not handles:
        panels[0][0].text(0.5, 0.5, "no finite values to plot", ha="center", va="center",
                          transform=panels[0][0].transAxes, fontsize=11)
    else:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False,
                   ncol=1 if len(handles) <= 22 else 2, handlelength=3.2)
    probs = [r.get("problem") for r in runs if r.get("problem")]
    sub = problem_title(probs[0]) if probs and all(p == probs[0] for p in probs) else ""
    head = title if title is not None else _TITLES.get(kind, kind)
    fig.suptitle(head + (f"\n{sub}" if sub else ""), fontsize=12)
    fig.tight_layout()
    return fig


@functools.cache
def _figure_class():
    """:class:`matplotlib.figure.Figure` that IPython shows as a PNG (``_repr_png_``) whatever the backend."""
    from matplotlib.figure import Figure

    class ComparisonFigure(Figure):
        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            return buf.getvalue()

    return ComparisonFigure


def mean_predictor_rmse(train_values, test_values) -> float:
    """Held-out RMSE of predicting the training mean everywhere (the baseline every model must beat)."""
    mu = float(np.mean(np.asarray(train_values, dtype=float)))
    return float(np.sqrt(np.mean((np.asarray(test_values, dtype=float) - mu) ** 2)))


#: Worker processes of :func:`plot_pool` by default (fewer where fewer CPUs; one CPU: no pool).
PLOT_WORKERS = 2
#: Seconds :func:`plot_results` waits for a pool's figures in all (they take about 2 s); then it stops the
#: workers and renders the missing figures itself, so that a hung worker cannot hang the caller.
POOL_TIMEOUT_S = 300.0
#: The order :func:`plot_results` hands figures to a pool: costliest first (``loss_vs_iter`` has two
#: panels and the most text; measured on the main job's 21 runs), so that two workers finish together.
_POOL_ORDER = ("loss_vs_iter", "loss_vs_time", "step_size", "loss_vs_evals", "test_rmse")
#: The record fields :func:`figure` reads: all a pool's task is sent of a record.
_PLOT_FIELDS = ("name", "spec", "status", "trace", "error", "initial_loss", "final_loss", "problem")


def render_figure(runs: Sequence[Mapping], kind: str, stem_path, *, formats: Sequence[str] = ("png", "pdf"),
                  f_star: float | None = None, relative: bool = False,
                  baselines: Mapping[str, float] | None = None,
                  styles: Mapping | None = None) -> list[pathlib.Path]:
    """Figure ``kind`` of ``runs`` (:func:`figure`) written as ``<stem_path>.<fmt>`` for each format
    (150 dpi, tight bounding box, atomically); returns the paths.  One task of :func:`plot_results`,
    in this process or in a pool's worker."""
    stem_path = pathlib.Path(stem_path)
    fig = figure(runs, kind, f_star=f_star, relative=relative, baselines=baselines, styles=styles)
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(atomic_write_bytes(stem_path.with_name(f"{stem_path.name}.{fmt}"), buf.getvalue()))
    return paths


def plot_results(results: Sequence[Mapping], out_dir, *, formats: Sequence[str] = ("png", "pdf"),
                 f_star: float | None = None, relative: bool = False,
                 baselines: Mapping[str, float] | None = None, executor=None) -> list[pathlib.Path]:
    """Write every figure of :data:`FIGURES` as ``out_dir/<name>.<fmt>`` (PNG and PDF by default).

    One :func:`assign_styles` over all runs serves every figure, so a run
    looks the same in each.  Returns the paths written, figure by figure in
    :data:`FIGURES` order, formats in ``formats`` order.

    ``executor``: a :class:`concurrent.futures.Executor` (:func:`plot_pool`)
    that renders the figures one task each while this process waits; the
    files and the returned paths are those of the serial path.  Figures the
    executor does not deliver (shut down, broken pool, pickling error, a
    failed task) are rendered here, so the plots are never lost.
    """
    out_dir = pathlib.Path(out_dir)
    runs = _usable(results)
    styles = assign_styles(r["name"] for r in runs)
    opts = {"formats": tuple(formats), "f_star": f_star, "relative": relative,
            "baselines": dict(baselines) if baselines is not None else None, "styles": styles}
    done = set() if executor is None else _render_in(executor, runs, out_dir, opts)
    paths = []
    for kind, stem in FIGURES.items():
        if kind in done:
            paths.extend(out_dir / f"{stem}.{fmt}" for fmt in formats)
        else:
            paths.extend(render_figure(runs, kind, out_dir / stem, **opts))
    return paths


def _render_in(executor, runs: Sequence[Mapping], out_dir: pathlib.Path, opts: dict) -> set[str]:
    """The kinds of figure ``executor`` wrote, one task per figure (costliest first, :data:`_POOL_ORDER`);
    a figure whose task could not be submitted or did not succeed is left out (and logged)."""
    slim = [{k: r[k] for k in _PLOT_FIELDS if k in r} for r in runs]
    where = out_dir.resolve()  # a worker's working directory need not be ours
    futures, done = {}, set()
    try:
        for kind in sorted(FIGURES, key=lambda k: _POOL_ORDER.index(k) if k in _POOL_ORDER else len(_POOL_ORDER)):
            futures[kind] = executor.submit(render_figure, slim, kind, where / FIGURES[kind], **opts)
    except Exception as e:  # noqa: BLE001 -- shut down / broken pool: the rest render here
        _LOG.warning("plot workers unavailable (%s: %s); rendering the figures in this process",
                     type(e).__name__, e)
    deadline = time.monotonic() + POOL_TIMEOUT_S
    for kind, fut in futures.items():
        try:
            fut.result(timeout=max(0.0, deadline - time.monotonic()))
            done.add(kind)
        except concurrent.futures.TimeoutError:
            _LOG.warning("plot worker took over %.0f s on %s; stopping the workers, rendering it in this process",
                         POOL_TIMEOUT_S, kind)
            _stop_workers(executor)
        except Exception as e:  # noqa: BLE001 -- BrokenProcessPool, pickling, a failed task: render it here
            _LOG.warning("plot worker failed on %s (%s: %s); rendering it in this process",
                         kind, type(e).__name__, e)
    return done


def _stop_workers(executor) -> None:
    """Terminate a process pool's workers (a hung one would block its ``shutdown``); anything else: no-op."""
    procs = getattr(executor, "_processes", None) or {}
    for proc in list(procs.values()):
        try:
            proc.terminate()
        except Exception:  # noqa: BLE001 -- already gone
            pass


def _cpu_count() -> int:
    """CPUs this process may run on (its affinity where the OS tells, else :func:`os.cpu_count`)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plot_pool(workers: int | None = None):
    """A started, warming pool of plot worker processes for ``plot_results(..., executor=pool)``, or
    ``None`` (no pool: ``workers=0``, or by default fewer than 2 CPUs, or the pool could not start).

    ``workers``: the number of processes (default ``min(PLOT_WORKERS, CPUs)``).  The processes are
    *spawned*, never forked (a forked child of a process running JAX's threads can deadlock), and
    start at once, at the lowest CPU priority and without the caller's main script
    (:func:`_main_script_hidden`); each imports
    matplotlib and this module -- not the mfjax package, nor JAX (:func:`_worker_boot`) -- and renders
    a tiny figure to PNG and PDF (:func:`_warm_worker`), then blocks on the task queue until
    :func:`plot_results` sends work.
    Start it early -- the imports then overlap the caller's own work -- and shut it down
    (``pool.shutdown()``, or a ``with`` block) when done.  Workers ignore Ctrl-C: the caller's
    interrupt shuts the pool down.
    """
    import multiprocessing

    n = min(PLOT_WORKERS, _cpu_count()) if workers is None else int(workers)
    if n < 1 or (workers is None and n < 2):
        return None
    pool = None
    try:
        pool = concurrent.futures.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=exec, initargs=(_worker_boot(), {}))
        with _main_script_hidden():
            for _ in range(n):  # a spawn pool starts a process for each task submitted while none is idle
                pool.submit(_ready)
    except Exception as e:  # noqa: BLE001 -- no pool: plot_results renders in the caller
        _LOG.warning("plot workers could not start (%s: %s); the figures render in this process",
                     type(e).__name__, e)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return None
    return pool


def _worker_boot() -> str:
    """The source a plot worker runs first (``exec``, a builtin, so that unpickling the initializer imports
    nothing): ``mfjax`` and ``mfjax.compare`` registered as bare namespace packages over their directories,
    so that importing this module runs neither package's ``__init__`` (which imports JAX: 1.2 s of CPU and
    cache a worker would take from the caller's timed runs), then :func:`_warm_worker`.  The worker then
    holds this module, :mod:`mfjax.store`, numpy and matplotlib only; the tasks (:func:`render_figure`)
    need no more."""
    root = pathlib.Path(__file__).resolve().parents[1]
    return (
        "import sys, types\n"
        f"for _name, _path in (('mfjax', {str(root)!r}), ('mfjax.compare', {str(root / 'compare')!r})):\n"
        "    if _name not in sys.modules:\n"
        "        _m = types.ModuleType(_name)\n"
        "        _m.__path__ = [_path]\n"
        "        sys.modules[_name] = _m\n"
        "from mfjax.compare.plots import _warm_worker\n"
        "_warm_worker()\n"
    )


def _ready() -> None:
    """The no-op task that makes :func:`plot_pool` start each of its processes."""


def _has_module(name: str) -> bool:
    """Whether ``name`` is imported in this process (the tests ask a worker whether it holds JAX)."""
    return name in sys.modules


@contextlib.contextmanager
def _main_script_hidden():
    """Start processes without the caller's main script: a spawned child first re-runs the parent's
    ``__main__`` file (as ``__mp_main__``), and the ``mfjax`` console script's imports the mfjax package,
    hence JAX (1.2 s of CPU and cache taken from the caller's timed runs); the plot workers need nothing
    from it.  Hides ``__main__.__file__`` and ``__spec__`` while the processes start (a ``-m`` package's
    ``__main__`` is never re-run anyway)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        if "__spec__" in saved:
            main.__spec__ = None
        if "__file__" in saved:
            del main.__file__
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def _warm_worker() -> None:
    """A plot worker's start: ignore SIGINT (the parent shuts the pool down), then import matplotlib and
    render a tiny figure with a log axis and a legend to PNG and PDF, so that the imports, the fonts,
    mathtext and both backends are loaded before the first real task."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # lowest CPU priority: the caller's runs (timed) come first, the warm-up takes what is idle
        os.nice(19)
    except (AttributeError, OSError):
        pass
    fig = _figure_class()(figsize=(2.0, 1.5))
    ax = fig.subplots()
    ax.plot([1.0, 2.0], [1.0, 10.0], label="warm", marker="o", linestyle=linestyle(3))
    ax.set_yscale("log")
    ax.set_xlabel("x")
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("warm\nup")
    fig.tight_layout()
    for fmt in ("png", "pdf"):
        fig.savefig(io.BytesIO(), format=fmt, dpi=150, bbox_inches="tight")
