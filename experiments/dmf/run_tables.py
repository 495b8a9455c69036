"""Reproduce Tables 1 and 2 of Nguyen et al., "Matrix Factorization via Deep Learning" on ML-1M.

Per seed (= random split) four tasks, each written atomically to
``<out>/runs/seed<S>_<task>.json`` as soon as it finishes; a re-run skips
finished tasks (same profile) and resumes an interrupted DMF training from its
checkpoint:

- ``table1``: DMF trained on area I of ``mfjax.data.extendability_split``
  (10% rows and 10% columns held out, half of each held-out row's / column's
  entries revealed, area I split 75/5/20), RMSE on the test entries of areas
  I-IV; unseen rows/columns are embedded from their revealed entries only.
- ``dmf``: DMF on a plain 75/5/20 split: continuous RMSE/MAE, the rounding
  baseline (DMF + round) and DMF + a post-hoc quantizer fitted on the
  validation split.
- ``dmfd``: DMF-D (learned quantizer trained jointly) on the same split:
  discrete RMSE/MAE with the hard quantizer Q_b.
- ``als``: ALS (biased, ALS-WR ridge chosen on validation) on the same split:
  continuous, rounded, and with a fitted quantizer.
- ``select`` (only when named): model selection for areas II-IV without
  test entries: DMF trained on an inner extendability split of the ``table1``
  training entries, RMSE on its pseudo areas I-IV (:func:`inner_split`).

Side-feature profiles (:data:`SIDE_PROFILES`, issue 14 part 1): a base
profile with the ML-1M user / movie features as extra inputs of the two
branches (``DMFConfig.side_dims``, :mod:`mfjax.models.dmf_side`: users
gender + one-hot age + one-hot occupation, movies genres + scaled year),
read from ``users.dat`` / ``movies.dat`` next to ``ratings.dat``; every
other setting is the base profile's, so its records pair with the base's
per seed.

``<out>/summary.json`` and ``<out>/tables.md`` aggregate the finished seeds
(mean +- std) next to the paper's figures.  Model selection uses the
validation split only; the test entries are read once per task, at the end.

Usage::

    python experiments/dmf/run_tables.py --profile cpu --seeds 0 1 2 3 4
    python experiments/dmf/run_tables.py --profile authors --seeds 0 1 2 3 4   # GPU-scale
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np

import mfjax.data as mdata
import mfjax.models as mm
from mfjax.metrics import mae_from_predictions, rmse_from_predictions
from mfjax.store import ResultStore, atomic_write_json, atomic_write_text
from mfjax.store import config_hash as _config_hash

PAPER = {
    "table1": {"I": 0.850, "II": 0.883, "III": 0.864, "IV": 0.904},
    "table2": {"DMF-D": {"rmse": 0.898, "mae": 0.625}},
}
TASKS = ("als", "table1", "dmf", "dmfd", "select")


# --------------------------------------------------------------------------- profiles
# `cpu` + input-entry masking (TrainConfig.input_keep): every step, each input row / column keeps
# each of its observed entries with a probability p ~ U(lo, hi) drawn per vector
MASK_PROFILES = {
    "cpu_mask": {"input_keep": (0.3, 1.0), "input_keep_branches": "both"},
    "cpu_mask_rows": {"input_keep": (0.3, 1.0), "input_keep_branches": "rows"},
    "cpu_mask_rows_strong": {"input_keep": (0.1, 0.5), "input_keep_branches": "rows"},
    "cpu_center_mask_rows": {"input_keep": (0.3, 1.0), "input_keep_branches": "rows"},
}
# `cpu` with centred inputs (DMFConfig.input_offset): observed entries r -> r - 3.5
CENTER_PROFILES = {"cpu_center": 3.5, "cpu_center_mask_rows": 3.5}
# area I training rows hold ~75% of a seen user's ratings in seen columns, a held-out user's revealed
# row 50% (extendability_split reveal_frac 0.5, fractions (0.75, .05, .2)): thinning training inputs
# to 0.5 / 0.75 of their entries makes them as long as the revealed rows of areas II-IV
PSEUDO_KEEP = 0.5 / 0.75
# issue 14 part 3: levers for the area I / III gap, each on top of the selected `cpu_center_mask_rows`
# (centred inputs, row masking U(0.3, 1)); selected on the pseudo areas of `--tasks select` only.
# model: DMFConfig overrides; train: TrainConfig overrides; large: the `cpu_large` size and length
GAP_PROFILES = {
    "cmr_norm": {"model": {"input_norm": 1.0}},  # first layer / n_x: mean of the rated items' rows
    "cmr_sqrt": {"model": {"input_norm": 0.5}},  # first layer / sqrt(n_x) (SVD++ scaling)
    "cmr_cos": {"train": {"lr_schedule": "cosine", "lr_min": 1e-4}},  # cosine 1e-2 -> 1e-4 over the run
    "cmr_large": {"large": True},  # [1024, 512], 60 passes, lr x0.65 every 240 steps
    "cmr_large_norm": {"large": True, "model": {"input_norm": 1.0}},
}

# issue 14 part 1: a profile + the side features as extra inputs of DMF's branches ({name: base profile});
# everything else (architecture, schedule, masking, max_seconds) is the base's, so the runs pair per seed
SIDE_PROFILES = {"cmr_side": "cpu_center_mask_rows"}
SIDE_DIMS = (len(mm.USER_FEATURES), len(mm.MOVIE_FEATURES))  # (29, 19)


def profile(name: str, shape) -> dict:
    """Model and training configurations of a profile (architecture, schedule)."""
    if name == "authors":
        return {
            "dmf": (mm.DMFConfig.authors(), mm.TrainConfig.authors(shape, eval_every=10, checkpoint_every=10)),
            "dmfd": (mm.DMFConfig.authors_dmfd(),
                     mm.TrainConfig.authors(shape, dmfd=True, eval_every=10, checkpoint_every=10)),
        }
    if name == "cpu_large":  # exploratory: 4x wider, 2x longer (about 6 min per training on an idle 2-core CPU)
        base = mm.TrainConfig(epochs=60, block_rows=300, block_cols=500, learning_rate=1e-2, lr_decay=0.65,
                              lr_decay_every=240, eval_every=3, checkpoint_every=3, max_seconds=900.0)
        cfg = mm.DMFConfig.cpu(row_widths=(1024, 512), col_widths=(1024, 512))
        return {"dmf": (cfg, base), "dmfd": (cfg, base)}
    if name == "cpu_large_slowlam":
        # Table 2 at the `cpu_large` size: [1024, 512], 60 passes (1260 steps), lr decay every 240 steps;
        # DMF-D with the `cpu_slowlam` slope (lambda 0.1 -> 30, geometric per step over the run); raw inputs.
        # No wall-time cut (max_seconds None): a run stopped by the clock would depend on the machine's load;
        # an interrupted run resumes from its checkpoint instead.
        epochs, br = 60, 300
        steps = epochs * math.ceil(shape[0] / br)
        base = mm.TrainConfig(epochs=epochs, block_rows=br, block_cols=500, learning_rate=1e-2, lr_decay=0.65,
                              lr_decay_every=240, eval_every=3, checkpoint_every=3, max_seconds=None)
        q = mm.QuantizerConfig(lambda0=0.1, lambda_growth=float((30.0 / 0.1) ** (1.0 / steps)), lambda_every=1)
        cfg = mm.DMFConfig.cpu(row_widths=(1024, 512), col_widths=(1024, 512))
        return {"dmf": (cfg, base), "dmfd": (cfg, dataclasses.replace(base, quantizer=q))}
    if name in SIDE_PROFILES:
        base = profile(SIDE_PROFILES[name], shape)
        return {k: (dataclasses.replace(cfg, side_dims=SIDE_DIMS), tc) for k, (cfg, tc) in base.items()}
    if name in GAP_PROFILES:
        g = GAP_PROFILES[name]
        epochs, every = (60, 240) if g.get("large") else (30, 120)
        base = mm.TrainConfig(epochs=epochs, block_rows=300, block_cols=500, learning_rate=1e-2, lr_decay=0.65,
                              lr_decay_every=every, eval_every=3, checkpoint_every=3, max_seconds=None,
                              **MASK_PROFILES["cpu_center_mask_rows"], **g.get("train", {}))
        widths = {"row_widths": (1024, 512), "col_widths": (1024, 512)} if g.get("large") else {}
        cfg = mm.DMFConfig.cpu(input_offset=3.5, **widths, **g.get("model", {}))
        return {"dmf": (cfg, base), "dmfd": (cfg, base)}
    if name in ("cpu", "cpu_hide", "cpu_slowlam", "smoke") or name in MASK_PROFILES or name in CENTER_PROFILES:
        epochs = 2 if name == "smoke" else 30
        br, bc = 300, 500
        steps = epochs * math.ceil(shape[0] / br)
        base = mm.TrainConfig(epochs=epochs, block_rows=br, block_cols=bc, learning_rate=1e-2,
                              lr_decay=0.65, lr_decay_every=120, eval_every=3, checkpoint_every=3,
                              max_seconds=900.0, hide_targets=name == "cpu_hide",
                              **MASK_PROFILES.get(name, {}))
        # DMF-D: the authors' slope schedule (0.1 -> 0.1 * 1.015**1000 ~ 2.9e5) compressed to our steps,
        # or (cpu_slowlam) a slower one ending at lambda = 30
        lam_end = 30.0 if name == "cpu_slowlam" else 0.1 * 1.015**1000
        growth = float((lam_end / 0.1) ** (1.0 / steps))
        q = mm.QuantizerConfig(lambda0=0.1, lambda_growth=growth, lambda_every=1)
        cfg = mm.DMFConfig.cpu(input_offset=CENTER_PROFILES.get(name, 0.0))
        return {"dmf": (cfg, base), "dmfd": (cfg, dataclasses.replace(base, quantizer=q))}
    raise ValueError(f"unknown profile {name!r}")


def config_dict(cfg, tc) -> dict:
    train = dataclasses.asdict(tc)
    # options added later: drop them at their defaults to keep the hashes of earlier records valid
    for k, default in (("hide_targets", False), ("input_keep", None), ("input_keep_branches", "both"),
                       ("lr_schedule", "staircase"), ("lr_min", 0.0)):
        if train.get(k, default) == default:
            train.pop(k, None)
    model = dataclasses.asdict(cfg)
    for k in ("input_offset", "input_norm", "side_dims"):
        if not model.get(k):
            model.pop(k, None)
    if model.get("side_dims"):  # which features, not only how many
        model["side_features"] = {"rows": list(mm.USER_FEATURES), "cols": list(mm.MOVIE_FEATURES)}
    return {"model": model, "train": train}


def config_hash(d: dict) -> str:
    """12 hex digits of :func:`mfjax.store.config_hash` (the stored runs' hashes)."""
    return _config_hash(d, 12)


# --------------------------------------------------------------------------- metrics
def rmse(p, t):
    """RMSE of predictions ``p`` against targets ``t`` (:func:`mfjax.metrics.rmse_from_predictions`)."""
    return float(rmse_from_predictions(np.asarray(p), np.asarray(t)))


def mae(p, t):
    """MAE of predictions ``p`` against targets ``t`` (:func:`mfjax.metrics.mae_from_predictions`)."""
    return float(mae_from_predictions(np.asarray(p), np.asarray(t)))


def both(p, t):
    return {"rmse": rmse(p, t), "mae": mae(p, t)}


LEVELS = (1.0, 2.0, 3.0, 4.0, 5.0)


def quantized_metrics(pred_valid, valid, pred_test, test) -> dict:
    """Rounding baseline and a quantizer fitted on the validation predictions (never on test)."""
    fit = mm.fit_boundaries(pred_valid, valid.values, LEVELS, steps=500, gamma2=0.1)
    b = np.asarray(fit.boundaries)
    return {
        "round": both(mm.round_to_levels(pred_test, LEVELS), test.values),
        "fitted_quantizer": both(mm.quantize_hard(pred_test, b, LEVELS), test.values),
        "fitted_boundaries": b.tolist(),
    }


# --------------------------------------------------------------------------- tasks
def pseudo_valid_sets(s, seed):
    """Validation proxies for areas II-IV from area I training + validation entries only.

    The targets are the area I validation entries; the inputs are the
    training rows / columns thinned to ``PSEUDO_KEEP`` of their entries
    (:func:`mfjax.models.subsample_inputs`, ``default_rng([seed, 101])`` for
    rows, ``[seed, 102]`` for columns): ``pII`` thins the row inputs (users
    embedded from partial rows, as in area II), ``pIII`` the column inputs,
    ``pIV`` both.  No revealed or test entry is used.
    """
    rc, cc = mm.csr_inputs(s.train, "rows"), mm.csr_inputs(s.train, "cols")
    tr = mm.subsample_inputs(rc, PSEUDO_KEEP, [seed, 101])
    tc_ = mm.subsample_inputs(cc, PSEUDO_KEEP, [seed, 102])
    return {"pII": (tr, cc, s.valid), "pIII": (rc, tc_, s.valid), "pIV": (tr, tc_, s.valid)}


def run_table1(ratings, seed, cfg, tc, ckpt, log, side=None):
    """Table 1: train on area I, RMSE on areas I-IV (``side``: side features of all rows / columns, or None)."""
    s = mdata.extendability_split(ratings, 0.1, 0.1, 0.5, (0.75, 0.05, 0.2), seed=seed)
    res = mm.train_dmf(s.train, s.valid, cfg, dataclasses.replace(tc, seed=seed), checkpoint_path=ckpt, log=log,
                       extra_valid=pseudo_valid_sets(s, seed), side=side)
    preds = mm.predict_areas(res, s.test, s.revealed, s.held_rows, s.held_cols)
    metrics = {a: {**both(preds[a], s.test[a].values), "n": int(s.test[a].nnz)} for a in preds}
    i = res.trace["val_epoch"].index(res.best_epoch) if res.best_epoch in res.trace["val_epoch"] else -1
    valid_m = {"I": res.trace["val_rmse"][i],
               **{k: res.trace[f"val_rmse_{k}"][i] for k in ("pII", "pIII", "pIV") if res.trace.get(f"val_rmse_{k}")}}
    rep = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in s.report.items()}
    rep = {k: (len(v) if isinstance(v, list) and k.endswith(("train", "revealed")) else v) for k, v in rep.items()}
    return res, {"areas": metrics, "valid_at_selected_epoch": valid_m, "split_report": rep,
                 "split_checksums": {"train": mdata.data_checksum(s.train), "revealed": mdata.data_checksum(s.revealed)}}


