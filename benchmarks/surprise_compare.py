"""mfjax SGD / ALS / NMF against scikit-surprise's SVD and NMF on MovieLens 1M (80/20).

Both sides get the same split (``mfjax.data.split(ratings, (0.8, 0.2), seed=0)``):
surprise is fed the same train / test triplets.

Measured:
  * time for mfjax's solvers (biased SGD, biased ALS) to reach test RMSE
    0.873, against the fit time and test RMSE of ``surprise.SVD()`` (default
    parameters) in the same run;
  * ``surprise.NMF()`` (default parameters) against ``mfjax.solvers.nmf`` (RMSE, time).

Hyperparameters of the mfjax solvers were chosen with ``--tune``: on a 90/10
split of the *training* part (validation), never on the test set.  The test
set is only used to trace RMSE per epoch (the "time to reach 0.873" metric).

Timing: JAX runs are timed after a warm-up call with identical static
arguments (compile excluded; the compile+run "cold" time is reported too);
the time to the target is a separate run of exactly the number of epochs the
traced run needed, without evaluation.  Best of ``--repeats``.

Usage::

    python benchmarks/surprise_compare.py                  # comparison
    python benchmarks/surprise_compare.py --tune           # validation grid
    python benchmarks/surprise_compare.py --skip-surprise  # mfjax side only

Needs ``pip install scikit-surprise`` (benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import mfjax.data as mdata
from mfjax.metrics import rmse
from mfjax.solvers.als import als
from mfjax.solvers.nmf import nmf
from mfjax.solvers.sgd import sgd

TARGET = 0.873
DATA_DIR = os.environ.get("MFJAX_ML1M", "/work/shared/data/ml-1m")

# chosen on the validation split (see --tune and benchmarks/results/sgd_nmf_surprise.md)
SGD_CFG = dict(rank=32, batch_size=4096, lr=0.05, l2=0.04, decay=0.9, weighted_l2=True,
               biases=True, num_epochs=12)
ALS_CFG = dict(rank=32, l2=0.1, weighted_l2=True, biases=True, num_sweeps=10)
NMF_CFG = dict(rank=15, loss="l2", l2=0.06, weighted_l2=True, init="nndsvda", num_iters=50)


def load():
    ratings = mdata.load_movielens("ml-1m", DATA_DIR)
    train, test = mdata.split(ratings, (0.8, 0.2), seed=0)
    return ratings, train, test


def timed(fn, repeats, cpu=None):
    """Best wall time of ``repeats`` calls; ``cpu`` (a list) gets the best process CPU time."""
    best, best_cpu, out = np.inf, np.inf, None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        jax.block_until_ready(out.params)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    if cpu is not None:
        cpu.append(best_cpu)
    return best, out


def first_reach(trace, target=TARGET):
    ev = np.asarray(trace.eval_rmse)
    hit = np.nonzero(ev <= target)[0]
    return (int(hit[0]) + 1) if hit.size else None


def time_to_target(name, run, n_max, repeats):
    """run(n, eval) -> SolverResult.  Returns a dict of figures."""
    t0 = time.perf_counter()
    res = run(n_max, True)
    jax.block_until_ready(res.params)
    cold = time.perf_counter() - t0
    ev = np.asarray(res.trace.eval_rmse)
    k = first_reach(res.trace)
    out = dict(name=name, n_max=n_max, traced_cold_s=cold, best_rmse=float(ev.min()),
               best_at=int(ev.argmin()) + 1, final_rmse=float(ev[-1]), reach_iter=k,
               curve=[round(float(x), 4) for x in ev])
    if k is not None:
        t0 = time.perf_counter()
        jax.block_until_ready(run(k, False).params)  # compile + run
        out["cold_to_target_s"] = time.perf_counter() - t0
        cpu = []
        out["warm_to_target_s"], _ = timed(lambda: run(k, False), repeats, cpu)
        out["warm_to_target_cpu_s"] = cpu[0]
    print(name, {k_: v for k_, v in out.items() if k_ != "curve"}, flush=True)
    print("  curve", out["curve"], flush=True)
    return out


def run_sgd(train, test, cfg, key=0):
    cfg = dict(cfg)
    cfg.pop("num_epochs")

    def run(n, with_eval):
        return sgd(train, cfg["rank"], key=jax.random.key(key), num_epochs=n,
                   eval=test if with_eval else None,
                   **{k: v for k, v in cfg.items() if k != "rank"})
    return run


def run_als(train, test, cfg):
    cfg = dict(cfg)
    cfg.pop("num_sweeps")

    def run(n, with_eval):
        return als(train, cfg["rank"], cfg["l2"], n, weighted_l2=cfg["weighted_l2"],
                   biases=cfg["biases"], key=jax.random.key(0),
                   eval=test if with_eval else None)
    return run


def run_nmf(train, test, cfg, n, with_eval):
    cfg = {k: v for k, v in cfg.items() if k not in ("num_iters", "rank")}
    return nmf(train, NMF_CFG["rank"], num_iters=n, key=jax.random.key(0),
               eval=test if with_eval else None, **cfg)


# ------------------------------------------------------------------ surprise


def surprise_sets(train, test):
    from surprise import Dataset, Reader

    ds = Dataset(Reader(rating_scale=(1, 5)))
    r, c, v = (np.asarray(a) for a in (train.rows, train.cols, train.values))
    raw = [(int(a), int(b), float(x), None) for a, b, x in zip(r, c, v)]
    trainset = ds.construct_trainset(raw)
    r, c, v = (np.asarray(a) for a in (test.rows, test.cols, test.values))
    testset = [(int(a), int(b), float(x)) for a, b, x in zip(r, c, v)]
    return trainset, testset


def surprise_fit(algo_cls, trainset, testset, repeats):
    from surprise import accuracy

    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        algo = algo_cls(random_state=0)
        t, c = time.perf_counter(), time.process_time()
        algo.fit(trainset)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    t = time.perf_counter()
    preds = algo.test(testset)
    pred_s = time.perf_counter() - t
    return best, accuracy.rmse(preds, verbose=False), pred_s, best_cpu


# ------------------------------------------------------------------ tuning


def tune(train, parts=("sgd", "als", "nmf")):
    fit, val = mdata.split(train, (0.9, 0.1), seed=1)
    print(f"tuning on fit={fit.nnz} / validation={val.nnz} entries of the training part")
    grid_sgd = [
        dict(rank=64, batch_size=4096, lr=0.05, l2=0.04, decay=0.9),
        dict(rank=32, batch_size=4096, lr=0.05, l2=0.04, decay=0.9),
        dict(rank=64, batch_size=16384, lr=0.1, l2=0.04, decay=0.9),
    ]
    for g in grid_sgd if "sgd" in parts else []:
        cfg = dict(g, weighted_l2=True, biases=True, num_epochs=12)
        t = time.perf_counter()
        try:
            res = run_sgd(fit, val, cfg)(12, True)
        except FloatingPointError as err:
            print("SGD", g, "diverged:", err, flush=True)
            continue
        ev = np.asarray(res.trace.eval_rmse)
        print("SGD", g, f"val best {ev.min():.4f} @ {ev.argmin() + 1}, "
              f"first<=0.873 @ {first_reach(res.trace)}, {time.perf_counter() - t:.1f}s cold",
              flush=True)
    for rank, l2 in [(16, 0.05), (32, 0.05), (32, 0.1), (64, 0.1)]:
        if "als" in parts:
            cfg = dict(rank=rank, l2=l2, weighted_l2=True, biases=True, num_sweeps=10)
            t = time.perf_counter()
            res = run_als(fit, val, cfg)(10, True)
            ev = np.asarray(res.trace.eval_rmse)
            print("ALS", dict(rank=rank, l2=l2), f"val best {ev.min():.4f} @ {ev.argmin() + 1}, "
                  f"first<=0.873 @ {first_reach(res.trace)}, {time.perf_counter() - t:.1f}s cold",
                  flush=True)
    for rank, l2, init in [(15, 0.06, "random"), (15, 0.06, "nndsvda"), (15, 0.1, "random")]:
        if "nmf" not in parts:
            break
        cfg = dict(NMF_CFG, rank=rank, l2=l2, init=init)
        res = nmf(fit, rank, num_iters=50, key=jax.random.key(0), eval=val,
                  **{k: v for k, v in cfg.items() if k not in ("num_iters", "rank")})
        ev = np.asarray(res.trace.eval_rmse)
        print("NMF", dict(rank=rank, l2=l2, init=init),
              f"val best {ev.min():.4f} @ {ev.argmin() + 1}, final {ev[-1]:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--tune-parts", default="sgd,als,nmf")
    ap.add_argument("--skip-surprise", action="store_true")
    ap.add_argument("--skip-nmf", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--surprise-repeats", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} cpus")
    ratings, train, test = load()
    print(f"ML-1M {ratings.shape}, train {train.nnz}, test {test.nnz}", flush=True)
    if args.tune:
        tune(train, args.tune_parts.split(","))
        return

    if not args.skip_surprise:
        from surprise import NMF, SVD

        t = time.perf_counter()
        trainset, testset = surprise_sets(train, test)
        print(f"surprise trainset built in {time.perf_counter() - t:.1f}s", flush=True)

    # rounds alternate the two sides so that both see the same machine load
    svd_times, sgd_times, als_times = [], [], []
    svd_cpus, sgd_cpus, als_cpus = [], [], []
    res_sgd = res_als = None
    for rnd in range(args.rounds):
        if not args.skip_surprise:
            svd_s, svd_rmse, svd_pred_s, svd_cpu = surprise_fit(SVD, trainset, testset, 1)
            svd_times.append(svd_s)
            svd_cpus.append(svd_cpu)
            print(f"[round {rnd}] surprise SVD(): fit {svd_s:.1f}s (cpu {svd_cpu:.1f}s), "
                  f"test RMSE {svd_rmse:.4f} (predict {svd_pred_s:.1f}s)", flush=True)
        r = time_to_target("mfjax sgd " + str(SGD_CFG), run_sgd(train, test, SGD_CFG),
                           SGD_CFG["num_epochs"], args.repeats)
        res_sgd = r if res_sgd is None else res_sgd
        sgd_times.append(r.get("warm_to_target_s", np.inf))
        sgd_cpus.append(r.get("warm_to_target_cpu_s", np.inf))
        r = time_to_target("mfjax als " + str(ALS_CFG), run_als(train, test, ALS_CFG),
                           ALS_CFG["num_sweeps"], args.repeats)
        res_als = r if res_als is None else res_als
        als_times.append(r.get("warm_to_target_s", np.inf))
        als_cpus.append(r.get("warm_to_target_cpu_s", np.inf))
    print(f"best of {args.rounds} rounds: surprise SVD fit {min(svd_times, default=np.nan):.2f}s; "
          f"mfjax sgd to {TARGET}: {min(sgd_times):.2f}s (cold {res_sgd.get('cold_to_target_s', np.nan):.2f}s); "
          f"mfjax als to {TARGET}: {min(als_times):.2f}s (cold {res_als.get('cold_to_target_s', np.nan):.2f}s)")
    if svd_times:
        for name, ts, cs in (("sgd", sgd_times, sgd_cpus), ("als", als_times, als_cpus)):
            print(f"speed-up vs surprise SVD fit ({name}): wall {min(svd_times) / min(ts):.1f}x "
                  f"(per round: {[round(a / b, 1) for a, b in zip(svd_times, ts)]}); "
                  f"process CPU time {min(svd_cpus):.1f}s vs {min(cs):.2f}s = "
                  f"{min(svd_cpus) / min(cs):.1f}x", flush=True)

    if not args.skip_nmf:
        n = NMF_CFG["num_iters"]
        t0 = time.perf_counter()
        res = run_nmf(train, test, NMF_CFG, n, True)
        jax.block_until_ready(res.params)
        cold = time.perf_counter() - t0
        cpu = []
        warm, res2 = timed(lambda: run_nmf(train, test, NMF_CFG, n, False), args.repeats, cpu)
        ours = float(rmse(res2.params, test))
        ours_c = float(rmse(res2.params, test, clip=(1, 5)))
        print(f"mfjax nmf {NMF_CFG}: {warm:.2f}s warm (cpu {cpu[0]:.2f}s; {cold:.2f}s cold, traced), "
              f"test RMSE {ours:.4f} (clipped {ours_c:.4f}); curve "
              f"{[round(float(x), 4) for x in np.asarray(res.trace.eval_rmse)[::5]]}", flush=True)
        if not args.skip_surprise:
            nmf_s, nmf_rmse, _, nmf_cpu = surprise_fit(NMF, trainset, testset,
                                                       args.surprise_repeats)
            print(f"surprise NMF(): fit {nmf_s:.1f}s (cpu {nmf_cpu:.1f}s), test RMSE "
                  f"{nmf_rmse:.4f}; speed-up wall {nmf_s / warm:.1f}x, cpu {nmf_cpu / cpu[0]:.1f}x",
                  flush=True)


if __name__ == "__main__":
    main()
