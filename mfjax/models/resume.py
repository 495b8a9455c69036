"""What a DMF checkpoint was made from, and whether a run may resume from it.

A checkpoint of :func:`~mfjax.models.train.train_dmf` records its *run
identity* (:func:`run_identity`): the model configuration, the training
configuration without the run-length fields (:data:`RUN_LENGTH_FIELDS`: a
run may be resumed to train longer), and the checksums
(:func:`mfjax.data.data_checksum`) of the training and validation data,
hashed together into ``config_hash`` (:func:`mfjax.store.config_hash`).

A run resumes from a checkpoint only when the identities agree; otherwise
:func:`identity_differences` names every field that differs, and the
resume policy (:data:`RESUME_POLICIES`) decides:

- ``"auto"`` (default): resume a matching checkpoint; a mismatched or
  corrupt one is ignored with a :class:`CheckpointIgnoredWarning` naming the
  file and the reason, the run starts from scratch and overwrites it (the
  library's resume rule: a changed configuration is recomputed);
- ``"require"``: resume or raise (:class:`CheckpointMismatchError`,
  :class:`~mfjax.models.checkpoint.CorruptCheckpointError`,
  ``FileNotFoundError``);
- ``"never"``: ignore any checkpoint and start from scratch.

>>> import mfjax.data as md
>>> from mfjax.models.config import TrainConfig
>>> from mfjax.models.dmf import DMFConfig
>>> r = md.synthetic(20, 10, rank=2, density=0.5, seed=0)
>>> a = run_identity(DMFConfig.cpu(), TrainConfig(), r, None)
>>> b = run_identity(DMFConfig.cpu(), TrainConfig(learning_rate=0.5, epochs=9), r, None)
>>> identity_differences(a, b)
['train_config.learning_rate: 0.01 in the checkpoint, 0.5 now']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings

import numpy as np

from mfjax.data import data_checksum
from mfjax.models.checkpoint import CorruptCheckpointError, read_checkpoint, restore_checkpoint
from mfjax.store import config_hash, to_jsonable

__all__ = [
    "RESUME_POLICIES",
    "RUN_LENGTH_FIELDS",
    "CheckpointIgnoredWarning",
    "CheckpointMismatchError",
    "check_resume_policy",
    "identity_differences",
    "resume_from",
    "run_identity",
]

#: Resume policies of ``train_dmf(..., resume=)``: ``"auto"``, ``"require"``, ``"never"``.
RESUME_POLICIES = ("auto", "require", "never")

#: :class:`~mfjax.models.config.TrainConfig` fields that only say how long to run; they may change on resume.
RUN_LENGTH_FIELDS = ("epochs", "max_seconds", "patience", "checkpoint_every")

_SECTIONS = ("model_config", "train_config")
_META_KEYS = ("epoch", "best_val", "best_epoch", "trace")
_DATA = (("train_data", "training data checksum"), ("valid_data", "validation data checksum"))


class CheckpointMismatchError(ValueError):
    """A checkpoint made from another configuration or other data (the message names the differences)."""


class CheckpointIgnoredWarning(UserWarning):
    """A checkpoint was not resumed (mismatched or corrupt) and the run started from scratch."""


def check_resume_policy(resume: str) -> str:
    """``resume`` if it is one of :data:`RESUME_POLICIES`, else ``ValueError``.

    >>> check_resume_policy("auto")
    'auto'
    """
    if resume not in RESUME_POLICIES:
        raise ValueError(f"resume must be one of {RESUME_POLICIES}, got {resume!r}")
    return resume


def _plain(config) -> dict:
    """A dataclass config as plain JSON values (tuples -> lists, nested configs -> dicts)."""
    d = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps(to_jsonable(d), sort_keys=True, default=str))


def _side_checksum(side) -> str:
    """SHA-256 (hex) of the side feature arrays' shapes and float32 bytes (``None`` entries marked)."""
    h = hashlib.sha256()
    for f in side:
        if f is None:
            h.update(b"none;")
        else:
            a = np.ascontiguousarray(np.asarray(f, np.float32))
            h.update(repr(a.shape).encode() + b";" + a.tobytes())
    return h.hexdigest()