INNER_REVEAL = 0.5 / 0.75  # an inner held-out user reveals 2/3 of its area I training row = 1/2 of its ratings


def inner_split(s, seed):
    """A pseudo-extendability split *inside* area I training entries, for model selection.

    ``extendability_split(s.train, 0.1, 0.1, INNER_REVEAL, (0.95, 0.05), seed=[seed, 7])``:
    10% of the rows and 10% of the columns (drawn among all, so ~10% of the
    draws hit rows / columns already held out by the outer split and empty
    in ``s.train``) become pseudo-unseen; each pseudo-unseen row reveals
    ``2/3`` of its area I training entries (= half of its ratings in seen
    columns, as the outer held-out rows reveal) and the other third are
    pseudo area II targets, likewise for columns (III); pseudo-unseen row x
    column entries are pseudo area IV; the remaining entries are split 95/5
    into the training set and pseudo area I targets.  Only ``s.train`` is
    used: no outer validation, revealed or test entry.
    """
    return mdata.extendability_split(s.train, 0.1, 0.1, INNER_REVEAL, (0.95, 0.05), seed=[seed, 7])


def run_select(ratings, seed, cfg, tc, ckpt, log, side=None):
    """Model selection for areas II-IV without test entries: train on the inner split, score pseudo areas.

    The model is trained on ``inner.train`` with the pseudo area I targets as
    validation (epoch selection, as ``table1``); pseudo areas II-IV are
    predicted as the real ones (:func:`mfjax.models.predict_areas`: unseen
    rows / columns embedded from their revealed entries) and traced every
    validation (``extra_valid``).  ``side``: the side features (all rows /
    columns; the inner split keeps the matrix shape, so they align as is).
    """
    s = mdata.extendability_split(ratings, 0.1, 0.1, 0.5, (0.75, 0.05, 0.2), seed=seed)
    inner = inner_split(s, seed)
    ri, ci = mm.extension_inputs(inner.train, inner.revealed, inner.held_rows, inner.held_cols)
    extra = {a: (ri, ci, inner.test[a]) for a in ("II", "III", "IV")}
    res = mm.train_dmf(inner.train, inner.test["I"], cfg, dataclasses.replace(tc, seed=seed), checkpoint_path=ckpt,
                       log=log, extra_valid=extra, side=side)
    i = res.trace["val_epoch"].index(res.best_epoch)
    pseudo = {"I": res.trace["val_rmse"][i], **{a: res.trace[f"val_rmse_{a}"][i] for a in ("II", "III", "IV")}}
    rep = inner.report
    return res, {"pseudo_areas": pseudo,
                 "pseudo_n": {a: int(inner.test[a].nnz) for a in ("I", "II", "III", "IV")},
                 "inner_split": {"n_held_rows": rep["n_held_rows"], "n_held_cols": rep["n_held_cols"],
                                 "nnz": rep["nnz"]},
                 "split_checksums": {"outer_train": mdata.data_checksum(s.train),
                                     "inner_train": mdata.data_checksum(inner.train)}}


