"""The slides' per-optimizer convergence plots and their comparison plot.

Slides (Beresnev & Klyushev 2024, "Recommendation systems via approximate
matrix factorization"), "Experiments. Gradient descent / Heavy Ball / Nesterov
/ RMSprop / AdaGrad / Adam" (one convergence figure each) and "Experiments.
Comparison"; conclusion: *"Gradient descent method showed the best overall
performance (both in terms of time and score)"*.  The figures themselves are
missing from the text extraction, so we draw the natural reading: for each
optimizer, the training loss (slides eq. 4, sum scaling, r = 10, lambda = 2)
against the iteration under several step rules; then every optimizer with its
best step rule on one plot (loss and test RMSE vs iteration and wall time).

Each run is ``mfjax.fit`` of ``mfjax.optim.<optimizer>(linesearch=<rule>)``;
records follow :mod:`mfjax.compare`'s format, so ``mfjax.compare.summarize``,
``write_tables`` and ``plot_results`` produce the table and the generic plots
(in ``compare/``).  Every run is stored in ``results.json`` as it finishes;
a re-run resumes.

BFGS on ML-1M keeps its pairs instead of the ``(m+n) r`` square inverse
Hessian (97k x 97k, 38 GB): the compact representation with room for every
pair of the run (``mfjax.optim.bfgs(memory=iters)``), the same algorithm at
O(iters (m+n) r) memory.  On synthetic data it keeps the dense matrix.

Usage::

    python experiments/slides_optimizer_comparison.py                 # ML-1M
    python experiments/slides_optimizer_comparison.py --data synthetic
    python experiments/slides_optimizer_comparison.py --quick
    mfjax reproduce slides-compare [-- args]
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "slides_optimizer_comparison"

OPTIMIZERS = ["gd", "heavy_ball", "nesterov", "rmsprop", "adagrad", "adam", "bfgs"]
RULES = ["constant", "inverse_sqrt", "inverse_lipschitz", "armijo"]
LABELS = {"gd": "Gradient descent", "heavy_ball": "Heavy ball", "nesterov": "Nesterov", "rmsprop": "RMSprop",
          "adagrad": "AdaGrad", "adam": "Adam", "bfgs": "BFGS"}

# Constant / 1/sqrt(k) step sizes, by data set and optimizer family.  The
# gradient-scaled directions (GD, heavy ball, Nesterov) need ~1/L of the
# sum-scaled loss (ML-1M: the 1/L-estimate rule accepts 6e-5..2.4e-4, median 1.2e-4); the
# normalised ones (AdaGrad, RMSprop, Adam) move ~gamma per coordinate.  (A first ML-1M
# run with 10x smaller values for those three barely moved in 100 iterations; changing a
# value recomputes only the affected runs.)
CONSTANT = {
    # BFGS: GD's value, since its first direction is -g (H_0 = I); not tuned
    "ml-1m": {"gd": 1e-4, "heavy_ball": 1e-5, "nesterov": 1e-5, "rmsprop": 3e-2, "adagrad": 3e-1, "adam": 3e-2,
              "bfgs": 1e-4},
    "synthetic": {"gd": 2e-3, "heavy_ball": 2e-4, "nesterov": 2e-4, "rmsprop": 1e-2, "adagrad": 1e-1,
                  "adam": 1e-2, "bfgs": 0.1},
}


def parse_args(argv=None):
    p = C.base_parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--l2", type=float, default=2.0)
    p.add_argument("--iters", type=int, default=None, help="iterations per run (default 100 on ML-1M, 300 synthetic)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--optimizers", default=None, help=f"comma-separated subset of {','.join(OPTIMIZERS)}")
    p.add_argument("--rules", default=None, help=f"comma-separated subset of {','.join(RULES)}")
    args = C.finish_args(p.parse_args(argv), NAME, argv)
    if args.quick:
        args.iters = args.iters or 30
        args.eval_every = 5
        args.optimizers = args.optimizers or "gd"
        args.rules = args.rules or "constant,inverse_lipschitz"
    if args.iters is None:
        args.iters = 100 if args.data == "ml-1m" else 300
    opts = args.optimizers.split(",") if args.optimizers else list(OPTIMIZERS)
    args.optimizer_list = opts
    args.rule_list = args.rules.split(",") if args.rules else list(RULES)
    return args


def make_rule(rule: str, opt: str, data: str):
    import mfjax as mf
    import mfjax.linesearch  # noqa: F401

    gamma = CONSTANT["ml-1m" if data == "ml-1m" else "synthetic"][opt]
    if rule == "constant":
        return mf.linesearch.constant(gamma), {"step_size": gamma}
    if rule == "inverse_sqrt":
        return mf.linesearch.inverse_sqrt(3 * gamma), {"step_size": 3 * gamma}
    if rule == "inverse_lipschitz":
        # the slides' warm start without the extrapolation of the defaults (issue 11): the recorded figures
        return (mf.linesearch.inverse_lipschitz(growth=2.0, extrapolate=None),
                {"growth": 2.0, "initial_step": 1.0})
    if rule == "armijo":
        return (mf.linesearch.armijo(growth=2.0, extrapolate=None, grad_at="end"),
                {"growth": 2.0, "initial_step": 1.0, "c1": 1e-4})
    raise ValueError(f"unknown rule {rule!r}")


def bfgs_memory(opt: str, data: str, iters: int):
    """BFGS's pair memory: every pair of the run on ML-1M (the compact form), ``None`` (dense ``H``) elsewhere."""
    return iters if opt == "bfgs" and data == "ml-1m" else None


