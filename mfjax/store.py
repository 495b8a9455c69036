"""Result files: atomic writes and one resumable, config-hashed results store.

Layer: the bottom, beside :mod:`mfjax.core` (numpy and the standard library
only; no other mfjax import), so that every layer above -- checkpoints in
``models``, ``compare``, the CLI, the experiments and the benchmarks -- can
write results the same way.

Atomicity: a file is written to a temporary file in the same directory,
flushed, ``fsync``-ed and renamed over the target (``os.replace``), so a
reader, or a run resumed after a crash, sees the old file or the whole new
one, never a torn file.

Resume rule (the one rule of the library): a stored record is reused when it
can be read and its ``config_hash`` equals the hash of the configuration
that would produce it now,

.. math::  h(c) = \\mathrm{sha256}(\\mathrm{json}(c,\\ \\text{sorted keys}))[:d],

so a deleted record or a changed configuration is recomputed and nothing
else.  A record is also refused -- named with its reason
(:func:`inspect_record`) and recomputed -- when it is not UTF-8, not
complete JSON (torn, truncated), not a JSON object, its content checksum

.. math::  s(r) = \\mathrm{sha256}(\\mathrm{json}(r \\setminus \\{\\texttt{record\\_checksum}\\},\\ \\text{sorted keys, compact}))

(:func:`record_checksum`, stamped by every save) does not match (edited by
hand, corrupted), it records a failed run (``error`` set: retried), or a
caller's check (expected fields such as the data checksum, required fields)
fails.  :class:`ResultStore` keeps one file per record (``mfjax compare``'s
runs, the DMF tables' tasks); :class:`ResultDocument` keeps named parts in
one JSON file (the experiment scripts), each part reused when its own
configuration matches.

>>> import tempfile
>>> store = ResultStore(tempfile.mkdtemp())
>>> calls = []
>>> rec = store.get_or_compute("run-a", {"steps": 3}, lambda: calls.append(1) or {"loss": 0.5})
>>> rec = store.get_or_compute("run-a", {"steps": 3}, lambda: calls.append(1) or {"loss": 0.5})
>>> len(calls), rec["loss"]
(1, 0.5)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Mapping

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "to_jsonable",
    "config_hash",
    "CHECKSUM_FIELD",
    "record_checksum",
    "inspect_record",
    "read_record",
    "ResultStore",
    "ResultDocument",
]


# ------------------------------------------------------------------ atomic writes
def atomic_write_bytes(path, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (temp file, ``fsync``, ``os.replace``).

    Args:
      path: target file; missing parent directories are created.
      data: the bytes.

    Returns:
      The target as a :class:`pathlib.Path`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> pathlib.Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy / JAX scalars and arrays (nested in dicts, lists) to JSON types.

    Non-finite floats become ``None`` so the files are strict JSON.

    >>> to_jsonable({"a": np.float32(0.5), "b": np.array([1.0, np.nan])})
    {'a': 0.5, 'b': [1.0, None]}
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return [to_jsonable(v) for v in arr.tolist()]
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return to_jsonable(float(obj))
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def atomic_write_json(path, obj: Any) -> pathlib.Path:
    """Write ``to_jsonable(obj)`` as indented, key-sorted JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------ resume
def config_hash(config: Any, digits: int = 16) -> str:
    """``sha256`` of the key-sorted JSON of ``config`` (non-JSON values by ``str``), first ``digits`` hex digits.

    >>> config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})
    True
    """
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:digits]


#: The field holding a record's content checksum (:func:`record_checksum`).
CHECKSUM_FIELD = "record_checksum"


def _canonical(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def record_checksum(record: Mapping) -> str:
    """``"sha256:"`` + the SHA-256 of the canonical JSON of ``record`` without :data:`CHECKSUM_FIELD`.

    Canonical: :func:`to_jsonable` values, sorted keys, no spaces, so the
    checksum of a record as written equals that of the record as read back.

    >>> r = {"loss": np.float32(0.5), "name": "a"}
    >>> record_checksum(r) == record_checksum({"name": "a", "loss": 0.5, CHECKSUM_FIELD: "x"})
    True
    """
    body = {k: v for k, v in dict(record).items() if k != CHECKSUM_FIELD}
    return "sha256:" + hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _parse(path: pathlib.Path) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)`` for the JSON file at ``path``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"cannot be read ({type(e).__name__}: {e})"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 (byte {e.start}: {e.reason})"
    if not text.strip():
        return None, "empty file (an interrupted write?)"
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except json.JSONDecodeError as e:
        return None, f"not complete JSON (torn or truncated?): {e.msg} at line {e.lineno} column {e.colno}"
    except ValueError as e:
        return None, f"not strict JSON ({e})"


