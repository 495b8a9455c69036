"""Top-k with seen-item exclusion and ranking metrics, against straightforward numpy references."""

import math

import jax
import numpy as np
import pytest

import mfjax as mf


def _model(m, n, r=3, seed=0, biased=False):
    rng = np.random.default_rng(seed)
    U, V = rng.standard_normal((m, r)).astype(np.float32), rng.standard_normal((n, r)).astype(np.float32)
    if not biased:
        return mf.Factors(U, V)
    return mf.losses.BiasedFactors(U, V, rng.standard_normal(m).astype(np.float32),
                                 rng.standard_normal(n).astype(np.float32), np.float32(3.5))


def _dense_scores(p):
    s = np.asarray(p.U, np.float64) @ np.asarray(p.V, np.float64).T
    if isinstance(p, mf.losses.BiasedFactors):
        s = s + float(p.mean) + np.asarray(p.row_bias)[:, None] + np.asarray(p.col_bias)[None, :]
    return s


def _reference_top_k(p, k, seen):
    s = _dense_scores(p)
    out = []
    for i in range(s.shape[0]):
        cand = [j for j in range(s.shape[1]) if (i, j) not in seen]
        cand.sort(key=lambda j: (-s[i, j], j))
        out.append((cand + [-1] * k)[:k])
    return np.array(out)


@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_top_k_matches_a_dense_reference_and_never_returns_seen_items(biased, batch_size):
    train = mf.data.synthetic(23, 17, rank=2, density=0.3, seed=1)
    p = _model(23, 17, biased=biased)
    seen = set(zip(np.asarray(train.rows).tolist(), np.asarray(train.cols).tolist()))
    got = mf.ranking.top_k(p, 6, exclude=train, batch_size=batch_size)
    np.testing.assert_array_equal(got.items, _reference_top_k(p, 6, seen))
    assert not any((i, j) in seen for i, row in enumerate(got.items) for j in row)
    assert np.all(np.diff(got.scores, axis=1) <= 1e-6)


def test_top_k_for_chosen_users_ties_and_users_with_too_few_items():
    p = mf.Factors(np.ones((3, 1), np.float32), np.array([[1.0], [2.0], [2.0], [0.5]], np.float32))
    seen = mf.data.Ratings(np.array([2, 2, 2]), np.array([0, 1, 2]), np.ones(3, np.float32), (3, 4))
    got = mf.ranking.top_k(p, 3, exclude=seen, users=[2, 0])
    assert got.users.tolist() == [2, 0]
    assert got.items[1].tolist() == [1, 2, 0]              # tie 1 vs 2: the lower index first
    assert got.items[0].tolist() == [3, -1, -1]            # only item 3 left for user 2
    assert np.isneginf(got.scores[0, 1:]).all()


def test_top_k_bad_arguments_are_named():
    p = _model(5, 4)
    with pytest.raises(ValueError, match="k must be in"):
        mf.ranking.top_k(p, 5)
    with pytest.raises(ValueError, match="user ids"):
        mf.ranking.top_k(p, 2, users=[7])
    with pytest.raises(ValueError, match="shape"):
        mf.ranking.top_k(p, 2, exclude=mf.data.synthetic(6, 4, rank=1, density=0.5, seed=0))


def _reference_metrics(lists, relevant, k):
    """Per user, the textbook definitions (module docstring of mfjax.ranking.metrics)."""
    P, R, N, A, H = [], [], [], [], []
    for lst, rel in zip(lists, relevant):
        h = [1.0 if j in rel else 0.0 for j in lst[:k]]
        P.append(sum(h) / k)
        R.append(sum(h) / len(rel))
        H.append(float(sum(h) > 0))
        dcg = sum(x / math.log2(t + 2) for t, x in enumerate(h))
        idcg = sum(1 / math.log2(t + 2) for t in range(min(k, len(rel))))
        N.append(dcg / idcg)
        A.append(sum(h[t] * sum(h[:t + 1]) / (t + 1) for t in range(k)) / min(k, len(rel)))
    return {"precision": np.mean(P), "recall": np.mean(R), "ndcg": np.mean(N), "map": np.mean(A),
            "hit_rate": np.mean(H)}


def test_metrics_on_a_hand_made_case():
    # one user, list [a, b, c, d], relevant {b, d, z}: hits at ranks 2 and 4
    hits = np.array([[0, 1, 0, 1]])
    m = mf.ranking.ranking_from_hits(hits, np.array([3]), ks=(2, 4))
    assert m["precision@2"] == pytest.approx(0.5) and m["recall@4"] == pytest.approx(2 / 3)
    assert m["ndcg@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 0.5))
    assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert m["mrr"] == pytest.approx(0.5) and m["hit_rate@2"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_match_the_reference_on_random_models(seed):
    r = mf.data.synthetic(40, 30, rank=2, density=0.3, seed=seed)
    train, test = mf.data.split(r, (0.7, 0.3), seed=seed)
    p = _model(40, 30, seed=seed, biased=seed == 1)
    got = mf.ranking.ranking_metrics(p, test, exclude=train, ks=(3, 10), threshold=4.0)
    seen = set(zip(np.asarray(train.rows).tolist(), np.asarray(train.cols).tolist()))
    rel = {}
    for i, j, v in zip(np.asarray(test.rows), np.asarray(test.cols), np.asarray(test.values)):
        if v >= 4.0:
            rel.setdefault(int(i), set()).add(int(j))
    users = sorted(rel)
    lists = _reference_top_k(p, 10, seen)[users]
    assert got["users"] == len(users) and got["skipped_users"] == 40 - len(users)
    for k in (3, 10):
        ref = _reference_metrics(lists, [rel[u] for u in users], k)
        for name, v in ref.items():
            assert got[f"{name}@{k}"] == pytest.approx(v, abs=1e-9), (name, k)
    first = [next((t + 1 for t, j in enumerate(lst) if j in rel[u]), math.inf) for lst, u in zip(lists, users)]
    assert got["mrr"] == pytest.approx(np.mean([1 / f for f in first]))


def test_a_trained_model_ranks_better_than_a_random_one():
    r = mf.data.synthetic(300, 200, rank=4, density=0.1, seed=0)
    train, test = mf.data.split(r, (0.8, 0.2), seed=0)
    res = mf.solvers.als(train, 4, l2=2.0, num_steps=8, biases=True)
    good = mf.ranking.ranking_metrics(res.params, test, exclude=train, ks=(10,), threshold=4.0)
    rand = mf.ranking.ranking_metrics(_model(300, 200), test, exclude=train, ks=(10,), threshold=4.0)
    assert good["ndcg@10"] > 1.5 * rand["ndcg@10"]