def make_optimizer(opt: str, rule_obj, memory: int | None = None):
    import mfjax as mf
    import mfjax.optim  # noqa: F401

    if memory is not None:
        return mf.optim.bfgs(memory=memory, linesearch=rule_obj)
    return getattr(mf.optim, opt)(linesearch=rule_obj)


def _loss(params, ratings, l2):
    import mfjax as mf

    return mf.losses.masked_sq_loss(params, ratings, l2, scale="sum")


def _rmse(params, ratings):
    import mfjax as mf

    return mf.metrics.rmse(params, ratings)


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

    import mfjax as mf

    t_start = time.perf_counter()
    ratings, desc = C.load_data(args)
    train, test = mf.data.split(ratings, fractions=(1 - args.test_fraction, args.test_fraction), seed=args.seed)
    config = {
        "command": args.command,
        "seed": args.seed,
        "split": {"train_test": [1 - args.test_fraction, args.test_fraction], "split_seed": args.seed,
                  "function": "mfjax.data.split"},
        "rank": args.rank, "l2": args.l2, "scale": "sum", "iters": args.iters, "eval_every": args.eval_every,
        "optimizers": args.optimizer_list, "rules": args.rule_list,
        "constant_steps": CONSTANT["ml-1m" if args.data == "ml-1m" else "synthetic"],
        "init": "mfjax.init_factors(jax.random.key(seed), shape, rank)",
        "quick": args.quick,
    }
    res = C.Results(args.out, config, desc, resume=not args.no_resume)
    print(f"data {desc['name']} {desc['shape']} nnz={desc['nnz']} checksum={desc['checksum']}")
    tr_d, te_d = train.device_put(), test.device_put()
    params0 = mf.init_factors(jax.random.key(args.seed), train.shape, args.rank)
    records = []
    for opt in args.optimizer_list:
        for rule in args.rule_list:
            name = f"{opt}+{rule}"

            def compute(opt=opt, rule=rule, name=name):
                rule_obj, rule_cfg = make_rule(rule, opt, args.data)
                memory = bfgs_memory(opt, args.data, args.iters)
                rec, _ = C.run_fit(_loss, make_optimizer(opt, rule_obj, memory), params0, args.iters,
                                   loss_args=(tr_d, float(args.l2)), eval_fn=_rmse, eval_args=(te_d,),
                                   eval_every=args.eval_every, train=tr_d, test=te_d)
                rec.update(name=name, optimizer=opt, rule=rule, rule_config=rule_cfg,
                           spec={"kind": "opt", "direction": opt, "step": rule, "solver": None})
                return rec

            cfg = {"rank": args.rank, "l2": args.l2, "iters": args.iters, "eval_every": args.eval_every,
                   "rule": make_rule(rule, opt, args.data)[1]}
            if bfgs_memory(opt, args.data, args.iters) is not None:
                cfg["bfgs_memory"] = bfgs_memory(opt, args.data, args.iters)
            rec = res.part(name, compute, cfg=cfg)
            records.append(rec)
            print(f"  {name:28s} loss {rec['final_loss']:.5g}  test RMSE {rec['test_rmse']:.4f}  "
                  f"f-evals {rec['fun_evals']:5d}  {rec['wall_s']:6.1f} s  {rec['status_name']}", flush=True)

    best = {}
    for opt in args.optimizer_list:
        cands = [r for r in records if r["optimizer"] == opt and r["final_loss"] is not None]
        if cands:
            best[opt] = min(cands, key=lambda r: r["final_loss"])["name"]
    res.set("best_rule_per_optimizer", best)
    res.set("total_wall_s", time.perf_counter() - t_start)

    from mfjax import compare

    table = compare.summarize(records)
    print(table)
    from mfjax.store import atomic_write_text

    atomic_write_text(pathlib.Path(args.out) / "summary.txt", table + "\n")
    # mfjax.compare's table (summary only: the traces are in results.json) and its
    # generic plots (loss vs iteration / time / evaluations, test RMSE, step
    # sizes) for each optimizer's best run.
    compare.write_tables([{k: v for k, v in r.items() if k != "trace"} for r in records],
                         pathlib.Path(args.out) / "compare")
    if not args.no_plots:
        compare.plot_results([r for r in records if r["name"] in set(best.values())],
                             pathlib.Path(args.out) / "compare")
        plot(records, best, args)
    return 0


