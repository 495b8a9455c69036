r"""The objective on a device mesh: entries split over one mesh axis, formulas unchanged.

Every formula of the masked MF objective is a sum over the stored entries
plus a regulariser, so splitting the entries over ``D`` devices changes only
where the sum is taken: each device runs the same chunked scan over its own
entries and the partial sums (value, gradient rows, the quartic's five sums,
Gram matrices) are added with one ``psum``::

    f = s sum_{d=1..D} sum_{k in shard d} w_k e_k^2 + penalty,
    grad f = sum_d (per-device scatter-add) + grad penalty.

:func:`shard_objective` lays the entries out (sorted by row, cut into ``D``
equal contiguous parts -- balanced by number of ratings, not of rows --
padded with weight-0 entries to a static per-shard size) and records the
mesh in the objective; :func:`entry_map` is the one place that wraps a
formula in :func:`jax.shard_map`.  The factors stay replicated, so
:func:`mfjax.fit` with every direction and step rule (the exact line search
and the Gauss-Newton preconditioner too) runs unchanged on a sharded
objective: the user shards the objective and nothing else changes.

>>> import jax, mfjax as mf
>>> from jax.sharding import Mesh
>>> train = mf.data.synthetic(m=30, n=20, rank=2, density=0.3, seed=0)
>>> mesh = Mesh(jax.devices()[:1], ("entries",))
>>> full = mf.objective.mf_objective(train, l2=0.5)
>>> obj = shard_objective(full, mesh)
>>> p = mf.init_factors(jax.random.key(0), train.shape, 2)
>>> f = mf.objective.value
>>> bool(abs(f(obj, p) - f(full, p)) < 1e-2)
True

References:
  The JAX authors, "Distributed arrays and automatic parallelization" and
  ``jax.shard_map`` documentation, 2024.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mfjax.objective.problem import MFObjective

__all__ = ["shard_objective", "shard_local_objective", "process_row_block", "entry_map", "unshard_objective"]

_ENTRY_FIELDS = ("rows", "cols", "values", "weights")


def shard_objective(obj: MFObjective, mesh: Mesh, axis: str | None = None, *,
                    sort_by_row: bool = True) -> MFObjective:
    """Split the objective's entries over ``mesh``'s ``axis`` (default: its first axis).

    The entries are sorted by row (each device then touches few rows of
    ``U``), cut into ``D = mesh.shape[axis]`` contiguous parts of
    ``ceil(N / D)`` entries and padded with weight-0 entries, so any number
    of entries works with any number of devices (a device may hold only
    padding).  Hyperparameters and the global rating count are unchanged, so
    ``scale="mean"`` stays the global mean.

    Args:
      obj: an unsharded :class:`MFObjective`.
      mesh: the device mesh.
      axis: the mesh axis the entries are split over.
      sort_by_row: sort the entries by (row, column) first.

    Raises:
      ValueError: ``obj`` is already sharded, or ``axis`` is not an axis of ``mesh``.
    """
    if obj.mesh is not None:
        raise ValueError("the objective is already sharded (over mesh axis "
                         f"{obj.axis!r}); call unshard_objective first")
    axis = mesh.axis_names[0] if axis is None else axis
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    d = int(mesh.shape[axis])
    host = {f: np.asarray(getattr(obj, f)) for f in _ENTRY_FIELDS}
    if sort_by_row:
        order = np.lexsort((host["cols"], host["rows"]))
        host = {f: a[order] for f, a in host.items()}
    n = obj.num_entries
    per = max(1, -(-n // d))
    pad = per * d - n
    sharding = NamedSharding(mesh, P(axis))
    # from a callback: each process places only its own devices' shards (multi-process meshes too)
    placed = {f: _global_array(np.pad(a, (0, pad)), sharding) for f, a in host.items()}
    return obj.replace(**placed, **_replicated_rest(obj, mesh), mesh=mesh, axis=axis)


def _global_array(host: np.ndarray, sharding) -> jax.Array:
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _replicated_rest(obj: MFObjective, mesh: Mesh) -> dict:
    """The objective's scalars and row weights, replicated over ``mesh``."""
    replicated = NamedSharding(mesh, P())
    rest = {f: _global_array(np.asarray(getattr(obj, f)), replicated)
            for f in ("l2", "l2_bias", "data_weight", "num_ratings")}
    for f in ("row_weights", "col_weights"):
        a = getattr(obj, f)
        rest[f] = None if a is None else _global_array(np.asarray(a), replicated)
    return rest


