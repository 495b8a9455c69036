"""Run in a subprocess with 4 virtual CPU devices (see tests/test_sharded.py): ``_sharded_check.py PART``.

PART ``formulas``: the sharded objective's formulas on 1, 2, 4 devices, padding-only shards, metrics;
``fits``: mf.fit with Armijo, exact_mf and Gauss-Newton + exact_mf on 1, 2, 4 devices; ``solvers``: ALS
and DSGD on a mesh; ``vd_compare``: vector descent on a mesh, and ``mfjax compare --devices 2`` against
``--devices 1``.
Each part is one process (one JAX start, every compilation once) that prints one JSON object.
"""
import contextlib
import functools
import io
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

import mfjax as mf
from mfjax import objective as O

assert len(jax.devices()) == 4, jax.devices()
rel = lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))  # noqa: E731
tree_rel = lambda a, b: max(rel(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
mesh_of = lambda k, name: Mesh(np.array(jax.devices()[:k]), (name,))  # noqa: E731
_T0 = [time.perf_counter()]


def _stage(name):
    """Seconds since the last stage, on stderr (shown when a part fails or times out)."""
    t = time.perf_counter()
    print(f"[_sharded_check] {name}: {t - _T0[0]:.1f} s", file=sys.stderr, flush=True)
    _T0[0] = t


def _problem():
    ratings = mf.data.synthetic(m=120, n=90, rank=3, density=0.15, seed=0)
    p = mf.init_factors(jax.random.key(0), ratings.shape, 3)
    return ratings, p, O.mf_objective(ratings, 0.7, scale="mean", chunk_size=256)


def formulas(out):
    ratings, p, full = _problem()
    v0, g0 = O.value_and_grad(full, p)  # the single-device references, once
    d = jax.tree.map(lambda x: 0.1 * x, g0)
    q0, dg0 = O.quartic_coefficients(full, p, d), O.gauss_newton_diagonal(full, p)
    A0, b0, n0 = O.normal_equations(full, p.V)
    for ndev in (1, 2, 4):
        sh = O.shard_objective(full, mesh_of(ndev, "entries"))
        v, g = jax.jit(O.value_and_grad)(sh, p)
        gad = jax.grad(lambda q: O.value(sh, q))(p)
        A, b, n = O.normal_equations(sh, p.V)
        out[f"loss_{ndev}"] = abs(float(v) - float(v0)) / abs(float(v0))
        out[f"grad_{ndev}"] = tree_rel(g, g0)
        out[f"autodiff_{ndev}"] = tree_rel(gad, g0)
        out[f"quartic_{ndev}"] = rel(O.quartic_coefficients(sh, p, d), q0)
        out[f"gn_{ndev}"] = tree_rel(O.gauss_newton_diagonal(sh, p), dg0)
        out[f"normal_{ndev}"] = max(rel(A, A0), rel(b, b0), rel(n, n0))
    # more devices than entries: shards of padding only
    tiny = mf.data.Ratings(np.array([0, 1, 2]), np.array([0, 1, 0]), np.array([1.0, 2.0, 3.0]), (3, 2))
    pt = mf.init_factors(jax.random.key(1), (3, 2), 1)
    mesh = mesh_of(4, "entries")
    ft = O.mf_objective(tiny, 0.1)
    out["tiny"] = abs(float(O.value(O.shard_objective(ft, mesh), pt)) - float(O.value(ft, pt)))
    # the metric on a sharded objective ignores the padding
    out["rmse"] = abs(float(mf.metrics.rmse(p, O.shard_objective(full, mesh)))
                      - float(mf.metrics.rmse(p, ratings)))


def fits(out):
    ratings, p, full = _problem()
    rules = [("armijo", mf.optim.gd(linesearch=mf.linesearch.armijo())),
             ("exact", mf.optim.gd(linesearch=mf.linesearch.exact_mf())),
             ("gn_exact", optax.chain(mf.optim.mf_preconditioner(kind="block"),
                                      mf.optim.gd_direction(), mf.linesearch.exact_mf()))]
    for name, opt in rules:
        r0 = mf.fit(O.loss, opt, p, 8, loss_args=(full,))
        for ndev in (2, 4):  # (a 1-device mesh: the formulas part; CI time)
            r1 = mf.fit(O.loss, opt, p, 8, loss_args=(O.shard_objective(full, mesh_of(ndev, "entries")),))
            out[f"fit_{name}_{ndev}"] = tree_rel(r1.params, r0.params)
            out[f"fit_{name}_status_{ndev}"] = [int(r1.status), int(r0.status)]


def _vd_edge_ratings():
    """3 rows, 6 columns: row 1 and column 5 unrated, so 4 devices get empty blocks (more devices than rows)."""
    rows = np.array([0, 0, 0, 0, 2, 2])
    cols = np.array([0, 1, 2, 3, 0, 4])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 2.5], np.float32)
    return mf.data.Ratings(rows, cols, vals, (3, 6))


