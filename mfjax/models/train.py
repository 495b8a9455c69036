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
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mfjax.data.ratings import Ratings
from mfjax.models import checkpoint as ckpt
from mfjax.models.dmf import (
    DMF,
    CSRInputs,
    DMFConfig,
    csr_inputs,
    extension_inputs,
    from_unit,
    gather_block,
    pairwise_cosine,
    to_unit,
    cosine,
    init_dmf,
)
from mfjax.models.quantizer import (
    boundary_penalty,
    check_levels,
    exponential_lambda,
    quantize_hard,
    smooth_quantize,
    uniform_boundaries,
)

__all__ = [
    "QuantizerConfig",
    "TrainConfig",
    "DMFState",
    "DMFResult",
    "train_dmf",
    "predict",
    "predict_areas",
    "authors_epoch_length",
    "make_block",
]


@dataclasses.dataclass(frozen=True)
class QuantizerConfig:
    """DMF-D's learned quantizer (authors' defaults).

    ``levels`` I_1..I_d; ``init_boundaries`` b~ (default uniform: 1.5..4.5);
    ``gamma2`` weight of ``pen(b - b~)`` (``penalty_reduce="mean"`` as the
    authors, ``"sum"`` as eq. 5); slope ``lam = lambda0 * lambda_growth **
    floor(step / lambda_every)``; ``learn_boundaries=False`` freezes b.
    """

    levels: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
    init_boundaries: tuple[float, ...] | None = None
    gamma2: float = 0.1
    penalty_reduce: str = "mean"
    lambda0: float = 0.1
    lambda_growth: float = 1.015
    lambda_every: int = 16
    learn_boundaries: bool = True

    def reference(self) -> np.ndarray:
        lv = check_levels(self.levels)
        if self.init_boundaries is None:
            return uniform_boundaries(lv)
        b = np.asarray(self.init_boundaries, np.float64)
        if b.shape != (lv.size - 1,):
            raise ValueError(f"init_boundaries needs {lv.size - 1} values, got {self.init_boundaries}")
        return b

    def schedule(self) -> Callable:
        return exponential_lambda(self.lambda0, self.lambda_growth, self.lambda_every)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training schedule.

    Attributes:
      epochs: passes over all row blocks (see module docstring).
      block_rows, block_cols: sub-block size of one step (authors: 100 x 170).
      learning_rate, lr_decay, lr_decay_every: Adam with
        ``lr * lr_decay ** floor(step / lr_decay_every)``.
      loss: ``"rmse"`` (authors' code) or ``"mse"`` (paper eq. 1), over the
        observed entries of the block.
      l2: gamma, weight of the squared Frobenius norm of all kernels.
      quantizer: a :class:`QuantizerConfig` trains DMF-D; ``None`` DMF.
      eval_every: validate every this many epochs (and at the end); the
        parameters with the best validation RMSE (discrete RMSE for DMF-D)
        are returned.
      patience: stop after this many validations without improvement (None: never).
      max_seconds: stop after this wall time (None: never); the best so far is kept.
      checkpoint_every: save the full state every this many epochs (when a
        checkpoint path is given).
      seed: permutations, initialisation and dropout.
      hide_targets: remove each step's target entries from the input vectors
        of both branches (an mfjax option, not in the paper or the authors'
        code, where a training entry is part of the input that predicts it;
        at test time the predicted entry is never in the input, and for
        unseen rows only part of the row is).  Default False (authors).
      input_keep: ``(lo, hi)`` turns on input-entry masking ("denoising"
        augmentation, an mfjax option, not in the paper or the authors'
        code; default ``None`` = off).  At every step each input vector ``x``
        of the block (a row of the row branch, a column of the column
        branch, see ``input_keep_branches``) draws a keep probability
        ``p ~ U(lo, hi)`` and each of its observed entries is kept
        independently with probability ``p``::

            x~_k = z_k x_k,   z_k ~ Bernoulli(p),   p ~ U(lo, hi)  (per vector, per step),

        without rescaling by ``1/p`` (at test time a partial vector is not
        rescaled either).  The loss targets are unchanged: all observed
        entries of the block, masked or not (the masked ones must then be
        predicted from the rest, as in denoising autoencoders).  Purpose:
        an unseen row is embedded from a *part* of its ratings (the revealed
        half of areas II-IV), an input the branches never see when trained
        on full training rows; masking trains them on such partial vectors
        and makes a training row's exact input pattern (its identity) less
        useful for fitting its targets.  Measured on ML-1M
        (``experiments/results/dmf``): alone it helps areas II/IV little
        (~0.015 RMSE) at some cost on area I; the large effect comes from
        centred inputs (:attr:`DMFConfig.input_offset`), with which row
        masking was selected.  Masked entries are set to 0, i.e. become
        missing (also under ``input_offset``, which skips zeros).
        Only training entries are ever inputs or targets.  The masks come
        from ``fold_in(fold_in(key, MASK_STREAM), step)``: deterministic per
        seed, independent of the dropout stream (which is unchanged).
        References: P. Vincent et al., "Extracting and composing robust
        features with denoising autoencoders", ICML 2008; Y. Wu et al.,
        "Collaborative denoising auto-encoders for top-N recommender
        systems", WSDM 2016; F. Strub, R. Gaudel, J. Mary, "Hybrid
        recommender system based on autoencoders", DLRS 2016.
      input_keep_branches: ``"both"``, ``"rows"`` or ``"cols"``: the branch
        inputs that ``input_keep`` masks.
    """

    epochs: int = 270
    block_rows: int = 100
    block_cols: int = 170
    learning_rate: float = 1e-2
    lr_decay: float = 0.65
    lr_decay_every: int = 810
    loss: str = "rmse"
    l2: float = 0.0
    quantizer: QuantizerConfig | None = None
    eval_every: int = 5
    patience: int | None = None
    max_seconds: float | None = None
    checkpoint_every: int = 5
    seed: int = 0
    hide_targets: bool = False
    input_keep: tuple[float, float] | None = None
    input_keep_branches: str = "both"

    def __post_init__(self):
        if self.input_keep is not None:
            keep = tuple(float(v) for v in self.input_keep)
            if len(keep) != 2 or not 0.0 < keep[0] <= keep[1] <= 1.0:
                raise ValueError(f"input_keep must be (lo, hi) with 0 < lo <= hi <= 1, got {self.input_keep!r}")
            object.__setattr__(self, "input_keep", keep)
        if self.input_keep_branches not in ("both", "rows", "cols"):
            raise ValueError(f"input_keep_branches must be 'both', 'rows' or 'cols', got {self.input_keep_branches!r}")
        if self.loss not in ("rmse", "mse"):
            raise ValueError(f"loss must be 'rmse' or 'mse', got {self.loss!r}")
        for name in ("epochs", "block_rows", "block_cols", "lr_decay_every", "eval_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    @classmethod
    def authors(cls, shape: tuple[int, int], dmfd: bool = False, **overrides) -> "TrainConfig":
        """The authors' protocol in this trainer's units (steps / row-epochs) for an ``shape`` matrix.

        DMF: blocks 100 x 170, Adam 1e-2 x0.65 every 50 (their) epochs, 1000
        epochs.  DMF-D: blocks 300 x 200, lambda 0.1 x1.015 per (their) epoch.
        """
        br, bc = (300, 200) if dmfd else (100, 170)
        L = authors_epoch_length(shape, br, bc)
        steps_per_epoch = math.ceil(shape[0] / br)
        q = QuantizerConfig(lambda_every=max(1, round(L))) if dmfd else None
        base = cls(
            epochs=math.ceil(1000 * L / steps_per_epoch),
            block_rows=br,
            block_cols=bc,
            lr_decay_every=max(1, round(50 * L)),
            quantizer=q,
        )
        return dataclasses.replace(base, **overrides)


def authors_epoch_length(shape, block_rows: int, block_cols: int) -> float:
    """Steps per epoch of the authors' counter: ``1 / (1/ceil(m/br) + 1/ceil(n/bc))``."""
    R = math.ceil(shape[0] / block_rows)
    C = math.ceil(shape[1] / block_cols)
    return 1.0 / (1.0 / R + 1.0 / C)


class DMFState(NamedTuple):
    """Everything a step changes: parameters ``{"net", "b"}``, BatchNorm stats, Adam state, step."""

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array


class DMFResult(NamedTuple):
    """A trained (best-on-validation) model and what is needed to predict with it.

    Attributes:
      model: the flax :class:`~mfjax.models.dmf.DMF` module.
      variables: ``{"params", "batch_stats"}`` of the selected epoch.
      boundaries: learned quantizer boundaries (DMF-D) or ``None``.
      config, train_config: the configurations.
      row_inputs, col_inputs: the training input vectors (CSR).
      trace: dict of per-epoch ``train_loss`` and per-validation ``val_epoch``,
        ``val_rmse`` (and ``val_rmse_discrete`` for DMF-D), ``lam``.
      best_epoch, best_val: the selected epoch and its validation metric.
      epochs_run: epochs trained in total; wall_time: training seconds in
        total (this call plus the runs it resumed from).
    """

    model: Any
    variables: Any
    boundaries: Any
    config: DMFConfig
    train_config: TrainConfig
    row_inputs: CSRInputs
    col_inputs: CSRInputs
    trace: dict
    best_epoch: int
    best_val: float
    epochs_run: int
    wall_time: float


# --------------------------------------------------------------------------- pieces
def _bucket(x: int) -> int:
    """Round up to a multiple of 1/8 of the enclosing power of two (bounded padding, few sizes)."""
    x = max(int(x), 8)
    g = max(1, 2 ** (int(math.floor(math.log2(x))) - 3))
    return int(math.ceil(x / g) * g)


def _epoch_plan(seed, epoch, active_rows, active_cols, n_cols, br, bc):
    rng = np.random.default_rng([int(seed), int(epoch)])
    rp = rng.permutation(active_rows)
    cp = rng.permutation(active_cols)
    S = math.ceil(rp.size / br)
    C = math.ceil(cp.size / bc)
    row_blocks = np.resize(rp, S * br).reshape(S, br).astype(np.int32)
    all_col_blocks = np.resize(cp, C * bc).reshape(C, bc).astype(np.int32)
    cb = (np.arange(S) % C).astype(np.int32)
    col_blocks = all_col_blocks[cb]
    pos = np.arange(cp.size)
    col_block_of = np.full(n_cols, -1, np.int32)
    col_slot_of = np.zeros(n_cols, np.int32)
    col_block_of[cp] = pos // bc
    col_slot_of[cp] = pos % bc
    return row_blocks, col_blocks, cb, col_block_of, col_slot_of


def _kernel_sq(params):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    tot = 0.0
    for path, leaf in leaves:
        name = str(getattr(path[-1], "key", path[-1]))
        if name.startswith("kernel"):
            tot = tot + jnp.sum(leaf * leaf)
    return tot


def _make_optimizer(tc: TrainConfig):
    sched = optax.exponential_decay(tc.learning_rate, tc.lr_decay_every, tc.lr_decay, staircase=True)
    return optax.adam(sched)


_EPOCH_FNS: dict = {}


def _epoch_fn_cached(cfg: DMFConfig, tc: TrainConfig, shape, cap_r: int, cap_c: int):
    """One compiled epoch function per (architecture, schedule, shape, capacities).

    Fields that do not enter the step (epochs, seed, evaluation, stopping)
    are normalised out of the key, so repeated runs (seeds, resumes) reuse
    the compiled function.
    """
    key_tc = dataclasses.replace(tc, epochs=1, seed=0, eval_every=1, patience=None,
                                 max_seconds=None, checkpoint_every=1)
    key = (cfg, key_tc, tuple(shape), cap_r, cap_c)
    if key not in _EPOCH_FNS:
        model = DMF(cfg, *shape)
        _EPOCH_FNS[key] = _make_epoch_fn(model, cfg, tc, _make_optimizer(tc), cap_r, cap_c)
    return _EPOCH_FNS[key]


_EVAL_FNS: dict = {}


def _eval_fn_cached(cfg: DMFConfig, quant, shape):
    key = (cfg, quant, tuple(shape))
    if key not in _EVAL_FNS:
        _EVAL_FNS[key] = _make_eval_fn(DMF(cfg, *shape), cfg, quant)
    return _EVAL_FNS[key]


MASK_STREAM = 0x6D61736B  # fold_in constant separating the input-mask keys from the dropout keys


def mask_inputs(x, valid, key, keep_range):
    """Keep each observed entry of every input vector with a per-vector probability ``p ~ U(lo, hi)``.

    ``x``: a padded :class:`~mfjax.models.dmf.SparseBatch`, ``valid`` its
    validity mask.  Returns ``(x with masked values set to 0, keep mask)``;
    the entry set only shrinks (padding stays 0).  Jittable; see
    :attr:`TrainConfig.input_keep`.
    """
    lo, hi = keep_range
    k_p, k_z = jax.random.split(key)
    p = jax.random.uniform(k_p, (x.num_segments,), minval=lo, maxval=hi)
    keep = valid & (jax.random.uniform(k_z, x.vals.shape) < p[x.seg])
    return dataclasses.replace(x, vals=jnp.where(keep, x.vals, 0.0)), keep


def make_block(rcsr, ccsr, rb, cblk, c_id, col_block_of, col_slot_of, cap_r: int, cap_c: int,
               hide_targets: bool = False, mask_key=None, input_keep=None, input_keep_branches: str = "both"):
    """Inputs and targets of one training step (jittable; ``cap_*``, ``hide_targets``, ``input_keep*`` static).

    Args:
      rcsr, ccsr: ``(indptr, indices, values)`` of the row / column input vectors (the training matrix).
      rb (B_r,), cblk (B_c,): the block's rows and columns.
      c_id: the id of this column block; ``col_block_of[j] == c_id`` marks
        the columns whose entries are targets, ``col_slot_of[j]`` their slot.
      mask_key, input_keep, input_keep_branches: input-entry masking
        (:func:`mask_inputs`, :attr:`TrainConfig.input_keep`); applied to the
        inputs only, after the targets are read.
    Returns:
      ``(xr, xc, R, M)``: the sparse row / column batches, the dense
      ``(B_r, B_c)`` block of training ratings ``R`` and its 0/1 mask ``M``.
    """
    r_indptr, r_indices, r_values = rcsr
    c_indptr, c_indices, c_values = ccsr
    br, bc = rb.shape[0], cblk.shape[0]
    xr, _, valid = gather_block(r_indptr, r_indices, r_values, rb, cap_r)
    xc, _, valid_c = gather_block(c_indptr, c_indices, c_values, cblk, cap_c)
    in_blk = valid & (col_block_of[xr.idx] == c_id)
    slot = jnp.where(in_blk, col_slot_of[xr.idx], bc)  # bc = out of range -> dropped
    R = jnp.zeros((br, bc), jnp.float32).at[xr.seg, slot].set(xr.vals, mode="drop")
    M = jnp.zeros((br, bc), jnp.float32).at[xr.seg, slot].set(1.0, mode="drop")
    if hide_targets:
        # the block's target entries are removed from both branches' inputs
        in_rows = jnp.zeros(r_indptr.shape[0] - 1, bool).at[rb].set(True)
        tgt_c = valid_c & in_rows[xc.idx] & (col_block_of[cblk[xc.seg]] == c_id)
        xr = dataclasses.replace(xr, vals=jnp.where(in_blk, 0.0, xr.vals))
        xc = dataclasses.replace(xc, vals=jnp.where(tgt_c, 0.0, xc.vals))
    if input_keep is not None:
        k_r, k_c = jax.random.split(mask_key)
        if input_keep_branches in ("both", "rows"):
            xr, _ = mask_inputs(xr, valid, k_r, input_keep)
        if input_keep_branches in ("both", "cols"):
            xc, _ = mask_inputs(xc, valid_c, k_c, input_keep)
    return xr, xc, R, M


def _make_epoch_fn(model: DMF, cfg: DMFConfig, tc: TrainConfig, opt, cap_r: int, cap_c: int):
    q = tc.quantizer
    if q is not None:
        levels = check_levels(q.levels)
        b_ref = jnp.asarray(q.reference(), jnp.float32)
        lam_fn = q.schedule()
    rr = cfg.rating_range

    def loss_fn(params, batch_stats, xr, xc, R, M, step, key):
        (U, V), upd = model.apply(
            {"params": params["net"], "batch_stats": batch_stats}, xr, xc, train=True,
            rngs={"dropout": key}, mutable=["batch_stats"],
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

    def epoch(state: DMFState, rcsr, ccsr, row_blocks, col_blocks, cb, col_block_of, col_slot_of, key):
        def step_fn(st: DMFState, xs):
            rb, cblk, c_id = xs
            mk = (jax.random.fold_in(jax.random.fold_in(key, MASK_STREAM), st.step)
                  if tc.input_keep is not None else None)
            xr, xc, R, M = make_block(rcsr, ccsr, rb, cblk, c_id, col_block_of, col_slot_of,
                                      cap_r, cap_c, tc.hide_targets, mk, tc.input_keep,
                                      tc.input_keep_branches)
            k = jax.random.fold_in(key, st.step)
            (_, (bs, data)), g = grad_fn(st.params, st.batch_stats, xr, xc, R, M, st.step, k)
            updates, opt_state = opt.update(g, st.opt_state, st.params)
            params = optax.apply_updates(st.params, updates)
            return DMFState(params, bs, opt_state, st.step + 1), data

        return jax.lax.scan(step_fn, state, (row_blocks, col_blocks, cb))

    return jax.jit(epoch)


def _make_eval_fn(model: DMF, cfg: DMFConfig, quant: QuantizerConfig | None):
    rr = cfg.rating_range

    def ev(variables, b, xr, xc, rows, cols):
        U = model.apply(variables, xr, train=False, method=DMF.embed_rows)
        V = model.apply(variables, xc, train=False, method=DMF.embed_cols)
        cont = from_unit(cosine(U[rows], V[cols], cfg.cos_eps), rr)
        disc = quantize_hard(cont, b, quant.levels) if quant is not None else cont
        return cont, disc

    return jax.jit(ev)


def _full(csr: CSRInputs, chunk=32768):
    from mfjax.models.dmf import full_batch

    return full_batch(csr, chunk)


def _rmse(pred, values):
    e = np.asarray(pred, np.float64) - np.asarray(values, np.float64)
    return float(np.sqrt(np.mean(e * e)))


# --------------------------------------------------------------------------- driver
def train_dmf(train: Ratings, valid: Ratings | None, config: DMFConfig | None = None,
              train_config: TrainConfig | None = None, *, checkpoint_path=None,
              log: Callable[[str], None] | None = None, extra_valid: dict | None = None) -> DMFResult:
    """Train DMF (or DMF-D when ``train_config.quantizer`` is set) on ``train``.

    Args:
      train: training ratings; its rows and columns are the input vectors of
        the two branches (raw ratings, 0 where missing, as the authors).
      valid: validation ratings for model selection (same shape); ``None``
        keeps the last epoch.
      config: architecture (default :meth:`DMFConfig.cpu`).
      train_config: schedule (default :class:`TrainConfig`).
      checkpoint_path: if given, the state is saved there every
        ``checkpoint_every`` epochs and at the end, and a run finding a
        checkpoint there resumes from it.
      log: optional callable receiving progress lines.
      extra_valid: optional ``{name: (row_inputs, col_inputs, ratings)}``:
        further validation sets with their own input vectors (e.g. the
        thinned inputs of :func:`~mfjax.models.dmf.subsample_inputs`),
        evaluated with ``valid`` and recorded in ``trace["val_rmse_<name>"]``;
        they do not enter model selection.

    Returns:
      :class:`DMFResult` with the variables of the best validation epoch.
    """
    config = config or DMFConfig.cpu()
    tc = train_config or TrainConfig()
    if valid is not None and tuple(valid.shape) != tuple(train.shape):
        raise ValueError(f"valid shape {valid.shape} != train shape {train.shape}")
    lo, hi = config.rating_range
    tv = np.asarray(train.values)
    if tv.size == 0:
        raise ValueError("train has no entries")
    if tv.min() < lo or tv.max() > hi:
        raise ValueError(f"train values span [{tv.min()}, {tv.max()}], outside rating_range {config.rating_range}")
    t0 = time.perf_counter()
    m, n = train.shape
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
    opt = _make_optimizer(tc)
    state = DMFState(params, variables.get("batch_stats", {}), jax.jit(opt.init)(params), jnp.zeros((), jnp.int32))

    # fixed padded capacities from all epochs' plans: one compilation per run
    cap_r = cap_c = 8
    for e in range(tc.epochs):
        rb, cblk, *_ = _epoch_plan(tc.seed, e, active_rows, active_cols, n, br, bc)
        cap_r = max(cap_r, int(rlen[rb].sum(1).max()))
        cap_c = max(cap_c, int(clen[cblk].sum(1).max()))
    cap_r, cap_c = _bucket(cap_r), _bucket(cap_c)
    epoch_fn = _epoch_fn_cached(config, tc, (m, n), cap_r, cap_c)
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

    if checkpoint_path is not None and ckpt.checkpoint_exists(checkpoint_path):
        tree, meta = ckpt.load_checkpoint(checkpoint_path, snapshot())
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
            "train_seconds": prior_seconds + time.perf_counter() - t0,
        })

    lam_fn = tc.quantizer.schedule() if tc.quantizer is not None else None
    epoch = start_epoch
    stopped = False
    while epoch < tc.epochs and not stopped:
        plan = _epoch_plan(tc.seed, epoch, active_rows, active_cols, n, br, bc)
        state, losses = epoch_fn(state, rdev, cdev, *[jnp.asarray(a) for a in plan], k_drop)
        epoch += 1
        trace["train_loss"].append(float(jnp.mean(losses)))
        if not np.isfinite(trace["train_loss"][-1]):
            raise FloatingPointError(f"DMF training loss became {trace['train_loss'][-1]} at epoch {epoch}")
        last = epoch == tc.epochs
        timeout = tc.max_seconds is not None and time.perf_counter() - t0 > tc.max_seconds
        if valid is not None and (epoch % tc.eval_every == 0 or last or timeout):
            v = {"params": state.params["net"], "batch_stats": state.batch_stats}
            cont, disc = eval_fn(v, state.params.get("b", jnp.zeros(0)), xr_full, xc_full,
                                 jnp.asarray(valid.rows), jnp.asarray(valid.cols))
            r_c, r_d = _rmse(cont, valid.values), _rmse(disc, valid.values)
            metric = r_d if tc.quantizer is not None else r_c
            trace["val_epoch"].append(epoch)
            trace["val_rmse"].append(r_c)
            trace["val_rmse_discrete"].append(r_d)
            trace["lam"].append(float(lam_fn(state.step)) if lam_fn else None)
            for name, (xr_e, xc_e, rows_e, cols_e, vals_e) in extra.items():
                c_e, d_e = eval_fn(v, state.params.get("b", jnp.zeros(0)), xr_e, xc_e, rows_e, cols_e)
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
                     int(best["epoch"]), float(best["val"]), epoch, prior_seconds + time.perf_counter() - t0)


