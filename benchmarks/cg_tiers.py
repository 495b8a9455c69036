"""Where a CG-ALS sweep's time goes, per side and Gram tier (issue 16: the r = 64 cost slope).

Builds the Netflix-shaped synthetic data of ``benchmarks/scaling.py`` at ``--size`` ratings, lays
the CG-ALS problem out (``mf.solvers.als_problem`` with CG's cache-sized chunks, the layout of
``solvers.als(method="cg")``) and times, warm (best of ``--repeats`` after a compiling call),
:func:`mfjax.objective.gram.solve_rows_cg` with 3 steps on every tier of each side alone, at rank
``--rank``.  Prints per tier: chunks x segments x slots, real entries, the fill, the time and ns per
real entry.

Run::

    python benchmarks/cg_tiers.py --size 2e7 --rank 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=2e7)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(__file__))
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mfjax as mf
    from mfjax.objective.gram import CG_CHUNK_ENTRIES, solve_rows_cg
    from scaling import make_data

    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    train = make_data(args.size)
    obj = mf.solvers.als_objective(train, l2=1.0)
    problem = mf.solvers.als_problem(obj, chunk_entries=CG_CHUNK_ENTRIES)
    print(f"{train.nnz} ratings, shape {train.shape}; data + layout {time.perf_counter() - t0:.1f} s", flush=True)
    key = jax.random.key(0)
    U = jax.random.normal(key, (train.shape[0], args.rank)) * 0.1
    V = jax.random.normal(jax.random.fold_in(key, 1), (train.shape[1], args.rank)) * 0.1
    for side, tiers, F, X0, o in (("rows (U)", problem.rows, V, U, obj), ("cols (V)", problem.cols, U, V, obj.T)):
        m = o.shape[0]
        ridge = jnp.ones((1, args.rank))
        for t, lay in enumerate(tiers if isinstance(tiers, tuple) else (tiers,)):
            fn = jax.jit(lambda lay, F, X0: solve_rows_cg(lay, F, o.values, o.weights, ridge, X0, m, args.steps))
            jax.block_until_ready(fn(lay, F, X0))
            best = float("inf")
            for _ in range(args.repeats):
                t1 = time.perf_counter()
                jax.block_until_ready(fn(lay, F, X0))
                best = min(best, time.perf_counter() - t1)
            C, P, L = lay.entry.shape
            real = int(np.asarray(lay.mask).sum())
            print(json.dumps({"size": train.nnz, "rank": args.rank, "side": side, "tier": t,
                              "chunks": C, "segments_per_chunk": P, "segment": L, "rows_per_chunk": lay.rows.shape[1],
                              "entries": real, "fill": round(real / (C * P * L), 3), "time_s": round(best, 3),
                              "ns_per_entry": round(best / max(real, 1) * 1e9, 1)}), flush=True)
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
