r"""Distributed SGD (DSGD): stratified SGD over a ``d x d`` blocking, one block per device.

Gemulla, Nijkamp, Haas & Sismanis, "Large-scale matrix factorization with
distributed stochastic gradient descent", KDD 2011.  The rows are cut into
``d`` contiguous blocks ``R_1..R_d`` and the columns into ``C_1..C_d``, each
balanced by number of ratings; block ``(a, c)`` holds the ratings of
``R_a x C_c``.  Blocks ``(a, (a + s) mod d)``, ``a = 1..d``, share no row and no
column (a *stratum*), so SGD on them in parallel is the same as SGD on them
one after the other.  An epoch visits the ``d`` strata ``s = 0..d-1``:

* device ``a`` keeps ``U[R_a]`` and, during stratum ``s``, holds
  ``V[C_{(a+s) mod d}]``; it runs the per-rating SGD updates of
  :mod:`mfjax.solvers.sgd` (same update, same regulariser share
  ``l2 w_i / n_i``, minibatches of ``batch_size`` entries in a fresh random
  order per block and epoch) on its block;
* then every device passes its ``V`` block to its left neighbour
  (``lax.ppermute``): after ``d`` strata each ``V`` block is home again.

Each rating is visited once per epoch.  On a mesh the strata run under
:func:`jax.shard_map` (only ``V`` blocks cross devices, once per stratum);
without a mesh the same schedule runs on one device with the ``d`` blocks of a
stratum ``vmap``-ed, and ``blocks=1`` is ordinary (shuffled, minibatched) SGD.
The mesh and one-device runs give the same numbers (``tests/test_sharded.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mfjax import objective as _objective
from mfjax.core import check_l2
from mfjax.core.factors import BiasedFactors
from mfjax.data.ratings import Ratings
from mfjax.solvers import _args
from mfjax.solvers.base import RMSE, Solver, SolverResult, check_ratings, run
from mfjax.solvers.sgd import SGDInfo, SGDState, _initial_params
from mfjax.solvers.sgd_kernel import SGDProblem, _regularisers, _stack, _unstack, _update, sgd_problem

__all__ = ["DSGDLayout", "DSGDProblem", "dsgd_problem", "dsgd_solver", "dsgd", "balanced_blocks"]


class DSGDLayout(NamedTuple):
    """The ``d x d`` blocking of the entries (a pytree; leading axis = the device / row block).

    ``mb``, ``nb``: rows / columns per block (padded); ``B``: entry slots per block (padded).

    Attributes:
      u_index: ``(d, mb)`` int32 global row of each local row slot (``m`` on padding).
      v_index: ``(d, nb)`` int32 global column of each local column slot (``n`` on padding).
      u_pos, v_pos: ``(m,)``, ``(n,)`` int32 flat position ``block * mb + slot`` of each row / column.
      rows: ``(d, d, B)`` int32 block-local row of each slot of block ``(a, c)``.
      cols: ``(d, d, B)`` int32 block-local column.
      entry: ``(d, d, B)`` int32 index into the objective's entries (0 on padding).
      mask: ``(d, d, B)`` float 1 on real slots, 0 on padding.
    """

    u_index: Any
    v_index: Any
    u_pos: Any
    v_pos: Any
    rows: Any
    cols: Any
    entry: Any
    mask: Any


def balanced_blocks(counts: np.ndarray, d: int) -> np.ndarray:
    """Boundaries ``0 = b_0 <= ... <= b_d = len(counts)`` of ``d`` contiguous blocks of about equal ``sum(counts)``."""
    cum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    targets = cum[-1] * np.arange(1, d) / d
    inner = np.searchsorted(cum, targets, side="left")
    bounds = np.concatenate([[0], inner, [len(counts)]])
    return np.maximum.accumulate(np.clip(bounds, 0, len(counts)))


def block_size(sizes, batch_size: int) -> tuple[int, int]:
    """``(bs, B)``: the minibatch size (at most the largest block) and the entry slots per block, a multiple of it."""
    big = int(np.max(sizes)) if np.size(sizes) else 1
    bs = max(1, min(int(batch_size), big))
    return bs, max(bs, -(-big // bs) * bs)


def check_row_bounds(row_bounds, m: int, d: int) -> np.ndarray:
    """``row_bounds`` as ``d + 1`` non-decreasing int64 edges from 0 to ``m``, or ``ValueError`` naming the problem."""
    rb = np.asarray(row_bounds, np.int64)
    if rb.shape != (d + 1,) or rb[0] != 0 or rb[-1] != m or (np.diff(rb) < 0).any():
        raise ValueError(f"row_bounds must be {d + 1} non-decreasing edges from 0 to m = {m}, got {rb.tolist()}")
    return rb


def _layout(rows, cols, weights, shape, d: int, batch_size: int, row_bounds=None) -> tuple[DSGDLayout, int]:
    m, n = shape
    r, c = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    live = np.asarray(weights) != 0
    rb = (balanced_blocks(np.bincount(r[live], minlength=m), d) if row_bounds is None
          else check_row_bounds(row_bounds, m, d))
    cb = balanced_blocks(np.bincount(c[live], minlength=n), d)
    row_block = np.searchsorted(rb, np.arange(m), side="right") - 1
    col_block = np.searchsorted(cb, np.arange(n), side="right") - 1
    mb, nb = max(1, int(np.diff(rb).max())), max(1, int(np.diff(cb).max()))
    u_index = np.full((d, mb), m, np.int32)
    v_index = np.full((d, nb), n, np.int32)
    for a in range(d):
        u_index[a, :rb[a + 1] - rb[a]] = np.arange(rb[a], rb[a + 1])
        v_index[a, :cb[a + 1] - cb[a]] = np.arange(cb[a], cb[a + 1])
    u_pos = (row_block * mb + np.arange(m) - rb[row_block]).astype(np.int32)
    v_pos = (col_block * nb + np.arange(n) - cb[col_block]).astype(np.int32)
    idx = np.nonzero(live)[0]
    blk = row_block[r[idx]] * d + col_block[c[idx]]
    order = idx[np.argsort(blk, kind="stable")]
    sizes = np.bincount(blk, minlength=d * d)
    bs, B = block_size(sizes, batch_size)
    shp = (d * d, B)
    lrow, lcol = np.zeros(shp, np.int32), np.zeros(shp, np.int32)
    entry, mask = np.zeros(shp, np.int32), np.zeros(shp, np.float32)
    start = np.concatenate([[0], np.cumsum(sizes)])
    for k in range(d * d):
        e = order[start[k]:start[k + 1]]
        a, cc = divmod(k, d)
        lrow[k, :e.size] = r[e] - rb[a]
        lcol[k, :e.size] = c[e] - cb[cc]
        entry[k, :e.size] = e
        mask[k, :e.size] = 1.0
    box = lambda x: jnp.asarray(x.reshape(d, d, B))  # noqa: E731
    return DSGDLayout(jnp.asarray(u_index), jnp.asarray(v_index), jnp.asarray(u_pos), jnp.asarray(v_pos),
                      box(lrow), box(lcol), box(entry), box(mask)), bs


@dataclasses.dataclass(frozen=True)
class DSGDProblem:
    """The DSGD problem: the SGD problem, its blocking and (optionally) the mesh (a pytree).

    Attributes:
      sgd: the :class:`~mfjax.solvers.sgd_kernel.SGDProblem` (objective and regulariser shares).
      layout: the :class:`DSGDLayout`.
      batch_size: entries per minibatch inside a block (static).
      mesh: ``None`` (one device, strata ``vmap``-ed) or the mesh (static).
      axis: the mesh axis of the blocks (static).
    """

    sgd: SGDProblem
    layout: DSGDLayout
    batch_size: int = 1
    mesh: Optional[Any] = None
    axis: Optional[str] = None

    @property
    def blocks(self) -> int:
        """``d``, the number of row (and column) blocks (static)."""
        return int(self.layout.u_index.shape[0])


jax.tree_util.register_dataclass(DSGDProblem, data_fields=["sgd", "layout"],
                                 meta_fields=["batch_size", "mesh", "axis"])


def dsgd_problem(train: Ratings, *, l2=0.0, l2_bias=None, weighted_l2: bool = False, blocks: int | None = None,
                 mesh: Mesh | None = None, axis: str | None = None, batch_size: int = 1,
                 dtype=None, row_bounds=None) -> DSGDProblem:
    """The DSGD problem of ``train`` (host preprocessing of the blocking, once per data set).

    Args:
      train: training ratings.
      l2, l2_bias, weighted_l2: the objective, as in :func:`~mfjax.solvers.sgd_kernel.sgd_problem`.
      blocks: ``d`` (default: the mesh axis size, else 1).
      mesh, axis: run on this mesh's ``axis`` (its size must equal ``blocks``).
      batch_size: entries updated together inside a block (1 = sequential per-rating SGD).
      row_bounds: ``d + 1`` edges of the row blocks (default: balanced by rating count,
        :func:`balanced_blocks`); e.g. the processes' row ranges of
        :func:`mfjax.solvers.dsgd_parts.dsgd_parts`.

    Raises:
      ValueError: ``blocks`` below 1 or above ``min(m, n)``, or not the mesh axis size; bad ``row_bounds``.
    """
    m, n = train.shape
    if mesh is not None:
        axis = mesh.axis_names[0] if axis is None else axis
        if axis not in mesh.axis_names:
            raise ValueError(f"axis {axis!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
        size = int(mesh.shape[axis])
        if blocks is not None and int(blocks) != size:
            raise ValueError(f"blocks={blocks} but the mesh axis {axis!r} has {size} devices (one block each)")
        blocks = size
    d = 1 if blocks is None else int(blocks)
    if not 1 <= d <= min(m, n):
        raise ValueError(f"blocks must be in [1, min(m, n) = {min(m, n)}], got {blocks}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sp = sgd_problem(train, l2=l2, l2_bias=l2_bias, weighted_l2=weighted_l2, dtype=dtype)
    obj = sp.objective
    layout, bs = _layout(obj.rows, obj.cols, obj.weights, obj.shape, d, int(batch_size), row_bounds)
    if mesh is not None:
        split, whole = NamedSharding(mesh, P(axis)), NamedSharding(mesh, P())
        layout = layout._replace(**{f: jax.device_put(getattr(layout, f), split)
                                    for f in ("u_index", "v_index", "rows", "cols", "entry", "mask")})
        layout = layout._replace(u_pos=jax.device_put(layout.u_pos, whole), v_pos=jax.device_put(layout.v_pos, whole))
        sp = jax.device_put(sp, whole)
    return DSGDProblem(sp, layout, bs, mesh, axis)


# ------------------------------------------------------------------ one epoch
def _block_update(Zu, Zv, blk, lr, mean, biased: bool, batch_size: int):
    """SGD over one block's entries (already in visiting order) on ``[Zu; Zv]``, minibatch by minibatch."""
    rows, cols, x, w, reg_r, reg_c = blk
    mb = Zu.shape[0]
    Z = jnp.concatenate([Zu, Zv], axis=0)
    nbat = rows.shape[0] // batch_size
    cut = lambda a: a.reshape((nbat, batch_size) + a.shape[1:])  # noqa: E731
    is_bias = jnp.arange(Z.shape[1]) == Z.shape[1] - 1

    def batch(Z, inp):
        r, c, xb, wb, rr, rc = inp
        ix = jnp.concatenate([r, c + mb])
        reg = jnp.concatenate([rr, rc], axis=0)
        if biased:
            reg = jnp.where(is_bias, reg[:, 1:2], reg[:, 0:1])
        else:
            reg = reg[:, 0]
        Z, _ = _update(Z, ix, xb, wb, lr, reg, mean, biased)
        return Z, None

    Z, _ = jax.lax.scan(batch, Z, tuple(cut(a) for a in (rows, cols, x, w, reg_r, reg_c)))
    return Z[:mb], Z[mb:]


