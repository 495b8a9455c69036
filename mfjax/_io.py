"""Deprecated: the atomic-write helpers moved to :mod:`mfjax.store` (kept one release)."""

from __future__ import annotations

import warnings

from mfjax.store import atomic_write_bytes, atomic_write_json, atomic_write_text, to_jsonable

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "to_jsonable"]

warnings.warn("mfjax._io is deprecated; import the helpers from mfjax.store", DeprecationWarning, stacklevel=2)