def run_dmf(split, seed, cfg, tc, ckpt, log, side=None):
    tr, va, te = split
    res = mm.train_dmf(tr, va, cfg, dataclasses.replace(tc, seed=seed), checkpoint_path=ckpt, log=log, side=side)
    pv = np.asarray(mm.predict(res, va.rows, va.cols))
    pt = np.asarray(mm.predict(res, te.rows, te.cols))
    return res, {"continuous": both(pt, te.values), "valid_continuous": both(pv, va.values),
                 **quantized_metrics(pv, va, pt, te)}


def run_dmfd(split, seed, cfg, tc, ckpt, log, side=None):
    tr, va, te = split
    res = mm.train_dmf(tr, va, cfg, dataclasses.replace(tc, seed=seed), checkpoint_path=ckpt, log=log, side=side)
    pt_c = np.asarray(mm.predict(res, te.rows, te.cols))
    pt_d = np.asarray(mm.predict(res, te.rows, te.cols, discrete=True))
    return res, {"discrete": both(pt_d, te.values), "pre_quantizer_continuous": both(pt_c, te.values),
                 "round_of_continuous": both(mm.round_to_levels(pt_c, LEVELS), te.values),
                 "learned_boundaries": np.asarray(res.boundaries).tolist()}


def run_als(split, seed, log):
    from mfjax.losses import predict as mf_predict
    from mfjax.solvers import als

    tr, va, te = split
    best = None
    for l2 in (0.03, 0.05, 0.08):
        r = als(tr, rank=10, l2=l2, num_steps=15, weighted_l2=True, biases=True,
                key=jax.random.PRNGKey(seed))
        pv = np.clip(np.asarray(mf_predict(r.params, va.rows, va.cols)), 1, 5)
        v = rmse(pv, va.values)
        log(f"ALS l2={l2}: valid rmse {v:.4f}")
        if best is None or v < best[0]:
            best = (v, l2, r.params, pv)
    _, l2, params, pv = best
    pt = np.clip(np.asarray(mf_predict(params, te.rows, te.cols)), 1, 5)
    return {"config": {"rank": 10, "weighted_l2": True, "biases": True, "num_sweeps": 15,
                       "l2_grid": [0.03, 0.05, 0.08], "l2_selected": l2},
            "continuous": both(pt, te.values), "valid_continuous": both(pv, va.values),
            **quantized_metrics(pv, va, pt, te)}


