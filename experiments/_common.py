"""Shared plumbing of the experiment scripts (not part of the mfjax API).

Every script in ``experiments/``:

- takes ``--data synthetic|ml-1m`` (``--data-dir`` defaults to ``$MFJAX_DATA_DIR``
  or ``../shared/data/ml-1m`` next to the repository), ``--quick`` (tiny
  synthetic problem, seconds; used by the smoke test), ``--out`` and ``--seed``;
- is ``main(argv)`` (parses the options) calling ``run(config, workdir)``
  (does the work; plotting in its own function), so ``mfjax reproduce`` and
  the tests call it like a function;
- writes one ``results.json`` per run directory, atomically, after every
  finished part (:class:`Results`, a :class:`mfjax.store.ResultDocument`), recording the exact command, seed, split,
  data checksum, configuration and wall times; a re-run with the same
  configuration loads the finished parts instead of recomputing them;
- draws PNG figures with matplotlib's Agg backend (:func:`savefig`).
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import platform
import shlex
import sys
import time
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a source checkout: use its mfjax
    sys.path.insert(1, str(REPO))

__all__ = [
    "REPO",
    "default_data_dir",
    "base_parser",
    "load_data",
    "Results",
    "with_workdir",
    "savefig",
    "plt",
    "run_fit",
    "command_line",
]


def default_data_dir() -> str:
    """``$MFJAX_DATA_DIR`` or ``<repo>/../shared/data/ml-1m``."""
    env = os.environ.get("MFJAX_DATA_DIR")
    if env:
        return env
    return str((REPO.parent / "shared" / "data" / "ml-1m").resolve())


def command_line(name: str | None = None, argv=None) -> str:
    """The command that ran this script (``python experiments/x.py ...``)."""
    if argv is not None and name is not None:
        return "python " + " ".join(shlex.quote(a) for a in [f"experiments/{name}.py", *argv])
    argv = list(sys.argv)
    try:
        argv[0] = str(pathlib.Path(argv[0]).resolve().relative_to(REPO))
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in argv)


def base_parser(name: str, description: str, *, default_data: str = "ml-1m") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=description)
    p.add_argument("--data", default=default_data, choices=["synthetic", "ml-1m"],
                   help=f"data set (default {default_data})")
    p.add_argument("--data-dir", default=None,
                   help="directory holding ml-1m's ratings.dat[.gz] (default $MFJAX_DATA_DIR or ../shared/data/ml-1m)")
    p.add_argument("--quick", action="store_true",
                   help="tiny synthetic problem and few iterations (seconds; the smoke test)")
    p.add_argument("--out", default=None, help=f"output directory (default experiments/results/{name}/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the initialisation (default 0)")
    p.add_argument("--no-resume", action="store_true", help="recompute finished parts")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    return p


def finish_args(args, name: str, argv=None):
    """Fill defaults that depend on other arguments (``--quick`` forces synthetic data)."""
    args.command = command_line(name, argv)
    if args.quick:
        args.data = "synthetic"
    if args.out is None:
        args.out = str(REPO / "experiments" / "results" / name)
    if args.data_dir is None:
        args.data_dir = default_data_dir()
    return args


def load_data(args, *, quick_size=(120, 80), synthetic_kwargs: dict | None = None):
    """The full ratings of ``args.data`` and a description dict (name, shape, nnz, checksum)."""
    import mfjax as mf

    t0 = time.perf_counter()
    if args.data == "synthetic":
        kw = dict(synthetic_kwargs or {})
        if args.quick:
            kw.update(m=quick_size[0], n=quick_size[1], density=kw.get("density", 0.15))
        kw.setdefault("seed", args.seed)
        ratings = mf.data.synthetic(**kw)
        desc = {"name": "synthetic", "synthetic_kwargs": kw}
    else:
        ratings = mf.data.load_movielens(args.data, data_dir=args.data_dir)
        desc = {"name": args.data, "data_dir": "(see --data-dir)"}
    desc.update(shape=list(ratings.shape), nnz=int(ratings.nnz), checksum=mf.data.data_checksum(ratings),
                load_s=time.perf_counter() - t0)
    return ratings, desc


def with_workdir(config, workdir):
    """A copy of the parsed options ``config`` writing to ``workdir`` (``run(config, workdir)``)."""
    args = copy.copy(config)
    args.out = str(workdir)
    return args


def _store():
    import mfjax.store

    return mfjax.store


class Results:
    """One ``results.json``: metadata plus named parts, rewritten atomically after each part.

    A :class:`mfjax.store.ResultDocument`: the file is reused only when the
    data checksum, seed, split and ``--quick`` match (its identity); inside
    it, a part is reused only when its own configuration (``cfg`` of
    :meth:`part`) matches, so changing e.g. the iteration count of one part
    recomputes that part alone.
    """

    def __init__(self, out_dir, config: dict, data_desc: dict, *, resume: bool = True,
                 filename: str = "results.json"):
        self.out = pathlib.Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / filename
        identity = {k: config.get(k) for k in ("seed", "split", "quick")}
        meta = {
            "command": config.get("command") or command_line(),
            "config": config,
            "data": data_desc,
            "seed": config.get("seed"),
            "split": config.get("split"),
            "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, JAX CPU (shared with other jobs)",
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self._doc = _store().ResultDocument(self.path, {"identity": identity, "data": data_desc.get("checksum")},
                                            meta, resume=resume)
        self.config_hash = self._doc.config_hash
        self.resumed = self._doc.resumed

    @property
    def doc(self) -> dict:
        return self._doc.doc

    def has(self, key: str, cfg=None) -> bool:
        return self._doc.has(key, cfg)

    def get(self, key: str):
        return self._doc.get(key)

    def put(self, key: str, value: dict) -> dict:
        return self._doc.put(key, value)

    def part(self, key: str, compute, cfg=None, log=print) -> dict:
        """Return the finished part ``key`` (same ``cfg``) or compute it (timed), store and return it."""
        return self._doc.part(key, compute, cfg, log=log)

    def set(self, key: str, value) -> None:
        self._doc.set(key, value)

    def save(self) -> None:
        self._doc.save()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt_

    return plt_


class _LazyPlt:
    def __getattr__(self, name):
        return getattr(_plt(), name)


plt = _LazyPlt()


def savefig(fig, path, dpi: int = 100) -> pathlib.Path:
    """Save a figure as PNG (atomically) and close it."""
    import io

    from mfjax.store import atomic_write_bytes

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def arr(x) -> np.ndarray:
    """A JSON list (``None`` = NaN) or array as a float numpy array."""
    return np.asarray([np.nan if v is None else v for v in np.asarray(x, dtype=object).ravel()], dtype=float)


def run_fit(loss_fn, optimizer, params0, num_steps: int, *, loss_args=(), eval_fn=None, eval_args=(),
            eval_every: int = 10, train=None, test=None, rating_scale=None):
    """``mfjax.fit`` one optimizer; return ``(record, params)``, the record in :mod:`mfjax.compare`'s format.

    The record has ``trace`` = loss, step_size, fun_evals, grad_evals,
    grad_norm, eval_rmse (per step), final metrics and ``wall_s`` (compile
    included).  The clipped test RMSE clips to ``rating_scale`` (default: the
    training ratings' observed scale, ``train.rating_scale``), recorded too.
    """
    import jax

    from mfjax import compare, loop, metrics
    from mfjax.core import status_name

    t0 = time.perf_counter()
    res = loop.fit(loss_fn, optimizer, params0, num_steps, loss_args=tuple(loss_args), eval_fn=eval_fn,
              eval_args=tuple(eval_args), eval_every=eval_every)
    jax.block_until_ready(res.params)
    wall = time.perf_counter() - t0
    rec = {
        "status": int(res.status),
        "status_name": status_name(res.status),
        "num_steps": int(res.num_steps),
        "final_loss": float(res.value),
        "fun_evals": int(res.num_fun_evals),
        "grad_evals": int(res.num_grad_evals),
        "wall_s": wall,
        "trace": compare.trace_record(res.trace),
        "error": None,
    }
    if train is not None:
        rec["train_rmse"] = float(metrics.rmse(res.params, train.device_put()))
    if test is not None:
        test = test.device_put()
        rec["test_rmse"] = float(metrics.rmse(res.params, test))
        scale = rating_scale or (train.rating_scale if train is not None else None)
        rec["rating_scale"] = None if scale is None else [float(scale[0]), float(scale[1])]
        rec["test_rmse_clipped"] = (None if scale is None else
                                    float(metrics.rmse(res.params, test, clip=tuple(scale))))
    return rec, res.params
