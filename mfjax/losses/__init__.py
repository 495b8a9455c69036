"""Losses: masked MF losses (:mod:`mfjax.losses.masked`) and NMF divergences
(:mod:`mfjax.losses.divergences`).  One implementation of each formula serves
every solver, optimizer, metric and test."""

from mfjax.losses.masked import (
    BiasedFactors,
    Factors,
    data_scale,
    init_biased_factors,
    init_factors,
    l2_penalty,
    masked_mse,
    masked_sq_grad,
    masked_sq_grad_dense,
    masked_sq_loss,
    masked_sq_loss_biased,
    masked_sq_loss_dense,
    masked_sq_value_and_grad,
    predict,
    predict_dense,
    residuals,
)

__all__ = [
    "BiasedFactors",
    "Factors",
    "data_scale",
    "init_biased_factors",
    "init_factors",
    "l2_penalty",
    "masked_mse",
    "masked_sq_grad",
    "masked_sq_grad_dense",
    "masked_sq_loss",
    "masked_sq_loss_biased",
    "masked_sq_loss_dense",
    "masked_sq_value_and_grad",
    "predict",
    "predict_dense",
    "residuals",
]

# NMF divergences (mfjax.losses.divergences)
from mfjax.losses.divergences import (  # noqa: E402
    divergence,
    divergence_dense,
    is_divergence,
    is_divergence_dense,
    is_elementwise,
    kl_divergence,
    kl_divergence_dense,
    kl_elementwise,
    l1_divergence,
    l1_divergence_dense,
    l2_divergence,
    l2_divergence_dense,
    l1_elementwise,
    masked_divergence,
    masked_divergence_dense,
)

__all__ += [
    "l1_elementwise",
    "masked_divergence",
    "masked_divergence_dense",
    "divergence",
    "divergence_dense",
    "is_divergence",
    "is_divergence_dense",
    "is_elementwise",
    "kl_divergence",
    "kl_divergence_dense",
    "kl_elementwise",
    "l1_divergence",
    "l1_divergence_dense",
    "l2_divergence",
    "l2_divergence_dense",
]