def run_identity(config, train_config, train, valid, side=None) -> dict:
    """The identity of a DMF run: configs, data checksums and their joint ``config_hash``.

    Args:
      config: the :class:`~mfjax.models.dmf.DMFConfig`.
      train_config: the :class:`~mfjax.models.config.TrainConfig`; the
        :data:`RUN_LENGTH_FIELDS` are left out.
      train, valid: the training and validation :class:`~mfjax.data.Ratings`
        (``valid`` may be ``None``).
      side: the run's :class:`~mfjax.models.dmf.SideFeatures` or ``None``;
        with features, ``"side_data"`` (a SHA-256 of their bytes and shapes)
        joins the identity.  Without, the identity is the one of earlier
        mfjax versions (``side_dims`` is left out of the model config while
        ``None``), so their checkpoints still resume.

    Returns:
      a JSON-able dict ``{"model_config", "train_config", "train_data",
      "valid_data", "config_hash"}``.
    """
    tc = {k: v for k, v in _plain(train_config).items() if k not in RUN_LENGTH_FIELDS}
    mc = _plain(config)
    if mc.get("side_dims", None) is None:
        mc.pop("side_dims", None)
    ident = {
        "model_config": mc,
        "train_config": tc,
        "train_data": data_checksum(train),
        "valid_data": None if valid is None else data_checksum(valid),
    }
    if side is not None:
        ident["side_data"] = _side_checksum(side)
    ident["config_hash"] = config_hash(ident)
    return ident


def identity_differences(stored, current: dict) -> list[str]:
    """Every way ``stored`` (a checkpoint's identity) differs from ``current``; empty when they agree.

    Names each differing configuration field with both values, and the
    training / validation data when their checksums differ.  A checkpoint
    without an identity (an older mfjax, or written by hand) differs.
    """
    if not isinstance(stored, dict):
        return ["it records no run identity (written by an older mfjax or by hand)"]
    out = []
    for section in _SECTIONS:
        a, b = stored.get(section) or {}, current[section]
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                out.append(f"{section}.{key}: {a.get(key, '<absent>')!r} in the checkpoint, "
                           f"{b.get(key, '<absent>')!r} now")
    for key, what in _DATA:
        if stored.get(key) != current[key]:
            out.append(f"{what}: {stored.get(key)} in the checkpoint, {current[key]} now")
    if stored.get("side_data") != current.get("side_data"):
        out.append(f"side features checksum: {stored.get('side_data')} in the checkpoint, {current.get('side_data')} now")
    if not out and stored.get("config_hash") != current["config_hash"]:
        out.append(f"config_hash: {stored.get('config_hash')} in the checkpoint, {current['config_hash']} now")
    return out


def _matching(path, template, identity: dict):
    """``(tree, meta)`` of the checkpoint at ``path`` if it is intact and made by this run, else raise."""
    state, meta = read_checkpoint(path)
    diffs = identity_differences(meta.get("identity"), identity)
    if diffs:
        raise CheckpointMismatchError(f"checkpoint {path} was made by another run: " + "; ".join(diffs))
    missing = [k for k in _META_KEYS if k not in meta]
    if missing or not isinstance(meta["trace"], dict) or not isinstance(meta["epoch"], int):
        raise CorruptCheckpointError(f"checkpoint {path} has an incomplete meta (missing {missing or 'types'})")
    return restore_checkpoint(template, state, path), meta


def resume_from(path, template, identity: dict, resume: str = "auto", log=None):
    """The checkpoint to resume from under the policy ``resume``, or ``None`` to start from scratch.

    Args:
      path: the checkpoint file (``None``: no checkpointing).
      template: the pytree structure to restore into.
      identity: this run's :func:`run_identity`.
      resume: one of :data:`RESUME_POLICIES` (see the module docstring).
      log: optional callable receiving the reason a checkpoint is ignored.

    Returns:
      ``(tree, meta)`` or ``None``.

    Raises:
      under ``resume="require"``: ``FileNotFoundError`` (no file),
      :class:`~mfjax.models.checkpoint.CorruptCheckpointError` (damaged),
      :class:`CheckpointMismatchError` (another configuration or data),
      ``ValueError`` (another structure).
    """
    check_resume_policy(resume)
    if path is None or resume == "never":
        return None
    if not os.path.exists(path):
        if resume == "require":
            raise FileNotFoundError(f"resume='require' but there is no checkpoint at {path}")
        return None
    try:
        return _matching(path, template, identity)
    except ValueError as e:  # corrupt, mismatched, or another structure
        if resume == "require":
            raise
        msg = f"{e}; training from scratch (the checkpoint will be overwritten)"
        warnings.warn(msg, CheckpointIgnoredWarning, stacklevel=3)
        if log:
            log(msg)
        return None
