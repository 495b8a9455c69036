"""DMF / DMF-D training: learning on synthetic data, model selection, checkpoints and resume."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfjax.data as mdata
import mfjax.models as mm
from mfjax.models import train as T

CFG = mm.DMFConfig(row_widths=(32, 16), col_widths=(32, 16), dropout_rate=0.1)
TC = mm.TrainConfig(epochs=6, block_rows=40, block_cols=40, learning_rate=3e-3, lr_decay_every=1000,
                    eval_every=2, checkpoint_every=2)


@pytest.fixture(scope="module")
def data():
    r = mdata.synthetic(160, 120, rank=3, density=0.25, noise=0.2, seed=0)
    return mdata.split(r, (0.75, 0.1, 0.15), seed=0)


@pytest.fixture(scope="module")
def trained(data):
    tr, va, _ = data
    return mm.train_dmf(tr, va, CFG, TC)


def _rmse(p, t):
    return float(np.sqrt(np.mean((np.asarray(p, np.float64) - np.asarray(t, np.float64)) ** 2)))


def test_training_reduces_validation_rmse(data, trained):
    tr, va, te = data
    model, variables = mm.init_dmf(jax.random.PRNGKey(TC.seed), CFG, tr.shape)
    init_res = trained._replace(variables=variables)
    before = _rmse(mm.predict(init_res, va.rows, va.cols), va.values)
    after = _rmse(mm.predict(trained, va.rows, va.cols), va.values)
    assert after < before - 0.1, (before, after)
    assert trained.best_val == pytest.approx(after, rel=1e-4)
    assert trained.best_val == pytest.approx(min(trained.trace["val_rmse"]), rel=1e-6)
    assert trained.trace["val_epoch"] == [2, 4, 6]
    assert len(trained.trace["train_loss"]) == TC.epochs and all(np.isfinite(trained.trace["train_loss"]))
    p = np.asarray(mm.predict(trained, te.rows, te.cols))
    assert np.all((p >= 1 - 1e-5) & (p <= 5 + 1e-5))


def test_dmfd_learns_boundaries_and_predicts_levels(data):
    """DMF-D, here also with the paper's loss variant (MSE + gamma L2) to exercise that path."""
    tr, va, te = data
    q = mm.QuantizerConfig(lambda0=1.0, lambda_growth=1.2, lambda_every=2)
    res = mm.train_dmf(tr, va, CFG, dataclasses.replace(TC, quantizer=q, epochs=4, loss="mse", l2=1e-5))
    assert np.isfinite(res.best_val) and res.best_val < 1.3
    b = np.asarray(res.boundaries)
    assert b.shape == (4,) and np.all(np.isfinite(b))
    assert not np.allclose(b, [1.5, 2.5, 3.5, 4.5])  # boundaries were trained
    pd = np.asarray(mm.predict(res, te.rows, te.cols, discrete=True))
    assert set(np.unique(pd)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert res.trace["lam"][-1] > res.trace["lam"][0]
    # the selection metric of DMF-D is the discrete (Q_b) validation RMSE
    assert res.best_val == pytest.approx(min(res.trace["val_rmse_discrete"]), rel=1e-6)


def test_checkpoint_round_trip(tmp_path):
    tree = {"a": jnp.arange(5.0), "b": (jnp.ones((2, 3)), jnp.asarray(7, jnp.int32)),
            "opt": mm.DMFState({"w": jnp.zeros(3)}, {}, (), jnp.asarray(3, jnp.int32))}
    p = tmp_path / "ck.msgpack"
    mm.save_checkpoint(p, tree, {"epoch": 4, "trace": [1.0, float("nan")]})
    template = jax.tree_util.tree_map(jnp.zeros_like, tree)
    back, meta = mm.load_checkpoint(p, template)
    for x, y in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert meta == {"epoch": 4, "trace": [1.0, None]}
    assert list(tmp_path.iterdir()) == [p]  # no temp files left behind
    with pytest.raises(FileNotFoundError):
        mm.load_checkpoint(tmp_path / "missing", template)


def test_resume_continues_identically(data, trained, tmp_path):
    tr, va, _ = data
    ck = tmp_path / "run.msgpack"
    first = mm.train_dmf(tr, va, CFG, dataclasses.replace(TC, epochs=2), checkpoint_path=ck)
    assert first.epochs_run == 2 and ck.exists()
    resumed = mm.train_dmf(tr, va, CFG, TC, checkpoint_path=ck)
    assert resumed.epochs_run == TC.epochs
    assert resumed.trace["val_rmse"] == pytest.approx(trained.trace["val_rmse"], rel=1e-6)
    for x, y in zip(jax.tree_util.tree_leaves(trained.variables), jax.tree_util.tree_leaves(resumed.variables)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_authors_schedule_conversion():
    L = mm.authors_epoch_length((6040, 3706), 100, 170)
    assert L == pytest.approx(1 / (1 / 61 + 1 / 22))
    tc = mm.TrainConfig.authors((6040, 3706))
    assert (tc.block_rows, tc.block_cols, tc.learning_rate, tc.lr_decay) == (100, 170, 1e-2, 0.65)
    assert tc.lr_decay_every == round(50 * L) and tc.epochs == math.ceil(1000 * L / 61)
    assert tc.loss == "rmse" and tc.l2 == 0.0 and tc.quantizer is None
    td = mm.TrainConfig.authors((6040, 3706), dmfd=True)
    assert td.quantizer.lambda0 == 0.1 and td.quantizer.lambda_growth == 1.015
    assert td.quantizer.gamma2 == 0.1 and (td.block_rows, td.block_cols) == (300, 200)


def test_bad_inputs_raise(data):
    tr, va, _ = data
    with pytest.raises(ValueError, match="rating_range"):
        mm.train_dmf(tr.with_values(np.asarray(tr.values) + 10), va, CFG, TC)
    small = mdata.Ratings.create([0], [0], [3.0], (2, 2))
    with pytest.raises(ValueError, match="valid shape"):
        mm.train_dmf(tr, small, CFG, TC)
    with pytest.raises(ValueError, match="loss"):
        mm.TrainConfig(loss="huber")


def test_epoch_plan_covers_rows_and_bucket():
    rows, cols = np.arange(0, 50), np.arange(0, 30)
    rb, cb, cid, cbo, cso = T._epoch_plan(0, 3, rows, cols, 30, 16, 8)
    assert rb.shape == (4, 16) and set(rb.ravel()) == set(rows)
    assert cb.shape == (4, 8) and np.all(cb == np.resize(cb, cb.shape))
    # every column has a (block, slot) and the blocks used contain exactly those columns
    for s in range(4):
        for j in cb[s]:
            if cbo[j] == cid[s]:
                assert cb[s][cso[j]] == j
    for x in (8, 100, 1000, 12345, 65537):
        b = T._bucket(x)
        assert b >= x and b <= x * 1.126 + 8


@pytest.mark.parametrize("hide", [False, True])
def test_make_block_targets_and_hidden_inputs(data, hide):
    tr, _, _ = data
    m, n = tr.shape
    X = np.asarray(tr.to_dense()[0])
    rc, cc = mm.csr_inputs(tr, "rows"), mm.csr_inputs(tr, "cols")
    rb, cblk, cid, cbo, cso = T._epoch_plan(0, 0, np.arange(m), np.arange(n), n, 40, 40)
    s = 1
    f = jax.jit(lambda *a: T.make_block(*a, cap_r=4096, cap_c=4096, hide_targets=hide))
    csr = lambda c: (jnp.asarray(c.indptr), jnp.asarray(c.indices), jnp.asarray(c.values))
    xr, xc, R, M = f(csr(rc), csr(cc), rb[s], cblk[s], cid[s], cbo, cso)
    cols = cblk[s]
    target = X[np.ix_(rb[s], cols)] * (cbo[cols] == cid[s])[None, :]
    np.testing.assert_array_equal(np.asarray(R), target)
    np.testing.assert_array_equal(np.asarray(M), (target > 0).astype(np.float32))
    dense_r = np.zeros((rb.shape[1], n))
    np.add.at(dense_r, (np.asarray(xr.seg), np.asarray(xr.idx)), np.asarray(xr.vals))
    dense_c = np.zeros((cblk.shape[1], m))
    np.add.at(dense_c, (np.asarray(xc.seg), np.asarray(xc.idx)), np.asarray(xc.vals))
    hidden = np.zeros((m, n), bool)
    if hide:
        hidden[np.ix_(rb[s], cols[cbo[cols] == cid[s]])] = True
    Xh = np.where(hidden, 0.0, X)
    np.testing.assert_array_equal(dense_r, Xh[rb[s]])
    np.testing.assert_array_equal(dense_c, Xh[:, cols].T)
    assert np.asarray(M).sum() > 0


def _dense(batch, rows, dim):
    d = np.zeros((rows, dim))
    np.add.at(d, (np.asarray(batch.seg), np.asarray(batch.idx)), np.asarray(batch.vals))
    return d


@pytest.mark.parametrize("branches", ["both", "rows", "cols"])
def test_input_masking_keeps_only_observed_entries(data, branches):
    tr, _, _ = data
    m, n = tr.shape
    X = np.asarray(tr.to_dense()[0])
    rc, cc = mm.csr_inputs(tr, "rows"), mm.csr_inputs(tr, "cols")
    rb, cblk, cid, cbo, cso = T._epoch_plan(0, 0, np.arange(m), np.arange(n), n, 40, 40)
    csr = lambda c: (jnp.asarray(c.indptr), jnp.asarray(c.indices), jnp.asarray(c.values))
    args = (csr(rc), csr(cc), rb[1], cblk[1], cid[1], cbo, cso)
    plain = jax.jit(lambda *a: T.make_block(*a, cap_r=4096, cap_c=4096))(*args)
    f = jax.jit(lambda k, *a: T.make_block(*a, cap_r=4096, cap_c=4096, mask_key=k, input_keep=(0.5, 0.5),
                                           input_keep_branches=branches))
    xr, xc, R, M = f(jax.random.PRNGKey(3), *args)
    # targets are read before masking: all observed entries of the block
    np.testing.assert_array_equal(np.asarray(R), np.asarray(plain[2]))
    np.testing.assert_array_equal(np.asarray(M), np.asarray(plain[3]))
    for got, ref, masked in ((_dense(xr, 40, n), X[rb[1]], branches in ("both", "rows")),
                             (_dense(xc, 40, m), X[:, cblk[1]].T, branches in ("both", "cols"))):
        # only observed (training) entries, with their values; about half of them
        assert np.all((got == 0) | (got == ref))
        frac = np.count_nonzero(got) / np.count_nonzero(ref)
        if masked:
            assert 0.4 < frac < 0.6, frac
        else:
            np.testing.assert_array_equal(got, ref)
    # deterministic given the key, different for another key
    again = f(jax.random.PRNGKey(3), *args)
    np.testing.assert_array_equal(np.asarray(again[0].vals), np.asarray(xr.vals))
    other = f(jax.random.PRNGKey(4), *args)
    if branches != "cols":
        assert not np.array_equal(np.asarray(other[0].vals), np.asarray(xr.vals))


def test_mask_inputs_per_vector_keep_probability():
    # p ~ U(lo, hi) per vector: kept fractions spread over [lo, hi]
    B, k = 200, 400
    x = mm.SparseBatch(jnp.repeat(jnp.arange(B), k), jnp.tile(jnp.arange(k), B), jnp.ones(B * k), B)
    _, keep = T.mask_inputs(x, jnp.ones(B * k, bool), jax.random.PRNGKey(0), (0.3, 1.0))
    frac = np.asarray(keep).reshape(B, k).mean(1)
    assert frac.min() > 0.2 and frac.max() <= 1.0 and frac.min() < 0.4 and frac.max() > 0.9
    assert abs(frac.mean() - 0.65) < 0.05


def test_input_masking_config_checks():
    assert mm.TrainConfig().input_keep is None  # default off: the authors' training
    assert mm.TrainConfig(input_keep=[0.3, 1]).input_keep == (0.3, 1.0)
    for bad in ((0.0, 1.0), (0.8, 0.5), (0.5, 1.2), (0.5,)):
        with pytest.raises(ValueError, match="input_keep"):
            mm.TrainConfig(input_keep=bad)
    with pytest.raises(ValueError, match="input_keep_branches"):
        mm.TrainConfig(input_keep=(0.5, 1.0), input_keep_branches="left")


def test_masked_training_learns_and_is_deterministic(data, trained):
    tr, va, _ = data
    tc = dataclasses.replace(TC, input_keep=(0.3, 1.0))
    a = mm.train_dmf(tr, va, CFG, tc)
    b = mm.train_dmf(tr, va, CFG, tc)
    assert a.trace["val_rmse"] == b.trace["val_rmse"]
    assert a.trace["train_loss"] != trained.trace["train_loss"]  # the masks change training
    model, variables = mm.init_dmf(jax.random.PRNGKey(TC.seed), CFG, tr.shape)
    before = _rmse(mm.predict(a._replace(variables=variables), va.rows, va.cols), va.values)
    assert a.best_val < before - 0.05, (before, a.best_val)  # learns (slower than unmasked on this tiny problem)


def test_extra_valid_is_recorded_not_selected(data, trained):
    tr, va, _ = data
    rc, cc = mm.csr_inputs(tr, "rows"), mm.csr_inputs(tr, "cols")
    thin = mm.subsample_inputs(rc, 0.5, 0)
    res = mm.train_dmf(tr, va, CFG, TC, extra_valid={"same": (rc, cc, va), "thin": (thin, cc, va)})
    assert res.trace["val_rmse_same"] == pytest.approx(res.trace["val_rmse"], rel=1e-6)
    assert len(res.trace["val_rmse_thin"]) == len(res.trace["val_epoch"])
    # selection and the trained model are those of the run without extra sets
    assert res.trace["val_rmse"] == pytest.approx(trained.trace["val_rmse"], rel=1e-6)
    assert res.best_epoch == trained.best_epoch
    p = mm.predict(res, va.rows, va.cols, row_inputs=thin)
    assert _rmse(p, va.values) == pytest.approx(res.trace["val_rmse_thin"][res.trace["val_epoch"].index(res.best_epoch)], rel=1e-5)


# --------------------------------------------------------------------------- resume identity (issue 12, #1)
SHORT = dataclasses.replace(TC, epochs=2)


@pytest.fixture(scope="module")
def short_ck(data, tmp_path_factory):
    tr, va, _ = data
    ck = tmp_path_factory.mktemp("ck") / "run.msgpack"
    first = mm.train_dmf(tr, va, CFG, SHORT, checkpoint_path=ck)
    return ck, ck.read_bytes(), first


def _copy(short_ck, tmp_path):
    ck = tmp_path / "run.msgpack"
    ck.write_bytes(short_ck[1])
    return ck


@pytest.mark.parametrize("change,named", [
    ("split", "training data checksum"),
    ("lr_seed", "train_config.learning_rate"),
    ("widths", "model_config.row_widths"),
])
def test_resume_refuses_another_run(data, short_ck, tmp_path, change, named):
    tr, va, _ = data
    cfg, tc = CFG, SHORT
    if change == "split":
        full = mdata.synthetic(160, 120, rank=3, density=0.25, noise=0.2, seed=0)
        tr, va, _ = mdata.split(full, (0.75, 0.1, 0.15), seed=1)
    elif change == "lr_seed":
        tc = dataclasses.replace(SHORT, learning_rate=0.5, seed=7)
    else:
        cfg = dataclasses.replace(CFG, row_widths=(24, 16))
    ck = _copy(short_ck, tmp_path)
    with pytest.raises(mm.CheckpointMismatchError, match=named) as e:
        mm.train_dmf(tr, va, cfg, tc, checkpoint_path=ck, resume="require")
    assert str(ck) in str(e.value)
    if change == "lr_seed":
        assert "train_config.seed: 0 in the checkpoint, 7 now" in str(e.value)
    if change != "split":  # the "auto" recompute below is the same path for every difference: train it once
        return
    # default "auto": recomputed from scratch with a warning naming the file and the difference
    with pytest.warns(mm.CheckpointIgnoredWarning, match=named):
        res = mm.train_dmf(tr, va, cfg, tc, checkpoint_path=ck)
    assert res.epochs_run == 2 and len(res.trace["train_loss"]) == 2
    fresh = mm.train_dmf(tr, va, cfg, tc)
    assert res.trace["val_rmse"] == pytest.approx(fresh.trace["val_rmse"], rel=1e-6)
    # the overwritten checkpoint now belongs to the new run: it resumes without a warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", mm.CheckpointIgnoredWarning)
        again = mm.train_dmf(tr, va, cfg, tc, checkpoint_path=ck, resume="require")
    assert again.trace["val_rmse"] == res.trace["val_rmse"]


def test_resume_to_more_epochs_is_allowed_and_identity_is_recorded(short_ck):
    ck, raw, first = short_ck
    _, meta = mm.read_checkpoint(ck)
    ident = meta["identity"]
    assert ident["train_data"].startswith("sha256:") and ident["valid_data"].startswith("sha256:")
    assert "epochs" not in ident["train_config"] and ident["train_config"]["learning_rate"] == SHORT.learning_rate
    assert ident["model_config"]["row_widths"] == list(CFG.row_widths)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "bitflip", "bitflip_meta"])
