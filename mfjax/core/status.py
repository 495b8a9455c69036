"""Run statuses shared by :func:`mfjax.fit`, the solver driver and ``mfjax compare``.

A status travels through compiled code as an int32 array; :class:`Status`
gives the codes names, so tables and logs print ``max_steps`` rather than
``1``.  ``int(result.status)`` converts a result's code; ``Status(code).name``
or :func:`status_name` names it.

>>> from mfjax.core import Status, status_name
>>> int(Status.MAX_STEPS), status_name(1)
(1, 'max_steps')
>>> status_name(-1)
'running'
"""

from __future__ import annotations

import enum

__all__ = ["Status", "status_name", "STATUS_NAMES"]


class Status(enum.IntEnum):
    """Why a run stopped.

    * ``CONVERGED`` (0): a tolerance was met.
    * ``MAX_STEPS`` (1): the step / sweep / epoch budget was used up.
    * ``LINESEARCH_FAILED`` (2): the step rule reported failure.
    * ``NONFINITE`` (3): non-finite parameters, value or gradient.
    * ``DIVERGED`` (4): the objective grew far beyond its starting value.
    """

    CONVERGED = 0
    MAX_STEPS = 1
    LINESEARCH_FAILED = 2
    NONFINITE = 3
    DIVERGED = 4

    def __str__(self) -> str:  # printed in tables as the lower-case name
        return self.name.lower()


#: Lower-case names indexed by code (``STATUS_NAMES[1] == "max_steps"``).
STATUS_NAMES = tuple(s.name.lower() for s in Status)


def status_name(code) -> str:
    """Lower-case name of a status code (an int or a 0-d array); ``"running"`` for -1.

    Raises:
      ValueError: the code is not a known status.
    """
    c = int(code)
    if c == -1:
        return "running"
    try:
        return Status(c).name.lower()
    except ValueError:
        raise ValueError(f"unknown status code {c}; known: "
                         f"{ {int(s): s.name.lower() for s in Status} }") from None
