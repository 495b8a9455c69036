"""New users with fewer ratings: DMF with and without side features, embedding held-out users from part of their row.

Table 1's area II / IV users reveal half of their ratings (~80 on average),
enough that a new user's ratings carry most of what its features could add.
This diagnostic asks what side features do when a new user has few or no
ratings: for one seed it takes the two Table 1 models of ``run_tables.py``
(``--base``, default ``cpu_center_mask_rows``, and ``--side``, default
``cmr_side``: the same + side features; each resumed from its finished
checkpoint, trained when there is none) and predicts the *same* area II and
IV test entries while each held-out user is embedded from only a fraction
``q`` of its revealed entries (:func:`mfjax.models.subsample_inputs` on the
held-out rows, ``default_rng([seed, 303])``; ``q = 0``: a brand-new user,
no rating at all).  Movies keep their inputs.  No test entry is an input,
nothing is retrained, and the models are the ones whose Table 1 records
exist (the script records how far its area RMSEs are from their records:
``max_abs_diff_to_record``).

Writes ``<out>/side_cold/seed<S>.json``; ``report.py`` tabulates them.

Usage::

    python experiments/dmf/side_cold.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import run_tables as rt  # noqa: E402

import mfjax.data as mdata  # noqa: E402
import mfjax.models as mm  # noqa: E402
from mfjax.store import atomic_write_json  # noqa: E402

FRACTIONS = (0.0, 0.05, 0.2, 0.5, 1.0)


def thinned_areas(res, s, seed, fractions=FRACTIONS) -> dict:
    """RMSE on areas II and IV with held-out users embedded from a fraction ``q`` of their revealed entries."""
    ri, ci = mm.extension_inputs(s.train, s.revealed, s.held_rows, s.held_cols)
    out = {}
    for q in fractions:
        ri_q = mm.subsample_inputs(ri, q, [seed, 303], rows=s.held_rows)
        out[str(q)] = {"mean_revealed_per_user": float(ri_q.lengths()[np.asarray(s.held_rows)].mean())}
        for a in ("II", "IV"):
            t = s.test[a]
            p = np.asarray(mm.predict(res, t.rows, t.cols, row_inputs=ri_q, col_inputs=ci))
            out[str(q)][a] = rt.rmse(p, t.values)
    return out


def run_seed(ctxs: dict, seed: int, ckpt_dir: pathlib.Path, out: pathlib.Path) -> dict:
    """Both models of ``ctxs`` (``{base: Context, side: Context}``, in that order) on one seed; writes the record."""
    base, side = ctxs
    rec = {"seed": seed, "base": base, "side": side, "fractions": list(FRACTIONS), "models": {}}
    for name, ctx in ctxs.items():
        cfg, tc = ctx.prof["dmf"]
        h = rt.config_hash(rt.config_dict(cfg, tc))
        ckpt = ckpt_dir / f"{name}_{h}_seed{seed}_table1.msgpack"
        log = lambda m, name=name: print(f"  [{name} s{seed}] {m}", flush=True)
        res, metrics = rt.run_table1(ctx.ratings, seed, cfg, tc, ckpt, log, ctx.side)
        stored = ctx.store.load(ctx.key(seed, "table1"), config_hash=h)
        # how far this model's area RMSEs are from the Table 1 record's (0 when resumed from its checkpoint;
        # a retrained model may differ in the last digits across machines / XLA builds)
        diff = None if stored is None else max(abs(metrics["areas"][a]["rmse"] - stored["metrics"]["areas"][a]["rmse"])
                                               for a in ("I", "II", "III", "IV"))
        if diff is not None and diff > 1e-3:
            print(f"  warning: {name} seed {seed} differs from its Table 1 record by {diff:.5f} RMSE", flush=True)
        s = mdata.extendability_split(ctx.ratings, 0.1, 0.1, 0.5, (0.75, 0.05, 0.2), seed=seed)
        rec["models"][name] = {"config_hash": h, "table1_areas": {a: metrics["areas"][a]["rmse"] for a in metrics["areas"]},
                               "max_abs_diff_to_record": diff, "thinned": thinned_areas(res, s, seed)}
    rec["data_checksum"] = next(iter(ctxs.values())).checksum
    rec["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    atomic_write_json(out / "side_cold" / f"seed{seed}.json", rec)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--base", default="cpu_center_mask_rows")
    ap.add_argument("--side", default="cmr_side", choices=list(rt.SIDE_PROFILES))
    ap.add_argument("--data-dir", default=os.environ.get("MFJAX_ML1M"))
    ap.add_argument("--out", default="experiments/results/dmf")
    ap.add_argument("--ckpt-dir", default=os.path.expanduser("~/.cache/mfjax/dmf_ckpt"))
    args = ap.parse_args(argv)
    out, ckpt_dir = pathlib.Path(args.out), pathlib.Path(args.ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cmd = "python experiments/dmf/side_cold.py"
    ctxs = {p: rt.Context(p, args.data_dir, out, ckpt_dir, cmd) for p in (args.base, args.side)}
    for seed in args.seeds:
        rec = run_seed(ctxs, seed, ckpt_dir, out)
        for name, m in rec["models"].items():
            print(name, seed, json.dumps(m["thinned"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