def test_corrupt_checkpoint_is_named_and_recomputed(data, short_ck, tmp_path, damage):
    tr, va, _ = data
    ck = _copy(short_ck, tmp_path)
    raw = short_ck[1]
    ck.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "garbage": b"\x00not a checkpoint\xff" * 9,
                    "bitflip": raw[:len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 1]) + raw[len(raw) // 2 + 1:],
                    "bitflip_meta": raw.replace(b'"epoch": 2', b'"epoch": 3')}[damage])
    with pytest.raises(mm.CorruptCheckpointError) as e:
        mm.train_dmf(tr, va, CFG, SHORT, checkpoint_path=ck, resume="require")
    assert str(ck) in str(e.value) and "Unpack failed" not in str(e.value)
    with pytest.warns(mm.CheckpointIgnoredWarning, match="training from scratch"):
        res = mm.train_dmf(tr, va, CFG, SHORT, checkpoint_path=ck)
    assert res.epochs_run == 2 and res.trace["val_rmse"] == pytest.approx(short_ck[2].trace["val_rmse"], rel=1e-6)
    mm.read_checkpoint(ck)  # rewritten intact


def test_old_checkpoint_without_identity_and_policies(data, short_ck, tmp_path):
    tr, va, _ = data
    ck = _copy(short_ck, tmp_path)
    tree, meta = mm.read_checkpoint(ck)
    meta.pop("identity")
    template = jax.tree_util.tree_map(np.asarray, tree)
    mm.save_checkpoint(ck, template, meta)  # a state dict saves as itself
    with pytest.raises(mm.CheckpointMismatchError, match="no run identity"):
        mm.train_dmf(tr, va, CFG, SHORT, checkpoint_path=ck, resume="require")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        mm.train_dmf(tr, va, CFG, SHORT, checkpoint_path=tmp_path / "absent", resume="require")
    with pytest.raises(ValueError, match="resume must be one of"):
        mm.train_dmf(tr, va, CFG, SHORT, checkpoint_path=ck, resume="yes")
    with pytest.raises(ValueError, match="valid has no entries"):
        mm.train_dmf(tr, va.select(np.zeros(va.nnz, bool)), CFG, SHORT)


