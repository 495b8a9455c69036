"""mfjax.eval's ranking metrics against cornac's on MovieLens 1M (reference check and timing).

Protocol: ``mfjax.data.leave_last_out(ratings, n=5)`` (each user's 5 latest
ratings are the test items), ALS (rank 32, 10 sweeps) on the rest; the top-20
lists come from :func:`mfjax.eval.top_k` with the training items excluded.
Each user's list is fed to cornac's metric classes
(``cornac.metrics.Precision/Recall/NDCG/HitRatio(k).compute(gt_pos, pd_rank)``,
``MRR().compute`` on the list cut at ``k``, 0 when it raises for "no match"),
and their means are compared with :func:`mfjax.eval.ranking_metrics`.

MAP is not compared with cornac: cornac's ``MAP`` ranks the full item list
(average precision normalised by the number of relevant items), mfjax's
``map@k`` is RecBole's truncated definition (normalised by ``min(k, R)``);
it is checked against that formula in ``tests/test_eval.py``.

Also timed: ``ranking_metrics`` for all 6040 users (after a warm-up call).

Usage::

    python benchmarks/ranking_vs_cornac.py            # needs pip install cornac (benchmark only)
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import mfjax.data as mdata
from mfjax.eval import ranking_metrics, top_k
from mfjax.solvers.als import als

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)


def cornac_means(lists, scores, users, test, ks):
    import cornac.metrics as cm

    gt = {}
    for r, c in zip(np.asarray(test.rows), np.asarray(test.cols)):
        gt.setdefault(int(r), []).append(int(c))
    out = {}
    for k in ks:
        ms = {"precision": cm.Precision(k), "recall": cm.Recall(k), "ndcg": cm.NDCG(k), "hit_rate": cm.HitRatio(k)}
        acc = {name: [] for name in [*ms, "mrr"]}
        for a, u in enumerate(users):
            pos = np.asarray(gt[int(u)])
            rank = lists[a][np.isfinite(scores[a])]  # excluded items (-inf) are not recommendations
            for name, metric in ms.items():
                acc[name].append(metric.compute(gt_pos=pos, pd_rank=rank))
            try:
                acc["mrr"].append(cm.MRR().compute(gt_pos=pos, pd_rank=rank[:k]))
            except ValueError:  # cornac: "No matched between ground-truth items and recommendations"
                acc["mrr"].append(0.0)
        for name, v in acc.items():
            out[f"{name}@{k}"] = float(np.mean(v))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-test", type=int, default=5)
    ap.add_argument("--rank", type=int, default=32)
    args = ap.parse_args(argv)
    ratings = mdata.load_movielens("ml-1m", ml1m_dir())
    train, test = mdata.leave_last_out(ratings, n=args.n_test)
    model = als(train, rank=args.rank, l2=2.0, num_steps=10).params
    ks = (5, 10, 20)
    ranking_metrics(model, train, test, ks=ks)  # warm-up (compile)
    t0 = time.perf_counter()
    ours = ranking_metrics(model, train, test, ks=ks)
    t_ours = time.perf_counter() - t0
    users = np.flatnonzero(test.row_counts() > 0)
    tk = top_k(model, max(ks), exclude=train, users=users)
    t0 = time.perf_counter()
    ref = cornac_means(np.asarray(tk.items), np.asarray(tk.scores), users, test, ks)
    t_ref = time.perf_counter() - t0
    worst = 0.0
    print(f"{'metric':>14} {'mfjax':>10} {'cornac':>10}")
    for key, v in ref.items():
        worst = max(worst, abs(ours[key] - v))
        print(f"{key:>14} {ours[key]:10.6f} {v:10.6f}")
    print(f"users {ours['n_users']} (skipped {ours['n_users_skipped']}); max |difference| {worst:.2e}")
    print(f"time: mfjax ranking_metrics {t_ours:.3f} s (lists + metrics), cornac metrics on the same lists "
          f"{t_ref:.3f} s")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
