"""Row-wise vector descent (slides Algorithm 13) on ML-1M, against GD + 1/L.

Slides (Beresnev & Klyushev 2024), "Main idea": update U row by row and V
column by column, each row problem (eqs. 7-8) in R^r "so we can apply methods
like BFGS"; "Experiments. Results: Figure: Vector Gradient Descent"; overall:
*"Both Neural Network and Vector Gradient descent showed their applicability
for recommendation system task, however, they have been outperformed by other
models"*.

Parts (``results.json``; a re-run resumes), all r = 10, sum scaling:

- ``parallel-bfgs,l2=..``: :func:`mfjax.solvers.vector_descent.vector_descent`,
  all rows at once, per-row BFGS with exact steps (``r`` iterations: the ALS
  half-sweep up to rounding), for lambda = 2 (the slides') and lambda = 10.
- ``parallel-gd-armijo,l2=2``: per-row GD + Armijo, 5 iterations per row per sweep.
- ``interleaved-bfgs,l2=2``: Algorithm 13's order (blocks of k_U rows then k_V
  columns, fresh values used at once).
The plot adds the GD + 1/L best-model trace of ``slides_best_model`` when its
results exist (same split and seed).
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "vector_descent"


def parse_args(argv=None):
    p = C.base_parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--l2s", default="2,10", help="lambdas of the parallel BFGS runs")
    p.add_argument("--sweeps", type=int, default=10)
    p.add_argument("--interleaved-sweeps", type=int, default=5)
    p.add_argument("--block", type=int, default=512, help="k_U + k_V of the interleaved schedule")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--best-results", default=None,
                   help="slides_best_model results.json to overlay (default experiments/results/slides_best_model/)")
    args = C.finish_args(p.parse_args(argv), NAME, argv)
    if args.quick:
        args.rank, args.sweeps, args.interleaved_sweeps, args.block, args.l2s = 4, 3, 2, 16, "2"
        args.only_parallel = True  # one compilation (the smoke test)
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
    import numpy as np

    import mfjax as mf

    vector_descent = mf.solvers.vector_descent

    t_start = time.perf_counter()
    ratings, desc = C.load_data(args)
    train, test = mf.data.split(ratings, fractions=(1 - args.test_fraction, args.test_fraction), seed=args.seed)
    l2s = [float(v) for v in args.l2s.split(",") if v]
    m, n = train.shape
    k_u, k_v = mf.solvers.default_block_sizes(m, n, args.block)
    config = {
        "command": args.command,
        "seed": args.seed,
        "split": {"train_test": [1 - args.test_fraction, args.test_fraction], "split_seed": args.seed,
                  "function": "mfjax.data.split"},
        "rank": args.rank, "scale": "sum", "l2s": l2s, "sweeps": args.sweeps,
        "interleaved": {"sweeps": args.interleaved_sweeps, "k_u": k_u, "k_v": k_v},
        "quick": args.quick,
    }
    res = C.Results(args.out, config, desc, resume=not args.no_resume)
    print(f"data {desc['name']} {desc['shape']} nnz={desc['nnz']} checksum={desc['checksum']}")
    key = jax.random.key(args.seed)
    tr_d, te_d = train.device_put(), test.device_put()

    def run(l2, sweeps, **kw):
        t0 = time.perf_counter()
        r = vector_descent(tr_d, args.rank, l2=l2, num_steps=sweeps, eval_set=te_d, key=key, **kw)
        jax.block_until_ready(r.params)
        wall = time.perf_counter() - t0
        return {"trace": {"loss": np.asarray(r.trace.loss), "eval_rmse": np.asarray(r.trace.eval_metric)},
                "train_rmse": float(mf.metrics.rmse(r.params, tr_d)),
                "test_rmse": float(mf.metrics.rmse(r.params, te_d)), "wall_s": wall}

    runs = []
    for l2 in l2s:
        runs.append((f"parallel-bfgs,l2={l2:g}", dict(l2=l2, sweeps=args.sweeps),
                     {"schedule": "parallel", "row_optimizer": "bfgs+exact (default)", "l2": l2, "sweeps": args.sweeps}))
    gd_armijo = mf.optim.gd(linesearch=mf.linesearch.armijo(**mf.linesearch.LITERAL["armijo"]))  # as recorded
    l2_0 = l2s[0]
    extra = []
    extra.append((f"parallel-gd-armijo,l2={l2_0:g}", dict(l2=l2_0, sweeps=args.sweeps, optimizer=gd_armijo, inner_steps=5),
                 {"schedule": "parallel", "row_optimizer": "gd+armijo", "inner_steps": 5, "l2": l2_0,
                  "sweeps": args.sweeps}))
    extra.append((f"interleaved-bfgs,l2={l2_0:g}",
                 dict(l2=l2_0, sweeps=args.interleaved_sweeps, schedule="interleaved", k_u=k_u, k_v=k_v),
                 {"schedule": "interleaved", "k_u": k_u, "k_v": k_v, "row_optimizer": "bfgs+exact (default)",
                  "l2": l2_0, "sweeps": args.interleaved_sweeps}))
    if not getattr(args, "only_parallel", False):
        runs += extra
    for name, kw, cfg in runs:
        r = res.part(name, lambda kw=kw: run(**kw), cfg=cfg)
        print(f"  {name:28s} test RMSE {r['test_rmse']:.4f} train {r['train_rmse']:.4f} ({r['wall_s']:.1f} s)",
              flush=True)
    res.set("total_wall_s", time.perf_counter() - t_start)
    if not args.no_plots:
        plot(res, args, desc)
    return 0


def plot(res, args, desc):
    import numpy as np

    plt = C.plt
    P = res.doc["parts"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, r in P.items():
        ev = C.arr(r["trace"]["eval_rmse"])
        x = np.arange(1, ev.size + 1)
        t = np.linspace(r["wall_s"] / ev.size, r["wall_s"], ev.size)
        axes[0].plot(x, ev, "o-", ms=3, label=name)
        axes[1].plot(t, ev, "o-", ms=3, label=name)
    best_path = pathlib.Path(args.best_results) if args.best_results else (
        C.REPO / "experiments" / "results" / "slides_best_model" / "results.json")
    if best_path.exists() and not args.quick:
        b = json.loads(best_path.read_text())
        if b.get("data", {}).get("checksum") == desc["checksum"] and b.get("seed") == args.seed and "best" in b["parts"]:
            bb = b["parts"]["best"]
            ev = C.arr(bb["trace"]["eval_rmse"])
            t = np.linspace(bb["wall_s"] / ev.size, bb["wall_s"], ev.size)
            mk = np.isfinite(ev)
            axes[1].plot(t[mk], ev[mk], "k-", lw=1, label="GD + 1/L, l2=2 (slides_best_model)")
    axes[0].set_xlabel("sweep")
    axes[0].set_ylabel("test RMSE")
    axes[1].set_xlabel("wall time (s, compile included)")
    axes[1].set_ylabel("test RMSE")
    lo = min(np.nanmin(C.arr(r["trace"]["eval_rmse"])) for r in P.values())
    for ax in axes:
        ax.set_ylim(lo - 0.02, lo + 0.4)
        ax.legend(fontsize=7)
    fig.suptitle(f"Vector descent (Algorithm 13), r={args.rank}", fontsize=10)
    C.savefig(fig, pathlib.Path(args.out) / "vector_descent.png")


if __name__ == "__main__":
    sys.exit(main())
