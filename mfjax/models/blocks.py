"""Sub-block minibatches: the per-epoch block plan, one step's inputs and targets, input masking.

A step trains on a block of ``B_r`` rows and ``B_c`` columns: the row and
column branches embed their sparse input vectors (the training matrix's rows
and columns, padded to a fixed capacity so the step compiles once), and the
loss runs over the observed training entries ``M_ij = 1`` of the dense
``B_r x B_c`` block ``R``.  The plan (:func:`_epoch_plan`) is host numpy and
deterministic per ``(seed, epoch)``, so a resumed run replays it exactly.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.models.dmf import gather_block

__all__ = ["MASK_STREAM", "mask_inputs", "make_block"]


def _bucket(x: int) -> int:
    """Round up to a multiple of 1/8 of the enclosing power of two (bounded padding, few sizes)."""
    x = max(int(x), 8)
    g = max(1, 2 ** (int(math.floor(math.log2(x))) - 3))
    return int(math.ceil(x / g) * g)


def _epoch_plan(seed, epoch, active_rows, active_cols, n_cols, br, bc):
    """One epoch's blocks from ``default_rng([seed, epoch])`` (host numpy, deterministic per epoch).

    The active rows and columns are permuted; row block ``s`` holds rows
    ``rp[s br:(s+1) br]`` (the last block wrapped around, ``np.resize``),
    and is paired with column block ``s mod C``.

    Returns:
      ``(row_blocks (S, br), col_blocks (S, bc), cb (S,) column block id of
      each step, col_block_of (n_cols,) block of each column or -1,
      col_slot_of (n_cols,) its slot in that block)``, int32.
    """
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


#: ``fold_in`` constant separating the input-mask keys from the dropout keys.
MASK_STREAM = 0x6D61736B


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