def _pick(data, c):
    """Block ``c`` of one device's per-block data (leading axis ``d``)."""
    return tuple(jax.lax.dynamic_index_in_dim(a, c, 0, keepdims=False) for a in data)


def _epoch_data(problem: DSGDProblem, key, dtype):
    """Per-slot data of every block, shuffled per block: ``(rows, cols, x, w, reg_row, reg_col)``, each ``(d, d, B, ...)``."""
    lay, obj = problem.layout, problem.sgd.objective
    d, _, B = lay.rows.shape
    m = obj.shape[0]
    reg_f, reg_b = _regularisers(problem.sgd, dtype)
    keys = jax.random.split(key, d * d)
    perm = jax.vmap(lambda k: jax.random.permutation(k, B))(keys).reshape(d, d, B)
    take = lambda a: jnp.take_along_axis(a, perm, axis=2)  # noqa: E731
    e = take(lay.entry)
    w = take(lay.mask).astype(dtype) * obj.weights[e].astype(dtype)
    gr, gc = obj.rows[e], obj.cols[e] + m
    both = lambda g: jnp.stack([reg_f[g], reg_b[g]], axis=-1) * w[..., None]  # noqa: E731
    return (take(lay.rows), take(lay.cols), obj.values[e].astype(dtype), w, both(gr), both(gc))


