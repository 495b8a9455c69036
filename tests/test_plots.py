"""The comparison's figures (:mod:`mfjax.compare.plots`): styles, f - f*, measured time, solvers' units, files.

Records are synthetic (no training): the tests check what is drawn, read
back from the matplotlib artists of the figures.
"""

from __future__ import annotations

import itertools
import logging
import re
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import multiprocessing

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mfjax.compare import plots  # noqa: E402


def _rec(name, loss, *, time_s=None, eval_rmse=None, step_size=None, initial_loss=None, problem=None):
    loss = np.asarray(loss, dtype=float)
    T = loss.size
    solver = name.startswith("solver-")
    nan = [None] * T
    trace = {"loss": loss.tolist(),
             "time_s": nan if time_s is None else [None if v is None else float(v) for v in time_s],
             "eval_rmse": nan if eval_rmse is None else list(eval_rmse),
             "step_size": nan if step_size is None else list(step_size),
             "fun_evals": list(range(2, 2 * T + 1, 2)), "grad_evals": list(range(1, T + 1)),
             "grad_norm": nan}
    spec = {"kind": "solver", "solver": name.removeprefix("solver-")} if solver else {"kind": "opt"}
    rec = {"name": name, "spec": spec, "status": "max_steps", "trace": trace, "error": None,
           "initial_loss": initial_loss, "final_loss": float(loss[-1])}
    if problem:
        rec["problem"] = problem
    return rec


