"""Atomic checkpoints of pytrees (flax msgpack): save, load into a template.

A checkpoint is one msgpack file ``{"state": <state dict of the pytree>,
"meta": <JSON-able dict>}`` written to a temp file and renamed over the
target (``os.replace``), so a reader (or a resumed run after a crash) sees
either the previous complete checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
from flax import serialization

from mfjax._io import atomic_write_bytes, to_jsonable

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_exists"]


def save_checkpoint(path, tree, meta: dict | None = None) -> pathlib.Path:
    """Write ``tree`` (any pytree of arrays: params, optimizer state, step, ...) and ``meta`` atomically."""
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
    payload = {
        "state": serialization.to_state_dict(host),
        "meta": json.dumps(to_jsonable(meta or {})),
    }
    return atomic_write_bytes(path, serialization.msgpack_serialize(payload))


def load_checkpoint(path, template):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
      path: the file.
      template: a pytree with the same structure (e.g. a freshly initialised
        state); its leaves give the structure, the file gives the values.
    Returns:
      ``(tree, meta)``.
    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      ValueError: the file does not match the template's structure.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = serialization.msgpack_restore(path.read_bytes())
    try:
        tree = serialization.from_state_dict(template, payload["state"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {path} does not match the expected structure: {e}") from e
    return tree, json.loads(payload.get("meta", "{}"))


def checkpoint_exists(path) -> bool:
    return os.path.exists(path)
