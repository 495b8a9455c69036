"""Optimizers: direction rules (:mod:`mfjax.optim.directions`) and their
chains with a step rule (:mod:`mfjax.optim.alias`).

An optimizer is ``optax.chain(direction_rule, step_rule)``: the direction
rule maps the gradient to a descent direction ``p`` and the step rule (any
:mod:`mfjax.linesearch` rule or optax line search) scales it.  The
Gauss-Newton (block-)Jacobi preconditioners of the masked MF loss
(:mod:`mfjax.optim.precondition`) chain in front of a direction rule or go
into ``cg(preconditioner=...)``; they need the ratings, like
:func:`mfjax.linesearch.exact_mf`, and are not in ``REGISTRY``.
"""

from mfjax.optim.alias import adagrad, adam, bfgs, cg, gd, heavy_ball, make_optimizer, nesterov, rmsprop
from mfjax.optim.switch import SwitchState, switch
from mfjax.optim.precondition import (
    MFPreconditionerState,
    mf_gauss_newton_blocks,
    mf_gauss_newton_diagonal,
    mf_preconditioner,
)
from mfjax.optim.directions import (
    REGISTRY,
    AdaGradState,
    BFGSState,
    CGState,
    CompactBFGSState,
    adagrad_direction,
    adam_direction,
    bfgs_direction,
    bfgs_inverse_update,
    cg_direction,
    compact_bfgs_direction,
    compact_inverse_hessian_product,
    direction,
    gd_direction,
    heavy_ball_direction,
    nesterov_direction,
    rmsprop_direction,
)

__all__ = [
    # optimizers (direction + step rule)
    "gd",
    "heavy_ball",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "bfgs",
    "cg",
    "make_optimizer",
    # direction rules
    "gd_direction",
    "heavy_ball_direction",
    "nesterov_direction",
    "adagrad_direction",
    "rmsprop_direction",
    "adam_direction",
    "bfgs_direction",
    "bfgs_inverse_update",
    "compact_bfgs_direction",
    "compact_inverse_hessian_product",
    "cg_direction",
    "AdaGradState",
    "CGState",
    "CompactBFGSState",
    "BFGSState",
    "REGISTRY",
    "direction",
    # Gauss-Newton (block-)Jacobi preconditioners of the masked MF loss (need the ratings;
    # not in REGISTRY)
    "mf_preconditioner",
    "mf_gauss_newton_diagonal",
    "mf_gauss_newton_blocks",
    "MFPreconditionerState",
    # sweeps: one compiled program for many rules
    "switch",
    "SwitchState",
]
