"""Predicting with a trained DMF / DMF-D: given entries, and the extendability areas I-IV.

A prediction embeds the rows and columns from input vectors (by default the
training matrix's rows and columns) and maps the cosine of the two embeddings
to the rating scale, ``x_ij = from_unit(cos(U_i, V_j))``; ``discrete=True``
applies the learned hard quantizer ``Q_b`` (DMF-D) or rounds to the nearest
level (DMF).  Rows / columns unseen in training are embedded from revealed
entries only (:func:`~mfjax.models.dmf.extension_inputs`): no retraining.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.models.dmf import CSRInputs, SideFeatures, _device_side, check_side_features, extension_inputs
from mfjax.models.epoch import _eval_fn_cached, _full
from mfjax.models.state import DMFResult

__all__ = ["predict", "predict_areas"]


def predict(result: DMFResult, rows, cols, *, row_inputs: CSRInputs | None = None,
            col_inputs: CSRInputs | None = None, discrete: bool = False, side: SideFeatures | None = None):
    """Predictions on the rating scale at ``(rows, cols)``.

    The input vectors default to the training matrix; pass other
    ``row_inputs``/``col_inputs`` (e.g. from
    :func:`~mfjax.models.dmf.extension_inputs`) to predict for rows/columns
    unseen in training.  ``discrete=True`` applies the learned hard quantizer
    ``Q_b`` (DMF-D) or rounds to the nearest integer level (DMF).  ``side``
    overrides the result's side features (``result.side``, the training
    ones; ``DMFConfig.side_dims``): row ``i`` / column ``j`` is embedded
    from its input vector and its feature row, seen in training or not.
    """
    ri = result.row_inputs if row_inputs is None else row_inputs
    ci = result.col_inputs if col_inputs is None else col_inputs
    q = result.train_config.quantizer
    ev = _eval_fn_cached(result.config, q, (result.model.n_rows, result.model.n_cols))
    b = result.boundaries if q is not None else jnp.zeros(0)
    shape = (result.model.n_rows, result.model.n_cols)
    feats = check_side_features(result.side if side is None else side, shape, result.config.side_dims)
    cont, disc = ev(result.variables, b, _full(ri), _full(ci), jnp.asarray(rows), jnp.asarray(cols), _device_side(feats))
    if not discrete:
        return cont
    if q is not None:
        return disc
    lo, hi = result.config.rating_range
    return jnp.clip(jnp.round(cont), lo, hi)


def predict_areas(result: DMFResult, tests: dict, revealed: Ratings | None, held_rows, held_cols,
                  *, discrete: bool = False, side: SideFeatures | None = None) -> dict:
    """Predictions for the test entries of each area (``{"I": Ratings, "II": ..., ...}``).

    Unseen rows / columns are embedded from the ``revealed`` entries only
    (see :func:`~mfjax.models.dmf.extension_inputs`) and, with side inputs,
    their own feature rows (``side``, default ``result.side``); no retraining.
    """
    train = Ratings(result.row_inputs.row_ids(), result.row_inputs.indices, result.row_inputs.values,
                    (result.row_inputs.num_rows, result.row_inputs.dim))
    ri, ci = extension_inputs(train, revealed, held_rows, held_cols)
    names = [a for a, t in tests.items() if t is not None and t.nnz > 0]
    out = {a: np.zeros(0, np.float32) for a in tests}
    if not names:
        return out
    rows = np.concatenate([np.asarray(tests[a].rows) for a in names])
    cols = np.concatenate([np.asarray(tests[a].cols) for a in names])
    # one call (one compilation, one embedding pass) for all areas
    pred = np.asarray(predict(result, rows, cols, row_inputs=ri, col_inputs=ci, discrete=discrete, side=side))
    ends = np.cumsum([tests[a].nnz for a in names])
    for a, part in zip(names, np.split(pred, ends[:-1])):
        out[a] = part
    return out