# --------------------------------------------------------------------------- aggregation
def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, "n": len(xs)}


def fmt(ms):
    if ms is None:
        return "not run"
    return f"{ms['mean']:.3f} ± {ms['std']:.3f} (n={ms['n']})"


def aggregate(out: pathlib.Path, profile_name: str):
    runs = {}
    for f in sorted((out / "runs").glob(f"{profile_name}_seed*_*.json")):
        d = json.loads(f.read_text())
        runs.setdefault(d["task"], []).append(d)
    summ = {"profile": profile_name, "paper": PAPER, "seeds": {t: sorted(r["seed"] for r in v) for t, v in runs.items()}}
    t1 = runs.get("table1", [])
    summ["table1"] = {a: mean_std([r["metrics"]["areas"][a]["rmse"] for r in t1]) for a in ("I", "II", "III", "IV")}
    dm, dd, al = runs.get("dmf", []), runs.get("dmfd", []), runs.get("als", [])
    t2 = {}
    for name, rs, path in (
        ("DMF-D (joint learned quantizer)", dd, ("discrete",)),
        ("DMF + round", dm, ("round",)),
        ("DMF + fitted quantizer (post hoc, on valid)", dm, ("fitted_quantizer",)),
        ("DMF continuous (not discrete)", dm, ("continuous",)),
        ("ALS + round", al, ("round",)),
        ("ALS + fitted quantizer (post hoc, on valid)", al, ("fitted_quantizer",)),
        ("ALS continuous (not discrete)", al, ("continuous",)),
    ):
        t2[name] = {m: mean_std([r["metrics"][path[0]][m] for r in rs]) for m in ("rmse", "mae")}
    summ["table2"] = t2
    summ["wall_time_s"] = {t: mean_std([r["wall_time_s"] for r in v]) for t, v in runs.items()}
    atomic_write_json(out / f"summary_{profile_name}.json", summ)

    lines = [f"# DMF / DMF-D on ML-1M — profile `{profile_name}`", "",
             "Generated by `experiments/dmf/run_tables.py`; mean ± sample std over the finished seeds.", "",
             "## Table 1 (RMSE by area)", "", "| area | paper DMF | mfjax DMF | gap |", "| --- | --- | --- | --- |"]
    for a in ("I", "II", "III", "IV"):
        ms = summ["table1"][a]
        gap = f"{ms['mean'] - PAPER['table1'][a]:+.3f}" if ms else "-"
        lines.append(f"| {a} | {PAPER['table1'][a]:.3f} | {fmt(ms)} | {gap} |")
    lines += ["", "## Table 2 (discrete matrix completion)", "",
              "| model | RMSE | MAE | gap to paper DMF-D (RMSE / MAE) |", "| --- | --- | --- | --- |",
              "| paper DMF-D | 0.898 | 0.625 | |"]
    for name, v in t2.items():
        r, m = v["rmse"], v["mae"]
        gap = f"{r['mean'] - 0.898:+.3f} / {m['mean'] - 0.625:+.3f}" if r and m else "-"
        lines.append(f"| {name} | {fmt(r)} | {fmt(m)} | {gap} |")
    lines += ["", "Wall time per task (s): " + ", ".join(f"{t}: {fmt(v)}" for t, v in summ["wall_time_s"].items()), ""]
    atomic_write_text(out / f"tables_{profile_name}.md", "\n".join(lines))
    return summ


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", choices=["cpu", "cpu_hide", "cpu_slowlam", "cpu_large", "cpu_large_slowlam", "smoke", "authors", *MASK_PROFILES, *CENTER_PROFILES, *GAP_PROFILES, *SIDE_PROFILES])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--tasks", nargs="+", default=[t for t in TASKS if t != "select"], choices=list(TASKS))
    ap.add_argument("--data-dir", default=os.environ.get("MFJAX_ML1M"),
                    help="directory holding ML-1M (default: $MFJAX_ML1M, else the loader's lookup: "
                         "$MFJAX_DATA_DIR, then the user cache)")
    ap.add_argument("--out", default="experiments/results/dmf")
    ap.add_argument("--ckpt-dir", default=os.path.expanduser("~/.cache/mfjax/dmf_ckpt"))
    args = ap.parse_args(argv)
    args.command = "python " + " ".join(["experiments/dmf/run_tables.py"] + list(argv if argv is not None
                                                                                else sys.argv[1:]))
    return run(args, args.out)


