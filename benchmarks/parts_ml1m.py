"""The per-process solvers on ML-1M (issue 16): ALS (Gram tiers vs scatter-add), vector descent, DSGD.

Starts ``--processes`` cooperating processes (``mfjax.core.distributed.launch``,
one CPU device each); every process streams ML-1M and keeps only its users
(``mf.data.load_movielens_part``), splits them by hash (90/10, seed 0) and
times, warm, one sweep / epoch of each per-process solver: each solver is run
with ``--sweeps`` and with ``--sweeps + 5`` steps (after a first call that
compiles both), and the per-sweep time is the difference / 5 (setup: the
exchange and the layouts, cancels).  Process 0 prints one JSON line per
measurement and the held-out RMSE after the longer run.  With
``--processes 1`` the same code runs in one process (the whole data).

Run::

    MFJAX_DATA_DIR=/path/to/data python benchmarks/parts_ml1m.py --processes 2 --ranks 10 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _child(args) -> None:
    from mfjax.core import distributed

    distributed.initialize_from_env()
    import jax
    import numpy as np

    import mfjax as mf

    N, k = jax.process_count(), jax.process_index()
    part = mf.data.load_movielens_part("ml-1m", k, N, args.data_dir)
    train, test = mf.data.hash_split(part, (0.9, 0.1), 0)
    rows = np.asarray(part.rows)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    ranges = [tuple(int(v) for v in r) for r in distributed.allgather_host(np.array([lo, hi], np.int64))]
    ranges[0], ranges[-1] = (0, ranges[0][1]), (ranges[-1][0], part.shape[0])
    S = args.sweeps
    for rank in args.ranks:
        runs = {
            "als gram": lambda s: mf.solvers.als_parts(train, rank, row_ranges=ranges, l2=0.05 * 90, num_steps=s,
                                                       eval_set=test),
            "als scatter": lambda s: mf.solvers.als_parts(train, rank, row_ranges=ranges, l2=0.05 * 90, num_steps=s,
                                                          eval_set=test, gram=False),
            "als cg(3)": lambda s: mf.solvers.als_parts(train, rank, row_ranges=ranges, l2=0.05 * 90, num_steps=s,
                                                        eval_set=test, method="cg", cg_steps=3),
            "vector_descent": lambda s: mf.solvers.vector_descent_parts(train, rank, row_ranges=ranges, l2=0.05 * 90,
                                                                        num_steps=s, eval_set=test,
                                                                        key=jax.random.key(0)),
            "dsgd (batch 256)": lambda s: mf.solvers.dsgd_parts(train, rank, row_ranges=ranges, l2=0.05 * 90,
                                                                num_steps=s, lr=0.02, batch_size=256,
                                                                eval_set=test),
        }
        for name, fn in runs.items():
            if args.only and not any(o in name for o in args.only):
                continue
            times = {}
            for s in (S, S + 5):
                fn(s)  # compile
                t0 = time.perf_counter()
                res = fn(s)
                jax.block_until_ready(res.params)
                times[s] = time.perf_counter() - t0
            rmse = float(np.asarray(res.trace.eval_metric)[-1])
            if k == 0:
                print(json.dumps({"processes": N, "rank": rank, "solver": name,
                                  "per_sweep_s": round((times[S + 5] - times[S]) / 5, 4),
                                  "run_s": round(times[S + 5], 3), "sweeps": S + 5, "test_rmse": round(rmse, 4),
                                  "held": int(train.nnz)}), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--ranks", type=int, nargs="+", default=[10, 64])
    ap.add_argument("--sweeps", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of the solver names to run")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    from mfjax.core import distributed

    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
    cmd = [sys.executable, __file__, "--child", "--ranks", *map(str, args.ranks), "--sweeps", str(args.sweeps)]
    if args.only:
        cmd += ["--only", *args.only]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    rc = distributed.launch(cmd, args.processes, timeout_s=1800)
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