def _lines(fig):
    """label -> Line2D over every axes of the figure (baselines excluded)."""
    return {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def _drawn_style(line):
    # matplotlib keeps the dash pattern scaled by the line width; compare the pattern itself
    return line.get_color(), tuple(np.round(line._unscaled_dash_pattern[1] or (), 6)), line.get_marker()


NAMES_A = ["gd+armijo", "gd+exact_mf", "gd+constant", "adam+armijo", "nesterov+armijo", "bfgs+strong_wolfe_zoom",
           "optax-lbfgs", "solver-als", "solver-sgd"]
NAMES_B = ["gd+armijo", "heavy_ball+armijo", "cg+exact_mf", "gn_block+exact_mf", "solver-als", "solver-nmf",
           "gd+inverse_lipschitz(growth=2.0)"]


def _records(names, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        T = 6 if name.startswith("solver-") else 12
        loss = 100.0 * np.cumprod(rng.uniform(0.5, 0.95, T))
        out.append(_rec(name, loss, time_s=np.cumsum(rng.uniform(0.01, 0.1, T)), initial_loss=120.0,
                        eval_rmse=rng.uniform(0.8, 1.2, T), step_size=rng.uniform(0.1, 1, T)))
    return out


# ------------------------------------------------------------------ styles
def test_every_registered_pair_has_its_own_base_style():
    names = [f"{f}+{s}" if s else f for f in plots.FAMILIES for s in plots.STEPS
             if s is None or not f.startswith(("solver-", "optax-"))]
    looks = [plots.base_style(n)[:3] for n in names]
    assert len(set(map(repr, looks))) == len(names)
    # the colour is the family's, the line style the step rule's
    assert plots.base_style("gd+armijo").color == plots.base_style("gd+exact_mf").color
    assert plots.base_style("gd+armijo").linestyle == plots.base_style("adam+armijo").linestyle
    assert plots.base_style("gd+armijo").color != plots.base_style("adam+armijo").color
    assert all(c in plots.PALETTE for c in (plots.base_style(n).color for n in names))


def test_styles_unique_within_a_figure_even_beyond_the_palette():
    # far more runs than colours x markers x line styles, with colliding names (same family, optioned steps)
    names = [f"{d}+{s}(x={k})" for d, s, k in itertools.product(["gd", "adam", "mystery"], ["armijo", "constant"],
                                                                 range(60))]
    names += ["gd+armijo", "gd+constant", "solver-als", "solver-weird", "optax-lbfgs"]
    styles = plots.assign_styles(names)
    assert set(styles) == set(names)
    looks = {(s.color, repr(s.linestyle), s.marker) for s in styles.values()}
    assert len(looks) == len(names)
    # a collision keeps the family's colour
    assert {styles[n].color for n in names if n.startswith("gd+")} == {plots.base_style("gd+armijo").color}


def test_a_runs_style_does_not_depend_on_list_order_or_on_the_other_runs():
    a = plots.assign_styles(NAMES_A)
    b = plots.assign_styles(list(reversed(NAMES_B)))
    for name in set(NAMES_A) & set(NAMES_B):
        assert a[name] == b[name] == plots.base_style(name)


def test_drawn_lines_unique_in_a_figure_and_stable_across_figures():
    fig_a = plots.figure(_records(NAMES_A, 0), "loss_vs_time")
    fig_b = plots.figure(_records(NAMES_B, 1), "loss_vs_time")
    la, lb = _lines(fig_a), _lines(fig_b)
    assert set(la) == set(NAMES_A) and set(lb) == set(NAMES_B)
    for lines in (la, lb):
        looks = [_drawn_style(ln) for ln in lines.values()]
        assert len(set(looks)) == len(looks), looks
    for name in set(NAMES_A) & set(NAMES_B):
        assert _drawn_style(la[name]) == _drawn_style(lb[name])
    # and the same run looks the same in the other figures of one comparison
    recs = _records(NAMES_A, 0)
    kinds = {kind: _lines(plots.figure(recs, kind)) for kind in plots.FIGURES}
    for name in NAMES_A:
        seen = {_drawn_style(lines[name]) for lines in kinds.values() if name in lines}
        assert len(seen) == 1, (name, seen)


def test_legend_outside_the_axes():
    fig = plots.figure(_records(NAMES_A), "loss_vs_iter")
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)
    fig.canvas.draw()
    leg = fig.legends[0].get_window_extent()
    right = max(ax.get_window_extent().x1 for ax in fig.axes)
    assert leg.x0 >= right  # to the right of every axes
    assert fig.legends[0].get_texts()[0].get_fontsize() >= 8


# ------------------------------------------------------------------ y axis
def test_suboptimality_positive_on_log_y_with_f_star_the_best_seen():
    recs = [_rec("gd+armijo", [50.0, 20.0, 10.0, 10.0], initial_loss=80.0),
            _rec("adam+armijo", [60.0, 30.0, 9.5, 9.0], initial_loss=80.0)]
    f_star = plots.reference_loss(recs)
    assert f_star < 9.0 and 9.0 - f_star == pytest.approx(plots.EPS_REL * 9.0)
    fig = plots.figure(recs, "loss_vs_iter")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel().startswith("f − f*")
    for name, ln in _lines(fig).items():
        y = np.asarray(ln.get_ydata(), dtype=float)
        assert np.all(y > 0)
    # iteration 0 is the initial loss; the curve is f - f*
    adam = _lines(fig)["adam+armijo"]
    np.testing.assert_allclose(adam.get_xdata(), [0, 1, 2, 3, 4])
    np.testing.assert_allclose(adam.get_ydata(), np.array([80.0, 60, 30, 9.5, 9.0]) - f_star)
    # a known optimum and the relative form
    rel = plots.figure(recs, "loss_vs_iter", f_star=8.0, relative=True)
    np.testing.assert_allclose(_lines(rel)["gd+armijo"].get_ydata(), (np.array([80.0, 50, 20, 10, 10]) - 8) / 8)
    assert rel.axes[0].get_ylabel().startswith("(f − f*) / |f*|")


def test_human_labels_and_problem_in_the_title():
    problem = {"data": "synthetic", "shape": [300, 200], "rank": 5, "l2": 2.0, "scale": "sum",
               "train_nnz": 5400, "test_nnz": 600}
    recs = [_rec("gd+armijo", [3.0, 2.0], eval_rmse=[1.1, 1.0], problem=problem),
            _rec("solver-als", [2.5, 2.0], eval_rmse=[1.0, 0.9], problem=problem)]
    fig = plots.figure(recs, "test_rmse", baselines={"mean predictor": 1.05})
    title = fig._suptitle.get_text()
    assert "300×200" in title and "rank 5" in title and "λ = 2" in title and "synthetic" in title
    assert fig.axes[0].get_ylabel() == "held-out RMSE"
    assert "eval_rmse" not in title + "".join(ax.get_ylabel() + ax.get_xlabel() for ax in fig.axes)
    baseline = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("mean predictor")]
    assert baseline and np.allclose(baseline[0].get_ydata(), 1.05)


