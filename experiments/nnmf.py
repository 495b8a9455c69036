"""Masked NNMF (slides eqs. 12-13) and the SVD/NMF lecture's four NMF losses, on ML-1M.

Slides (Beresnev & Klyushev 2024), "NNMF": multiplicative updates
``U <- U o ((W o X) V^T) / ((W o (UV)) V^T + eps)`` (and the same for V);
"Experiments. Results: Figure: NNMF"; overall: *"NNMF is inapplicable for
recommendation system task mostly because of the mask in the problem
formulation.  Mask makes NNMF to set almost all unknown values to 1, which is
very bad decision"*.  Lecture ("SVD, power iteration, NMF"): the NMF losses
L2, L1, KL and Itakura-Saito.

Parts (``results.json``; a re-run resumes), r = 10, no regularisation
(eqs. 12-13 have none):

- ``loss=l2|l1|kl|is,init=nndsvda``: :func:`mfjax.solvers.nmf.nmf` with each
  loss from the NNDSVDa start, held-out RMSE per iteration.
- ``loss=l2,init=random``: the slides' L2 updates from a random start.

For every part we also record the distribution of the predictions on the
test entries and on a random sample of *unobserved* (user, movie) pairs, to
check the slides' statement about the unknown values.
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "nnmf"


def parse_args(argv=None):
    p = C.base_parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--losses", default="l2,l1,kl,is")
    p.add_argument("--sample", type=int, default=200_000, help="unobserved pairs sampled for the prediction histogram")
    p.add_argument("--test-fraction", type=float, default=0.1)
    args = C.finish_args(p.parse_args(argv), NAME, argv)
    if args.quick:
        args.rank, args.iters, args.losses, args.sample = 4, 10, "l2", 2000
    return args


def _pred_stats(pred):
    import numpy as np

    pred = np.asarray(pred, np.float64)
    q = np.percentile(pred, [1, 5, 25, 50, 75, 95, 99])
    return {"mean": float(pred.mean()), "std": float(pred.std()),
            "percentiles_1_5_25_50_75_95_99": q,
            "frac_below_1.5": float(np.mean(pred < 1.5)), "frac_above_5": float(np.mean(pred > 5)),
            "hist_edges": np.linspace(0, 6, 31), "hist": np.histogram(np.clip(pred, 0, 6), np.linspace(0, 6, 31))[0]}


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

    nmf = mf.solvers.nmf

    t_start = time.perf_counter()
    ratings, desc = C.load_data(args)
    train, test = mf.data.split(ratings, fractions=(1 - args.test_fraction, args.test_fraction), seed=args.seed)
    m, n = ratings.shape
    rng = np.random.default_rng(args.seed + 7)
    ii = rng.integers(0, m, args.sample * 2)
    jj = rng.integers(0, n, args.sample * 2)
    observed = np.asarray(ratings.rows, np.int64) * n + np.asarray(ratings.cols, np.int64)
    keep = ~np.isin(ii.astype(np.int64) * n + jj, observed)
    ii, jj = ii[keep][: args.sample], jj[keep][: args.sample]
    losses = [v for v in args.losses.split(",") if v]
    config = {
        "command": args.command,
        "seed": args.seed,
        "split": {"train_test": [1 - args.test_fraction, args.test_fraction], "split_seed": args.seed,
                  "function": "mfjax.data.split"},
        "rank": args.rank, "iters": args.iters, "l2": 0.0, "losses": losses,
        "unobserved_sample": {"size": int(ii.size), "seed": args.seed + 7},
        "quick": args.quick,
    }
    res = C.Results(args.out, config, desc, resume=not args.no_resume)
    print(f"data {desc['name']} {desc['shape']} nnz={desc['nnz']} checksum={desc['checksum']}")
    key = jax.random.key(args.seed)
    tr_d, te_d = train.device_put(), test.device_put()

    def run(loss, init):
        t0 = time.perf_counter()
        r = nmf(tr_d, args.rank, loss=loss, num_steps=args.iters, init=init, key=key, eval_set=te_d)
        jax.block_until_ready(r.params)
        wall = time.perf_counter() - t0
        U, V = (np.asarray(a) for a in r.params)
        pred_test = np.einsum("kr,kr->k", U[np.asarray(test.rows)], V[np.asarray(test.cols)])
        pred_unobs = np.einsum("kr,kr->k", U[ii], V[jj])
        return {"trace": {"loss": np.asarray(r.trace.loss), "eval_rmse": np.asarray(r.trace.eval_metric)},
                "train_rmse": float(mf.metrics.rmse(r.params, tr_d)),
                "test_rmse": float(mf.metrics.rmse(r.params, te_d)),
                "test_rmse_clipped": float(mf.metrics.rmse(r.params, te_d, clip=(1.0, 5.0))),
                "pred_test": _pred_stats(pred_test), "pred_unobserved": _pred_stats(pred_unobs),
                "min_factor": float(min(U.min(), V.min())), "wall_s": wall}

    jobs = [(lo, "nndsvda") for lo in losses] + [("l2", "random")]
    for loss, init in jobs:
        name = f"loss={loss},init={init}"
        r = res.part(name, lambda loss=loss, init=init: run(loss, init),
                     cfg={"rank": args.rank, "iters": args.iters, "loss": loss, "init": init})
        pu = r["pred_unobserved"]
        print(f"  {name:24s} test RMSE {r['test_rmse']:.4f} (clipped {r['test_rmse_clipped']:.4f}); "
              f"unobserved preds mean {pu['mean']:.2f}, <1.5: {pu['frac_below_1.5']:.1%} ({r['wall_s']:.1f} s)",
              flush=True)
    tv = np.asarray(test.values)
    res.set("test_ratings_distribution", {str(k): float(np.mean(tv == k)) for k in (1, 2, 3, 4, 5)})
    res.set("total_wall_s", time.perf_counter() - t_start)
    if not args.no_plots:
        plot(res, args)
    return 0


def plot(res, args):
    import numpy as np

    plt = C.plt
    P = res.doc["parts"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, r in P.items():
        ev = C.arr(r["trace"]["eval_rmse"])
        axes[0].plot(np.arange(1, ev.size + 1), ev, lw=1.2, label=name)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("test RMSE")
    lo = min(np.nanmin(C.arr(r["trace"]["eval_rmse"])) for r in P.values())
    axes[0].set_ylim(lo - 0.05, lo + 1.0)
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"masked NMF, r={args.rank}", fontsize=10)
    for name in ("loss=l2,init=nndsvda", "loss=l2,init=random", "loss=kl,init=nndsvda"):
        if name not in P:
            continue
        h = P[name]["pred_unobserved"]
        e = C.arr(h["hist_edges"])
        c = C.arr(h["hist"])
        axes[1].step(e[:-1], c / c.sum(), where="post", label=f"{name}: unobserved pairs")
    h = P[next(iter(P))]["pred_test"]
    e, c = C.arr(h["hist_edges"]), C.arr(h["hist"])
    axes[1].step(e[:-1], c / c.sum(), where="post", color="k", ls="--", label=f"{next(iter(P))}: test entries")
    axes[1].set_xlabel("predicted rating")
    axes[1].set_ylabel("fraction")
    axes[1].legend(fontsize=7)
    axes[1].set_title("where do the unknown values go?", fontsize=10)
    C.savefig(fig, pathlib.Path(args.out) / "nnmf.png")


if __name__ == "__main__":
    sys.exit(main())
