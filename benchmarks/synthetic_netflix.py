"""Synthetic Netflix-size data: build time and peak memory of ``mf.data.synthetic`` (issue 16).

Netflix Prize shape: 480,189 users x 17,770 movies, 100,480,507 ratings.  Each
configuration runs in a fresh process (peak RSS is per process), so the
figures do not mix.  Run::

    python benchmarks/synthetic_netflix.py                   # rows32 sampler (the default above 2**24), full size
    python benchmarks/synthetic_netflix.py --scale 0.1 --sampler pairs rows rows32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

M, N, NNZ = 480_189, 17_770, 100_480_507


def _one(scale: float, sampler: str, rank: int) -> dict:
    import numpy as np

    import mfjax as mf

    m = max(int(M * scale), 10)
    t, c = time.perf_counter(), time.process_time()
    r = mf.data.synthetic(m, N, rank=rank, density=NNZ / (M * N), seed=0, sampler=sampler)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    rows = np.asarray(r.rows)
    deg = np.bincount(rows, minlength=m)
    return {"sampler": sampler, "scale": scale, "shape": list(r.shape), "nnz": int(r.nnz), "build_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "mean": round(float(np.mean(r.values)), 4), "max_row_degree": int(deg.max()),
            "min_row_degree": int(deg.min())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 480,189 users (density kept)")
    ap.add_argument("--sampler", nargs="+", default=["rows32"], choices=["pairs", "rows", "rows32"])
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(_one(a.scale, a.sampler[0], a.rank)))
        return 0
    print(f"# load {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    for s in a.sampler:
        out = subprocess.run([sys.executable, __file__, "--child", "--scale", str(a.scale), "--sampler", s,
                              "--rank", str(a.rank)], capture_output=True, text=True, check=True).stdout
        print(out.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