def _strata_one_device(Zu, Zv, data, lr, mean, biased, batch_size, d):
    def stratum(s, carry):
        Zu, Zv = carry
        a = jnp.arange(d)
        blk = jax.vmap(lambda a_, dat: _pick(dat, (a_ + s) % d))(a, data)
        Zu, Zv = jax.vmap(lambda u, v, b: _block_update(u, v, b, lr, mean, biased, batch_size))(Zu, Zv, blk)
        return Zu, jnp.roll(Zv, -1, axis=0)  # device a now holds the V block of a + 1

    return jax.lax.fori_loop(0, d, stratum, (Zu, Zv))


def local_strata(Zu, Zv, data, lr, mean, biased: bool, batch_size: int, d: int, ax: str):
    """The ``d`` strata of one device inside ``shard_map`` over ``ax``: device ``a`` updates block
    ``(a, (a + s) mod d)`` at stratum ``s``, then passes its ``V`` block to its left neighbour.

    ``Zu``: its ``(mb, c)`` rows; ``Zv``: the ``(nb, c)`` rows of column block ``a``; ``data``: its ``d``
    blocks' per-slot data (leading axis: the column block).  Returns ``(Zu, Zv)``, ``Zv`` home again.
    """
    left = [(j, (j - 1) % d) for j in range(d)]
    a = jax.lax.axis_index(ax)

    def stratum(s, carry):
        Zu, Zv = carry
        Zu, Zv = _block_update(Zu, Zv, _pick(data, (a + s) % d), lr, mean, biased, batch_size)
        return Zu, jax.lax.ppermute(Zv, ax, left)

    return jax.lax.fori_loop(0, d, stratum, (Zu, Zv))


