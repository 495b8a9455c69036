"""Cost against size (issue 16): loss+grad, ALS sweeps, SGD and DSGD epochs at 1M..100M ratings.

Synthetic data with the Netflix Prize density and columns (17,770 movies,
``density = 100,480,507 / (480,189 * 17,770)``); the number of users is
scaled to give the requested number of ratings (``mf.data.synthetic``,
``sampler="rows32"`` above 2**24 entries).  Every size runs in a fresh
process (one at a time: peak RSS is per process, and a 100M data set is
~1.2 GB on the host plus its device copy).  Per operation: the first call
(compile + one run) and the warm wall time (best of ``--repeats``), and the
process's peak RSS after it (``ru_maxrss`` is monotone, so the growth
tells which operation raised it).  The parent fits the slope of log(warm
time) against log(ratings) per operation (target ~1.0: linear cost, no
``m x n`` allocation).

Operations (``--ops``):
  lossgrad   ``mf.objective.value_and_grad`` of the "sum" masked loss, r = 10 (closed form)
  als10      one exact ALS sweep (Gram tiers + batched Cholesky), r = 10, incl. the trace's loss
  cg10/cg64  one CG-ALS sweep (``method="cg"``, 3 CG steps per row), r = 10 / 64, incl. the loss
  als64      one exact ALS sweep at r = 64 (slow on a CPU: ~100x the ML-1M sweep at 100M)
  sgd        one shuffled SGD epoch, r = 10, ``batch_size=1`` (sequential per-rating updates)
  dsgd       one DSGD epoch, r = 10, ``--dsgd-blocks`` blocks on one device

Run::

    python benchmarks/scaling.py --sizes 1e6 1e7 2e7 1e8 --json results/scaling.json
    python benchmarks/scaling.py --sizes 1e6 --ops lossgrad cg64     # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

M, N, NNZ = 480_189, 17_770, 100_480_507
DENSITY = NNZ / (M * N)
OPS = ("lossgrad", "als10", "cg10", "cg64", "als64", "sgd", "dsgd")
DEFAULT_OPS = ("lossgrad", "als10", "cg10", "cg64", "sgd", "dsgd")


def peak_rss_gb() -> float:
    """This process's peak resident set size in GB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def make_data(nnz: float, seed: int = 0):
    """Synthetic ratings with Netflix's density and 17,770 columns, about ``nnz`` ratings."""
    import mfjax as mf

    m = max(int(round(nnz / (DENSITY * N))), 10)
    return mf.data.synthetic(m, N, rank=10, density=DENSITY, seed=seed)


def lossgrad_op(train, rank: int):
    """``prepare()`` for one closed-form loss + gradient of the "sum" masked loss."""
    def prepare():
        import jax

        import mfjax as mf

        obj = mf.objective.mf_objective(train, l2=1.0)
        p = mf.init_factors(jax.random.key(0), train.shape, rank)
        f = jax.jit(mf.objective.value_and_grad)
        return lambda: f(obj, p)
    return prepare


def als_op(train, rank: int, method: str = "cholesky", steps: int = 3, cache: dict | None = None):
    """``prepare()`` for one ALS sweep (Gram tiers; exact or ``steps`` CG steps) incl. the trace's loss.

    ``cache``: a dict keeping the host-built problem per method across ranks (the layouts do not
    depend on the rank)."""
    def prepare():
        import jax

        import mfjax as mf

        prob = None if cache is None else cache.get(method)
        if prob is None:
            obj = mf.solvers.als_objective(train, l2=1.0)
            kw = {} if method == "cholesky" else {"chunk_entries": mf.objective.gram.CG_CHUNK_ENTRIES}
            prob = mf.solvers.als_problem(obj, **kw)
            if cache is not None:
                cache[method] = prob
        solver = mf.solvers.als_solver(method=method, cg_steps=steps)
        state = solver.init(mf.init_factors(jax.random.key(0), train.shape, rank), prob)
        step = jax.jit(solver.step)
        return lambda: step(state, prob)
    return prepare


def sgd_op(train, rank: int, batch_size: int = 1):
    """``prepare()`` for one shuffled SGD epoch."""
    def prepare():
        import jax

        import mfjax as mf

        prob = mf.solvers.sgd_problem(train, l2=0.02)
        solver = mf.solvers.sgd_solver(lr=0.005, batch_size=batch_size)
        state = solver.init(mf.init_factors(jax.random.key(0), train.shape, rank, scale=0.1), prob,
                            key=jax.random.key(1))
        step = jax.jit(solver.step)
        return lambda: step(state, prob)
    return prepare


