"""Run by tests/test_distributed.py as N cooperating processes (mfjax.core.distributed.launch).

Each process builds ONLY its block of rows (process_row_block) and the sharded objective from it
(shard_local_objective); then value, gradient, and mf.fit with Armijo and with exact_mf.  Process 0
writes the results as JSON to argv[1].  With no launcher environment it runs as one process.
"""

import json
import sys

from mfjax.core import distributed

distributed.initialize_from_env()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

import mfjax as mf  # noqa: E402


def main(out: str, scale: str) -> None:
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
    if jax.process_index() == 0:
        with open(out, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "sum")