# ------------------------------------------------------------------ x axes
def test_time_axis_is_the_measured_time_of_each_step():
    uneven = [0.01, 0.02, 0.5, 0.51, 2.0, 2.2]
    partial = [None, 0.3, None, 0.9, None, 4.0]  # chunk timers: measured at chunk ends only
    recs = [_rec("gd+armijo", [9.0, 8, 7, 6, 5, 4], time_s=uneven, initial_loss=10.0),
            _rec("solver-als", [9.5, 7, 5, 4.5, 4.2, 4.1], time_s=partial)]
    fig = plots.figure(recs, "loss_vs_time")
    lines = _lines(fig)
    np.testing.assert_allclose(lines["gd+armijo"].get_xdata(), uneven)
    np.testing.assert_allclose(lines["solver-als"].get_xdata(), [0.3, 0.9, 4.0])
    f_star = plots.reference_loss(recs)
    np.testing.assert_allclose(lines["solver-als"].get_ydata(), np.array([7, 4.5, 4.1]) - f_star)
    assert "measured" in fig.axes[0].get_xlabel()
    # a run without measured times is not drawn at made-up times
    none = plots.figure([_rec("gd+armijo", [3.0, 2.0]), recs[1]], "loss_vs_time")
    assert set(_lines(none)) == {"solver-als"}


def test_solvers_drawn_in_their_own_units_not_on_the_iteration_axis():
    recs = _records(["gd+armijo", "solver-als", "solver-sgd"])
    fig = plots.figure(recs, "loss_vs_iter")
    assert len(fig.axes) == 2
    opt_ax, sol_ax = fig.axes
    assert {ln.get_label() for ln in opt_ax.get_lines()} == {"gd+armijo"}
    assert {ln.get_label() for ln in sol_ax.get_lines()} == {"solver-als", "solver-sgd"}
    assert "iteration" in opt_ax.get_xlabel()
    assert "sweep" in sol_ax.get_xlabel() and "epoch" in sol_ax.get_xlabel() and "iteration" not in sol_ax.get_xlabel()
    assert plots.solver_unit("solver-als") == "sweep" and plots.solver_unit("solver-sgd") == "epoch"
    # function evaluations and step sizes are optimizer quantities: no solver there
    for kind in ("loss_vs_evals", "step_size"):
        assert set(_lines(plots.figure(recs, kind))) == {"gd+armijo"}


def test_fit_record_from_real_results():
    import jax

    import mfjax as mf

    train = mf.data.synthetic(m=30, n=20, rank=2, density=0.4, seed=0)
    p0 = mf.init_factors(jax.random.key(0), train.shape, 2)
    res = mf.fit(mf.losses.masked_mse(train, l2=1.0), mf.optim.gd(linesearch=mf.linesearch.armijo()), p0, 5)
    als = mf.solvers.als(train, 2, l2=1.0, num_steps=3, eval_set=train)
    recs = [plots.fit_record("gd+armijo", res), plots.fit_record("solver-als", als)]
    assert recs[1]["spec"]["kind"] == "solver" and len(recs[0]["trace"]["loss"]) == 5
    lines = _lines(plots.figure(recs, "loss_vs_iter"))
    assert len(lines["gd+armijo"].get_xdata()) == 5 and len(lines["solver-als"].get_xdata()) == 3


# ------------------------------------------------------------------ files
def test_plot_results_writes_png_and_pdf(tmp_path):
    recs = _records(NAMES_A) + [{"name": "gd+broken", "error": "boom", "trace": {}}]
    paths = plots.plot_results(recs, tmp_path, baselines={"mean predictor": 1.0})
    assert len(paths) == 2 * len(plots.FIGURES)
    for stem in plots.FIGURES.values():
        assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


# ------------------------------------------------------------------ in a pool of worker processes
def _pdf_content(data: bytes) -> bytes:
    """A PDF without its creation time (the only bytes that differ between two renderings)."""
    return re.sub(rb"/CreationDate \(D:[^)]*\)", b"", data)


def _check_same_files(got_dir, got_paths, want_dir, want_paths):
    assert [p.relative_to(got_dir) for p in got_paths] == [p.relative_to(want_dir) for p in want_paths]
    assert sorted(p.name for p in got_dir.iterdir()) == sorted(p.name for p in want_dir.iterdir())
    for p in got_paths:
        data, want = p.read_bytes(), (want_dir / p.name).read_bytes()
        if p.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == want  # the same pixels, byte for byte
        else:
            assert data[:5] == b"%PDF-" and _pdf_content(data) == _pdf_content(want)


def _fallbacks(caplog):
    return [r.getMessage() for r in caplog.records if "in this process" in r.getMessage()]


#: Two figures whose order in a pool (costliest first) is not that of FIGURES: the order of the paths
#: is tested, at a fraction of the five figures' CPU time (the CLI test renders all five in a pool).
TWO_FIGURES = {"loss_vs_evals": "loss_vs_evals", "step_size": "step_size"}