def shard_local_objective(local: MFObjective, mesh: Mesh, axis: str | None = None, *,
                          num_ratings=None) -> MFObjective:
    """The objective sharded over a (multi-process) mesh from each process's *own* entries.

    Every process calls this with an :class:`MFObjective` of its part of the
    ratings only (the same shape, hyperparameters and scale on every
    process; e.g. the rows :func:`process_row_block` assigns it): no process
    ever holds the whole data set.  The per-process entry counts are
    exchanged (one small all-gather), every process pads its entries with
    weight-0 entries to the largest count (rounded up to a multiple of its
    local devices along ``axis``), and the global arrays are assembled with
    :func:`jax.make_array_from_process_local_data`.  The global rating count
    (for ``scale="mean"``) is the sum of the local ones unless
    ``num_ratings`` is given.  In one process this equals
    :func:`shard_objective` without the sort, up to padding.

    Row / column weights (``l2_weights``) must already be the global ones.

    Raises:
      ValueError: ``axis`` is not a mesh axis, ``local`` is already sharded,
        or the processes disagree on the shape.
    """
    from jax.experimental import multihost_utils

    if local.mesh is not None:
        raise ValueError("the local objective is already sharded; pass the process's unsharded entries")
    axis = mesh.axis_names[0] if axis is None else axis
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    host = {f: np.asarray(getattr(local, f)) for f in _ENTRY_FIELDS}
    info = np.asarray([host["rows"].shape[0], int(local.num_ratings), *local.shape], np.int64)
    every = np.asarray(multihost_utils.process_allgather(info)).reshape(-1, 4)
    if not (every[:, 2:] == every[0, 2:]).all():
        raise ValueError(f"the processes disagree on the shape of the ratings: {every[:, 2:].tolist()}")
    sharding = NamedSharding(mesh, P(axis))
    local_devices = sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())
    k = max(1, local_devices)
    per = max(1, -(-int(every[:, 0].max()) // k)) * k
    placed = {}
    for f, a in host.items():
        padded = np.pad(a, (0, per - a.shape[0]))
        total = per * jax.process_count()
        placed[f] = jax.make_array_from_process_local_data(sharding, padded, (total,))
    count = int(every[:, 1].sum()) if num_ratings is None else int(num_ratings)
    # scale="sum" has data weight 1; scale="mean" 1 / (local count): made global here
    dw = float(np.asarray(local.data_weight))
    mean = not (dw == 1.0 and int(local.num_ratings) != 1)
    obj = local.replace(num_ratings=jnp.asarray(count, jnp.asarray(local.num_ratings).dtype),
                        data_weight=jnp.asarray(1.0 / count if mean else 1.0,
                                                jnp.asarray(local.data_weight).dtype))
    return obj.replace(**placed, **_replicated_rest(obj, mesh), mesh=mesh, axis=axis)


def process_row_block(ratings, process_id: int | None = None, num_processes: int | None = None):
    """This process's part of ``ratings``: a contiguous block of rows holding about ``nnz / N`` entries.

    The rows are cut where the cumulative rating count crosses ``k nnz / N``
    (balanced by ratings, not rows); defaults are this process's index and
    the process count.  Returns a :class:`~mfjax.data.Ratings` of the same
    shape with only those rows' entries.
    """
    pid = jax.process_index() if process_id is None else int(process_id)
    n = jax.process_count() if num_processes is None else int(num_processes)
    rows = np.asarray(ratings.rows)
    counts = np.bincount(rows, minlength=ratings.shape[0])
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, np.arange(1, n) * cum[-1] / n, side="left") + 1
    edges = np.concatenate([[0], cuts, [ratings.shape[0]]])
    lo, hi = int(edges[pid]), int(edges[pid + 1])
    return ratings.select(np.flatnonzero((rows >= lo) & (rows < hi)))


def unshard_objective(obj: MFObjective) -> MFObjective:
    """The same objective with its entries gathered (padding kept, weight 0)."""
    if obj.mesh is None:
        return obj
    return obj.replace(**{f: jnp.asarray(np.asarray(getattr(obj, f))) for f in _ENTRY_FIELDS},
                       mesh=None, axis=None)


def entry_map(fn, obj: MFObjective, *args, local_in=None, local_out: bool = False):
    """``fn(obj, *args)``, run per device on a sharded objective and summed with ``psum``.

    On an unsharded objective this is just ``fn(obj, *args)``.  On a sharded
    one, ``fn`` sees each device's entries as an ordinary (unsharded)
    objective, ``args`` are replicated, and the outputs are ``psum``-reduced
    over the entry axis.  ``local_in`` (optional) is per-entry data sharded
    like the entries (e.g. targets, stored products), passed to ``fn`` last.
    With ``local_out=True`` ``fn`` returns
    ``(reduced, local)``: only ``reduced`` is summed and ``local`` (per-entry
    data, e.g. the quartic's products) stays sharded along its first axis.
    """
    if obj.mesh is None:
        return fn(obj, *args) if local_in is None else fn(obj, *args, local_in)
    ax = obj.axis
    entries = tuple(getattr(obj, f) for f in _ENTRY_FIELDS)
    rest = obj.replace(**{f: None for f in _ENTRY_FIELDS}, mesh=None, axis=None)

    def local(entries, rest, extra, *args):
        o = rest.replace(**dict(zip(_ENTRY_FIELDS, entries)))
        out = fn(o, *args) if extra is None else fn(o, *args, extra)
        if local_out:
            red, loc = out
            return jax.lax.psum(red, ax), loc
        return jax.lax.psum(out, ax)

    in_specs = ((P(ax),) * len(entries), P(), None if local_in is None else P(ax)) + (P(),) * len(args)
    out_specs = (P(), P(ax)) if local_out else P()
    # check_vma=False: the scans' zero-initialised carries are per-device partial sums
    return jax.shard_map(local, mesh=obj.mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)(entries, rest, local_in, *args)