def plot(records, best, args):
    import numpy as np

    plt = C.plt
    out = pathlib.Path(args.out)
    by = {r["name"]: r for r in records}
    opts = args.optimizer_list
    ncol = 3
    nrow = int(np.ceil(len(opts) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for ax, opt in zip(axes.ravel(), opts):
        for rule in args.rule_list:
            r = by.get(f"{opt}+{rule}")
            if r is None:
                continue
            y = C.arr(r["trace"]["loss"])
            m = np.isfinite(y)
            lab = rule + ("" if r["status"] <= 1 else f" ({r['status_name']})")
            ax.semilogy(np.arange(1, y.size + 1)[m], y[m], lw=1.2, label=lab)
        ax.set_title(LABELS[opt], fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(opts):]:
        ax.axis("off")
    C.savefig(fig, out / "per_optimizer.png")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for opt, name in best.items():
        r = by[name]
        y = C.arr(r["trace"]["loss"])
        ev = C.arr(r["trace"]["eval_rmse"])
        it = np.arange(1, y.size + 1)
        t = np.linspace(r["wall_s"] / y.size, r["wall_s"], y.size)
        m, me = np.isfinite(y), np.isfinite(ev)
        axes[0].semilogy(it[m], y[m], lw=1.2, label=name)
        axes[1].plot(it[me], ev[me], "o-", ms=2, lw=1.2, label=name)
        axes[2].semilogy(t[m], y[m], lw=1.2, label=name)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("training loss")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("test RMSE")
    lo = min([np.nanmin(C.arr(by[n]["trace"]["eval_rmse"])) for n in best.values()] + [0.9])
    axes[1].set_ylim(lo - 0.02, lo + 0.6)
    axes[2].set_xlabel("wall time (s, compile included)")
    axes[2].set_ylabel("training loss")
    axes[0].legend(fontsize=7)
    fig.suptitle("Comparison: each optimizer with its best step rule (by final training loss)", fontsize=10)
    C.savefig(fig, out / "comparison.png")


if __name__ == "__main__":
    sys.exit(main())
