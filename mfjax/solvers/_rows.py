"""Deprecated location: the per-row layouts and row quadratics live in :mod:`mfjax.objective.rows`."""

from mfjax.objective.rows import (  # noqa: F401
    BlockLayout,
    RowLayout,
    RowQuadratic,
    block_statistics,
    build_block_layout,
    build_row_layout,
    direct_row_losses,
    quadratic_increment,
    quadratic_value,
    row_statistics,
)
