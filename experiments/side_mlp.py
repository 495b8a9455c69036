"""The slides' side-feature neural network on ML-1M: test MSE against the slides' 1.1.

Slides (Beresnev & Klyushev), after NNMF: *"As an alternative approach we
decided to train simple neural network"*: layers 23x64, 64x128, 128x64, 64x1,
ReLU, MSE loss, Adam lr 0.001, early stopping after 3 epochs without a
decrease of the held-out loss, at most 50 epochs; inputs min-max scaled
user id and movie id, the 18 genres, binary gender and two min-max scaled
user features; *"As a result we achieved average loss on test set 1.1"*.
Overall: *"Both Neural Network and Vector Gradient descent showed their
applicability ..., however, they have been outperformed by other models"*.

Protocol (``results.json``; a re-run resumes finished parts):

- split ``mfjax.data.split(ratings, (0.9, 0.1), seed)`` into train / test
  (as every slides experiment here); early stopping watches a validation
  part ``mfjax.data.split(train, (0.9, 0.1), seed + 1)``, the network trains
  on the rest (81% of the ratings); the test part is evaluated every epoch
  for the plot only and reported at the selected (best validation) epoch.
- side tables ``movies.dat`` / ``users.dat`` from ``--data-dir`` aligned to the
  matrix (:func:`mfjax.data.align_to_ratings`); the two user features are
  age and occupation (:mod:`mfjax.models.side_mlp` says why).
- parts: ``slides`` (the slides' network), ``embedding,d=D`` (learned
  user / movie embeddings instead of the scaled ids; ``--embed-dim 0`` skips
  it), ``mean`` (the training mean as the prediction: the scale of "1.1").
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as C  # noqa: E402

NAME = "side_mlp"
SLIDES_TEST_MSE = 1.1


def parse_args(argv=None):
    p = C.base_parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=50, help="at most this many epochs (slides: 50)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (slides: 3)")
    p.add_argument("--batch-size", type=int, default=256, help="minibatch size (not in the slides)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam step (slides: 0.001)")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--valid-fraction", type=float, default=0.1, help="of the training part, for early stopping")
    p.add_argument("--embed-dim", type=int, default=32, help="embedding variant's size (0: skip it)")
    args = C.finish_args(p.parse_args(argv), NAME, argv)
    if args.quick:
        args.epochs, args.batch_size, args.embed_dim = 4, 64, 4
    return args


def main(argv=None) -> int:
    """Command line entry point: parse ``argv``, then :func:`run`."""
    args = parse_args(argv)
    return run(args, args.out)


def _side_files(data_dir):
    """The movies / users files in ``data_dir`` (plain or .gz) and their SHA-256."""
    import mfjax as mf

    out = {}
    for stem in ("movies.dat", "users.dat"):
        for name in (stem, stem + ".gz"):
            f = pathlib.Path(data_dir) / name
            if f.is_file():
                out[stem] = {"file": name, "sha256": mf.data.file_sha256(f)}
                break
    return out


def _synthetic_side(ratings, seed):
    """Random side tables for ``--data synthetic`` (ids = the matrix's ids)."""
    import numpy as np

    import mfjax as mf

    rng = np.random.default_rng([seed, 7])
    m, n = ratings.shape
    users = mf.data.Users(ratings.row_ids.original.astype(np.int64), rng.integers(0, 2, m).astype(np.int8),
                          rng.choice(mf.data.AGE_CODES, m).astype(np.int16),
                          rng.integers(0, mf.data.N_OCCUPATIONS, m).astype(np.int16), np.array(["0"] * m))
    movies = mf.data.Movies(ratings.col_ids.original.astype(np.int64), np.array([f"movie {j}" for j in range(n)]),
                            np.full(n, mf.data.NO_YEAR, np.int32),
                            (rng.random((n, len(mf.data.GENRES))) < 0.15).astype(np.float32))
    return users, movies


def run(config, workdir) -> int:
    """Run with ``config`` (the parsed options), writing ``results.json`` and a PNG to ``workdir``."""
    args = C.with_workdir(config, workdir)
    import numpy as np

    import mfjax as mf
    from mfjax.models import side_mlp as S

    t_start = time.perf_counter()
    ratings, desc = C.load_data(args)
    if args.data == "synthetic":
        users, movies = _synthetic_side(ratings, args.seed)
        desc["side"] = "synthetic (random genres, gender, age, occupation)"
    else:
        users, movies = mf.data.load_users(args.data_dir), mf.data.load_movies(args.data_dir)
        desc["side"] = _side_files(args.data_dir)
    users, movies = mf.data.align_to_ratings(users, movies, ratings)
    tables = S.side_tables(users, movies)
    train, test = mf.data.split(ratings, (1 - args.test_fraction, args.test_fraction), seed=args.seed)
    fit, valid = mf.data.split(train, (1 - args.valid_fraction, args.valid_fraction), seed=args.seed + 1)
    tc = S.SideTrainConfig(batch_size=args.batch_size, learning_rate=args.lr, max_epochs=args.epochs,
                           patience=args.patience, seed=args.seed)
    config = {
        "command": args.command,
        "seed": args.seed,
        "split": {"train_test": [1 - args.test_fraction, args.test_fraction], "split_seed": args.seed,
                  "valid_of_train": args.valid_fraction, "valid_seed": args.seed + 1,
                  "function": "mfjax.data.split", "sizes": {"fit": fit.nnz, "valid": valid.nnz, "test": test.nnz}},
        "train": {"batch_size": tc.batch_size, "learning_rate": tc.learning_rate, "max_epochs": tc.max_epochs,
                  "patience": tc.patience, "optimizer": "optax.adam (b1 0.9, b2 0.999, eps 1e-8)",
                  "init": "PyTorch nn.Linear (U(+-1/sqrt(fan_in)))",
                  "selection": "best validation MSE epoch"},
        "features": list(S.FEATURES),
        "user_features": "feature_1 = age code, feature_2 = occupation code (min-max scaled)",
        "quick": args.quick,
    }
    res = C.Results(args.out, config, desc, resume=not args.no_resume)
    print(f"data {desc['name']} {desc['shape']} nnz={desc['nnz']} checksum={desc['checksum']}")
    print(f"fit {fit.nnz}  valid {valid.nnz}  test {test.nnz}")

    def train_one(cfg: S.SideMLPConfig):
        r = S.train_side_mlp(fit, valid, tables, cfg, tc, extra_eval={"test": test}, log=print)
        test_mse = S.side_mlp_mse(r.model, r.params, tables, test)
        pred = S.predict_side_mlp(r.model, r.params, tables, test.rows, test.cols)
        clipped = float(np.mean((np.clip(pred, 1, 5) - np.asarray(test.values)) ** 2))
        return {"test_mse": test_mse, "test_rmse": float(np.sqrt(test_mse)), "test_mse_clipped": clipped,
                "val_mse": r.best_val, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                "stopped_early": r.stopped_early, "trace": r.trace,
                "architecture": {"layers": [list(s) for s in cfg.layer_shapes()], "embed_dim": cfg.embed_dim,
                                 "relu_output": cfg.relu_output},
                "wall_s": r.wall_time}

    def mean_baseline():
        mu = fit.mean()
        t0 = time.perf_counter()
        mse = float(np.mean((np.asarray(test.values, np.float64) - mu) ** 2))
        return {"prediction": mu, "test_mse": mse, "test_rmse": float(np.sqrt(mse)),
                "wall_s": time.perf_counter() - t0}

    parts = [("mean", mean_baseline, {"what": "training mean"}),
             ("slides", lambda: train_one(S.SideMLPConfig()), {"embed_dim": None})]
    if args.embed_dim:
        parts.append((f"embedding,d={args.embed_dim}", lambda: train_one(S.SideMLPConfig(embed_dim=args.embed_dim)),
                      {"embed_dim": args.embed_dim}))
    for name, fn, cfg in parts:
        r = res.part(name, fn, cfg={**cfg, "train": config["train"]})
        extra = (f" (best epoch {r['best_epoch']} of {r['epochs_run']}, val {r['val_mse']:.4f})"
                 if "best_epoch" in r else "")
        print(f"  {name:16s} test MSE {r['test_mse']:.4f}  RMSE {r['test_rmse']:.4f}{extra}  ({r['wall_s']:.1f} s)",
              flush=True)
    res.set("total_wall_s", time.perf_counter() - t_start)
    if not args.no_plots:
        plot(res, args)
    return 0


def plot(res, args):
    import numpy as np

    plt = C.plt
    P = res.doc["parts"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, r), col in zip(((k, v) for k, v in P.items() if "trace" in v), ("C0", "C1", "C2", "C3")):
        tr = r["trace"]
        x = np.arange(1, len(tr["val_mse"]) + 1)
        ax.plot(x, tr["train_loss"], ":", color=col, label=f"{name}: train (minibatch mean)")
        ax.plot(x, tr["val_mse"], "--", color=col, label=f"{name}: validation")
        ax.plot(x, tr["test_mse"], "-", color=col, label=f"{name}: test (best epoch {r['best_epoch']}: "
                f"{r['test_mse']:.3f})")
        ax.axvline(r["best_epoch"], color=col, lw=0.5)
    ax.axhline(SLIDES_TEST_MSE, color="k", lw=1, label="slides: test loss 1.1")
    if "mean" in P:
        ax.axhline(P["mean"]["test_mse"], color="gray", lw=1, ls="-.",
                   label=f"training mean: {P['mean']['test_mse']:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.legend(fontsize=7)
    ax.set_title("Side-feature MLP (slides' recipe), ML-1M 90/10" if not args.quick else "side MLP (quick)",
                 fontsize=10)
    C.savefig(fig, pathlib.Path(args.out) / "side_mlp.png")


if __name__ == "__main__":
    sys.exit(main())
