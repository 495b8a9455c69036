"""DMF with side features as extra first-layer inputs (DMFConfig.side_dims, mfjax.models.dmf_side)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax.data as mdata
import mfjax.models as mm
from mfjax.data import Ratings

CFG = mm.DMFConfig(row_widths=(32, 16), col_widths=(32, 16), dropout_rate=0.1)
TC = mm.TrainConfig(epochs=3, block_rows=40, block_cols=40, learning_rate=3e-3, lr_decay_every=1000,
                    eval_every=1, checkpoint_every=10)


@pytest.fixture(scope="module")
def data():
    r = mdata.synthetic(120, 90, rank=3, density=0.25, noise=0.2, seed=0)
    return mdata.split(r, (0.8, 0.2), seed=0)


def _features(shape, dims, seed=0):
    rng = np.random.default_rng(seed)
    return mm.SideFeatures(rng.standard_normal((shape[0], dims[0])).astype(np.float32),
                           rng.standard_normal((shape[1], dims[1])).astype(np.float32))


def _with_plain_params(side_vars, plain_vars, seed=1):
    """``side_vars`` with every parameter of ``plain_vars`` copied in and random nonzero side kernels."""
    params = jax.tree_util.tree_map(lambda x: x, dict(side_vars["params"]))
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    for b, k in zip(("row_branch", "col_branch"), keys):
        ks = side_vars["params"][b]["kernel0_side"]
        params[b] = {**plain_vars["params"][b], "kernel0_side": jax.random.normal(k, ks.shape)}
    return {"params": params, "batch_stats": plain_vars["batch_stats"]}


# ----------------------------------------------------------------------------- zero features = plain DMF
def test_zero_features_give_plain_dmf_embeddings_and_predictions(data):
    tr, te = data
    cfg_s = dataclasses.replace(CFG, side_dims=(5, 3))
    model, plain = mm.init_dmf(jax.random.PRNGKey(0), CFG, tr.shape)
    model_s, side_vars = mm.init_dmf(jax.random.PRNGKey(0), cfg_s, tr.shape)
    assert side_vars["params"]["row_branch"]["kernel0_side"].shape == (5, 32)
    assert side_vars["params"]["col_branch"]["kernel0_side"].shape == (3, 32)
    v = _with_plain_params(side_vars, plain)
    zero = mm.SideFeatures(np.zeros((tr.shape[0], 5), np.float32), np.zeros((tr.shape[1], 3), np.float32))
    rc, cc = mm.csr_inputs(tr, "rows"), mm.csr_inputs(tr, "cols")
    for axis, csr, f in (("rows", rc, zero.rows), ("cols", cc, zero.cols)):
        a = np.asarray(mm.embed(model, plain, csr, axis))
        b = np.asarray(mm.embed(model_s, v, csr, axis, side=f))
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    res = mm.DMFResult(model, plain, None, CFG, TC, rc, cc, {}, -1, float("nan"), 0, 0.0)
    res_s = mm.DMFResult(model_s, v, None, cfg_s, TC, rc, cc, {}, -1, float("nan"), 0, 0.0, zero)
    p = np.asarray(mm.predict(res, te.rows, te.cols))
    np.testing.assert_allclose(np.asarray(mm.predict(res_s, te.rows, te.cols)), p, rtol=1e-6, atol=1e-6)
    # and nonzero features do change them (the comparison can fail)
    f = _features(tr.shape, (5, 3))
    assert np.max(np.abs(np.asarray(mm.predict(res_s, te.rows, te.cols, side=f)) - p)) > 1e-2


def test_zero_features_train_exactly_as_plain_dmf(data):
    """kernel0_side starts at 0 and gets a zero gradient from zero features, so the whole run is plain DMF."""
    tr, te = data
    cfg_s = dataclasses.replace(CFG, side_dims=(4, 2))
    zero = mm.SideFeatures(np.zeros((tr.shape[0], 4), np.float32), np.zeros((tr.shape[1], 2), np.float32))
    a = mm.train_dmf(tr, te, CFG, TC)
    b = mm.train_dmf(tr, te, cfg_s, TC, side=zero)
    np.testing.assert_allclose(b.trace["train_loss"], a.trace["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b.trace["val_rmse"], a.trace["val_rmse"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mm.predict(b, te.rows, te.cols)),
                               np.asarray(mm.predict(a, te.rows, te.cols)), rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(b.variables["params"]["row_branch"]["kernel0_side"]))) == 0.0


# ----------------------------------------------------------------------------- the first layer and its gradient
def _branch(side_dim, widths=(6,)):
    return mm.Branch(in_dim=7, widths=widths, use_bn=False, dropout_rate=0.0, side_dim=side_dim)


def test_first_layer_is_x_w_plus_f_s_plus_b_dense_and_sparse():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7)).astype(np.float32) * (rng.random((4, 7)) < 0.5)
    f = rng.standard_normal((4, 3)).astype(np.float32)
    br = _branch(3)
    v = br.init(jax.random.PRNGKey(0), jnp.asarray(x), side=jnp.asarray(f))
    p = dict(v["params"])
    p["kernel0_side"] = jnp.asarray(rng.standard_normal((3, 6)), jnp.float32)
    p["bias0"] = jnp.asarray(rng.standard_normal(6), jnp.float32)
    v = {"params": p}
    ref = x @ np.asarray(p["kernel0"]) + f @ np.asarray(p["kernel0_side"]) + np.asarray(p["bias0"])
    np.testing.assert_allclose(np.asarray(br.apply(v, jnp.asarray(x), side=jnp.asarray(f))), ref, rtol=1e-5, atol=1e-5)
    r, c = np.nonzero(x)
    sb = mm.SparseBatch(jnp.asarray(r), jnp.asarray(c), jnp.asarray(x[r, c]), 4)
    np.testing.assert_allclose(np.asarray(br.apply(v, sb, side=jnp.asarray(f))), ref, rtol=1e-5, atol=1e-5)


def test_side_kernel_gradient_matches_hand_written_reference():
    """d/dS of a loss of a two-layer branch vs jax.grad of the formula written out, and f^T G for one layer."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((5, 7)), jnp.float32)
    f = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
    G = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32)
    br = _branch(3, widths=(6, 4))
    p = dict(br.init(jax.random.PRNGKey(2), x, side=f)["params"])
    p["kernel0_side"] = jnp.asarray(rng.standard_normal((3, 6)), jnp.float32)

    def model_loss(S):
        return jnp.sum(br.apply({"params": {**p, "kernel0_side": S}}, x, side=f) * G)

    def ref_loss(S):
        h = jax.nn.relu(x @ p["kernel0"] + f @ S + p["bias0"])
        return jnp.sum((h @ p["fc1"]["kernel"] + p["fc1"]["bias"]) * G)

    g = jax.grad(model_loss)(p["kernel0_side"])
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(ref_loss)(p["kernel0_side"])), rtol=1e-5, atol=1e-5)
    # a central finite difference along a random direction
    D = jnp.asarray(rng.standard_normal((3, 6)), jnp.float32)
    eps = 1e-2
    fd = (model_loss(p["kernel0_side"] + eps * D) - model_loss(p["kernel0_side"] - eps * D)) / (2 * eps)
    assert float(jnp.sum(g * D)) == pytest.approx(float(fd), rel=2e-2, abs=2e-2)
    one = _branch(3)
    p1 = one.init(jax.random.PRNGKey(3), x, side=f)["params"]
    G6 = jnp.asarray(rng.standard_normal((5, 6)), jnp.float32)
    g1 = jax.grad(lambda S: jnp.sum(one.apply({"params": {**p1, "kernel0_side": S}}, x, side=f) * G6))(
        p1["kernel0_side"])
    np.testing.assert_allclose(np.asarray(g1), np.asarray(f.T @ G6), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- informative features help cold rows
def _cold_problem(seed):
    """Ratings that depend on a row group (one-hot feature) and the column; 40 rows have no training entry."""
    rng = np.random.default_rng(seed)
    m, n, groups = 200, 120, 4
    g = rng.integers(0, groups, m)
    pref = rng.choice([-1.0, 1.0], (groups, n))
    R = np.clip(3 + 1.5 * pref[g] + 0.3 * rng.standard_normal((m, n)), 1, 5)
    cold = np.arange(m) >= 160
    obs = rng.random((m, n)) < 0.3

    def ratings(mask):
        r, c = np.nonzero(mask)
        return Ratings(r.astype(np.int32), c.astype(np.int32), R[r, c].astype(np.float32), (m, n))

    return ratings(obs & ~cold[:, None]), ratings(obs & cold[:, None]), np.eye(groups, dtype=np.float32)[g]


def test_informative_features_reduce_cold_row_error():
    train, cold_test, groups = _cold_problem(0)
    assert np.all(np.bincount(np.asarray(train.rows), minlength=200)[160:] == 0)  # cold rows: no training input
    tc = mm.TrainConfig(epochs=25, block_rows=40, block_cols=40, learning_rate=1e-2, lr_decay_every=1000,
                        eval_every=100, checkpoint_every=100, input_keep=(0.05, 1.0), input_keep_branches="rows")
    plain = mm.train_dmf(train, None, CFG, tc)
    side = mm.train_dmf(train, None, dataclasses.replace(CFG, side_dims=(4, 0)), tc,
                        side=mm.SideFeatures(groups, None))

    def rmse(res):
        p = np.asarray(mm.predict(res, cold_test.rows, cold_test.cols))
        return float(np.sqrt(np.mean((p - np.asarray(cold_test.values)) ** 2)))

    # plain DMF embeds every cold row alike (empty input): no better than a per-column mean (~1.35 here);
    # with the group feature the noise floor is 0.3 (measured 0.69-0.71 on three seeds of data and model)
    r_plain, r_side = rmse(plain), rmse(side)
    assert r_plain > 1.2, r_plain
    assert r_side < r_plain - 0.4, (r_side, r_plain)


# ----------------------------------------------------------------------------- bad input
def test_wrong_feature_shapes_raise_naming_the_problem(data):
    tr, te = data
    m, n = tr.shape
    cfg_s = dataclasses.replace(CFG, side_dims=(3, 2))
    good = _features(tr.shape, (3, 2))
    with pytest.raises(ValueError, match=r"side features rows have shape \(121, 3\), expected \(120, 3\)"):
        mm.train_dmf(tr, te, cfg_s, TC, side=mm.SideFeatures(np.zeros((m + 1, 3)), good.cols))
    with pytest.raises(ValueError, match=r"side features cols have shape \(90, 5\), expected \(90, 2\)"):
        mm.train_dmf(tr, te, cfg_s, TC, side=mm.SideFeatures(good.rows, np.zeros((n, 5))))
    with pytest.raises(ValueError, match="none were given"):
        mm.train_dmf(tr, te, cfg_s, TC)
    with pytest.raises(ValueError, match="set DMFConfig.side_dims"):
        mm.train_dmf(tr, te, CFG, TC, side=good)
    with pytest.raises(ValueError, match="cols missing"):
        mm.check_side_features(mm.SideFeatures(good.rows, None), tr.shape, (3, 2))
    with pytest.raises(ValueError, match="no side inputs for that branch"):
        mm.check_side_features(good, tr.shape, (3, 0))
    model, v = mm.init_dmf(jax.random.PRNGKey(0), cfg_s, tr.shape)
    with pytest.raises(ValueError, match=r"side features rows have shape \(7, 3\), expected \(120, 3\)"):
        mm.embed(model, v, mm.csr_inputs(tr, "rows"), "rows", side=good.rows[:7])
    res = mm.DMFResult(model, v, None, cfg_s, TC, mm.csr_inputs(tr, "rows"), mm.csr_inputs(tr, "cols"), {}, -1,
                       float("nan"), 0, 0.0, good)
    with pytest.raises(ValueError, match=r"expected \(90, 2\)"):
        mm.predict(res, te.rows, te.cols, side=mm.SideFeatures(good.rows, good.cols[:, :1]))
    with pytest.raises(ValueError, match="takes side features"):
        _branch(3).init(jax.random.PRNGKey(0), jnp.zeros((2, 7)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_raise(data, bad):
    tr, te = data
    f = _features(tr.shape, (3, 2))
    rows = f.rows.copy()
    rows[4, 1] = bad
    with pytest.raises(ValueError, match=r"rows have 1 non-finite values \(first at \[4, 1\]"):
        mm.train_dmf(tr, te, dataclasses.replace(CFG, side_dims=(3, 2)), TC, side=mm.SideFeatures(rows, f.cols))


@pytest.mark.parametrize("dims", [(0, 0), (3,), (-1, 2), (2.5, 1)])
def test_bad_side_dims_raise(dims):
    with pytest.raises(ValueError, match="side_dims"):
        mm.DMFConfig(side_dims=dims)


def test_run_identity_unchanged_without_features_and_names_them_with(data):
    tr, te = data
    ident = mm.run_identity(CFG, TC, tr, te)
    assert "side_dims" not in ident["model_config"] and "side_data" not in ident
    cfg_s = dataclasses.replace(CFG, side_dims=(3, 2))
    a = mm.run_identity(cfg_s, TC, tr, te, _features(tr.shape, (3, 2), seed=0))
    b = mm.run_identity(cfg_s, TC, tr, te, _features(tr.shape, (3, 2), seed=1))
    assert a["model_config"]["side_dims"] == [3, 2]
    assert a["side_data"] != b["side_data"] and a["config_hash"] != b["config_hash"]


# ----------------------------------------------------------------------------- the ML-1M encoding
def test_movielens_encoding_one_hot_and_year():
    users = mdata.Users(np.array([10, 20, 30]), np.array([1, 0, 1], np.int8), np.array([1, 25, 56], np.int16),
                        np.array([0, 7, 20], np.int16), np.array(["1", "2", "3"]))
    u = mm.user_features(users)
    assert u.shape == (3, len(mm.USER_FEATURES)) == (3, 29)
    assert u.sum(1).tolist() == [3.0, 2.0, 3.0]  # gender + one age + one occupation
    assert u[1, 1 + mdata.AGE_CODES.index(25)] == 1 and u[1, 8 + 7] == 1 and u[2, 8 + 20] == 1
    with pytest.raises(ValueError, match="not in"):
        mm.user_features(users._replace(age=np.array([1, 2, 56], np.int16)))
    genres = np.zeros((3, 18), np.float32)
    genres[0, [0, 4]] = 1
    movies = mdata.Movies(np.array([1, 2, 3]), np.array(["a", "b", "c"]),
                          np.array([1950, mdata.NO_YEAR, 2000], np.int32), genres)
    f = mm.movie_features(movies)
    assert f.shape == (3, len(mm.MOVIE_FEATURES)) == (3, 19)
    np.testing.assert_array_equal(f[:, :18], genres)
    np.testing.assert_allclose(f[:, 18], [0.0, 0.5, 1.0])  # min-max; the missing year gets the mean


def test_side_profile_pairs_with_its_base_and_keeps_old_hashes():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "dmf" / "run_tables.py"
    spec = importlib.util.spec_from_file_location("run_tables_side_test", path)
    rt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rt)
    shape = (6040, 3706)
    (c, t), (cb, tb) = rt.profile("cmr_side", shape)["dmf"], rt.profile("cpu_center_mask_rows", shape)["dmf"]
    assert t == tb and dataclasses.replace(c, side_dims=None) == cb and c.side_dims == (29, 19)
    base = rt.config_dict(cb, tb)
    assert "side_dims" not in base["model"] and "side_features" not in base["model"]
    assert rt.config_hash(base) == "bcac0f3cda62"  # the stored cpu_center_mask_rows records' hash
    side = rt.config_dict(c, t)
    assert side["model"]["side_dims"] == (29, 19) and rt.config_hash(side) != rt.config_hash(base)
