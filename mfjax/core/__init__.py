"""The core layer: statuses, pytree helpers and argument checks.

Imports point down only: ``data`` -> ``core`` -> ``objective`` / ``losses``
-> ``metrics`` -> ``linesearch``, ``optim`` -> ``loop`` -> ``solvers`` ->
``models`` -> ``compare``, ``cli`` (see ``docs/ARCHITECTURE.md``).  Nothing
here imports another mfjax package.
"""

from mfjax.core.checks import check_l2, check_not_all_zero
from mfjax.core.status import STATUS_NAMES, Status, status_name
from mfjax.core.trees import tree_all_finite, tree_norm, tree_vdot, tree_where

__all__ = [
    "Status",
    "STATUS_NAMES",
    "status_name",
    "check_l2",
    "check_not_all_zero",
    "tree_where",
    "tree_all_finite",
    "tree_norm",
    "tree_vdot",
]
