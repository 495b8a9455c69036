"""Training DMF and DMF-D: sub-block minibatches, Adam with step decay, model selection, resume.

One training step (as in the authors' code) takes a block of ``block_rows``
rows and ``block_cols`` columns, embeds the rows from their input vectors
and the columns from theirs (first layer sparse, see
:mod:`mfjax.models.dmf`), forms the ``block_rows x block_cols`` cosine matrix
and fits it on the *observed training entries of that block*::

    DMF   (authors): sqrt( mean_{(i,j) in block} (cos(U_i, V_j) - s(M_ij))^2 )
    DMF   (paper eq. 1): mean_{(i,j) in block} (cos - s(M_ij))^2
                    + gamma (sum ||W||^2 over kernels)
    DMF-D (eq. 5, intent): sqrt( mean (G_{lam,b}(2 cos + 3) - M_ij)^2 )
                    + gamma2 pen(b - b~),

``s`` the [-1, 1] scaling, ``G`` the smooth quantizer with learnable
boundaries ``b`` and a slope ``lam`` that grows with the step count.

Epoch.  Here one epoch is one pass over all (non-empty) rows in blocks of
``block_rows``; the columns are shuffled per epoch and their blocks cycled.
The authors' counter ticks whenever either the row or the column pointer
wraps, i.e. every ``L = 1 / (1/R + 1/C)`` steps (``R``, ``C`` the numbers of
row / column blocks; L ~ 16 steps on ML-1M); :meth:`TrainConfig.authors`
converts their per-epoch schedules (lr x0.65 every 50 epochs, lambda x1.015
per epoch, 1000 epochs) to steps.

Why not the generic ``mfjax.loop``: a step here needs a dropout key, carries
BatchNorm statistics beside the parameters and draws its minibatch from a
per-epoch permutation, which does not fit a ``loss(params)`` loop.  The epoch
is one jitted ``lax.scan`` over its blocks (compiled once per run: the
padded entry capacities are fixed up front from all epochs' permutations);
the host does one sync per epoch (validation, checkpoint).

Resume.  Permutations come from ``numpy.random.default_rng([seed, epoch])``
and dropout keys from ``fold_in(PRNGKey(seed), step)``, so a run resumed from
a checkpoint continues exactly as the uninterrupted run.

Layout.  This module holds the driver :func:`train_dmf` and re-exports the
rest, so every name stays importable from ``mfjax.models.train``:

- :mod:`mfjax.models.config`   :class:`TrainConfig`, :class:`QuantizerConfig`, :func:`authors_epoch_length`
- :mod:`mfjax.models.state`    :class:`DMFState`, :class:`DMFResult`
- :mod:`mfjax.models.blocks`   the epoch plan, :func:`make_block`, :func:`mask_inputs`
- :mod:`mfjax.models.epoch`    the compiled epoch and evaluation functions
- :mod:`mfjax.models.predict`  :func:`predict`, :func:`predict_areas`
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.metrics import rmse_from_predictions
from mfjax.models import checkpoint as ckpt
from mfjax.models.blocks import MASK_STREAM, _bucket, _epoch_plan, make_block, mask_inputs  # noqa: F401
from mfjax.models.config import QuantizerConfig, TrainConfig, authors_epoch_length, learning_rate_schedule  # noqa: F401
from mfjax.models.dmf import DMFConfig, SideFeatures, _device_side, check_side_features, csr_inputs, init_dmf
from mfjax.models.epoch import _epoch_fn_cached, _eval_fn_cached, _full, _make_optimizer
from mfjax.models.predict import predict, predict_areas  # noqa: F401  (re-exported)
from mfjax.models.resume import check_resume_policy, resume_from, run_identity
from mfjax.models.state import DMFResult, DMFState

# this module is the trainer's entry point; the names of its former single
# file stay importable from here (configs, state, blocks, prediction)
__all__ = [
    "QuantizerConfig",
    "TrainConfig",
    "DMFState",
    "DMFResult",
    "train_dmf",
    "predict",
    "predict_areas",
    "authors_epoch_length",
    "learning_rate_schedule",
    "make_block",
]


def _capacities(tc: TrainConfig, rlen, clen, active_rows, active_cols, n: int) -> tuple[int, int]:
    """Padded entry capacities of a step's row / column batches, fixed over all epochs' plans.

    ``cap = bucket(max over the epochs' blocks of the block's input entries)``
    (:func:`~mfjax.models.blocks._bucket`), so the epoch compiles once per run.
    """
    cap_r = cap_c = 8
    for e in range(tc.epochs):
        rb, cblk, *_ = _epoch_plan(tc.seed, e, active_rows, active_cols, n, tc.block_rows, tc.block_cols)
        cap_r = max(cap_r, int(rlen[rb].sum(1).max()))
        cap_c = max(cap_c, int(clen[cblk].sum(1).max()))
    return _bucket(cap_r), _bucket(cap_c)


def _rmse(pred, values) -> float:
    """Validation RMSE on the host (:func:`mfjax.metrics.rmse_from_predictions`)."""
    return float(rmse_from_predictions(pred, values))


def train_dmf(train: Ratings, valid: Ratings | None, config: DMFConfig | None = None,
              train_config: TrainConfig | None = None, *, checkpoint_path=None,
              log: Callable[[str], None] | None = None, extra_valid: dict | None = None,
              resume: str = "auto", side: SideFeatures | None = None) -> DMFResult:
    """Train DMF (or DMF-D when ``train_config.quantizer`` is set) on ``train``.

    Args:
      train: training ratings; its rows and columns are the input vectors of
        the two branches (raw ratings, 0 where missing, as the authors).
      valid: validation ratings for model selection (same shape); ``None``
        keeps the last epoch.
      config: architecture (default :meth:`DMFConfig.cpu`).
      train_config: schedule (default :class:`TrainConfig`).
      checkpoint_path: if given, the state is saved there every
        ``checkpoint_every`` epochs and at the end, with the run's identity
        (:func:`~mfjax.models.resume.run_identity`: both configurations
        except the run-length fields, and the checksums of ``train`` and
        ``valid``); a run finding a checkpoint there resumes from it only if
        the identities agree (training longer, i.e. more ``epochs``, is a
        resume).
      resume: ``"auto"`` (default) resumes a matching checkpoint and starts
        from scratch, with a
        :class:`~mfjax.models.resume.CheckpointIgnoredWarning` naming the
        file and every difference, on a mismatched, corrupt (truncated,
        empty, garbage) or old checkpoint; ``"require"`` raises instead
        (:class:`~mfjax.models.resume.CheckpointMismatchError`,
        :class:`~mfjax.models.checkpoint.CorruptCheckpointError`,
        ``FileNotFoundError``); ``"never"`` ignores any checkpoint.
      log: optional callable receiving progress lines.
      extra_valid: optional ``{name: (row_inputs, col_inputs, ratings)}``:
        further validation sets with their own input vectors (e.g. the
        thinned inputs of :func:`~mfjax.models.dmf.subsample_inputs`),
        evaluated with ``valid`` and recorded in ``trace["val_rmse_<name>"]``;
        they do not enter model selection.
      side: per-row and per-column side features
        (:class:`~mfjax.models.dmf.SideFeatures`, ``(m, d_u)`` and
        ``(n, d_v)``), required when ``config.side_dims`` is set and refused
        otherwise; every step gathers its block's feature rows, every
        evaluation (also of ``extra_valid``) reads them all.  Default ``None``:
        plain DMF, unchanged.  Their checksum enters the run identity.

    Returns:
      :class:`DMFResult` with the variables of the best validation epoch.
    """
    config = config or DMFConfig.cpu()
    tc = train_config or TrainConfig()
    check_resume_policy(resume)
    if valid is not None and tuple(valid.shape) != tuple(train.shape):
        raise ValueError(f"valid shape {valid.shape} != train shape {train.shape}")
    lo, hi = config.rating_range
    tv = np.asarray(train.values)
    if tv.size == 0:
        raise ValueError("train has no entries")
    if valid is not None and valid.nnz == 0:
        raise ValueError("valid has no entries (e.g. a zero fraction in split); pass valid=None to keep the last epoch")
    if tv.min() < lo or tv.max() > hi:
        raise ValueError(f"train values span [{tv.min()}, {tv.max()}], outside rating_range {config.rating_range}")
    t0 = time.perf_counter()
    m, n = train.shape
    side = check_side_features(side, (m, n), config.side_dims)
    sdev = _device_side(side)
    rcsr, ccsr = csr_inputs(train, "rows"), csr_inputs(train, "cols")
    rlen, clen = rcsr.lengths(), ccsr.lengths()
    active_rows = np.flatnonzero(rlen > 0)
    active_cols = np.flatnonzero(clen > 0)
    br, bc = tc.block_rows, tc.block_cols

    key = jax.random.PRNGKey(tc.seed)
    k_init, k_drop = jax.random.split(key)
    model, variables = init_dmf(k_init, config, (m, n))
    params = {"net": variables["params"]}
    if tc.quantizer is not None:
        params["b"] = jnp.asarray(tc.quantizer.reference(), jnp.float32)
    total_steps = tc.epochs * int(np.ceil(active_rows.size / br))  # T of the cosine / linear schedules
    opt = _make_optimizer(tc, total_steps)
    state = DMFState(params, variables.get("batch_stats", {}), jax.jit(opt.init)(params), jnp.zeros((), jnp.int32))

    # fixed padded capacities from all epochs' plans: one compilation per run
    cap_r, cap_c = _capacities(tc, rlen, clen, active_rows, active_cols, n)
    epoch_fn = _epoch_fn_cached(config, tc, (m, n), cap_r, cap_c, total_steps)
    eval_fn = _eval_fn_cached(config, tc.quantizer, (m, n))
    rdev = (jnp.asarray(rcsr.indptr), jnp.asarray(rcsr.indices), jnp.asarray(rcsr.values))
    cdev = (jnp.asarray(ccsr.indptr), jnp.asarray(ccsr.indices), jnp.asarray(ccsr.values))
    xr_full, xc_full = _full(rcsr), _full(ccsr)

    trace = {"train_loss": [], "val_epoch": [], "val_rmse": [], "val_rmse_discrete": [], "lam": []}
    extra = {}
    for name, (ri, ci, r) in (extra_valid or {}).items():
        if tuple(r.shape) != (m, n) or ri.num_rows != m or ci.num_rows != n:
            raise ValueError(f"extra_valid[{name!r}] does not match the training shape {(m, n)}")
        extra[name] = (_full(ri), _full(ci), jnp.asarray(r.rows), jnp.asarray(r.cols), np.asarray(r.values))
        trace[f"val_rmse_{name}"] = []
    best = {"variables": {"params": state.params["net"], "batch_stats": state.batch_stats},
            "b": state.params.get("b"), "val": float("inf"), "epoch": -1}
    start_epoch, since_best, prior_seconds = 0, 0, 0.0

    def snapshot():
        return {"state": state, "best_params": best["variables"]["params"],
                "best_batch_stats": best["variables"]["batch_stats"],
                "best_b": best["b"] if best["b"] is not None else jnp.zeros(0)}

    identity = run_identity(config, tc, train, valid, side) if checkpoint_path is not None else None
    restored = resume_from(checkpoint_path, snapshot(), identity, resume, log)
    if restored is not None:
        tree, meta = restored
        state = tree["state"]
        best = {"variables": {"params": tree["best_params"], "batch_stats": tree["best_batch_stats"]},
                "b": tree["best_b"] if tc.quantizer is not None else None,
                "val": meta["best_val"] if meta["best_val"] is not None else float("inf"),
                "epoch": meta["best_epoch"]}
        trace = meta["trace"]
        start_epoch, since_best = meta["epoch"], meta.get("since_best", 0)
        prior_seconds = float(meta.get("train_seconds", 0.0))
        if log:
            log(f"resumed from {checkpoint_path} at epoch {start_epoch}")

    def save(epoch_done):
        if checkpoint_path is None:
            return
        ckpt.save_checkpoint(checkpoint_path, snapshot(), {
            "epoch": epoch_done, "best_val": best["val"], "best_epoch": best["epoch"],
            "since_best": since_best, "trace": trace,
            "train_seconds": prior_seconds + time.perf_counter() - t0, "identity": identity,
        })

    lam_fn = tc.quantizer.schedule() if tc.quantizer is not None else None
    epoch = start_epoch
    stopped = False
    while epoch < tc.epochs and not stopped:
        plan = _epoch_plan(tc.seed, epoch, active_rows, active_cols, n, br, bc)
        state, losses = epoch_fn(state, rdev, cdev, *[jnp.asarray(a) for a in plan], k_drop, sdev)
        epoch += 1
        trace["train_loss"].append(float(jnp.mean(losses)))
        if not np.isfinite(trace["train_loss"][-1]):
            raise FloatingPointError(f"DMF training loss became {trace['train_loss'][-1]} at epoch {epoch}")
        last = epoch == tc.epochs
        timeout = tc.max_seconds is not None and time.perf_counter() - t0 > tc.max_seconds
        if valid is not None and (epoch % tc.eval_every == 0 or last or timeout):
            v = {"params": state.params["net"], "batch_stats": state.batch_stats}
            cont, disc = eval_fn(v, state.params.get("b", jnp.zeros(0)), xr_full, xc_full,
                                 jnp.asarray(valid.rows), jnp.asarray(valid.cols), sdev)
            r_c, r_d = _rmse(cont, valid.values), _rmse(disc, valid.values)
            metric = r_d if tc.quantizer is not None else r_c
            trace["val_epoch"].append(epoch)
            trace["val_rmse"].append(r_c)
            trace["val_rmse_discrete"].append(r_d)
            trace["lam"].append(float(lam_fn(state.step)) if lam_fn else None)
            for name, (xr_e, xc_e, rows_e, cols_e, vals_e) in extra.items():
                c_e, d_e = eval_fn(v, state.params.get("b", jnp.zeros(0)), xr_e, xc_e, rows_e, cols_e, sdev)
                trace.setdefault(f"val_rmse_{name}", []).append(
                    _rmse(d_e if tc.quantizer is not None else c_e, vals_e))
            if metric < best["val"]:
                best = {"variables": v, "b": state.params.get("b"), "val": metric, "epoch": epoch}
                since_best = 0
            else:
                since_best += 1
            if log:
                log(f"epoch {epoch}: train loss {trace['train_loss'][-1]:.4f}  val rmse {r_c:.4f}"
                    + (f"  val rmse (Q_b) {r_d:.4f}  lam {trace['lam'][-1]:.3g}" if lam_fn else "")
                    + "".join(f"  {k} {trace[f'val_rmse_{k}'][-1]:.4f}" for k in extra)
                    + f"  [{time.perf_counter() - t0:.0f}s]")
            if tc.patience is not None and since_best >= tc.patience:
                stopped = True
        if timeout:
            stopped = True
        if epoch % tc.checkpoint_every == 0 or last or stopped:
            save(epoch)
    if valid is None:
        best = {"variables": {"params": state.params["net"], "batch_stats": state.batch_stats},
                "b": state.params.get("b"), "val": float("nan"), "epoch": epoch}
    return DMFResult(model, best["variables"], best["b"], config, tc, rcsr, ccsr, trace,
                     int(best["epoch"]), float(best["val"]), epoch, prior_seconds + time.perf_counter() - t0, side)
