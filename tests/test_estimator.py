"""The estimator facade (mfjax.estimator) and model selection (mfjax.selection)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mfjax as mf
from mfjax.estimator import CorruptModelError, Recommender
from mfjax.selection import cross_validate, grid_search, random_search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_DMF = {"dmf_config": {"row_widths": [16, 8], "col_widths": [16, 8]},
             "train_config": {"epochs": 2, "block_rows": 20, "block_cols": 20}}


@pytest.fixture(scope="module")
def data():
    ratings = mf.data.synthetic(m=50, n=36, rank=3, density=0.4, seed=1)
    return mf.data.split(ratings, (0.8, 0.2), seed=0)


@pytest.fixture(scope="module")
def als(data):
    return Recommender("als", rank=3, num_steps=6).fit(data[0])


# ------------------------------------------------------------------ predict / unknown ids
def test_predict_matches_the_factors_and_test_matches_metrics(als, data):
    train, test = data
    p = als.predict(np.asarray(test.rows), np.asarray(test.cols), clip=False)
    ref = np.asarray(mf.core.factors.predict(als.params, test.rows, test.cols))
    np.testing.assert_allclose(p.rating, ref, rtol=1e-6, atol=1e-6)
    assert not p.impossible.any()
    res = als.test(test)
    clipped = np.clip(ref, float(train.values.min()), float(train.values.max()))
    np.testing.assert_allclose(res["rmse"], np.sqrt(np.mean((clipped - np.asarray(test.values)) ** 2)), rtol=1e-6)
    assert res["n"] == test.nnz and res["fallbacks"] == {"none": test.nnz}


def test_unknown_ids_fall_back_as_declared(als, data):
    train = data[0]
    rows, cols, vals = (np.asarray(a) for a in (train.rows, train.cols, train.values))
    p = als.predict([10_000, 3, 10_000], [5, 10_000, 10_001])
    assert p.fallback.tolist() == ["item_mean", "user_mean", "global_mean"]
    np.testing.assert_allclose(p.rating, [vals[cols == 5].mean(), vals[rows == 3].mean(), vals.mean()], rtol=1e-6)
    g = als.clone(unknown="global").fit(train).predict([10_000, 3], [5, 10_000])
    np.testing.assert_allclose(g.rating, [vals.mean()] * 2, rtol=1e-6)
    strict = als.clone(unknown="error").fit(train)
    with pytest.raises(KeyError, match="unknown user id.*10000"):
        strict.predict([10_000], [5])
    with pytest.raises(KeyError, match="unknown item id"):
        strict.predict([0], [77_777])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="not a model name"):
        Recommender("solver:als")
    with pytest.raises(ValueError, match="unknown="):
        Recommender("als", unknown="zero")
    with pytest.raises(ValueError, match="biases=True"):
        Recommender("nmf", biases=True)
    with pytest.raises(ValueError, match="rank"):
        Recommender("als", rank=0)
    with pytest.raises(ValueError, match="JSON"):
        Recommender("als", init=object())
    train = mf.data.synthetic(m=8, n=6, rank=2, density=0.6, seed=0)
    with pytest.raises(ValueError, match="exceeds min"):
        Recommender("als", rank=7).fit(train)
    with pytest.raises(RuntimeError, match="not fitted"):
        Recommender("als").predict([0], [0])
    est = Recommender("als", rank=2, num_steps=2).fit(train)
    with pytest.raises(ValueError, match="disagree in length"):
        est.predict([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="k must be"):
        est.recommend(0, k=7)


# ------------------------------------------------------------------ recommend
def test_recommend_ranks_unseen_items_and_popular_for_unknown(als, data):
    train = data[0]
    m, n = train.shape
    rec = als.recommend([0, 4, "nobody"], k=5)
    U, V = np.asarray(als.params.U), np.asarray(als.params.V)
    scores = U @ V.T + np.asarray(als.params.col_bias)[None, :]
    seen = np.zeros((m, n), bool)
    seen[np.asarray(train.rows), np.asarray(train.cols)] = True
    for a, u in enumerate([0, 4]):
        s = np.where(np.asarray(seen[u]), -np.inf, scores[u])
        np.testing.assert_array_equal(rec.items[a], np.argsort(-s, kind="stable")[:5])
    counts = np.bincount(np.asarray(train.cols), minlength=n)
    np.testing.assert_array_equal(rec.items[2], np.lexsort((np.arange(n), -counts))[:5])
    assert rec.fallback.tolist() == ["none", "none", "popular"]
    everything = als.recommend(0, k=n, exclude_seen=False)
    assert sorted(everything.items[0].tolist()) == list(range(n))


# ------------------------------------------------------------------ pandas, string ids
def test_pandas_string_ids_round_trip(tmp_path):
    pd = pytest.importorskip("pandas")
    r = mf.data.synthetic(m=30, n=20, rank=2, density=0.5, seed=3)
    df = pd.DataFrame({"user": [f"u{i}" for i in np.asarray(r.rows)], "item": [f"movie-{j}" for j in np.asarray(r.cols)],
                       "rating": np.asarray(r.values)})
    est = Recommender("sgd", rank=2, num_steps=5).fit(df)
    p = est.predict(["u3", "u3", "stranger"], ["movie-4", "nope", "movie-4"])
    assert p.fallback.tolist() == ["none", "user_mean", "item_mean"]
    out = p.to_pandas()
    assert list(out.columns) == ["user", "item", "rating", "fallback"] and out.user.tolist()[0] == "u3"
    rec = est.recommend("u3", k=3)
    assert all(str(i).startswith("movie-") for i in rec.items[0])
    assert len(rec.to_pandas()) == 3
    est.save(tmp_path / "m.npz")
    back = Recommender.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.predict(["u3"], ["movie-4"]).rating, p.rating[:1])
    assert back.recommend("u3", k=3).items.tolist() == rec.items.tolist()
    res = est.test(df.iloc[:20])
    assert res["n"] == 20 and np.isfinite(res["rmse"])


# ------------------------------------------------------------------ save / load
_LOAD_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np
    from mfjax.estimator import Recommender
    est = Recommender.load(sys.argv[1])
    users, items = json.loads(sys.argv[2])
    p = est.predict(users, items)
    r = est.recommend(users[:3], k=4)
    print(json.dumps({"rating": p.rating.tolist(), "fallback": p.fallback.tolist(),
                      "items": r.items.tolist(), "config": est.config}))
""")


