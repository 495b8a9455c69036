"""Hot paths before / after the architecture redesign (issue 15), same run, on ML-1M.

Times, with the public API both versions share: the masked loss's value+grad
and the exact step's quartic along a direction (r = 10), one ALS sweep
(r = 10 and 64), one SGD epoch (r = 10), a GD + Armijo step and a vector
descent sweep, plus the first-call (compile) time of ALS and SGD.  Run it
once per checkout, interleaved, e.g.::

    git worktree add /tmp/old <commit>
    for i in 1 2; do
      PYTHONPATH=/tmp/old python benchmarks/redesign_regression.py --tag old
      PYTHONPATH=.        python benchmarks/redesign_regression.py --tag new
    done

Each run prints one JSON line (medians over ``--repeats``; seconds).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import mfjax as mf
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)

DEFAULT_DIR = pathlib.Path(ml1m_dir())


def _median(fn, repeats):
    jax.block_until_ready(fn())  # warm (compiled)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _first_call(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def _steps_kw(fn, n, *old):
    """``num_steps=n`` or the version's older name for it."""
    names = inspect.signature(fn).parameters
    for k in ("num_steps",) + old:
        if k in names:
            return {k: n}
    raise TypeError(f"{fn.__name__} takes none of num_steps, {old}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=pathlib.Path, default=DEFAULT_DIR)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tag", default="this")
    args = ap.parse_args(argv)

    ratings = mf.data.load_movielens("ml-1m", args.data)
    train, test = mf.data.split(ratings, (0.9, 0.1), seed=0)
    out = {"tag": args.tag, "mfjax": str(pathlib.Path(mf.__file__).parent), "load": os.getloadavg()[0]}
    tr = train.device_put()
    p10 = mf.init_factors(jax.random.key(0), train.shape, 10)

    loss = mf.losses.masked_mse(train, l2=2.0)
    vg = jax.jit(jax.value_and_grad(loss))
    out["loss_grad_s"] = _median(lambda: vg(p10), args.repeats)
    d = jax.tree.map(lambda x: -x, jax.grad(loss)(p10))
    quartic = jax.jit(lambda p, d: mf.linesearch.mf_quartic_coefficients(p, d, tr, 2.0))
    out["quartic_s"] = _median(lambda: quartic(p10, d), args.repeats)

    als = mf.solvers.als
    for r in (10, 64):
        one = lambda: als(train, r, l2=0.1, key=jax.random.key(0), **_steps_kw(als, 1, "num_sweeps")).params
        out[f"als_compile_r{r}_s"] = _first_call(one)
        six = lambda: als(train, r, l2=0.1, key=jax.random.key(0), **_steps_kw(als, 6, "num_sweeps")).params
        t1, t6 = _median(one, args.repeats), _median(six, args.repeats)
        out[f"als_sweep_r{r}_s"] = (t6 - t1) / 5

    sgd = mf.solvers.sgd
    kw = dict(lr=0.01, l2=0.02, batch_size=1)
    one = lambda: sgd(train, 10, key=jax.random.key(0), **kw, **_steps_kw(sgd, 1, "num_epochs")).params
    out["sgd_compile_s"] = _first_call(one)
    three = lambda: sgd(train, 10, key=jax.random.key(0), **kw, **_steps_kw(sgd, 3, "num_epochs")).params
    out["sgd_epoch_s"] = (_median(three, args.repeats) - _median(one, args.repeats)) / 2

    opt = mf.optim.gd(linesearch=mf.linesearch.armijo())
    fit = lambda n: mf.fit(loss, opt, p10, num_steps=n).params
    out["gd_armijo_compile_s"] = _first_call(lambda: fit(21))
    out["gd_armijo_step_s"] = (_median(lambda: fit(21), args.repeats) - _median(lambda: fit(1), args.repeats)) / 20

    vd = mf.solvers.vector_descent
    one = lambda: vd(train, 10, l2=5.0, key=jax.random.key(0), **_steps_kw(vd, 1, "num_sweeps")).params
    three = lambda: vd(train, 10, l2=5.0, key=jax.random.key(0), **_steps_kw(vd, 3, "num_sweeps")).params
    out["vd_compile_s"] = _first_call(one)
    out["vd_sweep_s"] = (_median(three, args.repeats) - _median(one, args.repeats)) / 2
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