def test_learning_rate_schedules_values():
    """Staircase (authors), cosine and linear schedules against their formulas."""
    st = mm.TrainConfig(learning_rate=1e-2, lr_decay=0.5, lr_decay_every=10)
    f = mm.learning_rate_schedule(st)
    np.testing.assert_allclose([float(f(t)) for t in (0, 9, 10, 25)], [1e-2, 1e-2, 5e-3, 2.5e-3], rtol=1e-6)
    T_, lr, lo = 40, 1e-2, 1e-4
    cos = mm.learning_rate_schedule(mm.TrainConfig(learning_rate=lr, lr_schedule="cosine", lr_min=lo), T_)
    lin = mm.learning_rate_schedule(mm.TrainConfig(learning_rate=lr, lr_schedule="linear", lr_min=lo), T_)
    for t in (0, 7, 20, 33, 40, 60):
        u = min(t, T_) / T_
        np.testing.assert_allclose(float(cos(t)), lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * u)), rtol=1e-5)
        np.testing.assert_allclose(float(lin(t)), lr + (lo - lr) * u, rtol=1e-5)
    with pytest.raises(ValueError, match="total_steps"):
        mm.learning_rate_schedule(mm.TrainConfig(lr_schedule="cosine"))
    with pytest.raises(ValueError, match="lr_schedule"):
        mm.TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="lr_min"):
        mm.TrainConfig(learning_rate=1e-3, lr_min=1e-2)


