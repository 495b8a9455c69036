"""DMF / DMF-D training configurations: the schedule and the learned quantizer.

:class:`TrainConfig` holds the sub-block minibatch schedule (block size, Adam
with staircase decay ``lr * lr_decay ** floor(step / lr_decay_every)``, the
loss, validation, stopping, checkpoints, the mfjax-only input options);
:class:`QuantizerConfig` turns training into DMF-D.
:meth:`TrainConfig.authors` converts the authors' per-epoch schedules into
this trainer's steps / row-epochs (see :mod:`mfjax.models.train` for the
epoch definitions and :func:`authors_epoch_length`).

References:
  D. M. Nguyen, E. Tsiligianni, N. Deligiannis, "Matrix Factorization via
  Deep Learning", 2018 (DMF, DMF-D).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import optax

from mfjax.models.quantizer import check_levels, exponential_lambda, uniform_boundaries

__all__ = ["QuantizerConfig", "TrainConfig", "authors_epoch_length", "LR_SCHEDULES", "learning_rate_schedule"]

#: the learning-rate schedules of :attr:`TrainConfig.lr_schedule`
LR_SCHEDULES = ("staircase", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class QuantizerConfig:
    """DMF-D's learned quantizer (authors' defaults).

    ``levels`` I_1..I_d; ``init_boundaries`` b~ (default uniform: 1.5..4.5);
    ``gamma2`` weight of ``pen(b - b~)`` (``penalty_reduce="mean"`` as the
    authors, ``"sum"`` as eq. 5); slope ``lam = lambda0 * lambda_growth **
    floor(step / lambda_every)``; ``learn_boundaries=False`` freezes b.
    """

    levels: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
    init_boundaries: tuple[float, ...] | None = None
    gamma2: float = 0.1
    penalty_reduce: str = "mean"
    lambda0: float = 0.1
    lambda_growth: float = 1.015
    lambda_every: int = 16
    learn_boundaries: bool = True

    def reference(self) -> np.ndarray:
        """The reference boundaries ``b~`` (float64): ``init_boundaries`` or midpoints of the levels.

        >>> QuantizerConfig().reference().tolist()
        [1.5, 2.5, 3.5, 4.5]
        """
        lv = check_levels(self.levels)
        if self.init_boundaries is None:
            return uniform_boundaries(lv)
        b = np.asarray(self.init_boundaries, np.float64)
        if b.shape != (lv.size - 1,):
            raise ValueError(f"init_boundaries needs {lv.size - 1} values, got {self.init_boundaries}")
        return b

    def schedule(self) -> Callable:
        """The slope schedule ``step -> lambda0 * lambda_growth ** floor(step / lambda_every)``."""
        return exponential_lambda(self.lambda0, self.lambda_growth, self.lambda_every)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training schedule.

    Attributes:
      epochs: passes over all row blocks (see module docstring).
      block_rows, block_cols: sub-block size of one step (authors: 100 x 170).
      learning_rate, lr_decay, lr_decay_every: Adam with
        ``lr * lr_decay ** floor(step / lr_decay_every)`` (``lr_schedule``
        ``"staircase"``, the authors' schedule and the default).
      lr_schedule: ``"staircase"`` (above), ``"cosine"`` or ``"linear"``
        (mfjax options): over the run's ``T = epochs x steps per epoch``
        steps, ``lr_t = lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2``
        (Loshchilov & Hutter, "SGDR", ICLR 2017, one cycle, no restart), or
        ``lr_t = lr + (lr_min - lr) t / T``; constant ``lr_min`` after ``T``.
        ``lr_decay`` / ``lr_decay_every`` are then unused.
        Measured on ML-1M (``experiments/results/dmf``, seed 0): cosine
        1e-2 -> 1e-4 over 630 steps tracks the staircase within 0.002 RMSE.
      lr_min: the final learning rate of ``"cosine"`` / ``"linear"``.
      loss: ``"rmse"`` (authors' code) or ``"mse"`` (paper eq. 1), over the
        observed entries of the block.
      l2: gamma, weight of the squared Frobenius norm of all kernels.
      quantizer: a :class:`QuantizerConfig` trains DMF-D; ``None`` DMF.
      eval_every: validate every this many epochs (and at the end); the
        parameters with the best validation RMSE (discrete RMSE for DMF-D)
        are returned.
      patience: stop after this many validations without improvement (None: never).
      max_seconds: stop after this wall time (None: never); the best so far is kept.
      checkpoint_every: save the full state every this many epochs (when a
        checkpoint path is given).
      seed: permutations, initialisation and dropout.
      hide_targets: remove each step's target entries from the input vectors
        of both branches (an mfjax option, not in the paper or the authors'
        code, where a training entry is part of the input that predicts it;
        at test time the predicted entry is never in the input, and for
        unseen rows only part of the row is).  Default False (authors).
      input_keep: ``(lo, hi)`` turns on input-entry masking ("denoising"
        augmentation, an mfjax option, not in the paper or the authors'
        code; default ``None`` = off).  At every step each input vector ``x``
        of the block (a row of the row branch, a column of the column
        branch, see ``input_keep_branches``) draws a keep probability
        ``p ~ U(lo, hi)`` and each of its observed entries is kept
        independently with probability ``p``::

            x~_k = z_k x_k,   z_k ~ Bernoulli(p),   p ~ U(lo, hi)  (per vector, per step),

        without rescaling by ``1/p`` (at test time a partial vector is not
        rescaled either).  The loss targets are unchanged: all observed
        entries of the block, masked or not (the masked ones must then be
        predicted from the rest, as in denoising autoencoders).  Purpose:
        an unseen row is embedded from a *part* of its ratings (the revealed
        half of areas II-IV), an input the branches never see when trained
        on full training rows; masking trains them on such partial vectors
        and makes a training row's exact input pattern (its identity) less
        useful for fitting its targets.  Measured on ML-1M
        (``experiments/results/dmf``): alone it helps areas II/IV little
        (~0.015 RMSE) at some cost on area I; the large effect comes from
        centred inputs (:attr:`DMFConfig.input_offset`), with which row
        masking was selected.  Masked entries are set to 0, i.e. become
        missing (also under ``input_offset``, which skips zeros).
        Only training entries are ever inputs or targets.  The masks come
        from ``fold_in(fold_in(key, MASK_STREAM), step)``: deterministic per
        seed, independent of the dropout stream (which is unchanged).
        References: P. Vincent et al., "Extracting and composing robust
        features with denoising autoencoders", ICML 2008; Y. Wu et al.,
        "Collaborative denoising auto-encoders for top-N recommender
        systems", WSDM 2016; F. Strub, R. Gaudel, J. Mary, "Hybrid
        recommender system based on autoencoders", DLRS 2016.
      input_keep_branches: ``"both"``, ``"rows"`` or ``"cols"``: the branch
        inputs that ``input_keep`` masks.
    """

    epochs: int = 270
    block_rows: int = 100
    block_cols: int = 170
    learning_rate: float = 1e-2
    lr_decay: float = 0.65
    lr_decay_every: int = 810
    lr_schedule: str = "staircase"
    lr_min: float = 0.0
    loss: str = "rmse"
    l2: float = 0.0
    quantizer: QuantizerConfig | None = None
    eval_every: int = 5
    patience: int | None = None
    max_seconds: float | None = None
    checkpoint_every: int = 5
    seed: int = 0
    hide_targets: bool = False
    input_keep: tuple[float, float] | None = None
    input_keep_branches: str = "both"

    def __post_init__(self):
        if self.input_keep is not None:
            keep = tuple(float(v) for v in self.input_keep)
            if len(keep) != 2 or not 0.0 < keep[0] <= keep[1] <= 1.0:
                raise ValueError(f"input_keep must be (lo, hi) with 0 < lo <= hi <= 1, got {self.input_keep!r}")
            object.__setattr__(self, "input_keep", keep)
        if self.input_keep_branches not in ("both", "rows", "cols"):
            raise ValueError(f"input_keep_branches must be 'both', 'rows' or 'cols', got {self.input_keep_branches!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_min <= self.learning_rate:
            raise ValueError(f"lr_min must be in [0, learning_rate={self.learning_rate}], got {self.lr_min}")
        if self.loss not in ("rmse", "mse"):
            raise ValueError(f"loss must be 'rmse' or 'mse', got {self.loss!r}")
        for name in ("epochs", "block_rows", "block_cols", "lr_decay_every", "eval_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    @classmethod
    def authors(cls, shape: tuple[int, int], dmfd: bool = False, **overrides) -> "TrainConfig":
        """The authors' protocol in this trainer's units (steps / row-epochs) for an ``shape`` matrix.

        DMF: blocks 100 x 170, Adam 1e-2 x0.65 every 50 (their) epochs, 1000
        epochs.  DMF-D: blocks 300 x 200, lambda 0.1 x1.015 per (their) epoch.

        >>> tc = TrainConfig.authors((6040, 3706))          # ML-1M
        >>> tc.block_rows, tc.block_cols, tc.epochs, tc.lr_decay_every
        (100, 170, 266, 808)
        """
        br, bc = (300, 200) if dmfd else (100, 170)
        L = authors_epoch_length(shape, br, bc)
        steps_per_epoch = math.ceil(shape[0] / br)
        q = QuantizerConfig(lambda_every=max(1, round(L))) if dmfd else None
        base = cls(
            epochs=math.ceil(1000 * L / steps_per_epoch),
            block_rows=br,
            block_cols=bc,
            lr_decay_every=max(1, round(50 * L)),
            quantizer=q,
        )
        return dataclasses.replace(base, **overrides)


def learning_rate_schedule(tc: TrainConfig, total_steps: int | None = None) -> Callable:
    """The schedule ``step -> learning rate`` of ``tc`` (an optax schedule; see :attr:`TrainConfig.lr_schedule`).

    ``total_steps`` (``T``, required for ``"cosine"`` / ``"linear"``) is the
    run's number of steps.

    >>> tc = TrainConfig(learning_rate=1.0, lr_schedule="cosine", lr_min=0.1)
    >>> [round(float(learning_rate_schedule(tc, 10)(t)), 4) for t in (0, 5, 10, 20)]
    [1.0, 0.55, 0.1, 0.1]
    """
    if tc.lr_schedule == "staircase":
        return optax.exponential_decay(tc.learning_rate, tc.lr_decay_every, tc.lr_decay, staircase=True)
    if total_steps is None or int(total_steps) < 1:
        raise ValueError(f"lr_schedule {tc.lr_schedule!r} needs total_steps >= 1, got {total_steps!r}")
    T = int(total_steps)
    if tc.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(tc.learning_rate, T, alpha=tc.lr_min / tc.learning_rate)
    return optax.linear_schedule(tc.learning_rate, tc.lr_min, T)


def authors_epoch_length(shape, block_rows: int, block_cols: int) -> float:
    """Steps per epoch of the authors' counter: ``1 / (1/ceil(m/br) + 1/ceil(n/bc))``.

    Their epoch counter ticks whenever the row or the column block pointer
    wraps, i.e. every ``L = 1 / (1/R + 1/C)`` steps with ``R``, ``C`` the
    numbers of row / column blocks.

    >>> round(authors_epoch_length((6040, 3706), 100, 170), 2)   # ML-1M: R = 61, C = 22
    16.17
    """
    R = math.ceil(shape[0] / block_rows)
    C = math.ceil(shape[1] / block_cols)
    return 1.0 / (1.0 / R + 1.0 / C)
