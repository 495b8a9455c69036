"""ALS on MovieLens 1M, 90/10 split: test RMSE per sweep and time per sweep.

Protocol (no tuning on the test part):

1. ``train, test = mfjax.data.split(ml1m, (0.9, 0.1), seed=0)``.
2. A validation part is carved from ``train`` only:
   ``fit, valid = split(train, (8/9, 1/9), seed=1)`` (80/10 of all ratings).
3. Every configuration of the grid (ridge variant x biases x lambda, rank
   ``--rank``) is fitted on ``fit`` for ``--sweeps`` sweeps; the one with the
   lowest validation RMSE after the last sweep is chosen.
4. The chosen configuration is refitted on the whole ``train`` and its test
   RMSE is reported after every sweep (clipped to [1, 5] and unclipped).

Timing: one jit-compiled sweep (:func:`mfjax.solvers.als.als_sweep`) on the
90% train part, best of ``--repeats``; compile time reported separately.

For reference the script ends with the classic SVD completion baselines
(:func:`mfjax.solvers.svd.svd_complete`, fixed untuned settings: rank
``--rank``, power iteration 100 iterations / tol 1e-4 per triplet) and the
global-mean predictor on the same split.

Run::

    python benchmarks/als_ml1m.py [--rank 10] [--sweeps 20] [--quick] [--no-svd]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import numpy as np

import mfjax.data as mdata
from mfjax.losses import init_biased_factors, init_factors
from mfjax.metrics import rmse
from mfjax.solvers.als import als, als_sweep
from mfjax.solvers.svd import svd_complete
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)

DEFAULT_DIR = pathlib.Path(ml1m_dir())

# (weighted_l2, biases, lambdas); lambda is in the "sum" scaling of masked_sq_loss
GRID = [
    (True, False, (0.03, 0.05, 0.07, 0.1)),
    (True, True, (0.03, 0.05, 0.07, 0.1)),
    (False, False, (5.0, 10.0, 20.0)),
    (False, True, (5.0, 10.0, 20.0)),
]
QUICK_GRID = [(True, False, (0.05,)), (True, True, (0.05,))]


def time_sweep(train, rank, l2, weighted, biases, repeats):
    train = train.device_put()
    key = jax.random.key(0)
    if biases:
        p = init_biased_factors(key, train.shape, rank, mean=train.mean())
    else:
        p = init_factors(key, train.shape, rank)
    step = jax.jit(lambda q, R: als_sweep(q, R, l2, weighted_l2=weighted))
    t0 = time.perf_counter()
    p = jax.block_until_ready(step(p, train))
    compile_s = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = jax.block_until_ready(step(p, train))
        best = min(best, time.perf_counter() - t0)
    return best, compile_s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=pathlib.Path, default=DEFAULT_DIR)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--sweeps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny grid (smoke run)")
    ap.add_argument("--no-svd", action="store_true", help="skip the SVD completion baselines")
    args = ap.parse_args(argv)

    ratings = mdata.load_movielens("ml-1m", args.data)
    train, test = mdata.split(ratings, (0.9, 0.1), seed=0)
    fit, valid = mdata.split(train, (8 / 9, 1 / 9), seed=1)
    print(f"ML-1M {ratings.shape} nnz={ratings.nnz}: train {train.nnz} (fit {fit.nnz} + "
          f"valid {valid.nnz}), test {test.nnz}; rank {args.rank}, {args.sweeps} sweeps; "
          f"{jax.devices()}")

    print("\n## validation grid (fit on 80%, RMSE on the 10% validation part, clipped to [1, 5])")
    print("| ridge | biases | lambda | valid RMSE (last sweep) | best sweep | wall s |")
    print("|---|---|---|---|---|---|")
    results = []
    for weighted, biases, lams in (QUICK_GRID if args.quick else GRID):
        for lam in lams:
            t0 = time.perf_counter()
            res = als(fit, args.rank, l2=lam, num_steps=args.sweeps, weighted_l2=weighted, biases=biases,
                      eval_set=valid, clip=(1.0, 5.0))
            ev = np.asarray(res.trace.eval_metric)
            wall = time.perf_counter() - t0
            results.append((float(ev[-1]), weighted, biases, lam))
            print(f"| {'lambda*n_i (ALS-WR)' if weighted else 'lambda'} | {biases} | {lam} | "
                  f"{ev[-1]:.4f} | {int(np.argmin(ev)) + 1} | {wall:.1f} |")
    best_valid, weighted, biases, lam = min(results)
    print(f"\nchosen: weighted_l2={weighted}, biases={biases}, lambda={lam} "
          f"(valid RMSE {best_valid:.4f})")

    res = als(train, args.rank, l2=lam, num_steps=args.sweeps, weighted_l2=weighted, biases=biases,
              eval_set=test, clip=(1.0, 5.0))
    ev = np.asarray(res.trace.eval_metric)
    loss = np.asarray(res.trace.loss)
    raw = float(rmse(res.params, test))
    print("\n## test RMSE per sweep (refit on the 90% train part)")
    print("| sweep | train objective | test RMSE (clipped [1,5]) |")
    print("|---|---|---|")
    for k in range(args.sweeps):
        print(f"| {k + 1} | {loss[k]:.1f} | {ev[k]:.4f} |")
    print(f"final test RMSE: {ev[-1]:.4f} clipped, {raw:.4f} unclipped")

    print("\n## time per sweep (both halves, 90% train, jit-compiled, best of "
          f"{args.repeats})")
    print("| rank | ridge | biases | sweep s | compile s |")
    print("|---|---|---|---|---|")
    for rank in sorted({args.rank, 10}):
        for w, b in sorted({(weighted, biases), (False, False)}):
            t, c = time_sweep(train, rank, lam if w == weighted else 10.0, w, b, args.repeats)
            print(f"| {rank} | {'ALS-WR' if w else 'plain'} | {b} | {t:.3f} | {c:.2f} |")

    if args.no_svd:
        return
    mean_rmse = float(np.sqrt(np.mean((np.asarray(test.values) - train.mean()) ** 2)))
    print("\n## baselines on the same split (untuned; test RMSE clipped to [1, 5])")
    print(f"global-mean predictor: {mean_rmse:.4f}")
    print("| method | fill | rank | refits | test RMSE after each fit | wall s |")
    print("|---|---|---|---|---|---|")
    for fill, refits in (("mean", 0), ("row_mean", 0), ("col_mean", 0), ("col_mean", 5)):
        t0 = time.perf_counter()
        res = svd_complete(train, args.rank, fill, num_refits=refits, num_iters=100, tol=1e-4,
                           eval_set=test, clip=(1.0, 5.0))
        ev = np.asarray(res.trace.eval_metric)
        print(f"| svd_complete | {fill} | {args.rank} | {refits} | "
              f"{' / '.join(f'{x:.4f}' for x in ev)} | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main()