def test_trainer_optimizer_follows_the_schedule_over_the_run(data, monkeypatch):
    """train_dmf builds Adam with T = epochs x steps per epoch; with a constant gradient Adam's step is -lr_t."""
    tr, va, _ = data
    tc = dataclasses.replace(TC, epochs=3, lr_schedule="cosine", lr_min=1e-4)
    seen = {}

    class Stop(Exception):
        pass

    def spy(tc_, total_steps=None):
        seen["T"] = total_steps
        return make(tc_, total_steps)

    def stop(*a, **k):
        raise Stop

    make = T._make_optimizer
    monkeypatch.setattr(T, "_make_optimizer", spy)
    monkeypatch.setattr(T, "_epoch_fn_cached", stop)
    with pytest.raises(Stop):
        mm.train_dmf(tr, va, CFG, tc)
    steps = 3 * math.ceil(np.unique(np.asarray(tr.rows)).size / tc.block_rows)
    assert seen["T"] == steps
    opt = make(tc, steps)
    p = jnp.zeros(1)
    st = opt.init(p)
    upd = jax.jit(opt.update)
    lrs = []
    for _ in range(steps + 2):
        u, st = upd(jnp.ones(1), st, p)
        lrs.append(-float(u[0]))
    ref = [float(mm.learning_rate_schedule(tc, steps)(t)) for t in range(steps + 2)]
    np.testing.assert_allclose(lrs, ref, rtol=1e-4)
    assert ref[0] == pytest.approx(tc.learning_rate) and ref[-1] == pytest.approx(1e-4)
