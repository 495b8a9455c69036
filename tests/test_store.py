"""The results store: atomic files, the resume rule, and ``mfjax reproduce`` loading experiments by path."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest

from mfjax import cli, store


def test_atomic_json_is_strict_and_leaves_no_temp_files(tmp_path):
    path = store.atomic_write_json(tmp_path / "a" / "r.json", {"x": np.float32(1.5), "y": np.array([1.0, np.inf]),
                                                                 "n": np.int64(3), "b": np.bool_(True)})
    assert json.loads(path.read_text()) == {"x": 1.5, "y": [1.0, None], "n": 3, "b": True}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = store.atomic_write_text(tmp_path / "r.txt", "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError):
        store.atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_config_hash_is_the_historical_one():
    """Stored runs (``experiments/results``, ``results/compare``) keep resuming: same formula as before."""
    cfg = {"spec": {"kind": "opt", "direction": "gd"}, "num_steps": 30, "seed": 0}
    old = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    assert store.config_hash(cfg) == old[:16] and store.config_hash(cfg, 12) == old[:12]


def test_result_store_resumes_and_recomputes_only_what_changed(tmp_path):
    s = store.ResultStore(tmp_path / "runs")
    calls = []

    def compute(tag):
        return lambda: calls.append(tag) or {"value": np.float64(len(calls))}

    a = s.get_or_compute("a", {"steps": 3}, compute("a"))
    s.get_or_compute("b/c", {"steps": 3}, compute("b"))
    assert s.path("b/c").name == "b_c.json" and s.keys() == ["a", "b_c"]
    stamp = s.path("a").stat().st_mtime_ns
    assert s.get_or_compute("a", {"steps": 3}, compute("a2")) == a and calls == ["a", "b"]  # resumed
    assert s.path("a").stat().st_mtime_ns == stamp
    s.get_or_compute("a", {"steps": 4}, compute("a3"))  # changed configuration: recomputed
    s.path("b/c").unlink()
    s.get_or_compute("b/c", {"steps": 3}, compute("b2"))  # deleted: recomputed
    assert calls == ["a", "b", "a3", "b2"]
    s.path("a").write_text("{torn")
    assert s.load("a", {"steps": 4}) is None  # unreadable: recomputed, not an error
    assert store.ResultStore(tmp_path / "runs", resume=False).load("b/c", {"steps": 3}) is None


def test_result_store_records_errors_without_raising(tmp_path):
    s = store.ResultStore(tmp_path)

    def bad():
        raise ValueError("no such rule")

    rec = s.get_or_compute("bad", {}, bad, on_error=lambda e: {"error": f"{type(e).__name__}: {e}"})
    assert rec["error"] == "ValueError: no such rule" and rec["config_hash"] == s.hash({})
    with pytest.raises(ValueError):
        s.get_or_compute("bad2", {}, bad)


def test_result_document_parts(tmp_path):
    path = tmp_path / "results.json"
    doc = store.ResultDocument(path, {"seed": 0}, {"command": "x"})
    logs = []
    doc.part("p", lambda: {"v": 1}, cfg={"iters": 2}, log=logs.append)
    doc.part("q", lambda: {"v": 2}, log=logs.append)
    assert json.loads(path.read_text())["parts"]["p"]["part_config"] == {"iters": 2}
    again = store.ResultDocument(path, {"seed": 0}, {"command": "x"})
    assert again.resumed == ["p", "q"] and again.has("p", {"iters": 2}) and not again.has("p", {"iters": 3})
    again.part("p", lambda: {"v": 9}, cfg={"iters": 2}, log=logs.append)
    assert logs == ["  [resume] p"] and again.get("p")["v"] == 1
    assert store.ResultDocument(path, {"seed": 1}).parts == {}  # another identity: a fresh document


def test_io_shim_is_deprecated():
    import importlib
    import sys

    sys.modules.pop("mfjax._io", None)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        io_mod = importlib.import_module("mfjax._io")
    assert io_mod.atomic_write_json is store.atomic_write_json
    assert any(issubclass(x.category, DeprecationWarning) for x in w)


def test_reproduce_loads_experiments_by_path(tmp_path):
    for table, (rel, _) in cli.REPRODUCIBLE.items():
        module = cli.load_experiment(rel)
        assert callable(module.main) and callable(module.run), table
    with pytest.raises(FileNotFoundError, match="source checkout"):
        cli.load_experiment("experiments/slides_best_model.py", root=tmp_path)


def test_saved_records_carry_a_content_checksum_that_is_verified(tmp_path):
    logs = []
    s = store.ResultStore(tmp_path, require_checksum=True, log=logs.append)
    rec = s.save("a", {"loss": np.float32(0.25), "trace": {"loss": np.array([1.0, np.nan])}}, {"steps": 3})
    assert rec[store.CHECKSUM_FIELD] == store.record_checksum(rec)
    assert s.load("a", {"steps": 3}) == rec
    edited = dict(rec, loss=0.1)  # hand-edited, same configuration hash
    s.path("a").write_text(json.dumps(edited))
    assert s.load("a", {"steps": 3}) is None
    assert logs == [f"{s.path('a')}: record_checksum does not match its content (edited by hand or corrupted); "
                    "recomputing"]
    rec2, why = s.inspect("missing", {"steps": 3})
    assert rec2 is None and why == "missing" and len(logs) == 1  # an absent file is not reported


def test_records_without_checksum_only_where_legacy_files_are_allowed(tmp_path):
    """The DMF tables' committed records predate checksums: the default store still reuses them."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"config_hash": "abc", "metrics": {"rmse": 0.9}}))
    assert store.ResultStore(tmp_path).load("old", config_hash="abc")["metrics"] == {"rmse": 0.9}
    assert store.ResultStore(tmp_path, require_checksum=True).load("old", config_hash="abc") is None
    assert store.read_record(path, "abc") is not None


def test_failed_records_are_retried_by_get_or_compute(tmp_path):
    s = store.ResultStore(tmp_path)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("out of memory")
        return {"loss": 1.0}

    first = s.get_or_compute("r", {}, flaky, on_error=lambda e: {"error": f"{type(e).__name__}: {e}"})
    assert first["error"] == "MemoryError: out of memory"
    assert s.get_or_compute("r", {}, flaky, on_error=lambda e: {"error": str(e)}) == s.load("r", {})
    assert len(calls) == 2 and s.load("r", {})["loss"] == 1.0
    assert store.ResultStore(tmp_path, retry_errors=False).inspect("r", {})[1] is None


@pytest.mark.parametrize("content, reason", [
    (b"\x80abc", "not UTF-8"), (b"", "empty file"), (b'{"a": 1', "not complete JSON"),
    (b"[]", "not a JSON object (a list)"), (b'{"a": Infinity}', "not strict JSON"), (b"null", "a NoneType"),
])
def test_inspect_record_names_the_reason(tmp_path, content, reason):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    rec, why = store.inspect_record(path)
    assert rec is None and reason in why


def test_result_document_edited_by_hand_starts_fresh(tmp_path):
    path = tmp_path / "results.json"
    doc = store.ResultDocument(path, {"seed": 0})
    doc.part("p", lambda: {"v": 1}, log=lambda s: None)
    assert store.ResultDocument(path, {"seed": 0}).resumed == ["p"]
    raw = json.loads(path.read_text())
    raw["parts"]["p"]["v"] = 2
    path.write_text(json.dumps(raw))
    assert store.ResultDocument(path, {"seed": 0}).parts == {}