def test_plot_results_in_a_pool_writes_the_files_of_the_serial_path(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(plots, "FIGURES", TWO_FIGURES)
    recs = _records(NAMES_A) + [{"name": "gd+broken", "error": "boom", "trace": {}}]
    base = {"mean predictor": 1.0}
    pool = plots.plot_pool(1)  # one worker: the pool path at the least CPU (CI time); it warms up meanwhile
    assert pool is not None
    try:
        serial = plots.plot_results(recs, tmp_path / "serial", baselines=base)
        with caplog.at_level(logging.WARNING, logger="mfjax"):
            pooled = plots.plot_results(recs, tmp_path / "pool", baselines=base, executor=pool)
        # the worker rendered without the mfjax package or JAX (it would take CPU from the timed runs)
        assert pool.submit(plots._has_module, "matplotlib").result() is True
        assert pool.submit(plots._has_module, "jax").result() is False
    finally:
        pool.shutdown()
    assert not _fallbacks(caplog)  # every figure came from the worker
    assert [p.name for p in pooled] == ["loss_vs_evals.png", "loss_vs_evals.pdf", "step_size.png", "step_size.pdf"]
    _check_same_files(tmp_path / "pool", pooled, tmp_path / "serial", serial)


def test_plot_workers_do_not_rerun_the_callers_main_script(tmp_path, monkeypatch):
    """A spawned child re-runs the parent's ``__main__`` file; the ``mfjax`` console script's imports JAX.  The
    plot workers start without it (and the caller's ``__main__`` is left as it was)."""
    import sys
    import types

    script = tmp_path / "main_script"
    script.write_text(f"import json\nopen({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    fake = types.ModuleType("__main__")
    fake.__file__, fake.__spec__ = str(script), None
    monkeypatch.setitem(sys.modules, "__main__", fake)
    pool = plots.plot_pool(1)
    try:
        assert pool.submit(plots._has_module, "matplotlib").result() is True
        assert pool.submit(plots._has_module, "jax").result() is False
    finally:
        pool.shutdown()
    assert not (tmp_path / "ran").exists()
    assert fake.__file__ == str(script) and fake.__spec__ is None


class _DyingPool:
    """An executor whose worker dies after ``ok`` tasks: the rest fail as a broken process pool's do."""

    def __init__(self, ok: int = 0):
        self.ok, self.submitted = ok, 0

    def submit(self, fn, *args, **kwargs):
        self.submitted += 1
        fut = Future()
        if self.submitted <= self.ok:
            fut.set_result(fn(*args, **kwargs))
        else:
            fut.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        return fut


def test_plot_results_renders_here_what_a_broken_pool_does_not(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(plots, "FIGURES", TWO_FIGURES)
    recs = _records(NAMES_B)
    shut = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    shut.shutdown()  # never started a process; submit raises RuntimeError
    for pool, formats, failed in [(_DyingPool(1), ("png", "pdf"), 1), (shut, ("png",), 1)]:
        out = tmp_path / type(pool).__name__
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mfjax"):
            got = plots.plot_results(recs, out, formats=formats, executor=pool)
        assert len(_fallbacks(caplog)) == failed  # one warning per lost task, or one for the pool
        assert got == [out / f"{stem}.{fmt}" for stem in TWO_FIGURES.values() for fmt in formats]
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in got)
        for p in got:
            assert p.read_bytes()[:5] == (b"%PDF-" if p.suffix == ".pdf" else b"\x89PNG\r")


class _HungPool:
    """An executor whose tasks never finish (a hung worker); records that its processes were terminated."""

    class _Proc:
        terminated = False

        def terminate(self):
            self.terminated = True

    def __init__(self):
        self._processes = {1: self._Proc()}

    def submit(self, fn, *args, **kwargs):
        return Future()


def test_plot_results_does_not_wait_forever_for_a_hung_worker(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(plots, "FIGURES", TWO_FIGURES)
    monkeypatch.setattr(plots, "POOL_TIMEOUT_S", 0.2)
    pool = _HungPool()
    with caplog.at_level(logging.WARNING, logger="mfjax"):
        paths = plots.plot_results(_records(NAMES_A), tmp_path, executor=pool)
    assert [p.name for p in paths] == ["loss_vs_evals.png", "loss_vs_evals.pdf", "step_size.png", "step_size.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert pool._processes[1].terminated
    assert any("took over" in r.getMessage() for r in caplog.records)


def test_no_pool_without_two_cpus_or_workers(monkeypatch):
    assert plots.plot_pool(0) is None
    monkeypatch.setattr(plots, "_cpu_count", lambda: 1)
    assert plots.plot_pool() is None
