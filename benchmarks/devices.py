"""1 vs 2 vs 4 virtual CPU devices (issue 16): the same five computations on a mesh and on one device.

For each device count ``D`` a fresh child process is started with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (the count is fixed
when JAX starts).  The child times, warm (compiled first, median of
``--repeats`` runs), each computation on a ``D``-device mesh and on one
device *in the same process*, and reports the largest relative difference of
the results:

* loss + closed-form gradient of the sharded objective (``shard_objective``);
* ``mf.fit`` with GD + Armijo, ``--fit-steps`` steps;
* one ALS sweep (``solvers.als(mesh=...)``: each device its own rows);
* one vector-descent half sweep (``sharded_half_sweep``, per-row BFGS + exact steps);
* one DSGD epoch (``solvers.dsgd(mesh=...)``, ``D x D`` blocks; its one-device
  reference is the same ``D``-block schedule run without a mesh).

Virtual CPU devices share the machine's cores, so they add no compute: the
ratio mesh / one device measures the overhead of the sharded programs
(collectives, padding, less fusion), not a speed-up.

Run::

    python benchmarks/devices.py                    # ML-1M if present, else a 1M-rating synthetic set
    python benchmarks/devices.py --data synthetic --devices 1 2 4

Prints a JSON line per device count and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _child(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh

    import mfjax as mf
    from mfjax import objective as O
    from mfjax.solvers.rowwise import quadratic_bfgs, row_half_sweep
    from mfjax.solvers.rowwise.sharded import shard_row_layout, sharded_half_sweep
    from mfjax.objective.rows import build_row_layout

    D = len(jax.devices())
    if args.data == "ml-1m":
        ratings = mf.data.load_movielens("ml-1m", data_dir=args.data_dir)
    elif args.data == "tiny":  # a smoke test of the script
        ratings = mf.data.synthetic(m=120, n=90, rank=3, density=0.15, seed=0)
    else:
        ratings = mf.data.synthetic(m=6040, n=3706, rank=10, density=1_000_209 / (6040 * 3706), seed=0)
    r = args.rank
    mesh = Mesh(np.array(jax.devices()), ("d",))
    rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))  # noqa: E731
    tree_rel = lambda a, b: max(rel(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    p = mf.init_factors(jax.random.key(0), ratings.shape, r)

    def timed(fn):
        out = fn()
        jax.block_until_ready(out)  # compile (and warm) first
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            jax.block_until_ready(out)
            ts.append(time.perf_counter() - t0)
        return out, float(np.median(ts))

    res = {"devices": D, "nnz": int(ratings.nnz), "shape": list(ratings.shape), "rank": r}
    full = O.mf_objective(ratings, 2.0)
    sh = O.shard_objective(full, mesh)
    vg = jax.jit(O.value_and_grad)
    a, ta = timed(lambda: vg(sh, p))
    b, tb = timed(lambda: vg(full, p))
    res["loss_grad"] = (ta, tb, tree_rel(a, b))

    opt = mf.optim.gd(linesearch=mf.linesearch.armijo())
    a, ta = timed(lambda: mf.fit(O.loss, opt, p, args.fit_steps, loss_args=(sh,)).params)
    b, tb = timed(lambda: mf.fit(O.loss, opt, p, args.fit_steps, loss_args=(full,)).params)
    res["fit_armijo"] = (ta, tb, tree_rel(a, b))

    if "als_sweep" not in args.skip:
        kw = dict(l2=2.0, num_steps=1, init=p)
        a, ta = timed(lambda: mf.solvers.als(ratings, r, mesh=mesh, **kw).params)
        b, tb = timed(lambda: mf.solvers.als(ratings, r, **kw).params)
        res["als_sweep"] = (ta, tb, tree_rel(a, b))

    solver = quadratic_bfgs(r)
    lay_sh, lay = shard_row_layout(ratings, mesh), build_row_layout(ratings)
    half_sh = jax.jit(lambda U, V, lay: sharded_half_sweep(U, V, lay, 2.0, solver)[0])
    half = jax.jit(lambda U, V, lay: row_half_sweep(U, V, lay, 2.0, solver)[0])
    a, ta = timed(lambda: half_sh(p.U, p.V, lay_sh))
    b, tb = timed(lambda: half(p.U, p.V, lay))
    res["vd_half_sweep"] = (ta, tb, rel(a, b))

    kw = dict(l2=2.0, lr=0.01, num_steps=1, init=p, key=jax.random.key(1), batch_size=args.dsgd_batch)
    a, ta = timed(lambda: mf.solvers.dsgd(ratings, r, mesh=mesh, **kw).params)
    b, tb = timed(lambda: mf.solvers.dsgd(ratings, r, blocks=D, **kw).params)
    res["dsgd_epoch"] = (ta, tb, tree_rel(a, b))
    return res


NAMES = {"loss_grad": "loss + gradient", "fit_armijo": "mf.fit GD+Armijo ({} steps)", "als_sweep": "ALS sweep",
         "vd_half_sweep": "vector descent half sweep", "dsgd_epoch": "DSGD epoch (D x D blocks)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="'ml-1m' or 'synthetic' (default: ml-1m when present)")
    ap.add_argument("--data-dir", default=os.environ.get("MFJAX_DATA_DIR", "/work/shared/data"))
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--fit-steps", type=int, default=20)
    ap.add_argument("--dsgd-batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["als_sweep"],
                    help="computations to leave out (als_sweep: the sharded ALS sweep deadlocks on 2 virtual "
                         "CPU devices from ~100k ratings, see BENCHMARKS.md)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.data is None:
        args.data = "ml-1m" if os.path.exists(os.path.join(args.data_dir, "ml-1m")) else "synthetic"
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    rows = []
    for d in args.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}", JAX_PLATFORMS="cpu")
        cmd = [sys.executable, __file__, "--child", "--data", args.data, "--data-dir", args.data_dir,
               "--rank", str(args.rank), "--fit-steps", str(args.fit_steps), "--dsgd-batch", str(args.dsgd_batch),
               "--repeats", str(args.repeats), "--skip", *args.skip]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rec = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rec), flush=True)
        rows.append(rec)
    print(f"\ndata {args.data} ({rows[0]['nnz']} ratings, {rows[0]['shape']}), rank {args.rank}; "
          f"times warm, median of {args.repeats}; 'mesh / 1 dev' from the same process\n")
    print("| computation | devices | mesh s | 1 device s | mesh / 1 dev | max rel. diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label in NAMES.items():
        for rec in (rec for rec in rows if key in rec):
            ta, tb, diff = rec[key]
            print(f"| {label.format(args.fit_steps)} | {rec['devices']} | {ta:.3f} | {tb:.3f} | {ta / tb:.2f} | "
                  f"{diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
