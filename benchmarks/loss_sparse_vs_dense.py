"""Masked squared loss + gradient on MovieLens 1M: sparse COO form vs dense-mask form.

Both are jit-compiled; each timed call computes the value and the gradient
w.r.t. ``Factors(U, V)`` and blocks on the result; the best of ``--repeats``
runs is reported.  Variants:

* ``coo closed-form``  -- :func:`mfjax.losses.masked_sq_value_and_grad` (segment_sum)
* ``coo autodiff``     -- ``jax.value_and_grad`` of :func:`mfjax.losses.masked_sq_loss`
* ``dense closed-form``-- :func:`masked_sq_loss_dense` + :func:`masked_sq_grad_dense` (slides eqs 4-6)
* ``dense autodiff``   -- ``jax.value_and_grad`` of :func:`masked_sq_loss_dense`

Run::

    python benchmarks/loss_sparse_vs_dense.py [--rank 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp

import mfjax.data as mdata
from mfjax.data import Ratings
from mfjax.losses import (
    init_factors,
    masked_sq_grad_dense,
    masked_sq_loss,
    masked_sq_loss_dense,
    masked_sq_value_and_grad,
)
from _data import ml1m_dir  # noqa: E402  (benchmarks/_data.py: one data-path rule)

DEFAULT_DIR = pathlib.Path(ml1m_dir())


def load_ml1m(path: pathlib.Path) -> Ratings:
    """ML-1M ratings through the library loader."""
    return mdata.load_movielens("ml-1m", path)


def best_time(fn, *args, repeats: int):
    out = jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=pathlib.Path, default=DEFAULT_DIR)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--l2", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    ratings = load_ml1m(args.data).device_put()
    X, W = ratings.to_dense()
    params = init_factors(jax.random.key(0), ratings.shape, args.rank)
    l2 = args.l2
    print(f"ML-1M {ratings.shape}, nnz={ratings.nnz}, rank={args.rank}, l2={l2}, "
          f"devices={jax.devices()}")

    coo_cf = jax.jit(lambda p, R: masked_sq_value_and_grad(p, R, l2))
    coo_ad = jax.jit(jax.value_and_grad(lambda p, R: masked_sq_loss(p, R, l2)))
    dense_cf = jax.jit(lambda p, X, W: (masked_sq_loss_dense(p, X, W, l2),
                                        masked_sq_grad_dense(p, X, W, l2)))
    dense_ad = jax.jit(jax.value_and_grad(lambda p, X, W: masked_sq_loss_dense(p, X, W, l2)))

    rows = []
    for name, fn, a in [("coo closed-form", coo_cf, (params, ratings)),
                        ("coo autodiff", coo_ad, (params, ratings)),
                        ("dense closed-form", dense_cf, (params, X, W)),
                        ("dense autodiff", dense_ad, (params, X, W))]:
        t, out = best_time(fn, *a, repeats=args.repeats)
        rows.append((name, t, out))

    ref_v, ref_g = rows[3][2]
    print(f"{'variant':20s} {'best ms':>9s} {'value':>16s} {'rel diff value':>15s} {'rel diff grad':>14s}")
    for name, t, (v, g) in rows:
        dv = abs(float(v) - float(ref_v)) / abs(float(ref_v))
        dg = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) for a, b in zip(g, ref_g))
        print(f"{name:20s} {1e3 * t:9.2f} {float(v):16.2f} {dv:15.2e} {dg:14.2e}")
    tc = min(rows[0][1], rows[1][1])
    td = min(rows[2][1], rows[3][1])
    print(f"speed-up best COO vs best dense: {td / tc:.1f}x")


if __name__ == "__main__":
    main()
