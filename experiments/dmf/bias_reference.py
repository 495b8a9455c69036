"""Reference predictors on the pseudo areas of ``run_tables.py --tasks select`` (diagnostic, no test entries).

    python experiments/dmf/bias_reference.py --seed 0 [--out experiments/results/dmf]

On the inner split (:func:`run_tables.inner_split`, built from area I
training entries only) fits a biased baseline ``mu + b_u + b_i`` (ridge
``lam`` = 10, alternating closed-form updates) on the inner training set, then
folds in every pseudo-unseen row / column from its revealed entries only:
``b_u = sum_k (r_k - mu - b_k) / (n_u + lam)``.  Reports RMSE on pseudo areas
I-IV of the bias model and of the item-only model ``mu + b_i`` (what a
predictor that ignores the user's revealed ratings can reach).  Written to
``<out>/runs/diagnostics/bias_reference_seed<S>.json``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np

import mfjax.data as mdata
from mfjax.store import atomic_write_json

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run_tables as rt  # noqa: E402


def fit_biases(tr, lam=10.0, sweeps=10):
    m, n = tr.shape
    R, C, V = np.asarray(tr.rows), np.asarray(tr.cols), np.asarray(tr.values, float)
    mu = V.mean()
    bu, bi = np.zeros(m), np.zeros(n)
    for _ in range(sweeps):
        bi = np.bincount(C, V - mu - bu[R], n) / (np.bincount(C, minlength=n) + lam)
        bu = np.bincount(R, V - mu - bi[C], m) / (np.bincount(R, minlength=m) + lam)
    return mu, bu, bi


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lam", type=float, default=10.0)
    ap.add_argument("--data-dir", default=os.environ.get("MFJAX_ML1M"))
    ap.add_argument("--out", default="experiments/results/dmf")
    args = ap.parse_args(argv)
    ratings = mdata.load_movielens("ml-1m", args.data_dir)
    s = mdata.extendability_split(ratings, 0.1, 0.1, 0.5, (0.75, 0.05, 0.2), seed=args.seed)
    inn = rt.inner_split(s, args.seed)
    mu, bu, bi = fit_biases(inn.train, args.lam)
    m, n = inn.train.shape
    hr = np.zeros(m, bool)
    hr[inn.held_rows] = True
    hc = np.zeros(n, bool)
    hc[inn.held_cols] = True
    R, C, V = np.asarray(inn.revealed.rows), np.asarray(inn.revealed.cols), np.asarray(inn.revealed.values, float)
    k = hr[R] & ~hc[C]
    bu[hr] = (np.bincount(R[k], V[k] - mu - bi[C[k]], m) / (np.bincount(R[k], minlength=m) + args.lam))[hr]
    k = hc[C] & ~hr[R]
    bi[hc] = (np.bincount(C[k], V[k] - mu - bu[R[k]], n) / (np.bincount(C[k], minlength=n) + args.lam))[hc]
    res = {}
    for a in ("I", "II", "III", "IV"):
        t = inn.test[a]
        r, c, v = np.asarray(t.rows), np.asarray(t.cols), np.asarray(t.values, float)
        res[a] = {"bias": rt.rmse(np.clip(mu + bu[r] + bi[c], 1, 5), v),
                  "item_only": rt.rmse(np.clip(mu + bi[c], 1, 5), v), "n": int(t.nnz)}
        print(f"pseudo {a}: bias model {res[a]['bias']:.4f}  item-only {res[a]['item_only']:.4f}  (n={t.nnz})")
    out = pathlib.Path(args.out) / "runs" / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"bias_reference_seed{args.seed}.json",
                      {"seed": args.seed, "lam": args.lam, "split": "inner_split (run_tables.py --tasks select)",
                       "command": "python " + " ".join(sys.argv), "pseudo_areas": res})


if __name__ == "__main__":
    main()
