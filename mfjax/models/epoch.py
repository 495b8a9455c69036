"""The compiled pieces of DMF training: one epoch (a scanned Adam step) and the evaluation.

Both are built once per static configuration and cached
(:func:`_epoch_fn_cached`, :func:`_eval_fn_cached`): the fields of a
:class:`~mfjax.models.config.TrainConfig` that do not enter a step (epochs,
seed, validation, stopping, checkpoints) are normalised out of the cache
key, so seeds and resumed runs reuse the compiled epoch.

The block loss (``s`` the [-1, 1] scaling, ``G`` the smooth quantizer)::

    DMF:    sqrt(mean_M (cos(U_i, V_j) - s(R_ij))^2)    (loss="rmse"; "mse" drops the sqrt)
    DMF-D:  sqrt(mean_M (G_{lam,b}(from_unit(cos)) - R_ij)^2) + gamma2 pen(b - b~)

plus ``l2 * sum ||W||^2`` over the kernels when ``l2 > 0``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from mfjax.models.blocks import MASK_STREAM, make_block
from mfjax.models.config import QuantizerConfig, TrainConfig, learning_rate_schedule
from mfjax.models.dmf import (
    DMF,
    CSRInputs,
    DMFConfig,
    cosine,
    from_unit,
    full_batch,
    pairwise_cosine,
    to_unit,
)
from mfjax.models.quantizer import boundary_penalty, check_levels, quantize_hard, smooth_quantize
from mfjax.models.state import DMFState

__all__: list[str] = []  # internal: used by mfjax.models.train and mfjax.models.predict


def _kernel_sq(params):
    """``sum ||W||_F^2`` over every ``kernel*`` leaf of a flax parameter tree (the l2 term)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    tot = 0.0
    for path, leaf in leaves:
        name = str(getattr(path[-1], "key", path[-1]))
        if name.startswith("kernel"):
            tot = tot + jnp.sum(leaf * leaf)
    return tot


def _make_optimizer(tc: TrainConfig, total_steps: int | None = None):
    """Adam with :func:`~mfjax.models.config.learning_rate_schedule` (default: the staircase decay
    ``lr * lr_decay ** floor(step / lr_decay_every)``; ``total_steps`` for cosine / linear)."""
    return optax.adam(learning_rate_schedule(tc, total_steps))


_EPOCH_FNS: dict = {}


def _epoch_fn_cached(cfg: DMFConfig, tc: TrainConfig, shape, cap_r: int, cap_c: int,
                     total_steps: int | None = None):
    """One compiled epoch function per (architecture, schedule, shape, capacities).

    Fields that do not enter the step (epochs, seed, evaluation, stopping)
    are normalised out of the key, so repeated runs (seeds, resumes) reuse
    the compiled function; ``total_steps`` (the run's step count) enters
    only the cosine / linear schedules.
    """
    key_tc = dataclasses.replace(tc, epochs=1, seed=0, eval_every=1, patience=None,
                                 max_seconds=None, checkpoint_every=1)
    if tc.lr_schedule == "staircase":
        total_steps = None
    key = (cfg, key_tc, tuple(shape), cap_r, cap_c, total_steps)
    if key not in _EPOCH_FNS:
        model = DMF(cfg, *shape)
        _EPOCH_FNS[key] = _make_epoch_fn(model, cfg, tc, _make_optimizer(tc, total_steps), cap_r, cap_c)
    return _EPOCH_FNS[key]


_EVAL_FNS: dict = {}


def _eval_fn_cached(cfg: DMFConfig, quant, shape):
    """One compiled evaluation function per (architecture, quantizer, shape)."""
    key = (cfg, quant, tuple(shape))
    if key not in _EVAL_FNS:
        _EVAL_FNS[key] = _make_eval_fn(DMF(cfg, *shape), cfg, quant)
    return _EVAL_FNS[key]