def _check(rec: Any, expected_hash, require_checksum, retry_errors, expect, validate) -> str | None:
    """Why the parsed record ``rec`` must not be reused, or ``None``."""
    if not isinstance(rec, dict):
        return f"not a JSON object (a {type(rec).__name__})"
    stamp = rec.get(CHECKSUM_FIELD)
    if stamp is None:
        if require_checksum:
            return f"no {CHECKSUM_FIELD} (written by hand or by an older version)"
    elif stamp != record_checksum(rec):
        return f"{CHECKSUM_FIELD} does not match its content (edited by hand or corrupted)"
    if expected_hash is not None and rec.get("config_hash") != expected_hash:
        return f"made with another configuration (config_hash {rec.get('config_hash')!r}, expected {expected_hash!r})"
    for field, want in (expect or {}).items():
        if rec.get(field) != to_jsonable(want):
            return f"{field} is {rec.get(field)!r}, expected {to_jsonable(want)!r}"
    if retry_errors and rec.get("error"):
        return f"a failed run ({str(rec['error'])[:120]}): retried"
    return validate(rec) if validate is not None else None


def inspect_record(path, expected_hash: str | None = None, *, require_checksum: bool = False,
                   retry_errors: bool = False, expect: Mapping | None = None,
                   validate: Callable[[dict], str | None] | None = None) -> tuple[dict | None, str | None]:
    """Read the JSON record at ``path`` and decide whether it may be reused.

    Args: ``expected_hash``, the ``config_hash`` it must carry (``None``: any);
    ``require_checksum``, refuse a record without :data:`CHECKSUM_FIELD` (one
    that has it is always verified); ``retry_errors``, refuse a record whose
    ``error`` is set; ``expect``, ``{field: value}`` it must carry (the data
    checksum); ``validate``, ``record -> reason or None``, the caller's checks.

    Returns:
      ``(record, None)`` when it may be reused, else ``(None, reason)``;
      the reason is ``"missing"`` for an absent file, otherwise a sentence
      (not UTF-8, torn JSON, not an object, checksum, configuration, ...).
    """
    rec, reason = _parse(pathlib.Path(path))
    if reason is None:
        reason = _check(rec, expected_hash, require_checksum, retry_errors, expect, validate)
    return (rec, None) if reason is None else (None, reason)


def read_record(path, expected_hash: str | None = None) -> dict | None:
    """The JSON record at ``path`` if it can be read and (when given) its ``config_hash`` is ``expected_hash``.

    A record carrying a :data:`CHECKSUM_FIELD` must match it.

    Returns:
      The record, or ``None`` when the file is missing, unreadable, not a
      JSON object, altered, or made with another configuration (recompute it).
    """
    return inspect_record(path, expected_hash)[0]


class ResultStore:
    """A directory of JSON records, one file per key, each tagged with its configuration's hash.

    Every saved record carries its ``config_hash`` and its content checksum
    (:data:`CHECKSUM_FIELD`); :meth:`load` reuses a record only when
    :func:`inspect_record` accepts it and otherwise reports why (``log``).

    Args:
      root: the directory (created on first write).
      digits: hex digits of the configuration hash (16; the DMF tables use 12).
      resume: ``False`` recomputes every record (``--no-resume``).
      require_checksum: refuse records without a content checksum (``False``
        keeps reusing records written before checksums existed; a record
        with a checksum is always verified).
      retry_errors: a stored failed run (``error`` set) is recomputed.
      log: ``message -> None`` for refused records (``None``: silent).
    """

    def __init__(self, root, *, digits: int = 16, resume: bool = True, require_checksum: bool = False,
                 retry_errors: bool = True, log: Callable[[str], None] | None = None):
        self.root = pathlib.Path(root)
        self.digits = digits
        self.resume = resume
        self.require_checksum = require_checksum
        self.retry_errors = retry_errors
        self.log = log

    def hash(self, config: Any) -> str:
        """:func:`config_hash` of ``config`` with this store's digits."""
        return config_hash(config, self.digits)

    def path(self, key: str) -> pathlib.Path:
        """The file of record ``key`` (``/`` in keys becomes ``_``)."""
        return self.root / f"{key.replace('/', '_')}.json"

    def _hash(self, config, config_hash):  # an explicit hash, else that of ``config`` (or none)
        return config_hash if config_hash is not None else (None if config is None else self.hash(config))

    def inspect(self, key: str, config: Any = None, *, config_hash: str | None = None,
                expect: Mapping | None = None,
                validate: Callable[[dict], str | None] | None = None) -> tuple[dict | None, str | None]:
        """``(record, None)`` when record ``key`` may be reused, else ``(None, reason)`` (see :func:`inspect_record`)."""
        if not self.resume:
            return None, "not resuming"
        return inspect_record(self.path(key), self._hash(config, config_hash),
                              require_checksum=self.require_checksum, retry_errors=self.retry_errors,
                              expect=expect, validate=validate)

    def load(self, key: str, config: Any = None, *, config_hash: str | None = None,
             expect: Mapping | None = None, validate: Callable[[dict], str | None] | None = None) -> dict | None:
        """The stored record of ``key`` made with ``config`` (or with hash ``config_hash``), else ``None``.

        A file that exists but is refused is reported through ``log`` as
        ``"<path>: <reason>; recomputing"``.
        """
        rec, reason = self.inspect(key, config, config_hash=config_hash, expect=expect, validate=validate)
        if rec is None and self.log is not None and reason not in ("missing", "not resuming"):
            self.log(f"{self.path(key)}: {reason}; recomputing")
        return rec

    def save(self, key: str, record: Mapping, config: Any = None, *, config_hash: str | None = None) -> dict:
        """Write ``record`` (plus ``config_hash`` and its content checksum) atomically; return it as read back."""
        rec = to_jsonable({k: v for k, v in dict(record).items() if k != CHECKSUM_FIELD})
        h = self._hash(config, config_hash)
        if h is not None:
            rec["config_hash"] = h
        rec[CHECKSUM_FIELD] = record_checksum(rec)
        path = atomic_write_json(self.path(key), rec)
        return json.loads(path.read_text(encoding="utf-8"))

    def get_or_compute(self, key: str, config: Any, compute: Callable[[], Mapping], *,
                       on_error: Callable[[BaseException], Mapping] | None = None) -> dict:
        """The record of ``key`` for ``config``: loaded when stored with the same hash, else computed and saved.

        ``compute() -> dict`` is called only when no matching record exists;
        ``on_error(exception) -> dict`` stores a failed computation as that
        record instead of raising (a bad run does not stop a grid; with
        ``retry_errors`` it is computed again next time).  Returns the record
        in JSON types.
        """
        h = self.hash(config)
        old = self.load(key, config_hash=h)
        if old is not None:
            return old
        try:
            rec = compute()
        except Exception as e:  # noqa: BLE001  (reported through on_error)
            if on_error is None:
                raise
            rec = on_error(e)
        return self.save(key, rec, config_hash=h)

    def keys(self, pattern: str = "*") -> list[str]:
        """Keys of the stored records whose file name matches ``pattern`` (without ``.json``)."""
        return sorted(p.stem for p in self.root.glob(f"{pattern}.json"))


