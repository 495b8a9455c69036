"""Losses: masked MF losses (:mod:`mfjax.losses.masked`) and NMF divergences
(:mod:`mfjax.losses.divergences`).  One implementation of each formula serves
every solver, optimizer, metric and test."""

from mfjax.losses.masked import (
    Factors,
    init_factors,
    masked_mse,
    masked_sq_loss,
    masked_sq_loss_dense,
    predict,
    residuals,
)

__all__ = [
    "Factors",
    "init_factors",
    "masked_mse",
    "masked_sq_loss",
    "masked_sq_loss_dense",
    "predict",
    "residuals",
]
