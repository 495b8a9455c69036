"""Run by tests/test_als_parts.py as 2 cooperating processes (mfjax.core.distributed.launch), or as one.

Each process generates ONLY the ratings of its rows (:func:`rows_block`: row ``i`` from its own seed, so the
parts of the processes are exactly the rows of the union), runs :func:`mfjax.solvers.als_parts` and
:func:`mfjax.solvers.dsgd_parts.dsgd_parts` and :func:`mfjax.solvers.vector_descent_parts` and writes ``argv[1]/part_K.json``: what it holds (its own
entries, the received column-block entries, the column block edges) and the factors and traces of each
configuration in :data:`CONFIGS` (ALS), :data:`DSGD_CONFIGS` and :data:`VD_CONFIGS` (vector descent).
"""

import importlib
import json
import pathlib
import sys

from mfjax.core import distributed

distributed.initialize_from_env()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mfjax.data import Ratings  # noqa: E402
from mfjax.solvers.dsgd_parts import dsgd_parts, part_dsgd_problem  # noqa: E402
from mfjax.solvers.rowwise.parts import vector_descent_parts  # noqa: E402

ap = importlib.import_module("mfjax.solvers.als_perprocess")  # the module of mfjax.solvers.als_parts

M, N, RANK = 60, 25, 3
#: Uneven: process 0 holds 12 sparse rows, process 1 48 dense ones.
RANGES = [(0, 12), (12, 60)]
EMPTY_COLS = (N - 2, N - 1)  #: never rated
CONFIGS = {"plain": dict(l2=0.5), "biased_wr": dict(l2=0.3, biases=True, weighted_l2=True),
           "biased_cg": dict(l2=0.3, biases=True, method="cg", cg_steps=3),
           "scatter_biased_wr_cg": dict(l2=0.3, biases=True, weighted_l2=True, gram=False, method="cg", cg_steps=2)}
DSGD_CONFIGS = {"dsgd_biased_wr_batch": dict(l2=0.3, lr=0.05, biases=True, weighted_l2=True, batch_size=3)}
VD_CONFIGS = {"vector_descent": dict(l2=0.5)}


def rows_block(lo, hi, seed=0):
    """``(train, test)`` ratings of rows ``lo..hi-1`` only: row ``i`` rates ``2 + (i >= 12) 8`` random columns
    (none of :data:`EMPTY_COLS`; rows ``i % 9 == 4`` none), ``x_ij = u_i . v_j + noise``; every 5th entry of a
    row is held out."""
    V = np.random.default_rng(seed).normal(size=(N, RANK))
    rows, cols, vals, test = [], [], [], []
    for i in range(lo, hi):
        rng = np.random.default_rng([seed, i])
        k = 0 if i % 9 == 4 else 2 + 8 * (i >= 12)
        c = np.sort(rng.choice(N - len(EMPTY_COLS), k, replace=False))
        x = V[c] @ rng.normal(size=RANK) + 0.1 * rng.normal(size=k)
        rows += [i] * k
        cols += c.tolist()
        vals += x.tolist()
        test += [t % 5 == 4 for t in range(k)]
    rows, cols, vals, test = (np.asarray(a) for a in (rows, cols, vals, test))
    part = lambda s: Ratings(rows[s].astype(np.int32), cols[s].astype(np.int32),  # noqa: E731
                             vals[s].astype(np.float32), (M, N))
    return part(~test), part(test)


def main(out: str) -> None:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k = jax.process_index()
    ranges = RANGES if jax.process_count() > 1 else [(0, M)]
    train, test = rows_block(*ranges[k])
    problem = ap.part_als_problem(train, ranges)
    mine = {"process": k, "row_range": list(ranges[k]), "own": problem.held[0], "received": problem.held[1],
            "edges": list(problem.edges), "train_nnz": train.nnz}
    dp = part_dsgd_problem(train, ranges)
    mine.update(dsgd_held=dp.held, dsgd_col_edges=list(dp.col_edges), dsgd_row_edges=list(dp.row_edges))
    runs = [(name, ap.als_parts, kw) for name, kw in CONFIGS.items()]
    runs += [(name, dsgd_parts, kw) for name, kw in DSGD_CONFIGS.items()]
    runs += [(name, vector_descent_parts, kw) for name, kw in VD_CONFIGS.items()]
    mine["auto_ranges"] = [list(r) for r in ap.part_row_ranges(train)]
    for name, solver, kw in runs:
        given = {} if solver is vector_descent_parts else {"row_ranges": ranges}  # vd: the ranges gathered
        res = solver(train, RANK, num_steps=5, key=jax.random.key(3), eval_set=test, **given, **kw)
        mine[name] = {"U": np.asarray(res.params.U).tolist(), "V": np.asarray(res.params.V).tolist(),
                      "loss": np.asarray(res.trace.loss).tolist(), "eval": np.asarray(res.trace.eval_metric).tolist()}
        if kw.get("biases"):
            mine[name].update(b=np.asarray(res.params.row_bias).tolist(), c=np.asarray(res.params.col_bias).tolist())
    (out / f"part_{k}.json").write_text(json.dumps(mine))


if __name__ == "__main__":
    main(sys.argv[1])