def _long_row_ratings():
    """Synthetic ratings plus one row rated in every column (far longer than the rest) and one column
    rated by every row: with small chunks both sides have a tier of long rows."""
    r = mf.data.synthetic(m=150, n=400, rank=3, density=0.03, seed=3)
    m, n = r.shape
    keys = np.unique(np.concatenate([np.asarray(r.rows, np.int64) * n + np.asarray(r.cols),
                                     7 * n + np.arange(n), np.arange(m) * n + 11]))
    vals = (1.0 + (keys * 7919 % 5)).astype(np.float32)
    return mf.data.Ratings((keys // n).astype(np.int32), (keys % n).astype(np.int32), vals, (m, n))


def _als_tiers(out):
    """Sharded ALS on the tiered layout (the one-device default) equals one device: exact and CG sweeps,
    biases, 2 (uneven: odd chunk counts) and 4 devices, a row far longer than the rest."""
    from mfjax.solvers import als_gram

    r = _long_row_ratings()
    out["tiers_longest_row"] = int(np.bincount(np.asarray(r.rows)).max())
    p0 = mf.init_factors(jax.random.key(4), r.shape, 3)
    for biases, cg, ndev in ((False, None, 2), (True, 3, 4)):  # exact on 2, CG + biases on 4 devices (CI time)
        obj = mf.solvers.als_objective(r, l2=1.5, weighted_l2=biases)
        params = p0 if not biases else mf.core.factors.BiasedFactors(p0.U, p0.V, jnp.zeros(r.shape[0]), jnp.zeros(r.shape[1]),
                                                          jnp.float32(3.0))
        sweep = jax.jit(functools.partial(als_gram.gram_sweep, cg_steps=cg))
        ref = params
        one = als_gram.als_problem(obj, chunk_entries=128)
        for _ in range(5):
            ref = sweep(ref, one)
        sp = mf.solvers.shard_als_problem(obj, mesh_of(ndev, "rows"), chunk_entries=128)
        res = params
        for _ in range(5):
            res = sweep(res, sp)
        tag = f"{int(biases)}_{ndev}"
        out[f"tiers_als_{tag}"] = tree_rel(res, ref)
        out[f"tiers_count_{tag}"] = [len(sp.rows), len(sp.cols)]
        # memory: the slots per device against the one-device tiered and untiered layouts' (the latter pads
        # every chunk to the longest row)
        slots = max(sum(int(np.asarray(t.mask.addressable_shards[k].data).size) for t in sp.rows + sp.cols)
                    for k in range(ndev))
        flat = als_gram.als_problem(obj, chunk_entries=128, tiers=False)
        out[f"tiers_slots_{tag}"] = [slots, int(sum(t.mask.size for t in one.rows + one.cols)),
                                     int(flat.rows.mask.size + flat.cols.mask.size)]


def solvers(out):
    als_r = mf.data.synthetic(m=200, n=150, rank=3, density=0.12, seed=1)
    out["als_nnz"] = int(als_r.nnz)
    # sharded ALS: each device solves its own rows; equal to one device
    for biases in (False, True):
        ref = mf.solvers.als(als_r, 3, l2=1.5, num_steps=4, biases=biases, weighted_l2=biases)
        for ndev in ((2,) if biases else (4,)):  # uneven and even splits (CI time)
            res = mf.solvers.als(als_r, 3, l2=1.5, num_steps=4, biases=biases, weighted_l2=biases,
                                 mesh=mesh_of(ndev, "rows"))
            out[f"als_{int(biases)}_{ndev}"] = tree_rel(res.params, ref.params)
    sp = mf.solvers.shard_als_problem(mf.solvers.als_objective(als_r, l2=1.0), mesh_of(4, "rows"))
    out["als_slots_per_device"] = [float(sum(np.asarray(t.mask.addressable_shards[k].data).sum() for t in sp.rows))
                                   for k in range(4)]
    out["als_layout_spec"] = str(sp.rows[0].entry.sharding.spec)
    _stage("als")
    # 100k ratings: jaxlib's batched LAPACK Cholesky deadlocked here on virtual CPU devices (the
    # devices' kernels blocked the shared intra-op pool); the mesh path solves without LAPACK
    big = mf.data.synthetic(m=2000, n=500, rank=5, density=0.1, seed=0)
    pb = mf.init_factors(jax.random.key(0), big.shape, 6)
    ref = mf.solvers.als(big, 6, l2=2.0, num_steps=1, init=pb)
    res = mf.solvers.als(big, 6, l2=2.0, num_steps=1, init=pb, mesh=mesh_of(4, "rows"))
    out["als_big_4"] = tree_rel(res.params, ref.params)
    _stage("als 100k ratings")
    _als_tiers(out)
    _stage("als tiers")
    # DSGD: one block per device, V blocks passed with ppermute; equals the one-device schedule
    for biases in (False, True):
        kw = dict(l2=1.0, lr=0.02, num_steps=3, batch_size=4, biases=biases, key=jax.random.key(2))
        for ndev in ((4,) if biases else (2,)):
            ref = mf.solvers.dsgd(als_r, 3, blocks=ndev, **kw)
            res = mf.solvers.dsgd(als_r, 3, mesh=mesh_of(ndev, "blocks"), **kw)
            out[f"dsgd_{int(biases)}_{ndev}"] = tree_rel(res.params, ref.params)
    _stage("dsgd")


def vector_descent_and_compare(out):
    als_r = mf.data.synthetic(m=200, n=150, rank=3, density=0.12, seed=1)
    out["als_nnz"] = int(als_r.nnz)
    # vector descent: each device its own rows of U and of V; equal to one device after 3 sweeps
    kw = dict(l2=1.5, num_steps=3, key=jax.random.key(0))
    ref = mf.solvers.vector_descent(als_r, 3, **kw)
    for ndev in (4,):  # 2 devices: the compare --devices 2 run below (CI time)
        res = mf.solvers.vector_descent(als_r, 3, mesh=mesh_of(ndev, "rows"), **kw)
        out[f"vd_{ndev}"] = tree_rel(res.params, ref.params)
        out[f"vd_loss_{ndev}"] = rel(res.trace.loss, ref.trace.loss)
    from mfjax.solvers.rowwise.sharded import shard_row_layout

    lay = shard_row_layout(als_r, mesh_of(4, "rows"))
    out["vd_rows_per_device"] = [int((np.asarray(s.data) > 0).sum()) for s in lay.counts.addressable_shards]
    out["vd_ratings_per_device"] = [int(np.asarray(s.data).sum()) for s in lay.counts.addressable_shards]
    # empty rows / columns, blocks with no ratings, more devices than rows
    edge = _vd_edge_ratings()
    kw = dict(l2=0.5, num_steps=3, key=jax.random.key(3))
    ref = mf.solvers.vector_descent(edge, 2, **kw)
    res = mf.solvers.vector_descent(edge, 2, mesh=mesh_of(4, "rows"), **kw)
    out["vd_edge"] = tree_rel(res.params, ref.params)
    out["vd_edge_empty_row_col"] = float(jnp.abs(res.params.U[1]).max() + jnp.abs(res.params.V[5]).max())
    out["vd_edge_finite"] = bool(jnp.isfinite(res.trace.loss).all())
    elay = shard_row_layout(edge, mesh_of(4, "rows"))
    out["vd_edge_ratings_per_device"] = [int(np.asarray(s.data).sum()) for s in elay.counts.addressable_shards]
    try:
        mf.solvers.vector_descent(als_r, 3, mesh=mesh_of(2, "rows"), schedule="interleaved", **kw)
        out["vd_interleaved_error"] = None
    except ValueError as e:
        out["vd_interleaved_error"] = str(e)
    _stage("vector descent")
    # mfjax compare --devices 2 (the main job on a 2-device mesh) against --devices 1, in this process
    from mfjax import cli

    grid = "gd+armijo,solver:als,solver:vector_descent,solver:dsgd"
    for d in (1, 2):
        argv = ["compare", "--synthetic-size", "120x90", "--synthetic-density", "0.15", "--devices", str(d),
                "--runs", grid, "--iters", "12", "--out", f"{sys.argv[2]}/d{d}", "--no-plots", "--no-progress",
                "--no-compile-cache"]
        with contextlib.redirect_stdout(io.StringIO()):
            out[f"compare_rc_{d}"] = cli.main(argv)
        _stage(f"compare --devices {d}")
    # DSGD on 2 devices is the 2 x 2-block schedule: its one-device reference is that schedule without a mesh
    from mfjax.compare.run import solver_steps
    from mfjax.losses import masked_sq_loss

    args = cli.build_parser().parse_args(argv[:5] + ["--devices", "1"])
    problem = cli._problem(args)
    res = mf.solvers.dsgd(problem.train, problem.rank, l2=problem.l2, key=jax.random.key(0), blocks=2,
                          num_steps=solver_steps("dsgd", 12), eval_set=problem.test)
    out["compare_dsgd_2_blocks"] = float(masked_sq_loss(res.params, problem.train.device_put(), problem.l2))


if __name__ == "__main__":
    result = {}
    parts = {"formulas": formulas, "fits": fits, "solvers": solvers, "vd_compare": vector_descent_and_compare}
    parts[sys.argv[1]](result)
    print("\n" + json.dumps(result))