@pytest.mark.parametrize("model,kw", [("als", {}), ("gd+armijo", {"num_steps": 30}), ("nmf", {"num_steps": 20}),
                                      ("dmf-d", SMALL_DMF)])
def test_save_load_in_a_fresh_process_predicts_identically(model, kw, data, tmp_path):
    train = data[0]
    est = Recommender(model, rank=3, **kw).fit(train)
    path = est.save(tmp_path / "model.npz")
    users, items = [0, 1, 2, 49, 999], [0, 5, 35, 7, 3]
    out = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(path), json.dumps([users, items])],
                         capture_output=True, text=True, timeout=240, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    p = est.predict(users, items)
    np.testing.assert_array_equal(np.asarray(got["rating"]), p.rating)
    assert got["fallback"] == p.fallback.tolist()
    assert got["items"] == est.recommend(users[:3], k=4).items.tolist()
    assert got["config"] == est.config


def test_corrupt_or_foreign_files_are_refused(als, tmp_path):
    path = als.save(tmp_path / "m.npz")
    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptModelError, match="not a readable"):
        Recommender.load(tmp_path / "trunc.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param.U"] = arrays["param.U"] + 1.0
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(CorruptModelError, match="checksum mismatch"):
        Recommender.load(tmp_path / "edited.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CorruptModelError):
        Recommender.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        Recommender.load(tmp_path / "absent.npz")
    meta = json.loads(str(np.load(path)["__meta__"]))
    assert meta["data_checksum"] == mf.data.data_checksum(als.fitted.train)


# ------------------------------------------------------------------ selection
def test_cross_validate_matches_manual_folds(data):
    train = data[0]
    est = Recommender("als", rank=2, num_steps=3, l2=0.5)
    cv = cross_validate(est, train, k=3, seed=4)
    manual = [Recommender("als", rank=2, num_steps=3, l2=0.5).fit(tr).test(va)["rmse"]
              for tr, va in mf.data.kfold(train, k=3, seed=4)]
    np.testing.assert_allclose(cv.scores["rmse"], manual, rtol=1e-6)
    assert cv.mean["rmse"] == pytest.approx(np.mean(manual))


def test_grid_search_selects_on_validation_only_and_resumes(data, tmp_path, monkeypatch):
    train, test = data
    seen = []
    fit = Recommender.fit

    def spy(self, ratings, **kw):
        seen.append(mf.data.data_checksum(ratings) if hasattr(ratings, "rows") else None)
        seen_entries.update(zip(np.asarray(ratings.rows).tolist(), np.asarray(ratings.cols).tolist()))
        return fit(self, ratings, **kw)

    seen_entries: set = set()
    monkeypatch.setattr(Recommender, "fit", spy)
    est = Recommender("als", rank=2, num_steps=3)
    grid = {"l2": [0.01, 3.0, 30.0], "biases": [True, False]}
    res = grid_search(est, grid, train, k=2, seed=0, store=tmp_path / "store")
    test_entries = set(zip(np.asarray(test.rows).tolist(), np.asarray(test.cols).tolist()))
    assert not (seen_entries & test_entries)  # the test part never reached a fit
    assert len(res.records) == 6 and len(seen) == 6 * 2 + 1  # folds + the refit
    means = [r.mean["rmse"] for r in res.records]
    best = res.records[int(np.argmin(means))].params
    assert {k: best[k] for k in grid} == res.best_params and res.best_score == min(means)
    assert res.best_estimator.config["l2"] == res.best_params["l2"]
    seen.clear()
    again = grid_search(est, grid, train, k=2, seed=0, store=tmp_path / "store", refit=False)
    assert seen == [] and again.best_params == res.best_params  # every fold reused from the store
    frame = res.to_pandas()
    assert len(frame) == 6 and "mean_rmse" in frame.columns


def test_random_search_is_reproducible_and_checks_its_arguments(data):
    train = data[0]
    est = Recommender("als", rank=2, num_steps=2)
    dist = {"l2": (1e-3, 10.0, "log"), "num_steps": [2, 3]}
    a = random_search(est, dist, train, n_iter=3, k=2, seed=5, refit=False)
    b = random_search(est, dist, train, n_iter=3, k=2, seed=5, refit=False)
    assert [r.params for r in a.records] == [r.params for r in b.records]
    assert all(1e-3 <= r.params["l2"] <= 10.0 for r in a.records)
    with pytest.raises(ValueError, match="bad range"):
        random_search(est, {"l2": (1.0, 0.1, "log")}, train, n_iter=1, k=2)
    with pytest.raises(ValueError, match="n_iter"):
        random_search(est, dist, train, n_iter=0)
    with pytest.raises(ValueError, match="metric"):
        grid_search(est, {"l2": [1.0]}, train, metric="ndcg")
    with pytest.raises(ValueError, match="non-empty"):
        grid_search(est, {"l2": []}, train)
    with pytest.raises(ValueError, match="k must be"):
        cross_validate(est, train, k=1)
