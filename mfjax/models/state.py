"""The trainer's state (:class:`DMFState`) and result (:class:`DMFResult`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from mfjax.models.config import TrainConfig
from mfjax.models.dmf import DMF, CSRInputs, DMFConfig, SideFeatures

__all__ = ["DMFState", "DMFResult"]


class DMFState(NamedTuple):
    """Everything a step changes: parameters ``{"net", "b"}``, BatchNorm stats, Adam state, step.

    Attributes:
      params: ``{"net": flax parameters, "b": quantizer boundaries (DMF-D only)}``.
      batch_stats: BatchNorm running statistics (flax collection).
      opt_state: the Adam state of ``params``.
      step: int32 scalar, steps taken (drives the lr / lambda schedules and
        the dropout / mask keys).
    """

    params: dict
    batch_stats: dict
    opt_state: optax.OptState
    step: jax.Array


class DMFResult(NamedTuple):
    """A trained (best-on-validation) model and what is needed to predict with it.

    Attributes:
      model: the flax :class:`~mfjax.models.dmf.DMF` module.
      variables: ``{"params", "batch_stats"}`` of the selected epoch.
      boundaries: learned quantizer boundaries (DMF-D) or ``None``.
      config, train_config: the configurations.
      row_inputs, col_inputs: the training input vectors (CSR).
      trace: dict of per-epoch ``train_loss`` and per-validation ``val_epoch``,
        ``val_rmse`` (and ``val_rmse_discrete`` for DMF-D), ``lam``.
      best_epoch, best_val: the selected epoch and its validation metric.
      epochs_run: epochs trained in total; wall_time: training seconds in
        total (this call plus the runs it resumed from).
      side: the :class:`~mfjax.models.dmf.SideFeatures` the model was
        trained with (``None`` without side inputs); predictions read them.
    """

    model: DMF
    variables: dict
    boundaries: jax.Array | None
    config: DMFConfig
    train_config: TrainConfig
    row_inputs: CSRInputs
    col_inputs: CSRInputs
    trace: dict
    best_epoch: int
    best_val: float
    epochs_run: int
    wall_time: float
    side: SideFeatures | None = None
