"""Neural models (Flax): DMF, DMF-D and the learned quantizer.

This subpackage is the only part of mfjax that imports flax.

- :mod:`mfjax.models.dmf`        the two-branch cosine model, sparse first layer, extendability inputs
- :mod:`mfjax.models.quantizer`  smooth / hard quantizers (DMF-D eqs. 2-5), usable on any predictions
- :mod:`mfjax.models.train`      sub-block minibatch training, model selection, resume
  (its pieces: :mod:`~mfjax.models.config`, :mod:`~mfjax.models.state`,
  :mod:`~mfjax.models.blocks`, :mod:`~mfjax.models.epoch`, :mod:`~mfjax.models.predict`)
- :mod:`mfjax.models.dmf_side`   ML-1M user / movie side features as extra inputs of the DMF branches
- :mod:`mfjax.models.side_mlp`   the slides' side-feature MLP (ids, genres, gender, age, occupation -> rating),
  early stopping on validation, optional id embeddings
- :mod:`mfjax.models.checkpoint` atomic, verified msgpack checkpoints
- :mod:`mfjax.models.resume`     a checkpoint's run identity (configs, data checksums) and the resume policy
"""

from mfjax.models.checkpoint import CorruptCheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from mfjax.models.resume import CheckpointIgnoredWarning, CheckpointMismatchError, run_identity
from mfjax.models.dmf import (
    DMF,
    Branch,
    CSRInputs,
    DMFConfig,
    SideFeatures,
    SparseBatch,
    check_side_features,
    cosine,
    csr_inputs,
    embed,
    extension_inputs,
    from_unit,
    full_batch,
    gather_block,
    init_dmf,
    pairwise_cosine,
    sparse_matmul,
    subsample_inputs,
    to_unit,
)
from mfjax.models.quantizer import (
    FitBoundariesResult,
    boundary_penalty,
    check_levels,
    exponential_lambda,
    fit_boundaries,
    quantize_hard,
    round_to_levels,
    smooth_quantize,
    uniform_boundaries,
)
from mfjax.models.dmf_side import MOVIE_FEATURES, USER_FEATURES, movie_features, movielens_side_features, user_features
from mfjax.models.side_mlp import (
    FEATURES,
    EarlyStopping,
    SideMLP,
    SideMLPConfig,
    SideMLPResult,
    SideMLPState,
    SideTables,
    SideTrainConfig,
    build_inputs,
    early_stopping_init,
    early_stopping_update,
    min_max,
    predict_side_mlp,
    side_mlp_mse,
    side_tables,
    train_side_mlp,
)
from mfjax.models.train import (
    DMFResult,
    DMFState,
    QuantizerConfig,
    TrainConfig,
    authors_epoch_length,
    learning_rate_schedule,
    predict,
    predict_areas,
    train_dmf,
)

__all__ = [
    # dmf
    "DMF", "Branch", "CSRInputs", "DMFConfig", "SideFeatures", "SparseBatch", "check_side_features", "cosine",
    "csr_inputs", "embed",
    "extension_inputs", "from_unit", "full_batch", "gather_block", "init_dmf", "pairwise_cosine",
    "sparse_matmul", "subsample_inputs", "to_unit",
    # quantizer
    "FitBoundariesResult", "boundary_penalty", "check_levels", "exponential_lambda", "fit_boundaries",
    "quantize_hard", "round_to_levels", "smooth_quantize", "uniform_boundaries",
    # training
    "DMFResult", "DMFState", "QuantizerConfig", "TrainConfig", "authors_epoch_length", "learning_rate_schedule", "predict",
    "predict_areas", "train_dmf",
    # DMF side features (ML-1M encoding)
    "MOVIE_FEATURES", "USER_FEATURES", "movie_features", "movielens_side_features", "user_features",
    # side-feature MLP
    "FEATURES", "EarlyStopping", "SideMLP", "SideMLPConfig", "SideMLPResult", "SideMLPState", "SideTables",
    "SideTrainConfig", "build_inputs", "early_stopping_init", "early_stopping_update", "min_max",
    "predict_side_mlp", "side_mlp_mse", "side_tables", "train_side_mlp",
    # checkpoints
    "load_checkpoint", "save_checkpoint", "read_checkpoint", "CorruptCheckpointError",
    # resume
    "CheckpointIgnoredWarning", "CheckpointMismatchError", "run_identity",
]