def load_side(data_dir, ratings):
    """The ML-1M side features of ``ratings`` and the SHA-256 of the two tables they were read from.

    ``users.dat`` / ``movies.dat`` (or ``.gz``) are looked for next to the
    ratings file that :func:`mfjax.data.find_movielens` finds (``data_dir``,
    ``$MFJAX_DATA_DIR``, the cache); encoded by
    :func:`mfjax.models.movielens_side_features`.
    """
    path, member = mdata.find_movielens("ml-1m", data_dir)
    if member is not None:
        raise mdata.DataNotFoundError(f"side features need users.dat / movies.dat as files; {path} is a zip archive: "
                                      "extract it and pass its folder as --data-dir")
    folder = pathlib.Path(path).parent
    users, movies = mdata.load_users(folder), mdata.load_movies(folder)
    files = {}
    for stem in ("users.dat", "movies.dat"):
        f = next(p for p in (folder / stem, folder / (stem + ".gz")) if p.is_file())
        files[stem] = {"file": f.name, "sha256": mdata.file_sha256(f)}
    return mm.movielens_side_features(users, movies, ratings), files


class Context:
    """What every task of one invocation shares: the data, the profile, the store, the machine."""

    def __init__(self, profile_name: str, data_dir, workdir, ckpt_dir, command: str):
        self.profile_name = profile_name
        self.out = pathlib.Path(workdir)
        self.store = ResultStore(self.out / "runs", digits=12)
        self.store.root.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = None if ckpt_dir is None else pathlib.Path(ckpt_dir)
        if self.ckpt_dir is not None:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.command = command
        self.ratings = mdata.load_movielens("ml-1m", data_dir)
        self.checksum = mdata.data_checksum(self.ratings)
        self.prof = profile(profile_name, self.ratings.shape)
        self.side, self.side_files = None, None
        if self.prof["dmf"][0].side_dims is not None:
            self.side, self.side_files = load_side(data_dir, self.ratings)
        self.machine = {"platform": platform.platform(), "python": platform.python_version(),
                        "jax": jax.__version__, "devices": [str(dv) for dv in jax.devices()],
                        "cpu_count": os.cpu_count()}
        self._splits = {}

    def key(self, seed, task) -> str:
        return f"{self.profile_name}_seed{seed}_{task}"

    def config(self, task) -> dict:
        return ({"als": "rank 10, ALS-WR, biases, l2 grid on valid"} if task == "als"
                else config_dict(*self.prof["dmfd" if task == "dmfd" else "dmf"]))

    def finished(self, seed, task) -> bool:
        """Whether the record of ``(seed, task)`` exists with the current configuration hash."""
        return self.store.load(self.key(seed, task), config_hash=config_hash(self.config(task))) is not None

    def split(self, seed):
        if seed not in self._splits:
            self._splits = {seed: mdata.split(self.ratings, (0.75, 0.05, 0.2), seed=seed)}
        return self._splits[seed]


