"""The lecture's SGD vs ALS for regularised matrix factorization, and the choice of K.

Lecture (Jaggi, "Matrix Factorizations", EPFL CS-433, 2024): the regularised
masked objective ``1/2 sum_Omega (x_dn - (W Z^T)_dn)^2 + lambda/2 (||W||^2 + ||Z||^2)``
minimised by SGD (one rating at a time) or by ALS with missing entries
(closed-form ridge regressions per row / column); "Large K facilitates
overfitting" (choosing K).  The lecture has no numbers; we show the
trade-off on ML-1M: held-out RMSE per epoch / sweep and per second, and
train / test RMSE against K.

Parts (``results.json``; a re-run resumes):

- ``als``: :func:`mfjax.solvers.als` with ``l2 = lambda`` (sum scaling,
  the same minimiser as the lecture's 1/2-scaled objective), ``--sweeps``.
- ``sgd``: :func:`mfjax.solvers.sgd` on the same objective (regulariser
  share ``lambda / n_i`` per rating), constant step ``--lr``, ``--epochs``,
  sequential per-rating updates (``--batch 1``) unless told otherwise.
- ``K=..,l2=..``: ALS for every K of ``--ks`` at ``lambda`` and at a small
  ``--l2-small``: train and test RMSE (overfitting grows with K).
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "sgd_vs_als"


def parse_args(argv=None):
    p = C.base_parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=10, help="K (default 10)")
    p.add_argument("--l2", type=float, default=10.0, help="lambda, sum scaling (default 10)")
    p.add_argument("--sweeps", type=int, default=10, help="ALS sweeps (default 10)")
    p.add_argument("--epochs", type=int, default=10, help="SGD epochs (default 10)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD step size (default 0.01)")
    p.add_argument("--batch", type=int, default=1, help="SGD minibatch (default 1: per-rating updates)")
    p.add_argument("--ks", default="2,5,10,20", help="ranks K of the choice-of-K sweep")
    p.add_argument("--l2-small", type=float, default=0.5, help="small lambda of the K sweep")
    p.add_argument("--k-sweeps", type=int, default=6, help="ALS sweeps per K-sweep run")
    p.add_argument("--test-fraction", type=float, default=0.1)
    args = C.finish_args(p.parse_args(argv), NAME, argv)
    if args.quick:
        args.rank, args.sweeps, args.epochs, args.k_sweeps, args.ks = 5, 4, 4, 4, "5"
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

    als, sgd = mf.solvers.als, mf.solvers.sgd

    t_start = time.perf_counter()
    ratings, desc = C.load_data(args)
    train, test = mf.data.split(ratings, fractions=(1 - args.test_fraction, args.test_fraction), seed=args.seed)
    ks = [int(v) for v in args.ks.split(",") if v]
    config = {
        "command": args.command,
        "seed": args.seed,
        "split": {"train_test": [1 - args.test_fraction, args.test_fraction], "split_seed": args.seed,
                  "function": "mfjax.data.split"},
        "rank": args.rank, "l2": args.l2, "scale": "sum",
        "als": {"num_sweeps": args.sweeps},
        "sgd": {"lr": args.lr, "num_epochs": args.epochs, "batch_size": args.batch, "weighted_l2": False},
        "choose_K": {"ks": ks, "l2s": [args.l2_small, args.l2], "num_sweeps": args.k_sweeps},
        "quick": args.quick,
    }
    res = C.Results(args.out, config, desc, resume=not args.no_resume)
    print(f"data {desc['name']} {desc['shape']} nnz={desc['nnz']} checksum={desc['checksum']}")
    key = jax.random.key(args.seed)
    tr_d, te_d = train.device_put(), test.device_put()

    def record(result, wall):
        return {
            "trace": {"loss": np.asarray(result.trace.loss), "eval_rmse": np.asarray(result.trace.eval_metric)},
            "train_rmse": float(mf.metrics.rmse(result.params, tr_d)),
            "test_rmse": float(mf.metrics.rmse(result.params, te_d)),
            "wall_s": wall,
        }

    def run_als(rank, l2, sweeps):
        t0 = time.perf_counter()
        r = als(tr_d, rank, l2=l2, num_steps=sweeps, key=key, eval_set=te_d)
        jax.block_until_ready(r.params)
        return record(r, time.perf_counter() - t0)

    def run_sgd():
        t0 = time.perf_counter()
        r = sgd(tr_d, args.rank, key=key, lr=args.lr, l2=args.l2, num_steps=args.epochs,
                batch_size=args.batch, eval_set=te_d)
        jax.block_until_ready(r.params)
        return record(r, time.perf_counter() - t0)

    a = res.part("als", lambda: run_als(args.rank, args.l2, args.sweeps),
                 cfg={"rank": args.rank, "l2": args.l2, "num_sweeps": args.sweeps})
    print(f"ALS K={args.rank} l2={args.l2:g}: test RMSE {a['test_rmse']:.4f} after {args.sweeps} sweeps, {a['wall_s']:.1f} s")
    s = res.part("sgd", run_sgd, cfg={"rank": args.rank, "l2": args.l2, "lr": args.lr,
                                       "num_epochs": args.epochs, "batch_size": args.batch})
    print(f"SGD K={args.rank} l2={args.l2:g} lr={args.lr}: test RMSE {s['test_rmse']:.4f} after {args.epochs} epochs, "
          f"{s['wall_s']:.1f} s")
    for l2 in (args.l2_small, args.l2):
        for k in ks:
            key_ = f"K={k},l2={l2:g}"
            r = res.part(key_, lambda k=k, l2=l2: run_als(k, l2, args.k_sweeps), cfg={"num_sweeps": args.k_sweeps})
            print(f"  {key_}: train {r['train_rmse']:.4f} test {r['test_rmse']:.4f} ({r['wall_s']:.1f} s)", flush=True)
    res.set("total_wall_s", time.perf_counter() - t_start)
    if not args.no_plots:
        plot(res, args, ks)
    return 0


def plot(res, args, ks):
    import numpy as np

    plt = C.plt
    P = res.doc["parts"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, lab in (("als", f"ALS ({args.sweeps} sweeps)"), ("sgd", f"SGD lr={args.lr} ({args.epochs} epochs)")):
        r = P[name]
        ev = C.arr(r["trace"]["eval_rmse"])
        loss = C.arr(r["trace"]["loss"])
        x = np.arange(1, ev.size + 1)
        t = np.linspace(r["wall_s"] / ev.size, r["wall_s"], ev.size)
        axes[0].plot(x, ev, "o-", ms=3, label=lab)
        axes[1].plot(t, ev, "o-", ms=3, label=lab)
        axes[2].semilogy(x, loss, "o-", ms=3, label=lab)
    axes[0].set_xlabel("sweep / epoch")
    axes[0].set_ylabel("test RMSE")
    axes[1].set_xlabel("wall time (s, compile included)")
    axes[1].set_ylabel("test RMSE")
    axes[2].set_xlabel("sweep / epoch")
    axes[2].set_ylabel(f"training objective (sum scaling, lambda={args.l2:g})")
    lo = min(np.nanmin(C.arr(P[n]["trace"]["eval_rmse"])) for n in ("als", "sgd"))
    for ax in axes[:2]:
        ax.set_ylim(lo - 0.02, lo + 0.4)
        ax.legend(fontsize=8)
    fig.suptitle(f"SGD vs ALS, K={args.rank}, lambda={args.l2:g}", fontsize=10)
    C.savefig(fig, pathlib.Path(args.out) / "sgd_vs_als.png")

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for l2, ls in ((args.l2_small, "--"), (args.l2, "-")):
        tr = [P.get(f"K={k},l2={l2:g}", {}).get("train_rmse", np.nan) for k in ks]
        te = [P.get(f"K={k},l2={l2:g}", {}).get("test_rmse", np.nan) for k in ks]
        ax.plot(ks, tr, "o" + ls, color="C0", label=f"train, lambda={l2:g}")
        ax.plot(ks, te, "s" + ls, color="C3", label=f"test, lambda={l2:g}")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (rank)")
    ax.set_ylabel("RMSE")
    ax.set_title("Choosing K (ALS)", fontsize=10)
    ax.legend(fontsize=7)
    C.savefig(fig, pathlib.Path(args.out) / "choose_k.png")


if __name__ == "__main__":
    sys.exit(main())