class ResultDocument:
    """One JSON file of named parts, rewritten atomically after each part (the experiment scripts' store).

    The file is reused only when its ``identity`` (data checksum, seed, split,
    quick mode: whatever makes the parts comparable) hashes the same; inside
    it a part is reused only when its own configuration matches, so changing
    one part's settings recomputes that part alone.

    Args:
      path: the JSON file.
      identity: hashed into the document's ``config_hash``.
      meta: other top-level fields (command, config, data, machine, ...).
      resume: ``False`` starts from an empty document.
    """

    def __init__(self, path, identity: Any, meta: Mapping | None = None, *, resume: bool = True,
                 digits: int = 16):
        self.path = pathlib.Path(path)
        self.config_hash = config_hash(identity, digits)
        self.doc: dict = {**dict(meta or {}), "config_hash": self.config_hash, "parts": {}}
        self.resumed: list[str] = []
        old = read_record(self.path, self.config_hash) if resume else None
        if old is not None:
            self.doc["parts"] = old.get("parts", {})
            self.resumed = list(self.doc["parts"])

    @property
    def parts(self) -> dict:
        """The finished parts, by name."""
        return self.doc["parts"]

    def has(self, key: str, cfg: Any = None) -> bool:
        """Whether part ``key`` is finished (with part configuration ``cfg`` when given)."""
        if key not in self.parts:
            return False
        return cfg is None or self.parts[key].get("part_config") == to_jsonable(cfg)

    def get(self, key: str) -> dict:
        """The finished part ``key``."""
        return self.parts[key]

    def put(self, key: str, value: Mapping) -> dict:
        """Store part ``key`` and rewrite the file; return the part as read back."""
        self.parts[key] = dict(value)
        self.save()
        return self.parts[key]

    def part(self, key: str, compute: Callable[[], Mapping], cfg: Any = None,
             log: Callable[[str], None] = print) -> dict:
        """The finished part ``key`` (same ``cfg``), or ``compute()`` timed (``wall_s``), stored and returned."""
        if self.has(key, cfg):
            log(f"  [resume] {key}")
            return self.get(key)
        t0 = time.perf_counter()
        value = dict(compute())
        value.setdefault("wall_s", time.perf_counter() - t0)
        if cfg is not None:
            value["part_config"] = cfg
        return self.put(key, value)

    def set(self, key: str, value: Any) -> None:
        """Set a top-level field and rewrite the file."""
        self.doc[key] = value
        self.save()

    def save(self) -> None:
        """Rewrite the file atomically (stamped ``updated`` and its content checksum); the in-memory
        document becomes its JSON form."""
        doc = to_jsonable({k: v for k, v in self.doc.items() if k != CHECKSUM_FIELD})
        doc["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        doc[CHECKSUM_FIELD] = record_checksum(doc)
        atomic_write_json(self.path, doc)
        self.doc = json.loads(self.path.read_text(encoding="utf-8"))
