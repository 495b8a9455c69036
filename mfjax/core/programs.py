"""A disk cache of compiled programs (executables), so that a second process skips tracing too.

JAX's persistent compilation cache (``jax_compilation_cache_dir``) saves the
backend compilation of a program, but a new process still traces the Python
function to a jaxpr and lowers it to StableHLO before it can look the
program up; for a run whose step is a line search inside a scan that is
most of the time left.  :class:`ProgramCache` stores the compiled
executable itself (:mod:`jax.experimental.serialize_executable`) under a
key the caller gives, and loads it back without tracing.

The key of a program is the SHA-256 of

* the caller's description of everything static about it (for
  ``mfjax compare``: the run's spec, the problem's description with its data
  checksum, the step budget, ...; see :func:`mfjax.compare.run_one`),
* the arguments' tree structure, shapes, dtypes, weak types and shardings,
* the versions of jax, jaxlib and optax, the backend's platform and
  version, the devices' kinds and count,
* the hash of mfjax's own source files (:func:`source_hash`): any edit to
  the package invalidates every stored program.

A loaded program is the executable that compiling the same program would
produce (the same bytes the XLA cache would hand back), so results do not
depend on whether it came from disk.  Anything that cannot be stored (a
program with a host callback, several devices, an executable that JAX's own
cache handed back) is compiled as usual and not written; a file that cannot
be read is ignored and replaced.  So a first run stores its programs only
when it compiles them, e.g. with a fresh cache directory; a first run whose
programs all come from JAX's cache stores none and later runs trace as before.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import pickle
import tempfile
from typing import Any, Callable

__all__ = ["ProgramCache", "source_hash", "signature", "default_cache", "set_default_cache"]

_FORMAT = 1  # bump when the file layout changes


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 of every ``.py`` file of the mfjax package (relative path and bytes, sorted)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _leaf_signature(x) -> list:
    import jax

    aval = jax.typeof(x)
    sharding = getattr(x, "sharding", None)
    return [list(aval.shape), str(aval.dtype), bool(getattr(aval, "weak_type", False)),
            None if sharding is None else repr(sharding)]


def signature(args) -> dict:
    """The arguments as the program sees them: tree structure and per-leaf shape, dtype, weak type, sharding."""
    import jax

    leaves, tree = jax.tree.flatten(args)
    return {"tree": str(tree), "leaves": [_leaf_signature(x) for x in leaves]}


def _environment() -> dict:
    import jax
    import jaxlib

    try:
        import optax
        optax_version = optax.__version__
    except ImportError:  # pragma: no cover - optax is a dependency
        optax_version = None
    backend = jax.devices()[0].client
    return {"format": _FORMAT, "jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax_version,
            "platform": backend.platform, "platform_version": backend.platform_version,
            "devices": sorted({d.device_kind for d in jax.devices()}), "device_count": jax.device_count(),
            "config": {name: repr(getattr(jax.config, name, None)) for name in _CONFIG},
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "mfjax_source": source_hash()}


#: jax settings that change what a traced program computes (part of every key).
_CONFIG = ("jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion",
           "jax_default_prng_impl", "jax_threefry_partitionable", "jax_numpy_dtype_promotion",
           "jax_use_simplified_jaxpr_constants")


_HITS = {"count": 0, "listening": False}


def _on_event(event: str, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _HITS["count"] += 1


def _xla_cache_hits() -> int:
    """Programs this process has loaded from JAX's persistent compilation cache so far.

    An executable that came from that cache is not stored again: re-serialized, it loads but fails when run
    (jaxlib 0.10 on the CPU: ``NOT_FOUND: Function ... not found``), so only programs compiled in this
    process are written.
    """
    if not _HITS["listening"]:
        import jax.monitoring

        jax.monitoring.register_event_listener(_on_event)
        _HITS["listening"] = True
    return _HITS["count"]


def _custom_calls_ready() -> bool:
    """Initialise the CPU LAPACK kernels a loaded program may call (Cholesky, solves).

    Tracing does this lazily; a program that was not traced in this process would call uninitialised
    kernels and crash.  ``jax.export`` does the same before it runs a deserialized module.  ``False`` (load
    nothing) when this jax has no such hook.
    """
    try:
        from jax._src.lax import linalg

        linalg.initialize_lapack()
    except Exception:  # noqa: BLE001  (another jax: trace as usual)
        return False
    return True


class ProgramCache:
    """Compiled programs on disk, keyed by what determines them (see the module docstring).

    ``cache.compile(lower, key, args)`` returns ``lower().compile()`` -- or the
    stored executable of an earlier process with the same key, without calling
    ``lower`` (no tracing, no lowering, no compilation).  ``hits`` and
    ``misses`` count this process's look-ups.

    Args:
      directory: where the ``.bin`` files go (created on first write).
    """

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self.hits = 0
        self.misses = 0
        self._memo: dict = {}  # path -> executable: a second look-up in this process reads no file

    def key(self, key: Any, args) -> str:
        """The file name (hex SHA-256) of the program ``key`` compiled for ``args``."""
        blob = json.dumps({"key": key, "args": signature(args), "env": _environment()}, sort_keys=True,
                          default=repr)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, key: Any, args) -> pathlib.Path:
        return self.directory / f"{self.key(key, args)}.bin"

    @staticmethod
    def storable() -> bool:
        """Programs are stored only in a one-process, one-device run (a loaded executable is bound to devices)."""
        import jax

        return jax.process_count() == 1 and jax.device_count() == 1

    def compile(self, lower: Callable[[], Any], key: Any, args, call_args=None):
        """``lower().compile()``, read from / written to the cache when :meth:`storable`.

        ``args``: what the key's signature is taken from; ``call_args`` (default ``args``): a pytree with
        the structure of the positional arguments the program will be called with.  A loaded program
        takes its input structure from them, not from the file: pytree metadata compared by identity
        (e.g. a ``Ratings``' id maps) does not survive pickling.
        """
        if not self.storable():
            return lower().compile()
        path = self.path(key, args)
        if path in self._memo:
            self.hits += 1
            return self._memo[path]
        compiled = self._load(path, args if call_args is None else call_args)
        if compiled is not None:
            self.hits += 1
            self._memo[path] = compiled
            return compiled
        self.misses += 1
        before = _xla_cache_hits()
        compiled = lower().compile()
        if _xla_cache_hits() == before:  # compiled here, not loaded from XLA's cache (see _xla_cache_hits)
            self._save(path, compiled)
        self._memo[path] = compiled
        return compiled

    @staticmethod
    def _load(path: pathlib.Path, call_args):
        import jax
        from jax.experimental import serialize_executable

        if not _custom_calls_ready():
            return None
        try:
            with open(path, "rb") as f:
                payload, in_tree, out_tree = pickle.load(f)
            here = jax.tree.structure((tuple(call_args), {}))
            if here.num_leaves != in_tree.num_leaves or str(here) != str(in_tree):
                return None
            return serialize_executable.deserialize_and_load(payload, here, out_tree)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001  (a truncated / foreign file is recompiled and replaced)
            return None

    def _save(self, path: pathlib.Path, compiled) -> None:
        from jax.experimental import serialize_executable

        try:
            blob = pickle.dumps(serialize_executable.serialize(compiled))
        except Exception:  # noqa: BLE001  (host callbacks, constants: not storable, compiled each time)
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
        except OSError:
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass


_DEFAULT: list = [None]


def default_cache():
    """The process's default :class:`ProgramCache` (``None`` unless :func:`set_default_cache` set one).

    The solver aliases (:func:`mfjax.solvers.sgd`, :func:`mfjax.solvers.als`) store their compiled runs
    there; :func:`mfjax.cli.enable_compile_cache` sets it next to the XLA cache.
    """
    return _DEFAULT[0]


def set_default_cache(cache) -> None:
    """Set (a :class:`ProgramCache`) or clear (``None``) the process's default program cache."""
    if cache is not None and not isinstance(cache, ProgramCache):
        raise TypeError(f"expected a ProgramCache or None, got {type(cache).__name__}")
    _DEFAULT[0] = cache