def dsgd_op(train, rank: int, blocks: int = 1, batch_size: int = 1):
    """``prepare()`` for one DSGD epoch (``blocks`` strata on one device)."""
    def prepare():
        import jax

        import mfjax as mf

        prob = mf.solvers.dsgd_problem(train, l2=0.02, blocks=blocks, batch_size=batch_size)
        solver = mf.solvers.dsgd_solver(lr=0.005)
        state = solver.init(mf.init_factors(jax.random.key(0), train.shape, rank, scale=0.1), prob,
                            key=jax.random.key(1))
        step = jax.jit(solver.step)
        return lambda: step(state, prob)
    return prepare


def builders(train, dsgd_blocks: int = 1):
    """``{op: prepare}``: ``prepare()`` does the host work once (layouts, blockings) and returns
    ``run()``, one jit-compiled call returning arrays to block on."""
    return {"lossgrad": lossgrad_op(train, 10), "als10": als_op(train, 10), "als64": als_op(train, 64),
            "cg10": als_op(train, 10, "cg"), "cg64": als_op(train, 64, "cg"), "sgd": sgd_op(train, 10),
            "dsgd": dsgd_op(train, 10, dsgd_blocks)}


def time_op(prepare, repeats: int) -> dict:
    """Host preparation, first call (compile + run) and best warm wall time of one operation."""
    import jax

    t = time.perf_counter()
    run = prepare()
    prep = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run())
        warm.append(time.perf_counter() - t)
    best = min(warm) if warm else first  # repeats=0: the first call only (compile included)
    return {"prepare_s": round(prep, 3), "first_s": round(first, 3), "warm_s": round(best, 4),
            "compile_s": round(max(first - best, 0.0), 3), "peak_rss_gb": round(peak_rss_gb(), 2)}


def child(nnz: float, ops, repeats: int, dsgd_blocks: int) -> dict:
    t = time.perf_counter()
    train = make_data(nnz)
    out = {"nnz": int(train.nnz), "shape": list(train.shape), "data_s": round(time.perf_counter() - t, 2),
           "data_rss_gb": round(peak_rss_gb(), 2), "ops": {}}
    print(json.dumps({"data": out}), flush=True)
    b = builders(train, dsgd_blocks)
    for op in ops:
        out["ops"][op] = time_op(b[op], repeats)
        print(json.dumps({op: out["ops"][op]}), flush=True)
    return out


def slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx else float("nan")


def table(results) -> str:
    ops = [op for op in OPS if any(op in r["ops"] for r in results)]
    lines = ["| ratings | users | data build | " + " | ".join(f"{op} warm (first)" for op in ops) + " | peak RSS |",
             "| --- " * (len(ops) + 4) + "|"]
    for r in results:
        cells = [f"{r['ops'][op]['warm_s']:.3g} s ({r['ops'][op]['first_s']:.3g} s)" if op in r["ops"] else "—"
                 for op in ops]
        rss = max([r["data_rss_gb"]] + [o["peak_rss_gb"] for o in r["ops"].values()])
        lines.append(f"| {r['nnz']:,} | {r['shape'][0]:,} | {r['data_s']:.1f} s | " + " | ".join(cells) +
                     f" | {rss:.2f} GB |")
    sl = []
    for op in ops:
        pts = [(r["nnz"], r["ops"][op]["warm_s"]) for r in results if op in r["ops"]]
        if len(pts) >= 2:
            sl.append(f"{op} {slope(*zip(*pts)):.2f}")
    return "\n".join(lines) + "\n\nslope of log(warm time) vs log(ratings): " + ", ".join(sl)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 2e7, 1e8])
    ap.add_argument("--ops", nargs="+", default=list(DEFAULT_OPS), choices=OPS)
    ap.add_argument("--repeats", type=int, default=2,
                    help="warm repeats per operation (best is reported; 0: first call only, compile included)")
    ap.add_argument("--dsgd-blocks", type=int, default=2)
    ap.add_argument("--json", help="write all results to this file (appended per size)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per size")
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print("RESULT " + json.dumps(child(a.child, a.ops, a.repeats, a.dsgd_blocks)), flush=True)
        return 0
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the start", flush=True)
    results = []
    for s in a.sizes:
        cmd = [sys.executable, __file__, "--child", str(s), "--repeats", str(a.repeats), "--dsgd-blocks",
               str(a.dsgd_blocks), "--ops", *a.ops]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        lines = proc.stdout.splitlines()
        res = [json.loads(x[7:]) for x in lines if x.startswith("RESULT ")]
        if proc.returncode or not res:
            print(f"size {s:g} failed (rc {proc.returncode}):\n" + "\n".join(lines[-5:]) + proc.stderr[-2000:])
            continue
        res[0]["load_after"] = round(os.getloadavg()[0], 2)
        res[0]["wall_s"] = round(time.perf_counter() - t, 1)
        results.append(res[0])
        print(json.dumps(res[0]), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1)
    if results:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
