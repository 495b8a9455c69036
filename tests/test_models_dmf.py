"""DMF model pieces: sparse first layer, cosine head, branches, extendability inputs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax.models as mm
from mfjax.data import Ratings


def random_ratings(m=40, n=30, density=0.2, seed=0, empty_rows=(3,), empty_cols=(5,)):
    rng = np.random.default_rng(seed)
    mask = rng.random((m, n)) < density
    mask[list(empty_rows), :] = False
    mask[:, list(empty_cols)] = False
    r, c = np.nonzero(mask)
    return Ratings.create(r, c, rng.integers(1, 6, r.size), (m, n))


def test_csr_inputs_match_dense():
    R = random_ratings()
    X, _ = R.to_dense()
    X = np.asarray(X)
    for axis, ref in (("rows", X), ("cols", X.T)):
        csr = mm.csr_inputs(R, axis)
        dense = np.zeros_like(ref)
        dense[csr.row_ids(), csr.indices] = csr.values
        np.testing.assert_array_equal(dense, ref)
        assert csr.num_rows == ref.shape[0] and csr.dim == ref.shape[1]


@pytest.mark.parametrize("chunk", [None, 7])
def test_sparse_matmul_equals_dense(chunk):
    R = random_ratings()
    X = np.asarray(R.to_dense()[0])
    K = jax.random.normal(jax.random.PRNGKey(0), (R.shape[1], 16))
    out = mm.sparse_matmul(mm.full_batch(mm.csr_inputs(R, "rows"), chunk), K)
    np.testing.assert_allclose(np.asarray(out), X @ np.asarray(K), rtol=1e-5, atol=1e-5)


def test_gather_block_matches_numpy():
    R = random_ratings()
    csr = mm.csr_inputs(R, "rows")
    X = np.asarray(R.to_dense()[0])
    block = np.array([7, 3, 0, 12, 7], np.int32)  # includes an empty row and a repeat
    cap = int(csr.lengths()[block].sum()) + 5
    batch, entry, valid = mm.gather_block(jnp.asarray(csr.indptr), jnp.asarray(csr.indices),
                                          jnp.asarray(csr.values), jnp.asarray(block), cap)
    dense = np.zeros((block.size, R.shape[1]))
    np.add.at(dense, (np.asarray(batch.seg), np.asarray(batch.idx)), np.asarray(batch.vals))
    np.testing.assert_array_equal(dense, X[block])
    assert int(np.sum(valid)) == int(csr.lengths()[block].sum())
    assert np.all(np.asarray(batch.vals)[~np.asarray(valid)] == 0)


def test_cosine_values_and_zero_norm_safety():
    rng = np.random.default_rng(1)
    U, V = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    ref = np.sum(U * V, 1) / (np.linalg.norm(U, axis=1) * np.linalg.norm(V, axis=1))
    np.testing.assert_allclose(np.asarray(mm.cosine(jnp.asarray(U), jnp.asarray(V))), ref, rtol=1e-5)
    P = np.asarray(mm.pairwise_cosine(jnp.asarray(U), jnp.asarray(V)))
    assert P.shape == (6, 6) and np.all(np.abs(P) <= 1 + 1e-6)
    np.testing.assert_allclose(np.diag(P), ref, rtol=1e-5)
    # zero embeddings: value 0, gradients finite (no NaN)
    z = jnp.zeros((3, 5))
    v = jnp.asarray(V[:3], jnp.float32)
    assert np.all(np.asarray(mm.cosine(z, v)) == 0)
    for f in (lambda a, b: jnp.sum(mm.cosine(a, b)), lambda a, b: jnp.sum(mm.pairwise_cosine(a, b)),
              lambda a, b: jnp.sum(mm.cosine(a, b) ** 2)):
        ga, gb = jax.grad(f, argnums=(0, 1))(z, z)
        assert np.all(np.isfinite(np.asarray(ga))) and np.all(np.isfinite(np.asarray(gb)))
        ga, gb = jax.grad(f, argnums=(0, 1))(z, v)
        assert np.all(np.isfinite(np.asarray(ga))) and np.all(np.isfinite(np.asarray(gb)))


def test_unit_scaling_roundtrip():
    x = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(np.asarray(mm.to_unit(x, (1, 5))), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(np.asarray(mm.from_unit(mm.to_unit(x, (1, 5)), (1, 5))), np.asarray(x))


def test_config_presets_and_errors():
    a = mm.DMFConfig.authors()
    assert a.row_widths == (2048, 1024) and a.col_widths == (2048, 1024)
    assert a.use_bn and a.bn_last and a.activation == "relu" and a.dropout_rate == pytest.approx(0.9)
    assert mm.DMFConfig.authors_dmfd().dropout_rate == pytest.approx(0.8)
    with pytest.raises(ValueError, match="embedding sizes differ"):
        mm.DMFConfig(row_widths=(8, 4), col_widths=(8, 5))
    with pytest.raises(ValueError, match="activation"):
        mm.DMFConfig(activation="swish2")
    with pytest.raises(ValueError, match="dropout_rate"):
        mm.DMFConfig(dropout_rate=1.0)


CFG = mm.DMFConfig(row_widths=(16, 8), col_widths=(12, 8), dropout_rate=0.3)


@pytest.fixture(scope="module")
def model_and_vars():
    R = random_ratings()
    model, variables = mm.init_dmf(jax.random.PRNGKey(0), CFG, R.shape)
    # non-trivial BatchNorm statistics
    bs = jax.tree_util.tree_map(lambda a: a + 0.1 * jnp.arange(a.shape[0]) / a.shape[0], variables["batch_stats"])
    return R, model, {"params": variables["params"], "batch_stats": bs}


def test_branch_sparse_equals_dense_in_train_and_eval(model_and_vars):
    R, model, variables = model_and_vars
    csr = mm.csr_inputs(R, "rows")
    X = np.asarray(R.to_dense()[0])
    xs = mm.full_batch(csr)
    e_sparse = model.apply(variables, xs, train=False, method=mm.DMF.embed_rows)
    e_dense = model.apply(variables, jnp.asarray(X), train=False, method=mm.DMF.embed_rows)
    np.testing.assert_allclose(np.asarray(e_sparse), np.asarray(e_dense), rtol=1e-4, atol=1e-5)
    assert e_sparse.shape == (R.shape[0], 8)
    rngs = {"dropout": jax.random.PRNGKey(3)}
    (t_s, _) = model.apply(variables, xs, train=True, rngs=rngs, mutable=["batch_stats"], method=mm.DMF.embed_rows)
    (t_d, _) = model.apply(variables, jnp.asarray(X), train=True, rngs=rngs, mutable=["batch_stats"],
                           method=mm.DMF.embed_rows)
    np.testing.assert_allclose(np.asarray(t_s), np.asarray(t_d), rtol=1e-4, atol=1e-5)


def test_branch_layer_structure(model_and_vars):
    R, model, variables = model_and_vars
    p = variables["params"]["row_branch"]
    assert p["kernel0"].shape == (R.shape[1], 16) and p["fc1"]["kernel"].shape == (16, 8)
    assert set(variables["batch_stats"]["row_branch"]) == {"bn0", "bn1"}  # BN also on the last layer
    assert variables["params"]["col_branch"]["kernel0"].shape == (R.shape[0], 12)
    no_bn = mm.init_dmf(jax.random.PRNGKey(0), dataclasses.replace(CFG, use_bn=False), R.shape)[1]
    assert "batch_stats" not in no_bn


def _result_from(R, model, variables):
    """A DMFResult around given variables (no training), to test prediction plumbing."""
    return mm.DMFResult(model, variables, None, CFG, mm.TrainConfig(), mm.csr_inputs(R, "rows"),
                        mm.csr_inputs(R, "cols"), {}, 0, 0.0, 0, 0.0)


def test_predictions_shape_and_range(model_and_vars):
    R, model, variables = model_and_vars
    res = _result_from(R, model, variables)
    p = np.asarray(mm.predict(res, R.rows, R.cols))
    assert p.shape == (R.nnz,) and np.all(p >= 1 - 1e-5) and np.all(p <= 5 + 1e-5)
    pd = np.asarray(mm.predict(res, R.rows, R.cols, discrete=True))
    assert set(np.unique(pd)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.fixture(scope="module")
def ext_setup():
    full = random_ratings(m=60, n=50, density=0.3, seed=4, empty_rows=(), empty_cols=())
    import mfjax.data as d

    s = d.extendability_split(full, 0.2, 0.2, 0.5, (0.75, 0.05, 0.2), seed=0)
    model, variables = mm.init_dmf(jax.random.PRNGKey(1), CFG, full.shape)
    res = _result_from(s.train, model, variables)
    return s, res


def test_extension_inputs_use_only_allowed_entries(ext_setup):
    s, _ = ext_setup
    ri, ci = mm.extension_inputs(s.train, s.revealed, s.held_rows, s.held_cols)
    hr, hc = set(s.held_rows.tolist()), set(s.held_cols.tolist())
    # row branch: never a held-out column; held-out rows only from revealed entries
    assert not (set(ri.indices.tolist()) & hc)
    assert not (set(ci.indices.tolist()) & hr)
    allowed = set(zip(np.asarray(s.train.rows).tolist(), np.asarray(s.train.cols).tolist())) | set(
        zip(np.asarray(s.revealed.rows).tolist(), np.asarray(s.revealed.cols).tolist()))
    used = set(zip(ri.row_ids().tolist(), ri.indices.tolist())) | set(zip(ci.indices.tolist(), ci.row_ids().tolist()))
    assert used <= allowed
    tests = set()
    for t in s.test.values():
        tests |= set(zip(np.asarray(t.rows).tolist(), np.asarray(t.cols).tolist()))
    assert not (used & tests)


def test_extendability_predictions_depend_only_on_revealed(ext_setup):
    s, res = ext_setup
    base = mm.predict_areas(res, s.test, s.revealed, s.held_rows, s.held_cols)
    assert all(base[a].shape == (s.test[a].nnz,) for a in "I II III IV".split())
    assert all(np.all(np.isfinite(base[a])) for a in base)
    # changing test values changes no prediction (test entries are never inputs)
    tests2 = {a: t.with_values(6.0 - np.asarray(t.values)) for a, t in s.test.items()}
    other = mm.predict_areas(res, tests2, s.revealed, s.held_rows, s.held_cols)
    for a in base:
        np.testing.assert_array_equal(base[a], other[a])
    # changing one revealed entry of a held-out row changes that row's area II predictions only
    rr = np.asarray(s.revealed.rows)
    k = int(np.flatnonzero(np.isin(rr, s.held_rows))[0])
    t_row = rr[k]
    vals = np.asarray(s.revealed.values).copy()
    vals[k] = 1.0 if vals[k] != 1.0 else 5.0
    changed = mm.predict_areas(res, s.test, s.revealed.with_values(vals), s.held_rows, s.held_cols)
    in_row = np.asarray(s.test["II"].rows) == t_row
    assert in_row.any()
    assert np.any(np.abs(changed["II"][in_row] - base["II"][in_row]) > 1e-6)
    np.testing.assert_array_equal(changed["II"][~in_row], base["II"][~in_row])
    np.testing.assert_array_equal(changed["I"], base["I"])


def test_subsample_inputs_keeps_a_subset_of_each_vector():
    R = random_ratings(m=50, n=40, density=0.4, seed=2)
    csr = mm.csr_inputs(R, "rows")
    lens = csr.lengths()
    sub = mm.subsample_inputs(csr, 2 / 3, [0, 101])
    np.testing.assert_array_equal(sub.lengths(), np.round(2 / 3 * lens).astype(int))
    full = set(zip(csr.row_ids().tolist(), csr.indices.tolist(), csr.values.tolist()))
    kept = set(zip(sub.row_ids().tolist(), sub.indices.tolist(), sub.values.tolist()))
    assert kept <= full and len(kept) == sub.nnz
    # deterministic per seed, different across seeds
    again = mm.subsample_inputs(csr, 2 / 3, [0, 101])
    np.testing.assert_array_equal(again.indices, sub.indices)
    other = mm.subsample_inputs(csr, 2 / 3, [1, 101])
    assert not np.array_equal(other.indices, sub.indices)
    # only the selected vectors are thinned; keep_frac 1 is the identity
    part = mm.subsample_inputs(csr, 0.5, 0, rows=[0, 1, 2])
    assert np.all(part.lengths()[3:] == lens[3:]) and np.all(part.lengths()[:3] == np.round(0.5 * lens[:3]))
    ident = mm.subsample_inputs(csr, 1.0, 0)
    np.testing.assert_array_equal(ident.indices, csr.indices)
    np.testing.assert_array_equal(ident.values, csr.values)
    with pytest.raises(ValueError, match="keep_frac"):
        mm.subsample_inputs(csr, 1.5, 0)


def test_input_offset_centres_observed_entries_only(model_and_vars):
    R, _, variables = model_and_vars
    c = 3.5
    model_c = mm.DMF(dataclasses.replace(CFG, input_offset=c), *R.shape)
    X = np.asarray(R.to_dense()[0])
    xs = mm.full_batch(mm.csr_inputs(R, "rows"))
    e_sparse = model_c.apply(variables, xs, train=False, method=mm.DMF.embed_rows)
    e_dense = model_c.apply(variables, jnp.asarray(X), train=False, method=mm.DMF.embed_rows)
    # = the plain model fed the centred matrix (missing entries stay 0; the empty row 3 is unchanged)
    model_0 = mm.DMF(CFG, *R.shape)
    e_ref = model_0.apply(variables, jnp.asarray(np.where(X != 0, X - c, 0.0)), train=False,
                          method=mm.DMF.embed_rows)
    np.testing.assert_allclose(np.asarray(e_sparse), np.asarray(e_ref), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(e_dense), np.asarray(e_ref), rtol=1e-4, atol=1e-5)
    e_plain = model_0.apply(variables, xs, train=False, method=mm.DMF.embed_rows)
    np.testing.assert_allclose(np.asarray(e_sparse)[3], np.asarray(e_plain)[3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(e_sparse)[0], np.asarray(e_plain)[0])
    assert mm.DMFConfig().input_offset == 0.0  # default: the authors' raw inputs


@pytest.mark.parametrize("power", [0.5, 1.0])
def test_input_norm_divides_each_vector_by_its_count(model_and_vars, power):
    """input_norm = a: every vector enters as (x - c [observed]) / max(n_x, 1)^a (sparse = dense = numpy)."""
    R, _, variables = model_and_vars
    c = 3.5
    model_n = mm.DMF(dataclasses.replace(CFG, input_offset=c, input_norm=power), *R.shape)
    X = np.asarray(R.to_dense()[0])
    n_x = (X != 0).sum(1)
    Xc = np.where(X != 0, X - c, 0.0) / np.maximum(n_x, 1)[:, None] ** power
    ref = mm.DMF(CFG, *R.shape).apply(variables, jnp.asarray(Xc), train=False, method=mm.DMF.embed_rows)
    xs = mm.full_batch(mm.csr_inputs(R, "rows"))
    for x in (xs, jnp.asarray(X)):
        e = model_n.apply(variables, x, train=False, method=mm.DMF.embed_rows)
        np.testing.assert_allclose(np.asarray(e), np.asarray(ref), rtol=1e-4, atol=1e-5)
    assert mm.DMFConfig().input_norm == 0.0  # default: the authors' unnormalised inputs
    with pytest.raises(ValueError, match="input_norm"):
        mm.DMFConfig(input_norm=1.5)
