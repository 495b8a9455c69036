"""SVD by power iteration with deflation (the SVD/NMF lecture), and the SVD completion baseline.

Lecture ("SVD, power iteration, NMF"): power iteration ``v <- A v / ||A v||``,
``lambda_1 = v^T A v``, deflation ``A^(2) = A - lambda_1 v v^T``, repeated;
worked example: the 4 x 6 matrix ``A`` below, whose SVD with the top 4
triplets reproduces ``A`` exactly (``np.around(Ap, 3)`` prints ``A``).

Parts (``results.json``; a re-run resumes):

- ``lecture_example``: :func:`mfjax.solvers.svd.power_iteration_svd` of the
  lecture's ``A`` against ``numpy.linalg.svd`` (singular values, subspace
  agreement, reconstruction error).  (``A`` has rank 2 -- rows 1-2 and 3-4
  are equal -- so the top 2 triplets already reproduce it.)
- ``topk``: the top-``k`` singular values of the (zero-filled) training
  rating matrix by :func:`~mfjax.solvers.svd.power_iteration_svd_operator`
  (sparse products, no dense matrix) against ``scipy.sparse.linalg.svds``.
- ``complete,r=..``: :func:`~mfjax.solvers.svd.svd_complete` (row-mean fill,
  truncated SVD; Sarwar et al. 2000) test RMSE for several ranks.
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "svd_power_iteration"

LECTURE_A = [[1, 2, 3, 4, 3, 3],
             [1, 2, 3, 4, 3, 3],
             [3, 3, 3, 1, 4, 5],
             [3, 3, 3, 1, 4, 5]]


def parse_args(argv=None):
    p = C.base_parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=10, help="singular triplets of the rating matrix (default 10)")
    p.add_argument("--iters", type=int, default=500, help="max power iterations per triplet")
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--ranks", default="2,5,10,20", help="ranks of the completion baseline")
    p.add_argument("--fill", default="row_mean", help="fill of the completion baseline")
    p.add_argument("--test-fraction", type=float, default=0.1)
    args = C.finish_args(p.parse_args(argv), NAME, argv)
    if args.quick:
        args.k, args.iters, args.ranks = 3, 200, "2"
    return args


def main(argv=None) -> int:
    """Command line entry point (``mfjax reproduce`` calls it too): parse ``argv``, then :func:`run`."""
    args = parse_args(argv)
    return run(args, args.out)


def run(config, workdir) -> int:
    """Run the experiment with ``config`` (the parsed options), writing ``results.json`` and PNGs to ``workdir``.

    Finished parts found in ``workdir/results.json`` with the same configuration are reused.
    """
    args = C.with_workdir(config, workdir)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    import mfjax as mf

    svd = mf.solvers  # power_iteration_svd, power_iteration_svd_operator, svd_complete

    t_start = time.perf_counter()
    ratings, desc = C.load_data(args)
    train, test = mf.data.split(ratings, fractions=(1 - args.test_fraction, args.test_fraction), seed=args.seed)
    ranks = [int(v) for v in args.ranks.split(",") if v]
    config = {
        "command": args.command,
        "seed": args.seed,
        "split": {"train_test": [1 - args.test_fraction, args.test_fraction], "split_seed": args.seed,
                  "function": "mfjax.data.split"},
        "k": args.k, "iters": args.iters, "tol": args.tol, "ranks": ranks, "fill": args.fill,
        "quick": args.quick,
    }
    res = C.Results(args.out, config, desc, resume=not args.no_resume)
    print(f"data {desc['name']} {desc['shape']} nnz={desc['nnz']} checksum={desc['checksum']}")
    key = jax.random.key(args.seed)

    def lecture():
        A = np.asarray(LECTURE_A, np.float64)
        out = {}
        for k in (2, 4):
            t0 = time.perf_counter()
            t = svd.power_iteration_svd(jnp.asarray(A, jnp.float32), k, num_iters=2000, key=key, tol=1e-7)
            U, s, Vt = (np.asarray(x, np.float64) for x in t)
            wall = time.perf_counter() - t0
            ref = np.linalg.svd(A, compute_uv=False)
            recon = U @ np.diag(s) @ Vt
            out[f"k={k}"] = {"s": s, "s_numpy": ref[:k], "max_abs_recon_error": float(np.abs(recon - A).max()),
                             "recon_rounded": np.around(recon, 3), "wall_s": wall}
        return out

    lec = res.part("lecture_example", lecture, cfg={"A": LECTURE_A})
    for k, v in lec.items():
        if k.startswith("k="):
            print(f"  lecture A, {k}: s = {np.round(C.arr(v['s']), 4)} (numpy {np.round(C.arr(v['s_numpy']), 4)}), "
                  f"max |U S Vt - A| = {v['max_abs_recon_error']:.2e}")

    def topk():
        m, n = train.shape
        rows, cols = jnp.asarray(train.rows), jnp.asarray(train.cols)
        vals = jnp.asarray(train.values, jnp.float32)

        def matvec(v):
            return jax.ops.segment_sum(vals * v[cols], rows, num_segments=m)

        def rmatvec(u):
            return jax.ops.segment_sum(vals * u[rows], cols, num_segments=n)

        f = jax.jit(lambda key: svd.power_iteration_svd_operator(matvec, rmatvec, (m, n), args.k,
                                                                 num_iters=args.iters, key=key, tol=args.tol))
        t0 = time.perf_counter()
        t = f(key)
        jax.block_until_ready(t)
        wall = time.perf_counter() - t0
        S = sp.csr_matrix((np.asarray(train.values, np.float64), (np.asarray(train.rows), np.asarray(train.cols))),
                          shape=(m, n))
        t0 = time.perf_counter()
        s_ref = np.sort(spla.svds(S, k=args.k, return_singular_vectors=False))[::-1]
        wall_ref = time.perf_counter() - t0
        s = np.asarray(t.s, np.float64)
        V = np.asarray(t.Vt, np.float64).T
        _, _, Vt_ref = spla.svds(S, k=args.k)
        Vr = Vt_ref[::-1].T
        cosines = np.abs(np.sum(V * Vr, axis=0))
        return {"s": s, "s_scipy": s_ref, "rel_err": np.abs(s - s_ref) / s_ref,
                "abs_cos_v_vs_scipy": cosines, "wall_s": wall, "wall_scipy_s": wall_ref}

    tk = res.part("topk", topk, cfg={"k": args.k, "iters": args.iters, "tol": args.tol})
    print(f"  top-{args.k} singular values: max rel. error vs scipy svds {np.max(C.arr(tk['rel_err'])):.2e} "
          f"({tk['wall_s']:.1f} s; scipy {tk['wall_scipy_s']:.1f} s)")

    te_d = test.device_put()
    for r in ranks:
        def complete(r=r):
            t0 = time.perf_counter()
            out = svd.svd_complete(train, r, fill=args.fill, num_iters=args.iters, tol=1e-5, key=key, eval_set=test)
            jax.block_until_ready(out.params)
            return {"test_rmse": float(mf.metrics.rmse(out.params, te_d)),
                    "test_rmse_clipped": float(mf.metrics.rmse(out.params, te_d, clip=(1.0, 5.0))),
                    "wall_s": time.perf_counter() - t0}

        c = res.part(f"complete,r={r}", complete, cfg={"rank": r, "fill": args.fill, "iters": args.iters})
        print(f"  svd_complete r={r} ({args.fill}): test RMSE {c['test_rmse']:.4f} (clipped {c['test_rmse_clipped']:.4f})",
              flush=True)
    res.set("total_wall_s", time.perf_counter() - t_start)
    if not args.no_plots:
        plot(res, args, ranks)
    return 0


def plot(res, args, ranks):
    import numpy as np

    plt = C.plt
    P = res.doc["parts"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    lec = P["lecture_example"]["k=4"]
    x = np.arange(1, 5)
    axes[0].plot(x, C.arr(lec["s_numpy"]), "o", ms=9, mfc="none", label="numpy.linalg.svd")
    axes[0].plot(x, C.arr(lec["s"]), "x", ms=7, label="power iteration + deflation")
    axes[0].set_yscale("symlog", linthresh=1e-6)
    axes[0].set_xlabel("index")
    axes[0].set_ylabel("singular value")
    axes[0].set_title(f"lecture's 4x6 A (max |USVt - A| = {lec['max_abs_recon_error']:.1e})", fontsize=9)
    axes[0].legend(fontsize=7)
    tk = P["topk"]
    k = np.arange(1, C.arr(tk["s"]).size + 1)
    axes[1].plot(k, C.arr(tk["s_scipy"]), "o", ms=9, mfc="none", label="scipy.sparse.linalg.svds")
    axes[1].plot(k, C.arr(tk["s"]), "x", ms=7, label="power iteration (sparse operator)")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("index")
    axes[1].set_ylabel("singular value")
    axes[1].set_title(f"training rating matrix ({res.doc['data']['name']})", fontsize=9)
    axes[1].legend(fontsize=7)
    rm = [P.get(f"complete,r={r}", {}).get("test_rmse", np.nan) for r in ranks]
    rc = [P.get(f"complete,r={r}", {}).get("test_rmse_clipped", np.nan) for r in ranks]
    axes[2].plot(ranks, rm, "o-", label="test RMSE")
    axes[2].plot(ranks, rc, "s--", label="clipped to [1, 5]")
    axes[2].set_xlabel("rank r")
    axes[2].set_ylabel("test RMSE")
    axes[2].set_title(f"SVD completion ({args.fill} fill)", fontsize=9)
    axes[2].legend(fontsize=7)
    C.savefig(fig, pathlib.Path(args.out) / "svd_power_iteration.png")


if __name__ == "__main__":
    sys.exit(main())
