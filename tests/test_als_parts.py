"""ALS, DSGD and vector descent on per-process rows (:mod:`mfjax.solvers.als_perprocess`,
:mod:`mfjax.solvers.dsgd_parts`, :mod:`mfjax.solvers.rowwise.parts`): the exchange's pure pieces in one
process, and 2 processes (fresh interpreters under ``distributed.launch``, timeout) equal to 1-process ALS /
DSGD / vector descent on the union."""

import functools
import importlib.util
import io
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

import mfjax as mf
from mfjax.core import distributed

ap = importlib.import_module("mfjax.solvers.als_perprocess")  # the module of mfjax.solvers.als_parts

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "_als_parts_check.py"


def _check_module():
    spec = importlib.util.spec_from_file_location("_als_parts_check", CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # no launcher environment: nothing is initialised
    return mod


def test_column_blocks_balance_ratings_or_columns():
    counts = np.array([10, 0, 0, 1, 1, 1, 1, 6, 0])
    e = ap.column_blocks(counts, 2)
    assert e.tolist()[0] == 0 and e.tolist()[-1] == 9
    per = [counts[a:b].sum() for a, b in zip(e[:-1], e[1:])]
    assert per == [10, 10]  # the first column alone reaches half of the 20 ratings
    assert ap.column_blocks(counts, 3, "columns").tolist() == [0, 3, 6, 9]
    assert ap.column_blocks(np.zeros(5), 2).tolist() == [0, 2, 5]
    e = ap.column_blocks(np.array([100, 1, 1]), 3)  # one heavy column: an empty block, never chosen
    assert e.tolist() == [0, 1, 2, 3] or (np.diff(e) >= 0).all()
    assert set(ap.block_of(np.arange(3), e).tolist()) <= {q for q in range(3) if e[q] < e[q + 1]}
    with pytest.raises(ValueError, match="balance must be one of"):
        ap.column_blocks(counts, 2, "rows")


def test_packing_sends_each_entry_to_its_column_block_and_the_all_to_all_is_a_transpose():
    """Three fake processes: packing by destination then the all-to-all (here a transpose of the buffers)
    gives process q exactly the union's entries of column block q, each once; padding has weight 0."""
    rng = np.random.default_rng(0)
    m, n, N = 30, 17, 3
    keys = np.unique(rng.integers(0, m * n, 200))
    rows, cols = keys // n, keys % n
    vals = rng.normal(size=keys.size).astype(np.float32)
    ranges = [(0, 4), (4, 20), (20, 30)]  # uneven
    edges = ap.column_blocks(np.bincount(cols, minlength=n), N)
    mine = [(rows >= lo) & (rows < hi) for lo, hi in ranges]
    dests = [ap.block_of(cols[s], edges) for s in mine]
    width = max(np.bincount(d, minlength=N).max() for d in dests)
    packed = [ap.pack_by_destination(rows[s], cols[s], vals[s], d, N, width) for s, d in zip(mine, dests)]
    for q in range(N):
        got = ap.Packed(*(np.stack([pk[f][q] for pk in packed]) for f in range(4)))  # all_to_all: out[p] = in_p[q]
        r, c, v = ap.unpack(got)
        want = (cols >= edges[q]) & (cols < edges[q + 1])
        assert sorted(zip(r.tolist(), c.tolist(), v.tolist())) == sorted(
            zip(rows[want].tolist(), cols[want].tolist(), vals[want].tolist()))
        assert np.asarray(got.weights).sum() == want.sum()
    with pytest.raises(ValueError, match="do not fit a width of 1"):
        ap.pack_by_destination(rows, cols, vals, np.zeros(rows.size, int), N, 1)


def test_one_process_is_als_and_bad_parts_are_named():
    tr = mf.data.synthetic(m=30, n=20, rank=2, density=0.3, seed=1)
    for gram, extra in ((True, {}), (False, {"biases": True, "weighted_l2": True}),
                        (True, {"method": "cg", "cg_steps": 2})):
        kw = dict(l2=0.5, num_steps=3, key=jax.random.key(0), **extra)
        a, b = ap.als_parts(tr, 2, row_ranges=[(0, 30)], gram=gram, **kw), mf.solvers.als(tr, 2, gram=gram, **kw)
        np.testing.assert_allclose(np.asarray(a.params.V), np.asarray(b.params.V), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(a.trace.loss), np.asarray(b.trace.loss), rtol=1e-5)
    # a long row (longer than a chunk) gets a Gram tier of its own; two tiers sum to the block's solution
    tiers = ap.part_gram_tiers(np.r_[np.zeros(40, int), np.arange(1, 6)], np.r_[np.arange(40), np.zeros(5, int)],
                               6, ap.process_mesh(), segment=4, chunk_entries=16)
    assert len(tiers) == 2 and np.asarray(tiers[1].mask).sum() == 40 and np.asarray(tiers[0].mask).sum() == 5
    with pytest.raises(ValueError, match="2 row ranges for 1 processes"):
        ap.part_als_problem(tr, [(0, 10), (10, 30)])
    with pytest.raises(ValueError, match=r"holds rows 3..12 but its range is 0..9"):
        ap.check_own_rows(np.array([3, 12]), (0, 10), 0)
    ap.check_own_rows(np.array([], int), (5, 5), 1)  # an empty part


def test_two_processes_with_uneven_parts_equal_one_process_on_the_union(tmp_path):
    err = io.StringIO()
    env = dict(__import__("os").environ)
    env["PYTHONPATH"] = str(ROOT) + __import__("os").pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    rc = distributed.launch([sys.executable, str(CHECK), str(tmp_path)], 2, timeout_s=240, stdout=io.StringIO(),
                            stderr=err, env=env)
    assert rc == 0, err.getvalue()[-3000:]
    parts = [json.loads((tmp_path / f"part_{k}.json").read_text()) for k in (0, 1)]
    mod = _check_module()
    train, test = mod.rows_block(0, mod.M)
    rows, cols = np.asarray(train.rows), np.asarray(train.cols)
    # the union has empty rows and columns; process 1 holds many more ratings than process 0
    assert (np.bincount(rows, minlength=mod.M) == 0).any() and (np.bincount(cols, minlength=mod.N) == 0).any()
    assert parts[1]["own"] > 4 * parts[0]["own"]
    # each process holds its rows' entries plus its column block's entries, nothing else
    edges = parts[0]["edges"]
    assert parts[1]["edges"] == edges and edges[0] == 0 and edges[-1] == mod.N
    for k, p in enumerate(parts):
        lo, hi = p["row_range"]
        assert p["own"] == p["train_nnz"] == int(((rows >= lo) & (rows < hi)).sum())
        assert p["received"] == int(((cols >= edges[k]) & (cols < edges[k + 1])).sum())
    assert parts[0]["received"] + parts[1]["received"] == train.nnz
    # balanced by rating count: the blocks differ by less than the largest column
    rec = [p["received"] for p in parts]
    assert abs(rec[0] - rec[1]) <= np.bincount(cols).max()
    # the ranges gathered from the rows each process holds are the given ones (vector descent ran on them)
    assert parts[0]["auto_ranges"] == parts[1]["auto_ranges"] == [list(r) for r in mod.RANGES]
    # DSGD: the row blocks are the processes' ranges, the column blocks balanced by global counts
    for p in parts:
        assert p["dsgd_held"] == p["own"]  # no rating leaves its process
        assert p["dsgd_row_edges"] == [0, 12, mod.M] and p["dsgd_col_edges"] == parts[0]["dsgd_col_edges"]
    assert parts[0]["dsgd_col_edges"] == mf.solvers.balanced_blocks(np.bincount(cols, minlength=mod.N),
                                                                              2).tolist()
    # replicated results, equal to 1-process ALS / DSGD (same blocks) on the union from the same init
    one_process = [(name, mf.solvers.als, kw) for name, kw in mod.CONFIGS.items()]
    one_process += [(name, functools.partial(mf.solvers.dsgd, blocks=2, row_bounds=[0, 12, mod.M]), kw)
                    for name, kw in mod.DSGD_CONFIGS.items()]
    one_process += [(name, mf.solvers.vector_descent, kw) for name, kw in mod.VD_CONFIGS.items()]
    for name, solver, kw in one_process:
        one = solver(train, mod.RANK, num_steps=5, key=jax.random.key(3), eval_set=test, **kw)
        got = parts[0][name]
        assert parts[1][name] == got, name
        for f, want in (("U", one.params.U), ("V", one.params.V), ("loss", one.trace.loss),
                        ("eval", one.trace.eval_metric)) + ((("b", one.params.row_bias), ("c", one.params.col_bias))
                                                            if kw.get("biases") else ()):
            want = np.asarray(want)
            np.testing.assert_allclose(np.asarray(got[f]), want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                       err_msg=f"{name}: {f}")


def test_row_ranges_gathered_from_the_parts(monkeypatch):
    """``part_row_ranges``: from 0 to each process's last row, gaps to the next process, an empty part an empty
    range, the last to ``m``; overlapping or out-of-order parts are named (the all-gather faked)."""
    tr = mf.data.synthetic(m=30, n=20, rank=2, density=0.3, seed=1)
    assert ap.part_row_ranges(tr) == [(0, 30)]
    for spans, want in (([[2, 9], [12, 20], [-1, -1], [21, 25]], [(0, 9), (9, 20), (20, 20), (20, 30)]),
                        ([[-1, -1], [0, 30]], [(0, 0), (0, 30)])):
        monkeypatch.setattr(ap, "_allgather", lambda x, s=spans: np.asarray(s))
        assert ap.part_row_ranges(tr) == want
    monkeypatch.setattr(ap, "_allgather", lambda x: np.asarray([[0, 12], [10, 30]]))
    with pytest.raises(ValueError, match="process 1 holds rows 10..29, which overlap"):
        ap.part_row_ranges(tr)


def test_one_process_dsgd_parts_is_dsgd_and_bad_parts_are_named():
    """One process: ``dsgd_parts`` is ``dsgd`` with one block (factors, losses and held-out RMSE equal); the
    row bounds of ``dsgd`` are checked; bad parts are named."""
    tr = mf.data.synthetic(m=30, n=20, rank=2, density=0.3, seed=1)
    kw = dict(l2=0.3, lr=0.05, biases=True, weighted_l2=True, batch_size=4, num_steps=3, key=jax.random.key(0),
              eval_set=tr)
    a, b = mf.solvers.dsgd_parts(tr, 2, row_ranges=[(0, 30)], **kw), mf.solvers.dsgd(tr, 2, **kw)
    for f in ("U", "V", "row_bias", "col_bias"):
        np.testing.assert_allclose(np.asarray(getattr(a.params, f)), np.asarray(getattr(b.params, f)),
                                   rtol=1e-5, atol=1e-6, err_msg=f)
    np.testing.assert_allclose(np.asarray(a.trace.loss), np.asarray(b.trace.loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a.trace.eval_metric), np.asarray(b.trace.eval_metric), rtol=1e-5)
    assert np.asarray(a.trace.loss)[-1] < np.asarray(a.trace.loss)[0]
    # explicit row blocks on one device: the same epochs as the balanced ones would give for these bounds
    c = mf.solvers.dsgd(tr, 2, blocks=2, row_bounds=[0, 7, 30], **kw)
    assert np.isfinite(np.asarray(c.trace.loss)).all()
    with pytest.raises(ValueError, match=r"row_bounds must be 3 non-decreasing edges from 0 to m = 30"):
        mf.solvers.dsgd(tr, 2, blocks=2, row_bounds=[0, 31, 30], **kw)
    with pytest.raises(ValueError, match="2 row ranges for 1 processes"):
        mf.solvers.part_dsgd_problem(tr, [(0, 10), (10, 30)])
    with pytest.raises(ValueError, match=r"row ranges leave rows 10..29 uncovered"):
        mf.solvers.dsgd_parts(tr, 2, row_ranges=[(0, 10)], **kw)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        mf.solvers.part_dsgd_problem(tr, [(0, 30)], batch_size=0)


def test_one_process_vector_descent_parts_is_vector_descent():
    """One process: ``vector_descent_parts`` (its row layouts built per process) is the one-device
    ``vector_descent`` (here with an optax row optimizer); bad parts are named."""
    import optax

    tr = mf.data.synthetic(m=30, n=20, rank=2, density=0.3, seed=1)
    kw = dict(l2=0.5, num_steps=3, key=jax.random.key(0), eval_set=tr, optimizer=optax.sgd(0.002), inner_steps=3)
    a, b = mf.solvers.vector_descent_parts(tr, 2, row_ranges=[(0, 30)], **kw), mf.solvers.vector_descent(tr, 2, **kw)
    for f in ("U", "V"):
        np.testing.assert_allclose(np.asarray(getattr(a.params, f)), np.asarray(getattr(b.params, f)),
                                   rtol=1e-5, atol=1e-6, err_msg=f)
    np.testing.assert_allclose(np.asarray(a.trace.loss), np.asarray(b.trace.loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a.trace.eval_metric), np.asarray(b.trace.eval_metric), rtol=1e-5)
    assert np.asarray(a.trace.loss)[-1] < np.asarray(a.trace.loss)[0]
    with pytest.raises(ValueError, match="pass key="):
        mf.solvers.vector_descent_parts(tr, 2, row_ranges=[(0, 30)], l2=0.5)
    with pytest.raises(ValueError, match="2 row ranges for 1 processes"):
        mf.solvers.vector_descent_parts(tr, 2, row_ranges=[(0, 10), (10, 30)], l2=0.5, key=jax.random.key(0))