# --------------------------------------------------------------------------- prediction
def predict(result: DMFResult, rows, cols, *, row_inputs: CSRInputs | None = None,
            col_inputs: CSRInputs | None = None, discrete: bool = False):
    """Predictions on the rating scale at ``(rows, cols)``.

    The input vectors default to the training matrix; pass other
    ``row_inputs``/``col_inputs`` (e.g. from
    :func:`~mfjax.models.dmf.extension_inputs`) to predict for rows/columns
    unseen in training.  ``discrete=True`` applies the learned hard quantizer
    ``Q_b`` (DMF-D) or rounds to the nearest integer level (DMF).
    """
    ri = result.row_inputs if row_inputs is None else row_inputs
    ci = result.col_inputs if col_inputs is None else col_inputs
    q = result.train_config.quantizer
    ev = _eval_fn_cached(result.config, q, (result.model.n_rows, result.model.n_cols))
    b = result.boundaries if q is not None else jnp.zeros(0)
    cont, disc = ev(result.variables, b, _full(ri), _full(ci), jnp.asarray(rows), jnp.asarray(cols))
    if not discrete:
        return cont
    if q is not None:
        return disc
    lo, hi = result.config.rating_range
    return jnp.clip(jnp.round(cont), lo, hi)


def predict_areas(result: DMFResult, tests: dict, revealed: Ratings | None, held_rows, held_cols,
                  *, discrete: bool = False) -> dict:
    """Predictions for the test entries of each area (``{"I": Ratings, "II": ..., ...}``).

    Unseen rows / columns are embedded from the ``revealed`` entries only
    (see :func:`~mfjax.models.dmf.extension_inputs`); no retraining.
    """
    train = Ratings(result.row_inputs.row_ids(), result.row_inputs.indices, result.row_inputs.values,
                    (result.row_inputs.num_rows, result.row_inputs.dim))
    ri, ci = extension_inputs(train, revealed, held_rows, held_cols)
    names = [a for a, t in tests.items() if t is not None and t.nnz > 0]
    out = {a: np.zeros(0, np.float32) for a in tests}
    if not names:
        return out
    rows = np.concatenate([np.asarray(tests[a].rows) for a in names])
    cols = np.concatenate([np.asarray(tests[a].cols) for a in names])
    # one call (one compilation, one embedding pass) for all areas
    pred = np.asarray(predict(result, rows, cols, row_inputs=ri, col_inputs=ci, discrete=discrete))
    ends = np.cumsum([tests[a].nnz for a in names])
    for a, part in zip(names, np.split(pred, ends[:-1])):
        out[a] = part
    return out
