"""Load time of MovieLens 1M with :func:`mfjax.data.load_movielens`, with peers.

Times ``load_movielens("ml-1m", data_dir=...)`` end to end (read the gzip
file, decompress, parse, validate, remap ids, build :class:`Ratings`): one
warm-up call, then the best of ``--repeats``.  Prints the data facts and a
phase breakdown, and in the same run the same job done by peers on the same
decompressed bytes:

* ``numpy.loadtxt``: ``::`` replaced by tab, then ``np.loadtxt`` (C parser),
* ``pandas.read_csv`` (C engine after the same replacement; skipped if
  pandas is not installed; the ``engine="python"`` form that ``::`` needs
  directly is far slower),
* a plain Python per-line ``split`` loop (mfjax's precise fallback pass).

Finally it times :func:`mfjax.data.synthetic` at three sizes.

Run::

    python benchmarks/load_movielens.py [--data-dir ../shared/data/ml-1m] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import pathlib
import time

import numpy as np

import mfjax.data as mdata
from mfjax.data import loaders
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)

DEFAULT_DIR = pathlib.Path(ml1m_dir())


def best_of(fn, repeats):
    fn()  # warm-up
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_DIR))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peer-repeats", type=int, default=2)
    args = ap.parse_args()

    t_load, r = best_of(lambda: mdata.load_movielens("ml-1m", data_dir=args.data_dir), args.repeats)
    print(f"load_movielens('ml-1m'): best of {args.repeats}: {t_load:.3f} s")
    print(f"  ratings {r.nnz:,}  shape {r.shape}  mean {r.mean():.4f}  "
          f"checksum {mdata.data_checksum(r)}")

    path, member = mdata.find_movielens("ml-1m", args.data_dir)
    t_read, data = best_of(lambda: loaders.read_bytes(path, member), args.repeats)
    t_parse, parsed = best_of(lambda: loaders.parse_triplets(data, "::", header=False), args.repeats)
    t_build, _ = best_of(lambda: loaders.triplets_to_ratings(parsed, rating_scale=(1, 5)), args.repeats)
    print(f"  phases (best of {args.repeats}): read+gunzip {t_read:.3f} s, parse {t_parse:.3f} s, "
          f"validate+remap+build {t_build:.3f} s")

    tab = data.replace(b"::", b"\t")
    print(f"peers on the same decompressed bytes (best of {args.peer_repeats}; + read/gunzip/remap not included):")
    t, arr = best_of(lambda: np.loadtxt(io.BytesIO(tab), delimiter="\t", dtype=np.int64),
                     args.peer_repeats)
    assert arr.shape == (r.nnz, 4)
    print(f"  numpy.loadtxt                  {t:.3f} s  ({t / t_parse:.1f}x mfjax parse)")
    try:
        import pandas as pd
    except ImportError:
        print("  pandas.read_csv                (pandas not installed)")
    else:
        t, df = best_of(lambda: pd.read_csv(io.BytesIO(tab), sep="\t", header=None), args.peer_repeats)
        assert len(df) == r.nnz
        print(f"  pandas.read_csv (C engine)     {t:.3f} s  ({t / t_parse:.1f}x mfjax parse)  pandas {pd.__version__}")
    precise = _precise_parser()
    if precise is None:
        print("  python per-line split loop     (needs mfjax.data's public line-by-line parser)")
    else:
        t, p = best_of(lambda: precise(data, "::", False, "x"), 1)
        assert p.users.size == r.nnz
        print(f"  python per-line split loop     {t:.3f} s  ({t / t_parse:.1f}x mfjax parse)")

    print("mfjax.data.synthetic (best of 3):")
    for m, n, rank, density in [(600, 400, 5, 0.05), (6040, 3706, 10, 0.0447), (10000, 10000, 10, 0.02)]:
        t, s = best_of(lambda: mdata.synthetic(m, n, rank, density), 3)
        print(f"  synthetic({m}, {n}, rank={rank}, density={density}): {s.nnz:,} ratings, {t:.3f} s")


def _precise_parser():
    """mfjax.data's public line-by-line parser ``(data, sep, skip_header, source) -> ParsedTriplets``, if exported."""
    for name in ("parse_triplets_precise", "precise_parse"):
        fn = getattr(mdata, name, None) or getattr(loaders, name, None)
        if fn is not None:
            return fn
    return None


if __name__ == "__main__":
    main()
