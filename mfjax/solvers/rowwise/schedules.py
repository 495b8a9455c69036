"""Algorithm 13's update order: the exact list and its grouping into blocks (host-side numpy)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["algorithm13_schedule", "BlockSchedule", "interleaved_blocks", "default_block_sizes"]


def algorithm13_schedule(m: int, n: int, k_u: int, k_v: int, *, complete: bool = False):
    """The exact update order of Algorithm 13 (0-based), as a list of ``("U", i)`` / ``("V", j)``.

    ``d = k_U + k_V``; for ``t = 0 .. T-1``: ``r = t mod d``; if ``r < k_U``
    then ``i = k_U (t div d) + r`` (skipped if ``i >= m``) else
    ``j = k_V (t div d) + r - k_U`` (skipped if ``j >= n``).  The slides use
    ``T = n + m``; when ``k_U / k_V`` is not exactly ``m / n`` some rows or
    columns are then never updated.  ``complete=True`` extends ``T`` to
    ``max(n + m, d * max(ceil(m / k_U), ceil(n / k_V)))`` so every row and
    column is visited once (the first ``n + m`` steps are unchanged).
    """
    blocks = interleaved_blocks(m, n, k_u, k_v, complete=complete)
    out = []
    for b in range(blocks.row_index.shape[0]):
        out += [("U", int(i)) for i, ok in zip(blocks.row_index[b], blocks.row_valid[b]) if ok]
        out += [("V", int(j)) for j, ok in zip(blocks.col_index[b], blocks.col_valid[b]) if ok]
    return out


class BlockSchedule(NamedTuple):
    """Algorithm 13 in blocks of ``d = k_U + k_V`` steps (numpy arrays, ``B`` blocks).

    Attributes:
      row_index, row_valid: ``(B, k_U)`` row ``k_U b + r`` of block ``b`` and
        whether step ``d b + r`` is inside the run and ``i < m``.
      col_index, col_valid: ``(B, k_V)`` likewise for the columns.
      num_steps: ``T``.
    """

    row_index: np.ndarray
    row_valid: np.ndarray
    col_index: np.ndarray
    col_valid: np.ndarray
    num_steps: int


def _check_k(name, k):
    if int(k) != k or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    return int(k)


def interleaved_blocks(m: int, n: int, k_u: int, k_v: int, *, complete: bool = False) -> BlockSchedule:
    """Algorithm 13's order grouped by blocks (see :func:`algorithm13_schedule`).

    Raises:
      ValueError: ``k_u``/``k_v`` not positive integers, ``m``/``n`` < 1.
    """
    k_u, k_v = _check_k("k_u", k_u), _check_k("k_v", k_v)
    if m < 1 or n < 1:
        raise ValueError(f"need m, n >= 1, got m={m!r}, n={n!r}")
    d = k_u + k_v
    T = n + m
    if complete:
        T = max(T, d * max(-(-m // k_u), -(-n // k_v)))
    B = -(-T // d)
    b = np.arange(B)[:, None]
    ru, rv = np.arange(k_u)[None, :], np.arange(k_v)[None, :]
    row_index = k_u * b + ru
    row_valid = (d * b + ru < T) & (row_index < m)
    col_index = k_v * b + rv
    col_valid = (d * b + k_u + rv < T) & (col_index < n)
    return BlockSchedule(row_index.astype(np.int32), row_valid, col_index.astype(np.int32),
                         col_valid, T)


def default_block_sizes(m: int, n: int, block: int = 256) -> tuple[int, int]:
    """``(k_U, k_V)`` with ``k_U + k_V ~ block`` and ``k_U / k_V ~ m / n``."""
    k_u = min(max(1, round(block * m / (m + n))), m)
    k_v = min(max(1, block - k_u), n)
    return int(k_u), int(k_v)
