"""Loss + closed-form gradient on ML-1M against its memory-traffic floor (issue 11).

The floor is the time to read, once, what one value+gradient must read:

* the entries: row index, column index (int32) and value (float32), 12 bytes each,
* the two gathered factor rows of every entry, ``2 r`` float32 (``8 r`` bytes),

and to write the two gradients once, ``(m + n) r`` float32:

    bytes = nnz (12 + 8 r) + 4 (m + n) r

at the machine's streaming bandwidth, measured here in the same process by
numpy: the best of a few ``np.add(a, b, out=c)`` over arrays far larger than the
caches (each pass reads 2 and writes 1 array; bandwidth = 3 x array bytes / time),
and a read-only reduction (``a.sum()``). XLA's loss+grad is timed warm (compiled
once, best of ``--repeats``), through :func:`mfjax.objective.value_and_grad`.

The floor is optimistic: the factor rows of ML-1M (6040 x 10 and 3706 x 10
float32, 390 KB) stay in cache, so the gathers never reach memory; the entries
(10.8 MB at 90 % of ML-1M) do.  A second floor, entries only, is printed too.

Run::

    python benchmarks/lossgrad_floor.py [--rank 10] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import mfjax as mf
import mfjax.data as mdata
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)


def stream_bandwidth(n_bytes: int = 256 << 20, repeats: int = 7) -> dict:
    """Best-of streaming bandwidths in GB/s: triad-like add (2 reads + 1 write) and a read-only sum."""
    n = n_bytes // 4
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    c = np.empty(n, np.float32)
    add, rd = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.add(a, b, out=c)
        add.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a.sum()
        rd.append(time.perf_counter() - t0)
    return {"add_GBps": 3 * n * 4 / min(add) / 1e9, "read_GBps": n * 4 / min(rd) / 1e9}


def floor_bytes(nnz: int, m: int, n: int, r: int) -> dict:
    """Bytes one value+gradient must move (module docstring)."""
    entries = 12 * nnz
    return {"entries": entries, "gathers": 8 * r * nnz, "grad_write": 4 * (m + n) * r,
            "total": entries + 8 * r * nnz + 4 * (m + n) * r}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--l2", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)

    ratings = mdata.load_movielens("ml-1m", ml1m_dir())
    train, _ = mdata.split(ratings, (0.9, 0.1), seed=0)
    m, n = train.shape
    obj = mf.objective.mf_objective(train, l2=args.l2)
    p = mf.init_factors(jax.random.key(0), train.shape, rank=args.rank)
    fn = jax.jit(mf.objective.value_and_grad)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(obj, p))
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(obj, p))
        times.append(time.perf_counter() - t0)
    best, med = min(times), float(np.median(times))

    bw = stream_bandwidth()
    fb = floor_bytes(train.nnz, m, n, args.rank)
    floor_all = fb["total"] / (bw["read_GBps"] * 1e9)
    floor_entries = fb["entries"] / (bw["read_GBps"] * 1e9)
    print(f"uptime: {os.getloadavg()}")
    print(f"ML-1M 90/10 train: nnz {train.nnz:,}, {m} x {n}, r = {args.rank}, l2 = {args.l2}")
    print(f"bandwidth (numpy, 256 MiB arrays): add {bw['add_GBps']:.1f} GB/s, read {bw['read_GBps']:.1f} GB/s")
    print(f"floor bytes: entries {fb['entries'] / 1e6:.1f} MB + gathers {fb['gathers'] / 1e6:.1f} MB + "
          f"grad write {fb['grad_write'] / 1e6:.2f} MB = {fb['total'] / 1e6:.1f} MB")
    print(f"floor time at the read bandwidth: {floor_all * 1e3:.2f} ms (entries only {floor_entries * 1e3:.2f} ms)")
    print(f"loss+grad: first call {first:.2f} s, warm best {best * 1e3:.2f} ms, median {med * 1e3:.2f} ms")
    print(f"ratio to floor: best {best / floor_all:.2f}x (entries-only floor {best / floor_entries:.1f}x)")


if __name__ == "__main__":
    main()
