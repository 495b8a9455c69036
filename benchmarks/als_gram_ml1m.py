"""ALS sweep time on MovieLens 1M: the Gram-layout path vs the scatter-add path, same run.

For each rank, one jit-compiled ALS sweep (rows then columns, plain ridge,
l2 = 0.05 "sum" scale) on the 90% train part of ``split(ml1m, (0.9, 0.1), seed=0)``;
the two paths are interleaved, best of ``--repeats`` each; compile time and the
test RMSE after 5 sweeps from the same start are printed next to each timing
(the paths agree to float32 rounding).  The arithmetic floor of one sweep is
``2 nnz r^2`` multiply-adds for the Gram matrices of both sides plus
``(m + n) r^3 / 3`` for the Cholesky factorisations, at this machine's
measured sgemm rate.

Run::

    python benchmarks/als_gram_ml1m.py [--ranks 10 64 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import mfjax as mf
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)


def _gemm_rate() -> float:
    X = jax.random.normal(jax.random.key(0), (2048, 2048))
    f = jax.jit(lambda X: X @ X)
    f(X).block_until_ready()
    t = time.perf_counter()
    for _ in range(3):
        f(X).block_until_ready()
    return 3 * 2 * 2048 ** 3 / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[10, 64, 128])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    ratings = mf.data.load_movielens("ml-1m", ml1m_dir())
    train, test = mf.data.split(ratings, (0.9, 0.1), seed=0)
    m, n = train.shape
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; jax {jax.__version__}")
    rate = _gemm_rate()
    print(f"sgemm rate {rate / 1e9:.0f} GFLOP/s")
    obj = mf.solvers.als_objective(train, l2=0.05)
    t0 = time.perf_counter()
    prob = mf.solvers.als_problem(obj)
    print(f"Gram layouts built in {time.perf_counter() - t0:.2f} s (host, once per data set)")
    solver = mf.solvers.als_solver()
    step = jax.jit(solver.step)
    for r in args.ranks:
        p0 = mf.init_factors(jax.random.key(0), train.shape, r)
        res = {}
        for name, pr in (("scatter", obj), ("gram", prob)):
            t0 = time.perf_counter()
            st, _ = jax.block_until_ready(step(solver.init(p0, pr), pr))
            res[name] = {"compile": time.perf_counter() - t0, "times": []}
        for _ in range(args.repeats):
            for name, pr in (("scatter", obj), ("gram", prob)):
                t0 = time.perf_counter()
                jax.block_until_ready(step(solver.init(p0, pr), pr))
                res[name]["times"].append(time.perf_counter() - t0)
        floor = (2 * 2 * train.nnz * r * r + (m + n) * r ** 3 / 3) / rate
        for name, pr in (("scatter", obj), ("gram", prob)):
            out = mf.solvers.run(solver, pr, solver.init(p0, pr), 5, eval_set=test)
            best = min(res[name]["times"])
            print(f"r={r:4d} {name:8s} sweep {best:7.3f} s (median {np.median(res[name]['times']):.3f}, "
                  f"first call {res[name]['compile']:.2f} s)  floor {floor:.3f} s ({best / floor:.1f}x)  "
                  f"test RMSE after 5 sweeps {float(out.trace.eval_metric[-1]):.4f}", flush=True)


if __name__ == "__main__":
    main()