def _strata_on_mesh(problem: DSGDProblem, Zu, Zv, data, lr, mean, biased, batch_size, d):
    ax = problem.axis

    def local(Zu, Zv, data, lr, mean):
        Zu, Zv = local_strata(Zu[0], Zv[0], tuple(a[0] for a in data), lr, mean, biased, batch_size, d, ax)
        return Zu[None], Zv[None]

    spec = P(ax)
    return jax.shard_map(local, mesh=problem.mesh, in_specs=(spec, spec, (spec,) * len(data), P(), P()),
                         out_specs=(spec, spec), check_vma=False)(Zu, Zv, data, lr, mean)


def _epoch(state: SGDState, problem: DSGDProblem):
    params, lay = state.params, problem.layout
    obj = problem.sgd.objective
    m, n = obj.shape
    d = problem.blocks
    Z = _stack(params)
    dtype = Z.dtype
    biased = isinstance(params, BiasedFactors)
    mean = params.mean if biased else jnp.asarray(0.0, dtype)
    pad = jnp.zeros((1, Z.shape[1]), dtype)
    Zu = jnp.concatenate([Z[:m], pad])[lay.u_index]            # (d, mb, c)
    Zv = jnp.concatenate([Z[m:], pad])[lay.v_index]            # (d, nb, c)
    data = _epoch_data(problem, jax.random.fold_in(state.key, state.epoch), dtype)
    lr = (state.lr * state.decay ** state.epoch.astype(dtype)).astype(dtype)
    if problem.mesh is None:
        Zu, Zv = _strata_one_device(Zu, Zv, data, lr, mean, biased, problem.batch_size, d)
    else:
        Zu, Zv = _strata_on_mesh(problem, Zu, Zv, data, lr, mean, biased, problem.batch_size, d)
    Zu = Zu.reshape(-1, Z.shape[1])[lay.u_pos]
    Zv = Zv.reshape(-1, Z.shape[1])[lay.v_pos]
    p = _unstack(jnp.concatenate([Zu, Zv]), params, m)
    nbat = d * d * (lay.rows.shape[2] // problem.batch_size)
    new = SGDState(p, state.key, state.step + nbat, state.epoch + 1, state.lr, state.decay)
    return new, SGDInfo(_objective.value(obj, p), lr)


def check_dsgd_args(train, rank, lr, decay, l2, l2_bias, num_steps) -> tuple[int, int]:
    """``(rank, num_steps)`` checked; ``ValueError`` naming a bad rank, ``lr``, ``decay``, ``l2`` or step count."""
    rank = _args.check_rank(rank, train.shape)
    if not lr > 0:
        raise ValueError(f"lr (step size) must be > 0, got {lr}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    check_l2("l2", l2)
    check_l2("l2_bias", l2_bias)
    return rank, _args.check_num_steps(num_steps, "num_steps")


def dsgd_solver(*, lr: float = 0.01, decay: float = 1.0) -> Solver:
    """DSGD as a :class:`~mfjax.solvers.base.Solver`: one step is one epoch (``d`` strata).

    The problem is a :class:`DSGDProblem` (:func:`dsgd_problem`; it fixes the
    blocking, the minibatch size and the mesh).  ``lr`` and ``decay`` live in
    the state (traced), as in :func:`~mfjax.solvers.sgd.sgd_solver`.
    """

    def init(params, problem=None, key=None) -> SGDState:
        del problem
        key = jax.random.key(0) if key is None else key
        dtype = params.U.dtype
        zero = jnp.asarray(0, jnp.int32)
        return SGDState(params, key, zero, zero, jnp.asarray(lr, dtype), jnp.asarray(decay, dtype))

    return Solver(init, _epoch)


def dsgd(train: Ratings, rank: int, *, l2=0.0, l2_bias=None, num_steps: int = 20, lr: float = 0.01,
         decay: float = 1.0, batch_size: int = 1, blocks: int | None = None, mesh: Mesh | None = None,
         biases: bool = False, weighted_l2: bool = False, key=None, init=None, init_scale: float = 0.1,
         dtype=jnp.float32, eval_set: Ratings | None = None, eval_every: int = 1,
         clip: tuple[float, float] | None = None, callback=None, callback_every: int = 1,
         row_bounds=None) -> SolverResult:
    """Distributed SGD (module docstring): :func:`dsgd_problem` + :func:`dsgd_solver` + :func:`~mfjax.solvers.run`.

    The same model, update and objective as :func:`mfjax.solvers.sgd` (see there
    for ``l2``, ``l2_bias``, ``weighted_l2``, ``biases``, ``lr``, ``decay``,
    ``batch_size``, ``init``, ``init_scale``, ``eval_set``, ``clip``); ``blocks``
    row/column blocks (default: the mesh size, else 1); ``mesh``: one block
    per device of its first axis; ``row_bounds``: the row blocks' edges (:func:`dsgd_problem`).
    ``num_steps`` epochs.

    Raises:
      ValueError: bad rank, ``lr <= 0``, ``l2 < 0``, ``blocks`` out of range, bad ratings.
      FloatingPointError: the run diverged; lower ``lr``.

    Example::

        mesh = jax.sharding.Mesh(jax.devices(), ("blocks",))
        res = mfjax.solvers.dsgd(train, 10, l2=0.05, lr=0.02, mesh=mesh, eval_set=test)
    """
    check_ratings(train, "training")
    rank, num_steps = check_dsgd_args(train, rank, lr, decay, l2, l2_bias, num_steps)
    _args.check_eval_set(eval_set, train)
    key = jax.random.key(0) if key is None else key
    k_init, k_run = jax.random.split(key)
    params = _initial_params(train, rank, biases, init, k_init, init_scale, dtype)
    problem = dsgd_problem(train, l2=l2, l2_bias=l2_bias, weighted_l2=weighted_l2, blocks=blocks, mesh=mesh,
                           batch_size=batch_size, dtype=np.dtype(dtype), row_bounds=row_bounds)
    solver = dsgd_solver(lr=lr, decay=decay)
    eval_d = eval_set.astype(np.dtype(dtype)).device_put() if eval_set is not None else None
    res = run(solver, problem, solver.init(params, problem, k_run), num_steps, eval_set=eval_d,
              eval_every=eval_every, metric=RMSE(None if clip is None else tuple(map(float, clip))),
              callback=callback, callback_every=callback_every)
    return _args.raise_if_nonfinite(res, "DSGD diverged", "epoch", f" (lr={lr}); lower the step size")
