"""Per-process data under ``mfjax launch``: each process builds only its rows, the results are the 1-process ones.

The 2-process run starts fresh interpreters (jax.distributed with gloo CPU collectives) under a timeout;
the 1-process reference runs the same script in this process on the union of the parts
(``--synthetic-sampler blocks --split hash``).
"""

import importlib.util
import io
import json
import pathlib
import re
import sys

import numpy as np
import pytest

from mfjax import compare
from mfjax.core import distributed

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "_perprocess_check.py"


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    return env


def _one_process(out, triplets):
    spec = importlib.util.spec_from_file_location("_perprocess_check", CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # no launcher environment: one process on the union data
    mod.main(str(out), str(triplets))


def _write_triplets(path, seed=0):
    """A small (user, item, rating) CSV with sparse, unsorted ids (the dense rows are the sorted distinct users)."""
    rng = np.random.default_rng(seed)
    keys = np.unique((rng.integers(0, 40, 600) * 7 + 3) * 1000 + rng.integers(0, 25, 600) * 11)
    keys = keys[rng.permutation(keys.size)]
    path.write_text("".join(f"{u},{i},{1 + (u + i) % 5}\n" for u, i in zip(keys // 1000, keys % 1000)))
    return path


def _keys(part):
    return np.asarray(part["rows"], np.int64) * 10_000 + np.asarray(part["cols"], np.int64)


pytestmark = pytest.mark.usefixtures("restore_mfjax_logger")  # tests/conftest.py


def test_two_processes_hold_only_their_rows_and_equal_one_process(tmp_path):
    err = io.StringIO()
    triplets = _write_triplets(tmp_path / "ratings.csv")
    rc = distributed.launch([sys.executable, str(CHECK), str(tmp_path / "two"), str(triplets)], 2, timeout_s=240,
                            stdout=io.StringIO(), stderr=err, env=_env())
    log = err.getvalue()
    assert rc == 0, log[-3000:]
    _one_process(tmp_path / "one", triplets)
    one = json.loads((tmp_path / "one" / "part_0.json").read_text())
    parts = [json.loads((tmp_path / "two" / f"part_{k}.json").read_text()) for k in (0, 1)]
    m = one["describe"]["shape"][0]
    # the row ranges partition the rows; each process's train and test parts hold only its rows ...
    assert [p["row_range"] for p in parts] == [[0, m // 2], [m // 2, m]] and one["row_range"] is None
    for p in parts:
        lo, hi = p["row_range"]
        for what in ("train", "test"):
            rows = np.asarray(p[what]["rows"])
            assert rows.size and lo <= rows.min() and rows.max() < hi, (p["process"], what)
        # ... and says so in the launch log (each process, every CLI command: _problem, fit, compare)
        k = p["process"]
        line = (f"[p{k}] mfjax: process {k}/2 holds rows {lo}..{hi - 1} only: {len(p['train']['rows'])} train + "
                f"{len(p['test']['rows'])} test ratings (of {len(one['train']['rows'])} + {len(one['test']['rows'])})")
        assert log.count(line) == 3, (line, log[-3000:])
        assert log.count(f"[p{k}] mfjax: process {k}/2 holds rows ") == 4  # and for the triplet file
    # ... and together they are exactly the 1-process split of the union data
    for what in ("train", "test"):
        for f in ("rows", "cols", "values"):
            assert np.concatenate([p[what][f] for p in parts]).tolist() == one[what][f], (what, f)
    assert not np.intersect1d(_keys(parts[0]["train"]), _keys(parts[1]["train"])).size
    # the description: global counts, the layout named, a checksum combined over the parts
    two_d, one_d = parts[0]["describe"], one["describe"]
    assert parts[1]["describe"] == two_d  # every process describes the same problem
    for k in ("train_nnz", "test_nnz", "shape", "rating_scale", "split_method"):
        assert two_d[k] == one_d[k], k
    assert "per-process rows" in two_d["data_layout"] and "data_layout" not in one_d
    assert two_d["row_ranges"] == [p["row_range"] for p in parts]
    assert two_d["data_checksum"] != one_d["data_checksum"]  # the parts' checksums, combined
    # mfjax fit and mfjax compare: the same numbers as one process on the union data
    two_fit = json.loads((tmp_path / "two" / "fit.json").read_text())
    one_fit = json.loads((tmp_path / "one" / "fit.json").read_text())
    assert two_fit["fit_rc"] == one_fit["fit_rc"] == 0 and two_fit["fit"]["processes"] == 2
    for k in ("initial_loss", "final_loss", "test_rmse", "train_rmse", "test_rmse_clipped"):
        assert two_fit["fit"][k] == pytest.approx(one_fit["fit"][k], rel=1e-5), k
    assert two_fit["fit"]["final_loss"] < 0.9 * two_fit["fit"]["initial_loss"]  # it optimised
    recs = {w: {r["name"]: r for r in json.loads((tmp_path / w / "cmp" / "results.json").read_text())}
            for w in ("one", "two")}
    a, b = recs["two"]["gd+armijo"], recs["one"]["gd+armijo"]
    assert a["error"] is None and a["status"] == b["status"] == "max_steps"
    for k in ("initial_loss", "final_loss", "test_rmse", "train_rmse"):
        assert a[k] == pytest.approx(b[k], rel=1e-5), k
    ev_a, ev_b = (np.asarray(r["trace"]["eval_rmse"], float) for r in (a, b))
    assert np.isfinite(ev_a).sum() == 4  # every 2 of 8 steps
    np.testing.assert_allclose(ev_a, ev_b, rtol=1e-5)  # the held-out RMSE inside the loop is global too
    # ALS runs on the per-process rows (one exchange of column blocks): the 1-process ALS on the union
    assert two_fit["compare_rc"] == one_fit["compare_rc"] == 0
    a, b = recs["two"]["solver-als"], recs["one"]["solver-als"]
    assert a["error"] is None and a["status"] == b["status"] == "max_steps"
    for k in ("initial_loss", "final_loss", "test_rmse", "train_rmse"):
        assert a[k] == pytest.approx(b[k], rel=1e-4), k
    for k in ("loss", "eval_rmse"):
        np.testing.assert_allclose(np.asarray(a["trace"][k], float), np.asarray(b["trace"][k], float), rtol=1e-4)
    assert not re.search(r"run solver-als failed", log)
    # DSGD and vector descent run on the per-process rows too (DSGD: one block row per process; its equality
    # with 1-process DSGD on the same blocks is tests/test_als_parts.py): they ran and lowered the loss
    for name in ("solver-dsgd", "solver-vector_descent"):
        a = recs["two"][name]
        assert a["error"] is None and a["status"] == "max_steps" and a["final_loss"] < a["initial_loss"], name
    # vector descent on the parts is the 1-process vector descent on the union
    a, b = recs["two"]["solver-vector_descent"], recs["one"]["solver-vector_descent"]
    for k in ("initial_loss", "final_loss", "test_rmse", "train_rmse"):
        assert a[k] == pytest.approx(b[k], rel=1e-4), k
    # a triplet file: each process streamed only its rows; the same fit as one process with the hash split
    assert two_fit["file_rc"] == one_fit["file_rc"] == 0
    assert "per-process rows" in two_fit["file_fit"]["problem"]["data_layout"]
    for k in ("initial_loss", "final_loss", "test_rmse", "train_nnz"):
        got, want = (f["file_fit"].get(k, f["file_fit"]["problem"].get(k)) for f in (two_fit, one_fit))
        assert got == pytest.approx(want, rel=1e-5), k


def test_per_process_problems_in_one_process_are_the_parts_of_the_whole():
    """make_problem(part=(k, N)) with an exchange faked in one process: the parts of k = 0..N-1 hold exactly the
    union problem's entries, the global counts and the combined checksum; bad row ranges are named."""
    kw = dict(rank=3, l2=0.5, test_fraction=0.2, seed=4,
              synthetic_kwargs={"m": 50, "n": 30, "density": 0.3, "rank": 3, "seed": 4})
    whole = compare.make_problem(split_method="hash", **{**kw, "synthetic_kwargs": {**kw["synthetic_kwargs"],
                                                                                    "sampler": "blocks"}})
    ranges = [(0, 10), (10, 33), (33, 50)]
    parts = _fake_exchange(lambda k, g: compare.make_problem(part=(k, 3), row_ranges=ranges, gather=g, **kw), 3)
    for what in ("train", "test"):
        got = np.concatenate([np.asarray(getattr(p, what).rows) for p in parts])
        np.testing.assert_array_equal(got, np.asarray(getattr(whole, what).rows))
        got = np.concatenate([np.asarray(getattr(p, what).values) for p in parts])
        np.testing.assert_array_equal(got, np.asarray(getattr(whole, what).values))
    d = parts[0].describe()
    assert d["train_nnz"] == whole.train.nnz and d["test_nnz"] == whole.test.nnz
    assert d["rating_scale"] == whole.describe()["rating_scale"]
    assert all(p.describe() == d for p in parts) and parts[1].part.row_range == (10, 33)
    with pytest.raises(ValueError, match=r"overlap on rows 8\.\.9"):
        compare.make_problem(part=(0, 2), row_ranges=[(0, 10), (8, 50)], gather=lambda x: x[None], **kw)
    with pytest.raises(ValueError, match=r"leave rows 40\.\.49 uncovered"):
        compare.make_problem(part=(0, 2), row_ranges=[(0, 20), (20, 40)], gather=lambda x: x[None], **kw)
    with pytest.raises(ValueError, match="2 row ranges for 3 processes"):
        compare.make_problem(part=(0, 3), row_ranges=[(0, 20), (20, 50)], gather=lambda x: x[None], **kw)
    with pytest.raises(ValueError, match="split_method='hash'"):
        compare.make_problem(part=(0, 2), split_method="random", gather=lambda x: x[None], **kw)
    with pytest.raises(ValueError, match="sampler='blocks'"):
        compare.make_problem(part=(0, 2), gather=lambda x: x[None],
                             **{**kw, "synthetic_kwargs": {**kw["synthetic_kwargs"], "sampler": "pairs"}})


def test_the_checksum_of_parts_names_their_order_and_one_process_gathers_itself():
    from mfjax.data import combine_checksums

    a, b = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
    assert combine_checksums([a, b]) != combine_checksums([b, a]) != combine_checksums([a])
    assert combine_checksums([a, b]).startswith("sha256:") and len(combine_checksums([a, b])) == 71
    with pytest.raises(ValueError, match="at least one"):
        combine_checksums([])
    x = np.array([1.0 + 2.0 ** -40, 3e12, -7.0])
    np.testing.assert_array_equal(distributed.allgather_host(x), x[None])  # exact, float64 kept


def test_the_grid_skips_the_single_device_solvers_on_per_process_data(tmp_path, monkeypatch):
    """On per-process data (a 2-part problem, its exchange faked; the skipped runs never reach a collective)
    ALS, vector descent and DSGD run on the parts; the grid skips SGD and NMF with one line naming the reason;
    an explicit run of them fails, naming ``--whole-data`` where the data is the reason."""
    from mfjax.compare import run as run_mod

    problem = compare.make_problem(part=(1, 2), gather=lambda x: np.stack([x, x]), rank=2,
                                   synthetic_kwargs={"m": 20, "n": 15, "density": 0.3})
    assert problem.part.row_range == (10, 20) and problem.describe()["train_nnz"] == 2 * problem.train.nnz
    specs = [compare.parse_run(f"solver:{s}") for s in ("sgd", "nmf")]
    # one process holding a part: the data is the reason
    with pytest.raises(ValueError, match="run 'solver-sgd': solver 'sgd' needs the whole data set.*--whole-data"):
        compare.run_one(specs[0], problem)
    monkeypatch.setattr(run_mod.jax, "process_count", lambda: 2)
    for ok in run_mod.PART_SOLVERS:
        assert run_mod.unsupported_reason(compare.parse_run(f"solver:{ok}"), problem) is None
    assert set(run_mod.PART_SOLVERS) == {"als", "vector_descent", "dsgd"}
    lines = []
    recs = compare.run_grid(problem, specs, tmp_path / "grid", progress=False, log=lines.append,
                            skip_unsupported=True)
    assert [r["status"] for r in recs] == ["skipped"] * 2 and len(lines) == 2
    assert all("one device only" in r["skipped"] for r in recs)


class _Sent(Exception):
    pass


def _fake_exchange(build, count):
    """Build the ``count`` parts of a per-process problem in one process: a first pass records what each part
    sends to the (one) exchange, the second hands every part the stacked numbers (what ``allgather_host``
    returns to every process)."""
    sent = []

    def record(x):
        sent.append(np.array(x))
        raise _Sent

    for k in range(count):
        with pytest.raises(_Sent):
            build(k, record)
    exchange = np.stack(sent)
    return [build(k, lambda x: exchange) for k in range(count)]


def test_a_triplet_file_per_process_holds_the_parts_of_the_whole_file(tmp_path):
    path = _write_triplets(tmp_path / "ratings.csv")
    kw = dict(rank=3, test_fraction=0.2, seed=1)
    whole = compare.make_problem(str(path), split_method="hash", **kw)
    parts = _fake_exchange(lambda k, g: compare.make_problem(str(path), part=(k, 3), gather=g, **kw), 3)
    ranges = [p.part.row_range for p in parts]
    assert mfdata_check(ranges, whole.train.shape[0]) and parts[0].part.row_ranges == tuple(ranges)
    for what in ("train", "test"):
        def entries(r):
            return sorted(zip(np.asarray(r.rows).tolist(), np.asarray(r.cols).tolist(), np.asarray(r.values).tolist()))
        got = sorted(sum((entries(getattr(p, what)) for p in parts), []))
        assert got == entries(getattr(whole, what)), what
        for p in parts:
            rows = np.asarray(getattr(p, what).rows)
            assert rows.size == 0 or p.part.row_range[0] <= rows.min() <= rows.max() < p.part.row_range[1]
    d = parts[2].describe()
    assert (d["train_nnz"], d["test_nnz"], d["rating_scale"]) == (whole.train.nnz, whole.test.nnz,
                                                                   whole.describe()["rating_scale"])
    with pytest.raises(ValueError, match="row_ranges apply to synthetic data"):
        compare.make_problem(str(path), part=(0, 2), row_ranges=[(0, 20), (20, 40)], gather=lambda x: x[None], **kw)


def test_a_movielens_release_per_process_holds_the_parts_of_the_release(tmp_path):
    """``--data ml-1m`` under the launcher: each process streams the release and keeps its users; the parts are
    the 1-process hash-split problem, with the release's documented rating scale."""
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(1, 80, 600) * 10_000 + rng.integers(1, 300, 600))
    text = "".join(f"{k // 10_000}::{k % 10_000}::{1 + k % 5}::97830{i % 10}\n" for i, k in enumerate(keys))
    (tmp_path / "ratings.dat").write_text(text)
    kw = dict(rank=3, test_fraction=0.2, seed=1, data_dir=str(tmp_path))
    whole = compare.make_problem("ml-1m", split_method="hash", **kw)
    parts = _fake_exchange(lambda k, g: compare.make_problem("ml-1m", part=(k, 2), gather=g, **kw), 2)
    for what in ("train", "test"):
        def entries(r):
            return sorted(zip(np.asarray(r.rows).tolist(), np.asarray(r.cols).tolist(), np.asarray(r.values).tolist()))
        assert sorted(sum((entries(getattr(p, what)) for p in parts), [])) == entries(getattr(whole, what)), what
    assert 0 < parts[0].train.nnz < whole.train.nnz
    d = parts[1].describe()
    assert (d["train_nnz"], d["rating_scale"]) == (whole.train.nnz, whole.describe()["rating_scale"])
    assert tuple(d["rating_scale"]) == (1.0, 5.0)


def mfdata_check(ranges, m):
    from mfjax.data import check_row_ranges

    return check_row_ranges(ranges, m) == list(ranges)



def test_the_mean_predictor_baseline_of_per_process_data_is_the_whole_one():
    """One process holding the only part (the exchange is then local): the baseline from the per-process sums
    equals the 1-process mean predictor's RMSE on the same split."""
    kw = dict(rank=2, synthetic_kwargs={"m": 40, "n": 20, "density": 0.3}, seed=2)
    part = compare.make_problem(part=(0, 1), **kw)
    whole = compare.make_problem(split_method="hash", **{**kw, "synthetic_kwargs": {**kw["synthetic_kwargs"],
                                                                                    "sampler": "blocks"}})
    assert part.part.row_ranges == ((0, 40),) and part.checksum != whole.checksum
    assert compare.baseline_rmse(part) == pytest.approx(
        compare.mean_predictor_rmse(whole.train.values, whole.test.values), rel=1e-12)