def _make_epoch_fn(model: DMF, cfg: DMFConfig, tc: TrainConfig, opt, cap_r: int, cap_c: int):
    """The jitted epoch ``(state, rcsr, ccsr, *plan, key, side) -> (state, per-step data losses)``.

    One ``lax.scan`` over the epoch's blocks; each step builds its block
    (:func:`~mfjax.models.blocks.make_block`), takes the gradient of the
    block loss (module docstring of :mod:`mfjax.models.train`) and applies
    the Adam update.  Dropout keys ``fold_in(key, step)``.  ``side`` =
    ``(rows (m, d_u), cols (n, d_v))`` side features (entries ``None``
    without; ``DMFConfig.side_dims``): the step gathers the block's rows
    ``side[0][rb]`` and columns ``side[1][cblk]``.
    """
    q = tc.quantizer
    if q is not None:
        levels = check_levels(q.levels)
        b_ref = jnp.asarray(q.reference(), jnp.float32)
        lam_fn = q.schedule()
    rr = cfg.rating_range

    def loss_fn(params, batch_stats, xr, xc, R, M, step, key, sr, sc):
        (U, V), upd = model.apply(
            {"params": params["net"], "batch_stats": batch_stats}, xr, xc, train=True,
            side_rows=sr, side_cols=sc, rngs={"dropout": key}, mutable=["batch_stats"],
        )
        C = pairwise_cosine(U, V, cfg.cos_eps)
        if q is None:
            pred, target = C, to_unit(R, rr)
        else:
            b = params["b"] if q.learn_boundaries else jax.lax.stop_gradient(params["b"])
            pred, target = smooth_quantize(from_unit(C, rr), b, levels, lam_fn(step)), R
        cnt = jnp.maximum(jnp.sum(M), 1.0)
        mse = jnp.sum(M * (pred - target) ** 2) / cnt
        data = jnp.sqrt(mse + 1e-12) if tc.loss == "rmse" else mse
        total = data
        if tc.l2 > 0:
            total = total + tc.l2 * _kernel_sq(params["net"])
        if q is not None:
            total = total + q.gamma2 * boundary_penalty(params["b"], b_ref, q.penalty_reduce)
        return total, (upd.get("batch_stats", {}), data)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def epoch(state: DMFState, rcsr, ccsr, row_blocks, col_blocks, cb, col_block_of, col_slot_of, key,
              side=(None, None)):
        f_rows, f_cols = side

        def step_fn(st: DMFState, xs):
            rb, cblk, c_id = xs
            mk = (jax.random.fold_in(jax.random.fold_in(key, MASK_STREAM), st.step)
                  if tc.input_keep is not None else None)
            xr, xc, R, M = make_block(rcsr, ccsr, rb, cblk, c_id, col_block_of, col_slot_of,
                                      cap_r, cap_c, tc.hide_targets, mk, tc.input_keep,
                                      tc.input_keep_branches)
            k = jax.random.fold_in(key, st.step)
            sr = None if f_rows is None else f_rows[rb]
            sc = None if f_cols is None else f_cols[cblk]
            (_, (bs, data)), g = grad_fn(st.params, st.batch_stats, xr, xc, R, M, st.step, k, sr, sc)
            updates, opt_state = opt.update(g, st.opt_state, st.params)
            params = optax.apply_updates(st.params, updates)
            return DMFState(params, bs, opt_state, st.step + 1), data

        return jax.lax.scan(step_fn, state, (row_blocks, col_blocks, cb))

    return jax.jit(epoch)


def _make_eval_fn(model: DMF, cfg: DMFConfig, quant: QuantizerConfig | None):
    """The jitted ``(variables, b, xr, xc, rows, cols, side) -> (continuous, discrete)`` predictions.

    Embeds all rows / columns from their full input vectors and, with
    ``DMFConfig.side_dims``, their side features ``side = (rows, cols)``
    (inference mode), predicts ``from_unit(cos(U_i, V_j))`` at the requested entries and
    quantizes them with ``Q_b`` (DMF-D; the continuous values otherwise).
    """
    rr = cfg.rating_range

    def ev(variables, b, xr, xc, rows, cols, side=(None, None)):
        U = model.apply(variables, xr, train=False, side=side[0], method=DMF.embed_rows)
        V = model.apply(variables, xc, train=False, side=side[1], method=DMF.embed_cols)
        cont = from_unit(cosine(U[rows], V[cols], cfg.cos_eps), rr)
        disc = quantize_hard(cont, b, quant.levels) if quant is not None else cont
        return cont, disc

    return jax.jit(ev)


def _full(csr: CSRInputs, chunk=32768):
    """All input vectors of ``csr`` as one padded batch (:func:`~mfjax.models.dmf.full_batch`)."""
    return full_batch(csr, chunk)
