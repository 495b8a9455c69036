"""Run by tests/test_distributed.py as N cooperating processes (mfjax.core.distributed.launch).

Each process builds ONLY its block of rows (process_row_block) and the sharded objective from it
(shard_local_objective); then value, gradient, and mf.fit with Armijo and with exact_mf.  Then the CLI in
the same processes (one start-up of the N processes for every check): ``mfjax fit`` (its JSON line) and
``mfjax compare`` (the main job, results under argv[3]).  Process 0 writes the results as JSON to argv[1].
With no launcher environment it runs as one process.
"""

import contextlib
import io
import json
import sys

from mfjax.core import distributed

distributed.initialize_from_env()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

import mfjax as mf  # noqa: E402


#: The CLI runs: ``mfjax fit`` and ``mfjax compare`` on the same small synthetic problem, every process holding the
#: whole data set (``--whole-data``: the path of ALS, vector descent and DSGD; per-process data are
#: tests/test_perprocess.py's).
CLI_PROBLEM = ["--synthetic-size", "60x40", "--synthetic-density", "0.2", "--no-compile-cache", "--whole-data"]
FIT = ["fit", "--run", "gd+armijo", "--iters", "10", "--json", *CLI_PROBLEM]
GRID = "gd+armijo,solver:als,solver:vector_descent,solver:dsgd,solver:sgd"
COMPARE = ["compare", *CLI_PROBLEM, "--runs", GRID, "--iters", "10", "--no-plots", "--no-progress"]
#: The main job's grid (no --runs), narrowed to the runs compiled above plus SGD and NMF (CI time).
DEFAULT_GRID = ["compare", *CLI_PROBLEM, "--directions", "gd", "--steps", "armijo", "--optax", "",
                "--solvers", "als,sgd,nmf", "--iters", "10", "--no-plots", "--no-progress"]
SGD_ONLY = ["compare", *CLI_PROBLEM, "--runs", "solver:sgd", "--iters", "10", "--no-plots", "--no-progress"]


def main(out: str, scale: str, workdir: str | None = None) -> None:
    train = mf.data.synthetic(m=50, n=30, rank=3, density=0.3, seed=0)
    mine = mf.objective.process_row_block(train)
    mesh = Mesh(np.array(jax.devices()), ("entries",))
    obj = mf.objective.shard_local_objective(mf.objective.mf_objective(mine, l2=0.5, scale=scale), mesh)
    p0 = mf.init_factors(jax.random.key(0), train.shape, 3)
    value, grad = jax.jit(mf.objective.value_and_grad)(obj, p0)
    res = {"processes": jax.process_count(), "local_entries": int(mine.nnz), "nnz": int(train.nnz),
           "value": float(value), "grad_U": np.asarray(grad.U).tolist(), "grad_V": np.asarray(grad.V).tolist()}
    for name, step in (("armijo", mf.linesearch.armijo()), ("exact_mf", mf.linesearch.exact_mf())):
        fit = mf.fit(mf.objective.loss, mf.optim.gd(linesearch=step), p0, 8, loss_args=(obj,))
        res[name] = {"value": float(fit.value), "status": fit.status_name,
                     "U": np.asarray(fit.params.U).tolist()}
    if workdir is not None:
        from mfjax import cli

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            res["fit_rc"] = cli.main(FIT)
        lines = buf.getvalue().strip().splitlines()
        res["fit"] = json.loads(lines[-1]) if lines else None  # process 0 alone prints
        with contextlib.redirect_stdout(io.StringIO()):
            res["compare_rc"] = cli.main([*COMPARE, "--out", workdir])
        # the grid (no --runs): what cannot run over several processes is skipped, the rest runs (exit 0);
        # an explicit list naming only SGD still fails
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            res["grid_rc"] = cli.main([*DEFAULT_GRID, "--out", workdir + "_grid"])
        res["grid_stdout"] = buf.getvalue()
        with contextlib.redirect_stdout(io.StringIO()):
            res["sgd_only_rc"] = cli.main([*SGD_ONLY, "--out", workdir + "_sgd"])
    if jax.process_index() == 0:
        with open(out, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "sum", sys.argv[3] if len(sys.argv) > 3 else None)
