"""ALS sweep time on MovieLens 1M: conjugate-gradient ALS (``method="cg"``) vs the exact Cholesky sweep.

For each rank, one jit-compiled sweep (rows then columns, with the trace's
loss) of the biased model with the ALS-WR ridge (``l2 = 0.05``, weighted,
"sum" scale) on the 90% train part of ``split(ml1m, (0.9, 0.1), seed=0)``;
methods interleaved, best of ``--repeats`` (warm), first call (compile + one
sweep) reported separately; then the test RMSE after ``--sweeps`` sweeps
from the same start, same hyperparameters for every method.  The arithmetic
floor of a CG sweep: per side, the starting residual and each CG step are
one product ``A p`` over the entries (2 matvecs, ``4 nnz (r+1)`` flops), so
``2 (cg_steps + 1) 4 nnz (r+1)`` flops at this machine's measured sgemm rate.

Run::

    python benchmarks/als_cg_ml1m.py [--ranks 10 64 128] [--repeats 3] [--sweeps 10]
"""

from __future__ import annotations

import argparse
import os
import time

import jax

import mfjax as mf
from mfjax.core.factors import init_biased_factors
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)
from als_gram_ml1m import _gemm_rate  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[10, 64, 128])
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 3, 5])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweeps", type=int, default=10)
    ap.add_argument("--l2", type=float, default=0.05)
    args = ap.parse_args(argv)
    ratings = mf.data.load_movielens("ml-1m", ml1m_dir())
    train, test = mf.data.split(ratings, (0.9, 0.1), seed=0)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; jax {jax.__version__}")
    rate = _gemm_rate()
    print(f"sgemm rate {rate / 1e9:.0f} GFLOP/s; nnz {train.nnz}")
    obj = mf.solvers.als_objective(train, l2=args.l2, weighted_l2=True)
    probs = {"cholesky": mf.solvers.als_problem(obj),
             "cg": mf.solvers.als_problem(obj, chunk_entries=mf.objective.gram.CG_CHUNK_ENTRIES)}
    methods = [("cholesky", None)] + [("cg", s) for s in args.steps]
    print("| rank | method | sweep (best) | first call | floor | sweep / floor | test RMSE after "
          f"{args.sweeps} sweeps |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in args.ranks:
        p0 = init_biased_factors(jax.random.key(0), train.shape, r, mean=train.mean())
        runs = {}
        for meth, s in methods:
            solver = mf.solvers.als_solver(method=meth, cg_steps=s or 3)
            pr = probs[meth]
            step = jax.jit(solver.step)
            t0 = time.perf_counter()
            jax.block_until_ready(step(solver.init(p0, pr), pr))
            runs[(meth, s)] = dict(solver=solver, pr=pr, step=step, first=time.perf_counter() - t0, times=[])
        for _ in range(args.repeats):
            for key, d in runs.items():
                t0 = time.perf_counter()
                jax.block_until_ready(d["step"](d["solver"].init(p0, d["pr"]), d["pr"]))
                d["times"].append(time.perf_counter() - t0)
        for (meth, s), d in runs.items():
            out = mf.solvers.run(d["solver"], d["pr"], d["solver"].init(p0, d["pr"]), args.sweeps, eval_set=test)
            best = min(d["times"])
            floor = "" if s is None else f"{2 * (s + 1) * 4 * train.nnz * (r + 1) / rate * 1e3:.1f} ms"
            ratio = "" if s is None else f"{best / (2 * (s + 1) * 4 * train.nnz * (r + 1) / rate):.0f}x"
            name = "cholesky" if s is None else f"cg, {s} steps"
            print(f"| {r} | {name} | {best:.3f} s | {d['first']:.2f} s | {floor} | {ratio} | "
                  f"{float(out.trace.eval_metric[-1]):.4f} |", flush=True)


if __name__ == "__main__":
    main()
