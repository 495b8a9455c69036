"""Measured step times: :func:`mfjax.loop.compile_fit_timed` and :func:`mfjax.solvers.time_steps`.

The timed runs split the compiled scan into chunks and read the clock at the
end of each; the steps, traces and statuses must be those of the untimed
runs, and the times are measured exactly at the chunks' last steps.  No
assertion on how long anything takes.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

import mfjax as mf
from mfjax import loop

TRAIN, TEST = mf.data.split(mf.data.synthetic(m=40, n=30, rank=3, density=0.3, seed=0), fractions=(0.9, 0.1),
                            seed=0)


def _measured_at(seconds, num_steps, chunks):
    length = -(-num_steps // chunks)
    ends = sorted({min(s + length, num_steps) - 1 for s in range(0, num_steps, length)})
    return ends


@pytest.mark.parametrize("num_steps,chunks", [(23, 5), (6, 20), (10, 10)])
def test_timed_fit_is_fit_with_clock_readings_at_chunk_ends(num_steps, chunks):
    loss = functools.partial(mf.losses.masked_sq_loss, scale="sum")
    opt = mf.optim.gd(linesearch=mf.linesearch.armijo())
    args = (mf.init_factors(jax.random.key(0), TRAIN.shape, 3), (TRAIN.device_put(), 2.0), (TEST.device_put(),))
    ref = loop.compile_fit(loss, opt, *args, num_steps=num_steps, eval_fn=mf.metrics.rmse, eval_every=3)(*args)
    res, seconds = loop.compile_fit_timed(loss, opt, *args, num_steps=num_steps, eval_fn=mf.metrics.rmse,
                                          eval_every=3, chunks=chunks)(*args)
    for field in ref.trace._fields:
        np.testing.assert_allclose(np.asarray(getattr(res.trace, field), dtype=float),
                                   np.asarray(getattr(ref.trace, field), dtype=float), rtol=1e-6, err_msg=field)
    assert int(res.status) == int(ref.status) and int(res.num_steps) == int(ref.num_steps)
    np.testing.assert_allclose(np.asarray(res.params.U), np.asarray(ref.params.U), rtol=1e-5, atol=1e-6)
    ends = _measured_at(seconds, num_steps, chunks)
    assert seconds.shape == (num_steps,)
    assert np.flatnonzero(np.isfinite(seconds)).tolist() == ends
    assert np.all(np.diff(seconds[ends]) >= 0) and seconds[ends[0]] > 0


def test_timed_fit_stops_like_fit():
    """A run that stops early (a diverging constant step) has the same status and padding."""
    loss = functools.partial(mf.losses.masked_sq_loss, scale="sum")
    opt = mf.optim.gd(linesearch=mf.linesearch.constant(1.0))
    args = (mf.init_factors(jax.random.key(0), TRAIN.shape, 3), (TRAIN.device_put(), 2.0), ())
    ref = loop.compile_fit(loss, opt, *args, num_steps=12)(*args)
    res, _ = loop.compile_fit_timed(loss, opt, *args, num_steps=12, chunks=4)(*args)
    assert int(res.status) == int(ref.status) != int(mf.core.Status.MAX_STEPS)
    np.testing.assert_array_equal(np.asarray(res.trace.success), np.asarray(ref.trace.success))


@pytest.mark.parametrize("num_steps,chunks", [(7, 3), (4, 20)])
def test_solver_time_steps_keeps_the_run(num_steps, chunks):
    kw = dict(l2=1.0, num_steps=num_steps, eval_set=TEST, eval_every=2, key=jax.random.key(0))
    for fn in (mf.solvers.als, mf.solvers.sgd):
        ref = fn(TRAIN, 3, **kw)
        with mf.solvers.time_steps(chunks) as clock:
            res = fn(TRAIN, 3, **kw)
        np.testing.assert_allclose(np.asarray(res.trace.loss), np.asarray(ref.trace.loss), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(res.trace.eval_metric), np.asarray(ref.trace.eval_metric),
                                   rtol=1e-6)
        assert int(res.status) == int(ref.status) and int(res.num_steps) == int(ref.num_steps)
        (seconds,) = clock.runs
        assert np.flatnonzero(np.isfinite(seconds)).tolist() == _measured_at(seconds, num_steps, chunks)
    with mf.solvers.time_steps(2) as clock:  # outside the block nothing is timed
        pass
    mf.solvers.als(TRAIN, 3, **kw)
    assert clock.runs == []


def test_compare_records_measured_times():
    problem = mf.compare.make_problem("synthetic", rank=3, l2=1.0,
                                      synthetic_kwargs={"m": 40, "n": 30, "rank": 3, "density": 0.3, "seed": 0})
    for text in ("gd+armijo", "solver:als"):
        rec = mf.compare.run_one(mf.compare.parse_run(text), problem, num_steps=30, eval_every=5)
        t = np.asarray(rec["trace"]["time_s"], dtype=float)
        assert t.shape == np.asarray(rec["trace"]["loss"]).shape
        assert np.isfinite(t).any() and np.all(np.diff(t[np.isfinite(t)]) >= 0)
        assert rec["wall_s"] > 0
