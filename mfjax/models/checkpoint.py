"""Atomic, verified checkpoints of pytrees (flax msgpack): save, read, restore into a template.

A checkpoint is one msgpack file ``{"format", "state", "state_sha256",
"meta"}``: ``state`` is the msgpack bytes of the pytree's state dict,
``meta`` a JSON string and ``state_sha256`` the SHA-256 of both.  It is written to
a temp file and renamed over the target (``os.replace``,
:func:`mfjax.store.atomic_write_bytes`), so a reader (or a resumed run after
a crash) sees either the previous complete checkpoint or the new one, never
a torn file; a file damaged afterwards (truncated, emptied, overwritten with
garbage, a flipped bit in the arrays) is refused by :func:`read_checkpoint`
with a :class:`CorruptCheckpointError` naming the file and the problem.

Files of the previous layout (``{"state": <dict>, "meta": ...}``, no
checksum) are still read.

>>> import tempfile, pathlib, numpy as np
>>> p = pathlib.Path(tempfile.mkdtemp()) / "ck.msgpack"
>>> _ = save_checkpoint(p, {"w": np.arange(3.0)}, {"epoch": 2})
>>> tree, meta = load_checkpoint(p, {"w": np.zeros(3)})
>>> tree["w"].tolist(), meta
([0.0, 1.0, 2.0], {'epoch': 2})
>>> _ = p.write_bytes(p.read_bytes()[:20])
>>> read_checkpoint(p)  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
mfjax.models.checkpoint.CorruptCheckpointError: checkpoint ... is not a readable checkpoint: truncated, or not a msgpack file (ValueError)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import jax
import numpy as np
from flax import serialization

from mfjax.store import atomic_write_bytes, to_jsonable

__all__ = [
    "CHECKPOINT_FORMAT",
    "CorruptCheckpointError",
    "save_checkpoint",
    "read_checkpoint",
    "restore_checkpoint",
    "load_checkpoint",
    "checkpoint_exists",
]

#: The ``format`` tag of the checkpoints written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT = "mfjax-checkpoint-v2"


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: empty, truncated, garbage, altered; names the file."""


def _sha256(state: bytes, meta_json) -> str:
    h = hashlib.sha256(state)
    h.update(b"\0")
    h.update(meta_json.encode("utf-8") if isinstance(meta_json, str) else bytes(meta_json or b""))
    return "sha256:" + h.hexdigest()


def save_checkpoint(path, tree, meta: dict | None = None) -> pathlib.Path:
    """Write ``tree`` (any pytree of arrays: params, optimizer state, step, ...) and ``meta`` atomically.

    Args:
      path: the file (parent directories are created).
      tree: the pytree; its leaves are fetched to the host.
      meta: a JSON-able dict (numpy scalars and non-finite floats converted
        by :func:`mfjax.store.to_jsonable`).

    Returns:
      the path.
    """
    host = jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
    state = serialization.msgpack_serialize(serialization.to_state_dict(host))
    meta_json = json.dumps(to_jsonable(meta or {}))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state": state,
        "state_sha256": _sha256(state, meta_json),
        "meta": meta_json,
    }
    return atomic_write_bytes(path, serialization.msgpack_serialize(payload))


def _corrupt(path, problem: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"checkpoint {path} {problem}")


def _decode_payload(path: pathlib.Path, raw: bytes) -> dict:
    if not raw:
        raise _corrupt(path, "is empty (0 bytes: an interrupted copy or a full disk?)")
    try:
        payload = serialization.msgpack_restore(raw)
    except Exception as e:  # msgpack raises ValueError / ExtraData / TypeError on garbage
        raise _corrupt(path, "is not a readable checkpoint: truncated, or not a msgpack file "
                       f"({type(e).__name__})") from None
    if not isinstance(payload, dict) or "state" not in payload:
        raise _corrupt(path, "is not an mfjax checkpoint (no 'state' entry)")
    return payload


def _decode_state(path: pathlib.Path, payload: dict):
    state = payload["state"]
    if isinstance(state, dict):  # previous layout: the state dict inline, no checksum
        return state
    if not isinstance(state, (bytes, bytearray)):
        raise _corrupt(path, f"has a 'state' of type {type(state).__name__}, expected bytes")
    meta_json = payload.get("meta", "")
    if not isinstance(meta_json, (str, bytes)) or payload.get("state_sha256") != _sha256(bytes(state), meta_json):
        raise _corrupt(path, "fails its checksum (the arrays or the meta were altered or damaged)")
    try:
        return serialization.msgpack_restore(bytes(state))
    except Exception as e:
        raise _corrupt(path, f"has an unreadable state ({e})") from None


def read_checkpoint(path) -> tuple[dict, dict]:
    """Read and verify a checkpoint: ``(state dict, meta)``, without a template.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      CorruptCheckpointError: empty, truncated or garbage file, failed
        checksum, meta that is not a JSON object; the message names the file.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _corrupt(path, f"cannot be read ({type(e).__name__}: {e})") from None
    payload = _decode_payload(path, raw)
    state = _decode_state(path, payload)
    try:
        meta = json.loads(payload.get("meta", "{}"))
    except (TypeError, ValueError) as e:
        raise _corrupt(path, f"has a meta entry that is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _corrupt(path, f"has a meta entry that is a {type(meta).__name__}, not a JSON object")
    return state, meta


def restore_checkpoint(template, state: dict, path="<checkpoint>"):
    """Fill ``template``'s structure with the values of a state dict from :func:`read_checkpoint`.

    Raises:
      ValueError: the state does not match the template's structure
        (names the file).
    """
    try:
        return serialization.from_state_dict(template, state)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {path} does not match the expected structure: {e}") from e


def load_checkpoint(path, template):
    """Read a checkpoint written by :func:`save_checkpoint` into ``template``'s structure.

    Args:
      path: the file.
      template: a pytree with the same structure (e.g. a freshly initialised
        state); its leaves give the structure, the file gives the values.
    Returns:
      ``(tree, meta)``.
    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      CorruptCheckpointError: a damaged file (a ``ValueError``).
      ValueError: the file does not match the template's structure.
    """
    state, meta = read_checkpoint(path)
    return restore_checkpoint(template, state, path), meta


def checkpoint_exists(path) -> bool:
    """Whether a file exists at ``path`` (it may still be corrupt: :func:`read_checkpoint` checks)."""
    return os.path.exists(path)