def run_task(ctx: Context, seed: int, task: str):
    """Run ``task`` for ``seed`` unless its record exists; write the record atomically and the summaries.

    Returns the record, or ``None`` when it was skipped (finished before,
    same configuration hash).  A DMF task checkpoints under ``ctx.ckpt_dir``
    (none when it is ``None``: an interrupted task then restarts from scratch).
    """
    key = ctx.key(seed, task)
    path = ctx.store.path(key)
    cfgd = ctx.config(task)
    h = config_hash(cfgd)
    if ctx.store.load(key, config_hash=h) is not None:
        print(f"[skip] {path} (finished)", flush=True)
        return None
    print(f"[run] seed {seed} task {task}", flush=True)
    log = lambda s, seed=seed, task=task: print(f"  [{task} s{seed}] {s}", flush=True)
    ratings, split = ctx.ratings, ctx.split(seed)
    t0 = time.perf_counter()
    extra = {}
    if task == "als":
        metrics = run_als(split, seed, log)
    else:
        cfg, tc = ctx.prof["dmfd" if task == "dmfd" else "dmf"]
        ckpt = None if ctx.ckpt_dir is None else ctx.ckpt_dir / f"{ctx.profile_name}_{h}_seed{seed}_{task}.msgpack"
        sd = ctx.side
        fn = {"table1": lambda: run_table1(ratings, seed, cfg, tc, ckpt, log, sd),
              "select": lambda: run_select(ratings, seed, cfg, tc, ckpt, log, sd),
              "dmf": lambda: run_dmf(split, seed, cfg, tc, ckpt, log, sd),
              "dmfd": lambda: run_dmfd(split, seed, cfg, tc, ckpt, log, sd)}[task]
        res, metrics = fn()
        extra = {"epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
                 "best_val": res.best_val, "trace": res.trace,
                 "train_wall_time_s": res.wall_time}
    record = {
        "task": task, "seed": seed, "profile": ctx.profile_name, "command": ctx.command,
        "data_checksum": ctx.checksum, "split": {
            "table1": "extendability_split(0.1, 0.1, 0.5, (0.75, 0.05, 0.2))",
            "select": "inner extendability_split(outer.train, 0.1, 0.1, 2/3, (0.95, 0.05), seed=[seed, 7])",
        }.get(task, "split((0.75, 0.05, 0.2))"),
        "split_checksums": None if task in ("table1", "select") else {
            k: mdata.data_checksum(p) for k, p in zip(("train", "valid", "test"), split)},
        "config": cfgd, "config_hash": h, "metrics": metrics, "wall_time_s": time.perf_counter() - t0,
        "machine": ctx.machine, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **extra,
    }
    if ctx.side_files is not None and task != "als":
        record["side_files"] = ctx.side_files
    ctx.store.save(key, record, config_hash=h)
    print(f"[done] {path}: {json.dumps(metrics)[:300]}", flush=True)
    aggregate(ctx.out, ctx.profile_name)
    return record


def run(config, workdir) -> int:
    """Run the tasks of ``config`` (the parsed options) for every seed; results under ``workdir``.

    A task's record ``<workdir>/runs/<profile>_seed<S>_<task>.json`` (a
    :class:`mfjax.store.ResultStore` record) is skipped when it exists with
    the same configuration hash; summaries are rewritten after every task.
    """
    args = copy.copy(config)
    command = getattr(args, "command", None) or "python experiments/dmf/run_tables.py"
    ctx = Context(args.profile, args.data_dir, workdir, args.ckpt_dir, command)
    for seed in args.seeds:
        for task in args.tasks:
            run_task(ctx, seed, task)
    summ = aggregate(ctx.out, args.profile)
    print(json.dumps({"table1": summ["table1"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
