"""mfjax.eval: top-k lists and ranking metrics against plain numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfjax.core.factors import BiasedFactors, Factors
from mfjax.data import Ratings, split, synthetic
from mfjax.eval import exclusion_layout, hits_at_k, metrics_from_hits, ranking_metrics, top_k


# ------------------------------------------------------------------ references
def ref_scores(params):
    U, V = np.asarray(params.U, np.float64), np.asarray(params.V, np.float64)
    S = U @ V.T
    if isinstance(params, BiasedFactors):
        S = S + float(params.mean) + np.asarray(params.row_bias)[:, None] + np.asarray(params.col_bias)[None, :]
    return S


def ref_top_k(params, k, exclude=None, users=None):
    S = ref_scores(params)
    if exclude is not None:
        S[np.asarray(exclude.rows), np.asarray(exclude.cols)] = -np.inf
    users = np.arange(S.shape[0]) if users is None else np.asarray(users)
    out = []
    for u in users:
        order = sorted(range(S.shape[1]), key=lambda j: (-S[u, j], j))  # ties: lower index first
        out.append(order[:k])
    return np.asarray(out, np.int64).reshape(len(users), k), S


def ref_metrics(params, train, test, ks, threshold=None):
    m, n = test.shape
    K = max(ks)
    lists, S = ref_top_k(params, K, exclude=train)
    rel = {}
    for r, c, v in zip(np.asarray(test.rows), np.asarray(test.cols), np.asarray(test.values)):
        if threshold is None or v >= threshold:
            rel.setdefault(int(r), set()).add(int(c))
    out = {}
    users = sorted(rel)
    for k in ks:
        acc = {name: [] for name in ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")}
        for u in users:
            R = rel[u]
            lst = [j for j in lists[u][:k]]
            hit = [1.0 if (j in R and np.isfinite(S[u, j])) else 0.0 for j in lst]
            acc["precision"].append(sum(hit) / k)
            acc["recall"].append(sum(hit) / len(R))
            dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hit))
            idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(R))))
            acc["ndcg"].append(dcg / idcg)
            ap, nh = 0.0, 0
            for i, h in enumerate(hit):
                if h:
                    nh += 1
                    ap += nh / (i + 1)
            acc["map"].append(ap / min(k, len(R)))
            rr = next((1 / (i + 1) for i, h in enumerate(hit) if h), 0.0)
            acc["mrr"].append(rr)
            acc["hit_rate"].append(float(any(hit)))
        for name, v in acc.items():
            out[f"{name}@{k}"] = float(np.mean(v))
    out["n_users"] = len(users)
    out["n_users_skipped"] = m - len(users)
    return out


def random_case(seed, m=13, n=11, r=3, density=0.4, biased=False, ties=False):
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(m, r))
    V = rng.normal(size=(n, r))
    if ties:  # few distinct scores: many ties
        U, V = np.round(U), np.round(V)
    params = Factors(jnp.asarray(U, jnp.float32), jnp.asarray(V, jnp.float32))
    if biased:
        params = BiasedFactors(params.U, params.V, jnp.asarray(rng.normal(size=m), jnp.float32),
                               jnp.asarray(rng.normal(size=n), jnp.float32), jnp.asarray(3.5, jnp.float32))
    mask = rng.random((m, n)) < density
    rr, cc = np.nonzero(mask)
    vals = rng.integers(1, 6, size=rr.size).astype(float)
    allr = Ratings.create(rr, cc, vals, (m, n))
    train, test = split(allr, (0.7, 0.3), seed=seed)
    return params, train, test


def _f32_params(params):
    """Round-trip the factors through float32 so the reference ranks the same numbers."""
    return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


# ------------------------------------------------------------------ top_k
def test_top_k_hand_made_ties_and_exclusion():
    p = Factors(jnp.array([[1.0], [-1.0], [0.0]]), jnp.array([[0.1], [0.3], [0.3], [0.2]]))
    # user 0: scores .1 .3 .3 .2 -> ties 1, 2 (lower index first); user 2: all 0 -> 0, 1, 2
    assert top_k(p, 3).items.tolist() == [[1, 2, 3], [0, 3, 1], [0, 1, 2]]
    seen = Ratings.create([0, 0, 2], [1, 3, 0], [5.0, 4.0, 1.0], shape=(3, 4))
    tk = top_k(p, 3, exclude=seen)
    assert tk.items.tolist() == [[2, 0, 1], [0, 3, 1], [1, 2, 3]]
    # user 0 has only 2 unseen items: the third slot is an excluded item at -inf
    assert np.isneginf(np.asarray(tk.scores)[0, 2]) and np.isfinite(np.asarray(tk.scores)[1:]).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("biased", [False, True])
def test_top_k_matches_numpy_reference(seed, biased):
    params, train, _ = random_case(seed, biased=biased, ties=seed % 2 == 1)
    users = np.random.default_rng(seed).permutation(params.U.shape[0])[:9]
    for bs in (1, 4, 1024):
        tk = top_k(params, 5, exclude=train, users=users, batch_size=bs)
        want, S = ref_top_k(_f32_params(params), 5, exclude=train, users=users)
        np.testing.assert_array_equal(np.asarray(tk.items), want)
        np.testing.assert_allclose(np.asarray(tk.scores), np.take_along_axis(S[users], want, 1), rtol=1e-5)
        assert tk.users.tolist() == users.tolist()


def test_seen_items_are_never_recommended():
    ratings = synthetic(40, 30, rank=3, density=0.3, seed=1)
    train, test = split(ratings, (0.8, 0.2), seed=0)
    p = Factors(jnp.asarray(np.random.default_rng(0).normal(size=(40, 4)), jnp.float32),
                jnp.asarray(np.random.default_rng(1).normal(size=(30, 4)), jnp.float32))
    tk = top_k(p, 10, exclude=train, batch_size=7)
    seen = set(zip(np.asarray(train.rows).tolist(), np.asarray(train.cols).tolist()))
    items, scores = np.asarray(tk.items), np.asarray(tk.scores)
    for u in range(40):
        for j, s in zip(items[u], scores[u]):
            assert ((u, int(j)) in seen) == np.isneginf(s)
    # without exclusion the seen items do appear
    plain = np.asarray(top_k(p, 10).items)
    assert any((u, int(j)) in seen for u in range(40) for j in plain[u])


def test_exclusion_layout_is_per_batch_csr():
    seen = Ratings.create([0, 0, 2, 3, 3, 3], [1, 2, 0, 0, 1, 2], np.ones(6), shape=(4, 3))
    r, c = exclusion_layout(seen, np.array([3, 0, 2, 1]), 2, (4, 3))
    assert r.shape == c.shape == (2, 8)  # batch 0 holds 3 + 2 = 5 pairs -> padded to 8
    pairs0 = sorted((int(a), int(b)) for a, b in zip(r[0], c[0]) if a < 2)
    assert pairs0 == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]
    pairs1 = sorted((int(a), int(b)) for a, b in zip(r[1], c[1]) if a < 2)
    assert pairs1 == [(0, 0)]


@pytest.mark.parametrize("k,match", [(12, "exceeds the number of items"), (0, "positive"),
                                     (2.5, "positive"), (True, "positive")])
def test_bad_k_errors(k, match):
    p = Factors(jnp.ones((3, 2)), jnp.ones((11, 2)))
    with pytest.raises(ValueError, match=match):
        top_k(p, k)


def test_bad_inputs_error_clearly():
    p = Factors(jnp.ones((3, 2)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="exclude has shape"):
        top_k(p, 2, exclude=Ratings.create([0], [0], [1.0], shape=(3, 5)))
    with pytest.raises(ValueError, match="out of range"):
        top_k(p, 2, users=[0, 3])
    with pytest.raises(ValueError, match="non-finite"):
        top_k(Factors(p.U.at[0, 0].set(jnp.nan), p.V), 2)
    with pytest.raises(ValueError, match="batch_size"):
        top_k(p, 2, batch_size=0)
    test = Ratings.create([0], [0], [1.0], shape=(3, 4))
    with pytest.raises(ValueError, match="exceeds the number of items"):
        ranking_metrics(p, None, test, ks=(2, 5))
    with pytest.raises(ValueError, match="test has shape"):
        ranking_metrics(p, None, Ratings.create([0], [0], [1.0], shape=(2, 4)), ks=(2,))


# ------------------------------------------------------------------ metrics
def test_metrics_hand_made():
    # one user, R = 3 relevant, list of 4 with hits at ranks 1 and 3
    h = np.array([[True, False, True, False]])
    out = metrics_from_hits(h, np.array([3]), ks=(2, 4))
    assert out["precision@2"] == 0.5 and out["precision@4"] == 0.5
    assert out["recall@4"] == pytest.approx(2 / 3)
    assert out["ndcg@4"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    assert out["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert out["map@4"] == pytest.approx((1 + 2 / 3) / 3)
    assert out["map@2"] == pytest.approx(1 / 2)  # normalised by min(k, R) = 2
    assert out["mrr@4"] == 1.0 and out["hit_rate@2"] == 1.0
    late = metrics_from_hits(np.array([[False, False, True]]), np.array([1]), ks=(2, 3))
    assert late["mrr@2"] == 0.0 and late["mrr@3"] == pytest.approx(1 / 3) and late["hit_rate@2"] == 0.0
    assert late["ndcg@3"] == pytest.approx(1 / math.log2(4))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [None, 4])
def test_ranking_metrics_match_reference(seed, threshold):
    params, train, test = random_case(seed, m=17, n=12, biased=seed % 2 == 0, ties=seed == 3)
    got = ranking_metrics(params, train, test, ks=(1, 3, 5), threshold=threshold, batch_size=5)
    want = ref_metrics(_f32_params(params), train, test, (1, 3, 5), threshold)
    assert set(got) == set(want)
    for key, v in want.items():
        assert got[key] == pytest.approx(v, abs=1e-12), key


def test_users_without_relevant_items_are_skipped_and_counted():
    p = Factors(jnp.eye(3), jnp.eye(3))
    test = Ratings.create([0, 1], [0, 2], [5.0, 2.0], shape=(3, 3))
    out = ranking_metrics(p, None, test, ks=(1,), threshold=4)
    assert out["n_users"] == 1 and out["n_users_skipped"] == 2
    assert out["precision@1"] == 1.0 and out["ndcg@1"] == 1.0
    sub = ranking_metrics(p, None, test, ks=(1,), users=[1, 2])
    assert sub["n_users"] == 1 and sub["n_users_skipped"] == 1 and sub["precision@1"] == 0.0


def test_hits_ignore_excluded_items_in_the_test_set():
    # a test entry that is also a training entry is excluded, so never a hit
    p = Factors(jnp.array([[1.0]]), jnp.array([[3.0], [2.0]]))
    train = Ratings.create([0], [0], [5.0], shape=(1, 2))
    test = Ratings.create([0], [0], [5.0], shape=(1, 2))
    tk = top_k(p, 2, exclude=train)
    hits, n_rel = hits_at_k(tk, test)
    assert tk.items.tolist() == [[1, 0]] and hits.tolist() == [[False, False]] and n_rel.tolist() == [1]


def test_plain_pair_and_int_ks_are_accepted():
    params, train, test = random_case(7)
    a = top_k((params.U, params.V), 4, exclude=train)
    b = top_k(params, 4, exclude=train)
    np.testing.assert_array_equal(np.asarray(a.items), np.asarray(b.items))
    assert ranking_metrics(params, train, test, ks=3) == ranking_metrics(params, train, test, ks=(3,))
    with pytest.raises(ValueError, match="at least one"):
        ranking_metrics(params, train, test, ks=())
