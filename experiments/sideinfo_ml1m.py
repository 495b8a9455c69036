"""Side information in MF on ML-1M: does ``U = P + X_u A``, ``V = Q + X_v B`` help, and for whom?

Issue 14, part 2.  Features: user gender, age band and occupation one-hot
(2 + 7 + 21 = 30 columns), movie genres multi-hot (18).  Both models are
the biased model fitted by the same solver, :func:`mfjax.solvers.side_als`
(exact block ALS; without features it is plain biased ALS), at the same
rank and sweep count:

- ``plain``: no features (``mean + b_i + c_j + p_i . q_j``);
- ``side``: both feature matrices (``U = P + X_u A``, ``b = beta + X_u a`` ...).

Protocol (``results.json``; a re-run resumes finished parts):

1. ``split(ratings, (0.9, 0.1), seed)`` -> train / test.  ``lambda`` (on
   ``P, Q`` and the free biases) and, for ``side``, ``lambda_side`` (on the
   feature maps) are chosen on a validation part ``split(train, (0.9,
   0.1), seed + 1)`` (fit on the other 90%), never on test; the chosen
   setting is refitted on the whole train part and evaluated on test:
   overall RMSE and RMSE by the user's (and the item's) number of training
   ratings (buckets 1-20, 21-50, 51-100, >100).
2. Extendability: ``extendability_split(ratings, 0.1, 0.1, reveal_frac,
   (0.85, 0.05, 0.10), seed)``; the hyperparameters are chosen again on its
   own validation part (area I), the model is fitted on its train part
   (held-out users and items have no training entries).  Areas II (new
   users), III (new items), IV (both) are scored (a) cold: features only
   (``P_i = 0``: ``U_i = X_u[i] A``; for ``plain`` the prediction is then
   ``mean + c_j``), (b) folded in from the revealed ratings
   (:func:`mfjax.solvers.side_fold_in`: the ridge problem of ``P_i``,
   ``beta_i`` with everything else fixed).  ``reveal_frac = 0.1`` leaves a
   new user with only a few revealed ratings (median reported).
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "sideinfo_ml1m"
BUCKETS = ((1, 20), (21, 50), (51, 100), (101, None))


def parse_args(argv=None):
    p = C.base_parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--sweeps", type=int, default=20)
    p.add_argument("--l2-grid", type=float, nargs="+", default=[5.0, 10.0, 15.0, 25.0],
                   help="lambda on P, Q and the free biases (sum scale)")
    p.add_argument("--l2-side-grid", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                   help="lambda_side on the feature maps A, B, a, b")
    p.add_argument("--reveal-frac", type=float, default=0.1)
    args = C.finish_args(p.parse_args(argv), NAME, argv)
    if args.quick:
        args.rank, args.sweeps, args.l2_grid, args.l2_side_grid = 3, 4, [5.0], [10.0]
    return args


def main(argv=None) -> int:
    """Command line entry point: parse ``argv``, then :func:`run`."""
    args = parse_args(argv)
    return run(args, args.out)


def features(users, movies):
    """``(X_u (m, 30), X_v (n, 18))``: gender / age / occupation one-hot, genres multi-hot."""
    import numpy as np

    import mfjax as mf

    def onehot(v, vals):
        return (np.asarray(v)[:, None] == np.asarray(list(vals))[None, :]).astype(np.float32)

    Xu = np.concatenate([onehot(users.gender, range(len(mf.data.GENDERS))), onehot(users.age, mf.data.AGE_CODES),
                         onehot(users.occupation, range(mf.data.N_OCCUPATIONS))], axis=1)
    return Xu, np.asarray(movies.genres, np.float32)


def _side_tables(args, ratings):
    import mfjax as mf

    if args.data == "synthetic":
        from side_mlp import _synthetic_side  # the same random tables as the side-MLP experiment

        return _synthetic_side(ratings, args.seed), "synthetic (random genres, gender, age, occupation)"
    return ((mf.data.load_users(args.data_dir), mf.data.load_movies(args.data_dir)),
            {stem: mf.data.file_sha256(p) for stem in ("users.dat", "movies.dat")
             for p in [next(pathlib.Path(args.data_dir).glob(stem + "*"))]})


def _fit(train, feats, l2, l2_side, args, eval_set=None):
    import mfjax as mf

    Xu, Xv = feats
    import jax

    return mf.solvers.side_als(train, args.rank, Xu, Xv, l2=l2, l2_side=l2_side, biases=True,
                               num_steps=args.sweeps, key=jax.random.key(args.seed), eval_set=eval_set)


def _objective(train, feats, l2, l2_side):
    import mfjax as mf

    return mf.solvers.side_als_objective(train, *feats, l2=l2, l2_side=l2_side)


def _rmse(params, side, ratings, clip):
    import mfjax as mf

    return float(mf.metrics.rmse(mf.objective.effective_factors(params, side), ratings.device_put(), clip=clip))


def _bucket_rmse(params, side, test, degree, index, clip):
    """RMSE of the test entries grouped by ``degree[index]`` (training counts of the entry's user / item)."""
    import numpy as np

    import mfjax as mf

    eff = mf.objective.effective_factors(params, side)
    pred = np.asarray(mf.metrics.postprocess(mf.losses.predict(eff, test.rows, test.cols), clip))
    err = (pred - np.asarray(test.values)) ** 2
    deg = degree[np.asarray(index)]
    out = {}
    for lo, hi in BUCKETS:
        sel = (deg >= lo) & (deg <= (np.inf if hi is None else hi))
        key = f"{lo}-{hi}" if hi is not None else f">{lo - 1}"
        out[key] = {"n": int(sel.sum()), "rmse": float(np.sqrt(err[sel].mean())) if sel.any() else None}
    return out


def _select(fit, valid, feats, grid, args, clip):
    """``(l2, l2_side)`` with the lowest validation RMSE, and every grid point's RMSE."""
    scores = []
    for l2, ls in grid:
        res = _fit(fit, feats, l2, ls, args)
        scores.append({"l2": l2, "l2_side": ls,
                       "valid_rmse": _rmse(res.params, _objective(fit, feats, l2, ls), valid, clip)})
    best = min(scores, key=lambda s: s["valid_rmse"])
    return best, scores


def run(config, workdir) -> int:
    """Run with ``config`` (the parsed options), writing ``results.json`` and a PNG to ``workdir``."""
    args = C.with_workdir(config, workdir)
    import numpy as np

    import mfjax as mf

    t0 = time.perf_counter()
    try:
        ratings, desc = C.load_data(args)
    except mf.data.DataNotFoundError as e:
        print(f"[skip] {NAME}: {e}")
        return 0
    (users, movies), desc["side"] = _side_tables(args, ratings)
    users, movies = mf.data.align_to_ratings(users, movies, ratings)
    Xu, Xv = features(users, movies)
    m, n = ratings.shape
    none = (None, None)
    both = (Xu, Xv)
    clip = tuple(float(v) for v in ratings.rating_scale)
    config = {
        "command": args.command, "seed": args.seed,
        "split": {"train_test": [0.9, 0.1], "split_seed": args.seed, "valid_of_train": 0.1,
                  "valid_seed": args.seed + 1, "function": "mfjax.data.split",
                  "extendability": {"function": "mfjax.data.extendability_split", "row_frac": 0.1,
                                    "col_frac": 0.1, "reveal_frac": args.reveal_frac,
                                    "fractions": [0.85, 0.05, 0.10], "seed": args.seed}},
        "quick": bool(args.quick), "rank": args.rank, "sweeps": args.sweeps,
        "l2_grid": list(args.l2_grid), "l2_side_grid": list(args.l2_side_grid),
        "features": {"user": "gender(2)+age(7)+occupation(21) one-hot", "item": "genres(18) multi-hot",
                     "d_u": int(Xu.shape[1]), "d_v": int(Xv.shape[1])},
        "model": "biased side-feature MF, mfjax.solvers.side_als (exact block ALS), mean fixed at the train mean",
        "clip": list(clip),
    }
    R = C.Results(args.out, config, desc, resume=not args.no_resume)
    grids = {"plain": [(l2, 0.0) for l2 in args.l2_grid],
             "side": [(l2, ls) for l2 in args.l2_grid for ls in args.l2_side_grid]}
    feats = {"plain": none, "side": both}

    # ---- 1. the 90/10 split
    train, test = mf.data.split(ratings, (0.9, 0.1), seed=args.seed)
    fit, valid = mf.data.split(train, (0.9, 0.1), seed=args.seed + 1)
    udeg, ideg = train.row_counts(), train.col_counts()

    def standard(model):
        def compute():
            best, scores = _select(fit, valid, feats[model], grids[model], args, clip)
            res = _fit(train, feats[model], best["l2"], best["l2_side"], args)
            side = _objective(train, feats[model], best["l2"], best["l2_side"])
            return {"chosen": best, "grid": scores, "test_rmse": _rmse(res.params, side, test, clip),
                    "train_rmse": _rmse(res.params, side, train, clip),
                    "by_user_degree": _bucket_rmse(res.params, side, test, udeg, test.rows, clip),
                    "by_item_degree": _bucket_rmse(res.params, side, test, ideg, test.cols, clip),
                    "train_loss": [float(v) for v in np.asarray(res.trace.loss)]}
        return R.part(f"split90/{model}", compute, cfg={"grid": grids[model], "rank": args.rank,
                                                        "sweeps": args.sweeps})

    std = {model: standard(model) for model in ("plain", "side")}

    # ---- 2. extendability areas
    ext = mf.data.extendability_split(ratings, 0.1, 0.1, args.reveal_frac, (0.85, 0.05, 0.10), seed=args.seed)
    rev_rows = np.bincount(np.asarray(ext.revealed.rows), minlength=m)[ext.held_rows]
    rev_cols = np.bincount(np.asarray(ext.revealed.cols), minlength=n)[ext.held_cols]

    def extend(model):
        def compute():
            best, scores = _select(ext.train, ext.valid, feats[model], grids[model], args, clip)
            res = _fit(ext.train, feats[model], best["l2"], best["l2_side"], args)
            side = _objective(ext.train, feats[model], best["l2"], best["l2_side"])
            folded = mf.solvers.side_fold_in(res.params, side, ext.revealed, rows=ext.held_rows,
                                             cols=ext.held_cols)
            out = {"chosen": best, "grid": scores}
            for area in ("I", "II", "III", "IV"):
                t = ext.test[area]
                out[area] = {"n": int(t.nnz), "cold": _rmse(res.params, side, t, clip),
                             "fold_in": _rmse(folded, side, t, clip)}
            return out
        return R.part(f"extend/{model}", compute, cfg={"grid": grids[model], "rank": args.rank,
                                                       "sweeps": args.sweeps, "reveal": args.reveal_frac})

    exts = {model: extend(model) for model in ("plain", "side")}
    R.set("revealed_per_new_user", {"median": float(np.median(rev_rows)), "min": int(rev_rows.min()),
                                    "max": int(rev_rows.max())})
    R.set("revealed_per_new_item", {"median": float(np.median(rev_cols)), "min": int(rev_cols.min()),
                                    "max": int(rev_cols.max())})
    R.set("total_s", time.perf_counter() - t0)
    R.save()
    print(table(std, exts))
    if not args.no_plots:
        plot(std, exts, pathlib.Path(args.out) / "sideinfo_ml1m.png")
    return 0


def table(std, exts) -> str:
    """The results as Markdown tables (what RESULTS.md shows)."""
    lines = ["| model | chosen λ, λ_side | test RMSE | " + " | ".join(
        f"users {k}" for k in std["plain"]["by_user_degree"]) + " |", "|---" * 7 + "|"]
    for model in ("plain", "side"):
        s = std[model]
        cells = [f"{b['rmse']:.4f} (n={b['n']})" if b["rmse"] is not None else "-" for b in s["by_user_degree"].values()]
        lines.append(f"| {model} | {s['chosen']['l2']:g}, {s['chosen']['l2_side']:g} | {s['test_rmse']:.4f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| model | " + " | ".join(f"items {k}" for k in std["plain"]["by_item_degree"]) + " |",
              "|---" * 5 + "|"]
    for model in ("plain", "side"):
        cells = [f"{b['rmse']:.4f} (n={b['n']})" if b["rmse"] is not None else "-"
                 for b in std[model]["by_item_degree"].values()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "| model | chosen λ, λ_side | I | II cold | II fold-in | III cold | III fold-in | IV cold | IV fold-in |",
              "|---" * 9 + "|"]
    for model in ("plain", "side"):
        e = exts[model]
        lines.append(f"| {model} | {e['chosen']['l2']:g}, {e['chosen']['l2_side']:g} | {e['I']['fold_in']:.4f} | "
                     + " | ".join(f"{e[a]['cold']:.4f} | {e[a]['fold_in']:.4f}" for a in ("II", "III", "IV")) + " |")
    return "\n".join(lines)


def plot(std, exts, path):
    import numpy as np

    fig, axes = C.plt.subplots(1, 2, figsize=(11, 4))
    keys = list(std["plain"]["by_user_degree"])
    x = np.arange(len(keys))
    for k, model in enumerate(("plain", "side")):
        vals = [np.nan if b["rmse"] is None else b["rmse"] for b in std[model]["by_user_degree"].values()]
        axes[0].bar(x + (k - 0.5) * 0.38, vals, 0.38, label=model)
    axes[0].set_xticks(x, keys)
    axes[0].set_xlabel("user's training ratings")
    axes[0].set_ylabel("test RMSE")
    axes[0].set_title("90/10 split, by user degree")
    areas = [("II", "cold"), ("II", "fold_in"), ("III", "cold"), ("III", "fold_in"), ("IV", "cold"), ("IV", "fold_in")]
    x = np.arange(len(areas))
    for k, model in enumerate(("plain", "side")):
        axes[1].bar(x + (k - 0.5) * 0.38, [exts[model][a][w] for a, w in areas], 0.38, label=model)
    axes[1].set_xticks(x, [f"{a}\n{w}" for a, w in areas])
    axes[1].set_ylabel("test RMSE")
    axes[1].set_title("extendability areas")
    for ax in axes:
        lo = min(p.get_height() for p in ax.patches if np.isfinite(p.get_height()))
        ax.set_ylim(0.9 * lo, None)
        ax.legend()
    C.savefig(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
