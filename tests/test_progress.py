"""Progress hooks (mfjax.core.progress): reports from inside fit / fit_until / the solver driver."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax as mf
import mfjax.linesearch as ls
import mfjax.optim as mo
from mfjax.core.progress import LogProgress, Progress, TqdmProgress
from mfjax.loop import _fit_jit, fit, fit_until

N = 6
_A = jnp.asarray(np.diag(np.linspace(1.0, 4.0, N)), jnp.float32)


def quad(x):
    return 0.5 * x @ _A @ x


X0 = jnp.ones(N, jnp.float32)
GD = mo.gd(linesearch=ls.constant(0.1))
GD_HUGE = mo.gd(linesearch=ls.constant(5.0))  # step 5 > 2/L: the iterates blow up


class Recorder:
    """A hashable-by-identity callback collecting the reports."""

    def __init__(self):
        self.reports = []

    def __call__(self, p: Progress):
        self.reports.append(p)


def test_fit_reports_every_k_steps_with_the_traced_loss():
    rec = Recorder()
    res = fit(quad, GD, X0, 20, callback=rec, callback_every=5)
    assert [p.step for p in rec.reports] == [5, 10, 15, 20]
    loss = np.asarray(res.trace.loss)
    np.testing.assert_allclose([p.loss for p in rec.reports], loss[[4, 9, 14, 19]], rtol=1e-6)
    gn = np.asarray(res.trace.grad_norm)
    np.testing.assert_allclose([p.grad_norm for p in rec.reports], gn[[4, 9, 14, 19]], rtol=1e-6)
    assert [p.status for p in rec.reports] == ["running"] * 3 + ["max_steps"]
    assert all(p.num_steps == 20 for p in rec.reports)


def test_fit_reports_the_stop_and_nothing_after_it():
    rec = Recorder()
    res = fit(quad, GD_HUGE, X0, 30, callback=rec, callback_every=10)
    assert res.status_name == "diverged"
    assert rec.reports, "the stop must be reported"
    last = rec.reports[-1]
    assert last.status == "diverged"
    assert last.step == int(res.num_steps) < 30
    assert [p.step for p in rec.reports if p.status == "running"] == [s for s in (10, 20) if s < last.step]


def test_fit_until_reports_convergence():
    rec = Recorder()
    res = fit_until(quad, GD, X0, max_steps=500, tol=1e-3, callback=rec, callback_every=50)
    assert res.status_name == "converged"
    assert rec.reports[-1].status == "converged"
    assert rec.reports[-1].step == int(res.num_steps)


def test_no_callback_traces_no_callback():
    """Off by default means absent from the compiled program, not merely skipped."""
    kw = dict(loss_fn=quad, optimizer=GD, num_steps=5, eval_fn=None, eval_every=1)
    off = _fit_jit.lower(X0, (), (), 10.0, **kw).as_text()
    on = _fit_jit.lower(X0, (), (), 10.0, callback=Recorder(), callback_every=1, **kw).as_text()
    assert "callback" not in off.lower()
    assert "callback" in on.lower()


def test_results_do_not_depend_on_the_callback():
    a = fit(quad, GD, X0, 15)
    b = fit(quad, GD, X0, 15, callback=Recorder(), callback_every=3)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    np.testing.assert_array_equal(np.asarray(a.trace.loss), np.asarray(b.trace.loss))


def test_callback_every_is_validated():
    with pytest.raises(ValueError, match="callback_every"):
        fit(quad, GD, X0, 5, callback=Recorder(), callback_every=0)
    with pytest.raises(TypeError, match="callback"):
        fit(quad, GD, X0, 5, callback="not callable")


@pytest.fixture(scope="module")
def small():
    train = mf.data.synthetic(m=40, n=30, rank=3, density=0.4, seed=0)
    test = mf.data.synthetic(m=40, n=30, rank=3, density=0.2, seed=1)
    return train, test


def test_als_reports_sweeps_and_held_out_metric(small):
    train, test = small
    rec = Recorder()
    res = mf.solvers.als(train, 3, l2=1.0, num_steps=6, eval_set=test, eval_every=2,
                         callback=rec, callback_every=2)
    assert [p.step for p in rec.reports] == [2, 4, 6]
    np.testing.assert_allclose([p.loss for p in rec.reports], np.asarray(res.trace.loss)[[1, 3, 5]],
                               rtol=1e-6)
    np.testing.assert_allclose([p.eval_metric for p in rec.reports],
                               np.asarray(res.trace.eval_metric)[[1, 3, 5]], rtol=1e-6)
    assert np.isnan(rec.reports[0].grad_norm)
    assert rec.reports[-1].status == "max_steps"


def test_sgd_reports_epochs(small):
    train, _ = small
    rec = Recorder()
    mf.solvers.sgd(train, 3, l2=0.01, lr=0.02, num_steps=4, callback=rec, callback_every=1)
    assert [p.step for p in rec.reports] == [1, 2, 3, 4]
    assert all(np.isfinite(p.loss) for p in rec.reports)


def test_log_progress_logs_to_the_mfjax_logger(small, caplog):
    train, _ = small
    with caplog.at_level(logging.INFO, logger="mfjax"):
        mf.solvers.als(train, 2, l2=1.0, num_steps=3, callback=LogProgress("als"), callback_every=3)
    msgs = [r.getMessage() for r in caplog.records if r.name == "mfjax"]
    assert any(m.startswith("als step 3/3 loss ") and m.endswith("(max_steps)") for m in msgs), msgs
    assert LogProgress("als") == LogProgress("als") and hash(LogProgress("als")) == hash(LogProgress("als"))


def test_tqdm_progress_reaches_the_budget():
    pytest.importorskip("tqdm")
    with TqdmProgress(12, desc="gd", disable=False, file=open("/dev/null", "w")) as bar:
        fit(quad, GD, X0, 12, callback=bar, callback_every=4)
        assert bar._bar.n == 12


def test_callback_under_vmap_reports_every_member():
    rec = Recorder()
    xs = jnp.stack([X0, 2 * X0])
    values = jax.vmap(lambda x: fit(quad, GD, x, 4, callback=rec, callback_every=4).value)(xs)
    final = sorted(p.loss for p in rec.reports if p.step == 4)
    np.testing.assert_allclose(final, sorted(np.asarray(values)), rtol=1e-6)


def test_cli_fit_verbose_logs_progress_and_solver_budget(capsys, restore_mfjax_logger):
    from mfjax import cli

    common = ["--synthetic-size", "40x30", "--rank", "2", "--no-compile-cache"]
    assert cli.main(["fit", "--run", "gd+armijo", "--iters", "6", "--eval-every", "3", "-v", *common]) == 0
    err = capsys.readouterr().err
    assert "mfjax: gd+armijo step 3/6 loss" in err and "step 6/6" in err and "(max_steps)" in err
    assert cli.main(["fit", "--run", "solver:als", "--iters", "25", *common]) == 0
    assert "solver-als: --iters 25 -> 2 sweeps" in capsys.readouterr().err
