"""Per-process peak host memory of ``mfjax launch -n N -- compare``, and of building one process's rows.

Two measurements, each in fresh processes (``ru_maxrss``):

1. ``mfjax launch -n N -- compare`` on a synthetic problem: the peak host memory
   every process reports in the launch log (``mfjax: process K/N peak host
   memory X MiB``, written by :func:`mfjax.cli.main` under the launcher), with
   per-process data (the default: each process builds only its rows) and with
   ``--whole-data`` (every process builds the whole data set, the path before
   per-process data), next to the same command in one process on the same
   (union) data, ``--synthetic-sampler blocks --split hash``
   (``/usr/bin/time``-free: the child's ``RUSAGE_CHILDREN``).
2. The data alone: ``mf.data.synthetic(..., sampler="blocks")`` whole against
   one process's half (``row_range``), peak RSS of a fresh interpreter each.

Usage::

    python benchmarks/launch_memory.py --size 40000x4000 --density 0.02 --runs gd+armijo --iters 20
    python benchmarks/launch_memory.py --data ml-1m --runs gd+armijo,solver:als,solver:vector_descent,solver:dsgd

(``--data``: a MovieLens release or a triplet file instead of synthetic data; measurement 2 is then
skipped.  ALS, vector descent and DSGD run on per-process data; SGD and NMF do not.)
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time

_BUILD = """
import resource, sys
import numpy as np
from mfjax.data import synthetic
m, n, d, half = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "half"
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = synthetic(m, n, density=d, sampler="blocks", row_range=(0, m // 2) if half else None)
print(r.nnz, base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _build(m, n, density, half):
    out = subprocess.run([sys.executable, "-c", _BUILD, str(m), str(n), str(density), "half" if half else "whole"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def _compare(args, processes, whole=False):
    data = (["--data", args.data] if args.data else
            ["--synthetic-size", args.size, "--synthetic-density", str(args.density), "--synthetic-sampler", "blocks"])
    cmd = ["compare", *data, "--runs", args.runs,
           "--iters", str(args.iters), "--out", f"{args.out}/n{processes}{'w' if whole else ''}", "--no-plots",
           "--no-progress", "--no-resume", "--no-compile-cache", "--split", "hash"]
    if whole:
        cmd.append("--whole-data")
    if processes > 1:
        cmd = ["launch", "-n", str(processes), "--", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mfjax", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    peaks = [float(x) for x in re.findall(r"peak host memory ([0-9.]+) MiB", proc.stderr)]
    if processes == 1:  # one process logs nothing: its peak is the child's
        peaks = [resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]
    return peaks, wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="40000x4000")
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--data", default=None, help="a MovieLens name or triplet file instead of synthetic data")
    ap.add_argument("--runs", default="gd+armijo")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", default="/tmp/mfjax-launch-memory")
    args = ap.parse_args(argv)
    print(f"load {os.getloadavg()[0]:.2f}; " + (f"data {args.data}" if args.data else
                                                f"size {args.size} density {args.density}"))
    m, n = (int(v) for v in args.size.split("x"))
    for half in (() if args.data else (False, True)):
        nnz, base, peak = _build(m, n, args.density, half)
        print(f"synthetic(sampler='blocks'{', row_range=(0, m//2)' if half else ''}): {nnz} ratings, "
              f"peak RSS {peak:.1f} MiB (interpreter + numpy before: {base:.1f} MiB)")
    one, w1 = _compare(args, 1)
    print(f"mfjax compare (1 process): peak RSS {one[0]:.1f} MiB, {w1:.1f} s")
    for whole in (True, False):
        many, wn = _compare(args, args.processes, whole)
        what = "--whole-data (every process builds the whole data)" if whole else "per-process data (the default)"
        print(f"mfjax launch -n {args.processes} -- compare, {what}: peak RSS per process "
              + ", ".join(f"{p:.1f}" for p in many) + f" MiB, {wn:.1f} s")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
