"""ML-10M / ML-20M / ML-25M-format loading at 10M and 20M lines: mfjax against pandas and pyarrow (issue 16).

The real releases are not needed: the script writes synthetic files in the
official formats under ``--dir`` (default ``/tmp/mfjax_large``): ML-10M's
``ratings.dat`` (``user::movie::rating::timestamp``, half-star ratings, no
header) and ML-20M/25M's ``ratings.csv`` (``userId,movieId,rating,timestamp``
with a header), with MovieLens-like id ranges (162k users, 60k sparse movie
ids).  For each file, best of ``--repeats`` after reading the bytes once:

* ``mfjax parse``: :func:`mfjax.data.parse_triplets` on the bytes (numpy
  columns of user, item, rating, timestamp), with ``engine="numpy"`` and,
  when pyarrow is installed, ``engine="pyarrow"`` (checked equal);
* ``mfjax load``: :func:`mfjax.data.load_movielens` end to end (read the
  file, parse, validate, remap ids, build :class:`~mfjax.data.Ratings`;
  the default ``engine="auto"``: pyarrow when installed);
* ``pandas C``: ``pandas.read_csv`` (C engine; for ``::`` the single-char
  separator ``:`` and every other column, the C engine has no multi-char
  separators);
* ``pyarrow``: ``pyarrow.csv.read_csv`` (multi-threaded; same ``:`` trick)
  and ``pandas.read_csv(engine="pyarrow")`` for the CSV.

Peers are optional (``pip install pandas pyarrow``; the ``bench`` extra).
Run::

    python benchmarks/load_large.py --lines 10000000 20000000 --repeats 2
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import resource
import time

import numpy as np


def write_files(folder: pathlib.Path, lines: int, seed: int = 0) -> dict:
    """``{"ml-10m": ratings.dat, "ml-20m": ratings.csv}`` with ``lines`` ratings each (written once)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"ml-10m": folder / f"ml10m_{lines}.dat", "ml-20m": folder / f"ml20m_{lines}.csv"}
    if all(p.exists() for p in out.values()):
        return out
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, 209_172), 59_047, replace=False))
    keys = np.unique(rng.integers(1, 162_542, int(lines * 1.1)) * 300_000 + rng.choice(ids, int(lines * 1.1)))
    keys = np.sort(rng.choice(keys, lines, replace=False))  # distinct (user, movie) pairs, sorted by user
    users, items = keys // 300_000, keys % 300_000
    stars = rng.integers(1, 11, lines) / 2.0
    ts = rng.integers(789_652_009, 1_574_327_703, lines)
    text = _csv(users, items, stars, ts)
    out["ml-20m"].write_bytes(b"userId,movieId,rating,timestamp\n" + text)
    out["ml-10m"].write_bytes(text.replace(b",", b"::"))
    return out


def _csv(users, items, stars, ts) -> bytes:
    """The rows as CSV text, in blocks (vectorised: ``np.char`` is far too slow at 20M lines)."""
    parts = []
    for a in range(0, users.size, 1 << 20):
        s = slice(a, a + (1 << 20))
        st = np.where(stars[s] % 1 == 0, stars[s].astype(int).astype(str), stars[s].astype(str))
        rows = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(
            users[s].astype(str), ","), items[s].astype(str)), ","), st), ","), ts[s].astype(str))
        parts.append("\n".join(rows.tolist()).encode() + b"\n")
    return b"".join(parts)


def best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def peers(fmt: str, data: bytes):
    """``{name: fn}`` of the installed peers, each returning the four columns as numpy arrays."""
    out = {}
    try:
        import pandas as pd
    except ImportError:
        pd = None
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        pa = None
    dat = fmt == "ml-10m"
    if pd is not None:
        def pandas_c():
            if dat:  # 'u::i::r::t' split on ':' -> u,'',i,'',r,'',t
                df = pd.read_csv(io.BytesIO(data), sep=":", header=None, usecols=[0, 2, 4, 6], engine="c")
            else:
                df = pd.read_csv(io.BytesIO(data), engine="c")
            return [df.iloc[:, k].to_numpy() for k in range(4)]
        out["pandas C"] = pandas_c
    if pa is not None:
        def pyarrow_csv():
            if dat:
                tab = pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                                     parse_options=pacsv.ParseOptions(delimiter=":"),
                                     convert_options=pacsv.ConvertOptions(include_columns=["f0", "f2", "f4", "f6"]))
            else:
                tab = pacsv.read_csv(io.BytesIO(data))
            return [tab.column(k).to_numpy() for k in range(4)]
        out["pyarrow.csv"] = pyarrow_csv
        if pd is not None and not dat:
            out["pandas pyarrow"] = lambda: [c.to_numpy() for _, c in
                                             pd.read_csv(io.BytesIO(data), engine="pyarrow").items()]
    return out


def _has_pyarrow() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv=None) -> int:
    import mfjax as mf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, nargs="+", default=[10_000_000, 20_000_000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/mfjax_large")
    a = ap.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the start")
    print("| lines | format | mfjax parse | mfjax load (end to end) | peers (parse) | equal |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for n in a.lines:
        files = write_files(pathlib.Path(a.dir), n)
        for fmt, path in files.items():
            data = path.read_bytes()
            sep, header = ("::", False) if fmt == "ml-10m" else (",", True)
            t_parse, ours = best(lambda: mf.data.parse_triplets(data, sep, header=header, timestamps=True,
                                                                engine="numpy"), a.repeats)
            parse_cell = f"numpy {t_parse:.2f} s"
            if _has_pyarrow():
                t_arrow, arrow = best(lambda: mf.data.parse_triplets(data, sep, header=header, timestamps=True,
                                                                     engine="pyarrow"), a.repeats)
                same = all(np.array_equal(x, y) for x, y in zip(arrow, ours))
                parse_cell += f"; pyarrow engine {t_arrow:.2f} s ({'same arrays' if same else 'DIFFERENT'})"
            t_load, r = best(lambda: mf.data.load_movielens(fmt, data_dir=str(path)), a.repeats)
            assert r.nnz == n, (r.nnz, n)
            cells, equal = [], True
            for name, fn in peers(fmt, data).items():
                t, cols = best(fn, a.repeats)
                cells.append(f"{name} {t:.2f} s")
                equal &= (np.array_equal(cols[0], ours.users) and np.array_equal(cols[1], ours.items)
                          and np.allclose(cols[2], ours.values) and np.array_equal(cols[3], ours.timestamps))
            print(f"| {n:,} | {fmt} ({path.name}, {len(data) / 1e6:.0f} MB) | {parse_cell} | {t_load:.2f} s | "
                  f"{'; '.join(cells)} | {equal} |", flush=True)
    print(f"# peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB, "
          f"load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
