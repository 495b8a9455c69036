"""Bad inputs and numerical trouble in the core (issue 12): each gets a clear error or a documented status.

The rows of ``docs/RELIABILITY.md`` marked ``core`` point here.  Public API only.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mfjax as mf
import mfjax.models as mm
from mfjax.data import ChecksumError, load_movielens
from mfjax.data import download as dl


@pytest.fixture(scope="module")
def problem():
    r = mf.data.synthetic(40, 30, rank=3, density=0.4, noise=0.1, seed=0)
    train, test = mf.data.split(r, (0.8, 0.2), seed=0)
    return train, test


def _transposed(train, rank=3):
    m, n = train.shape
    return mf.init_factors(jax.random.key(0), (n, m), rank)


# ------------------------------------------------------------- shapes and lambda
def test_transposed_factors_are_named_everywhere(problem):
    train, _ = problem
    bad = _transposed(train)
    loss = mf.losses.masked_mse(train, l2=0.1)
    for call in (lambda: mf.fit(loss, mf.optim.gd(), bad, num_steps=2),
                 lambda: mf.losses.masked_sq_loss(bad, train, 0.1),
                 lambda: mf.solvers.als(train, 3, l2=0.1, num_steps=1, init=bad)):
        with pytest.raises(ValueError, match=r"do not fit ratings of shape .*transposed"):
            call()


@pytest.mark.parametrize("l2", [-0.1, float("nan"), float("inf")])
def test_negative_or_nonfinite_lambda_is_refused(problem, l2):
    train, _ = problem
    with pytest.raises(ValueError, match=r"l2 \(lambda\) must be"):
        mf.losses.masked_mse(train, l2=l2)
    with pytest.raises(ValueError, match=r"l2 \(lambda\) must be"):
        mf.solvers.als(train, 3, l2=l2, num_steps=1)


# ------------------------------------------------------------- numerical trouble
def test_sgd_with_a_huge_learning_rate_raises_or_reports_nonfinite(problem):
    """Documented: the ``sgd`` alias raises ``FloatingPointError`` naming ``lr``; the
    ``run`` driver returns status ``nonfinite`` with the last finite parameters."""
    train, _ = problem
    with pytest.raises(FloatingPointError, match=r"non-finite at epoch .*lr=50.0.*lower the step"):
        mf.solvers.sgd(train, 3, lr=50.0, l2=0.01, num_steps=20, key=jax.random.key(0))
    solver = mf.solvers.sgd_solver(lr=50.0)
    obj = mf.solvers.sgd_problem(train, l2=0.01)
    p0 = mf.init_factors(jax.random.key(0), train.shape, 3)
    res = mf.solvers.run(solver, obj, solver.init(p0, obj, jax.random.key(0)), 20)
    assert res.status_name in ("nonfinite", "diverged"), res.status_name
    assert int(res.num_steps) < 20
    for leaf in jax.tree.leaves(res.params):
        assert bool(jnp.all(jnp.isfinite(leaf)))


def _poisoned(value):
    """A direction rule that puts ``value`` into the first entry of the (-grad) direction."""

    def update(grads, state, params=None):
        d = jax.tree.map(lambda g: -g, grads)
        return d._replace(U=d.U.at[0, 0].set(value)), state

    return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


@pytest.mark.parametrize("value", [jnp.inf, jnp.nan])
@pytest.mark.parametrize("rule", ["armijo", "strong_wolfe", "weak_wolfe_bisection",
                                  "strong_wolfe_zoom", "inverse_lipschitz", "exact_mf"])
def test_a_nonfinite_direction_fails_the_step_and_keeps_params_finite(problem, rule, value):
    train, _ = problem
    loss = mf.losses.masked_mse(train, l2=0.1)
    search = getattr(mf.linesearch, rule)()
    opt = optax.chain(_poisoned(value), search)
    p0 = mf.init_factors(jax.random.key(1), train.shape, 3)
    res = mf.fit(loss, opt, p0, num_steps=3)
    assert res.status_name in ("linesearch_failed", "nonfinite"), res.status_name
    for leaf in jax.tree.leaves(res.params):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert float(loss(res.params)) <= float(loss(p0)) + 1e-6


# ------------------------------------------------------------- metrics and models
def test_metrics_on_empty_ratings_raise_and_nan_predictions_give_nan():
    empty = jnp.zeros((0,))
    with pytest.raises(ValueError, match="no entries to score"):
        mf.metrics.rmse_from_predictions(empty, empty)
    with pytest.raises(ValueError, match="no entries to score"):
        mf.metrics.mae_from_predictions(empty, empty, clip=(1, 5))
    with pytest.raises(ValueError, match="differ"):
        mf.metrics.rmse_from_predictions(jnp.ones(3), jnp.ones(4))
    nan = jnp.full((3,), jnp.nan)
    assert np.isnan(float(mf.metrics.rmse_from_predictions(nan, jnp.ones(3), clip=(1, 5))))
    assert np.isnan(float(mf.metrics.mae_from_predictions(nan, jnp.ones(3), discrete=True)))


def test_quantizer_boundaries_out_of_order_are_refused():
    levels = (1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"non-decreasing.*b_2 = 3.5 > b_3 = 2.5"):
        mm.quantize_hard(jnp.array([2.0]), jnp.array([1.5, 3.5, 2.5, 4.5]), levels)
    with pytest.raises(ValueError, match="finite"):
        mm.smooth_quantize(jnp.array([2.0]), jnp.array([1.5, jnp.nan, 3.5, 4.5]), levels, 10.0)
    ok = mm.quantize_hard(jnp.array([2.0, 2.6]), jnp.array([1.5, 2.5, 3.5, 4.5]), levels)
    np.testing.assert_array_equal(ok, [2.0, 3.0])


def test_zero_norm_embedding_in_the_cosine_head_is_finite():
    u = jnp.zeros((2, 4))
    v = jnp.array([[1.0, 0, 0, 0], [0, 0, 0, 0]])
    val, grads = jax.value_and_grad(lambda a, b: jnp.sum(mm.cosine(a, b)), argnums=(0, 1))(u, v)
    assert float(val) == 0.0
    for g in grads:
        assert bool(jnp.all(jnp.isfinite(g)))
    assert bool(jnp.all(jnp.isfinite(mm.pairwise_cosine(u, v))))


# ------------------------------------------------------------- cached archives
def _zip_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-latest-small/ratings.csv",
                    "userId,movieId,rating,timestamp\n1,31,2.5,1\n2,10,4.0,2\n2,31,0.5,3\n")
    return buf.getvalue()


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """ml-latest-small downloaded from a local "server" into a cache; returns (cache, archive, payload)."""
    monkeypatch.delenv("MFJAX_DATA_DIR", raising=False)
    payload = _zip_bytes()
    served = {"n": 0}

    def opener(url):
        if url.endswith(".md5"):
            return io.BytesIO(f"{hashlib.md5(payload).hexdigest()}  ml-latest-small.zip\n".encode())
        served["n"] += 1
        return io.BytesIO(payload)

    monkeypatch.setattr(dl, "_default_opener", opener)
    cache = tmp_path / "cache"
    archive = mf.data.download_movielens("ml-latest-small", cache)
    assert archive.read_bytes() == payload
    assert dl.read_checksum_file(archive) == hashlib.sha256(payload).hexdigest()
    assert load_movielens("ml-latest-small", cache_dir=cache).nnz == 3
    return cache, archive, payload, served


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_a_damaged_cached_archive_is_named_with_both_checksums(cached, damage):
    cache, archive, payload, _ = cached
    if damage == "corrupt":
        bad = bytearray(payload)
        bad[len(bad) // 2] ^= 0xFF
        archive.write_bytes(bytes(bad))
    else:
        archive.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ChecksumError) as e:
        load_movielens("ml-latest-small", cache_dir=cache)
    msg = str(e.value)
    assert str(archive) in msg
    assert hashlib.sha256(payload).hexdigest() in msg  # expected
    assert hashlib.sha256(archive.read_bytes()).hexdigest() in msg  # actual
    assert "download" in msg and "Delete" in msg
    if damage == "truncate":
        assert "not a readable zip" in msg


def test_a_damaged_cached_archive_is_downloaded_again_with_download_true(cached):
    cache, archive, payload, served = cached
    archive.write_bytes(payload[:100])
    before = served["n"]
    r = load_movielens("ml-latest-small", cache_dir=cache, download=True)
    assert r.nnz == 3 and served["n"] == before + 1
    assert archive.read_bytes() == payload


def test_a_cached_archive_without_any_checksum_is_not_trusted(cached):
    cache, archive, _, _ = cached
    pathlib.Path(str(archive) + ".sha256").unlink()
    with pytest.raises(ChecksumError, match="cannot be verified"):
        load_movielens("ml-latest-small", cache_dir=cache)
    # the user's own folder is used as it is
    assert load_movielens("ml-latest-small", cache).nnz == 3


def test_vector_descent_refuses_a_nan_rating(problem):
    train, _ = problem
    vals = np.asarray(train.values).copy()
    vals[3] = np.nan
    bad = mf.data.Ratings(train.rows, train.cols, vals, train.shape)
    with pytest.raises(ValueError, match=r"non-finite value nan at entry 3"):
        mf.solvers.vector_descent(bad, 3, l2=0.1, num_steps=1, key=jax.random.key(0))


# ------------------------------------------------- values that arrive traced
@pytest.mark.parametrize("l2", [-1.0, float("nan")])
def test_traced_invalid_lambda_stops_nonfinite_before_a_step(problem, l2):
    """A lambda passed through ``loss_args`` is traced: the objective returns NaN, ``fit`` stops."""
    train, _ = problem
    p0 = mf.init_factors(jax.random.key(0), train.shape, 3)
    for run in (lambda: mf.fit(mf.losses.masked_sq_loss, mf.optim.gd(), p0, 50, loss_args=(train, l2)),
                lambda: mf.fit_until(mf.losses.masked_sq_loss, mf.optim.gd(), p0, max_steps=50,
                                     loss_args=(train, l2))):
        res = run()
        assert res.status_name == "nonfinite" and int(res.num_steps) == 0
        assert not np.isfinite(float(res.value))
    obj = mf.objective.mf_objective(train, 0.5)
    bad = jax.jit(lambda o, lam: mf.objective.value(o.replace(l2=lam), p0))(obj, jnp.float32(l2))
    good = jax.jit(lambda o, lam: mf.objective.value(o.replace(l2=lam), p0))(obj, jnp.float32(0.5))
    assert np.isnan(float(bad)) and np.isfinite(float(good))
    assert float(good) == pytest.approx(float(mf.objective.value(obj, p0)), rel=1e-6)


def test_traced_nan_data_is_reported_nonfinite_not_linesearch_failed(problem):
    train, _ = problem
    p0 = mf.init_factors(jax.random.key(0), train.shape, 3)
    vals = np.asarray(train.values).copy()
    vals[3] = np.nan

    def loss(p, v):
        return mf.losses.masked_sq_loss(p, train._replace(values=v), 1.0)

    opt = mf.optim.gd(linesearch=mf.linesearch.armijo())
    res = mf.fit(loss, opt, p0, 20, loss_args=(jnp.asarray(vals),))
    assert res.status_name == "nonfinite" and int(res.num_steps) == 0
    ok = mf.fit(loss, opt, p0, 5, loss_args=(jnp.asarray(train.values),))
    assert ok.status_name == "max_steps" and int(ok.num_steps) == 5


def test_all_zero_initial_factors_are_refused(problem):
    """U = V = 0 is a stationary point: every entry point says so instead of 'converged'."""
    train, _ = problem
    p0 = mf.init_factors(jax.random.key(0), train.shape, 3)
    zero = mf.Factors(jnp.zeros_like(p0.U), jnp.zeros_like(p0.V))
    loss = mf.losses.masked_mse(train, 1.0)
    calls = (lambda: mf.fit(loss, mf.optim.gd(), zero, 5),
             lambda: mf.fit_until(loss, mf.optim.gd(), zero, max_steps=5),
             lambda: mf.solvers.als(train, 3, l2=0.1, num_steps=1, init=zero),
             lambda: mf.solvers.sgd(train, 3, l2=0.1, num_steps=1, init=zero, key=jax.random.key(0)),
             lambda: mf.solvers.vector_descent(train, 3, l2=0.1, num_steps=1, init=zero))
    for call in calls:
        with pytest.raises(ValueError, match="all zero .*stationary point"):
            call()
    with pytest.raises(ValueError, match="scale .* positive finite"):
        mf.init_factors(jax.random.key(0), train.shape, 3, scale=0.0)
    # one zero side is not a stationary point: it runs and moves
    half = mf.Factors(jnp.zeros_like(p0.U), p0.V)
    res = mf.fit(loss, mf.optim.gd(linesearch=mf.linesearch.armijo()), half, 5)
    assert float(res.value) < float(loss(half))


def test_offline_download_says_what_to_do(tmp_path, monkeypatch, capsys):
    import urllib.error

    from mfjax import cli
    from mfjax.data import DownloadError

    def offline(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(DownloadError, match=r"could not download .*ml-100k.zip.*No network"):
        mf.data.download_movielens("ml-100k", cache_dir=tmp_path, opener=offline)
    assert not list(tmp_path.iterdir())  # nothing half-written
    monkeypatch.setattr(dl, "_default_opener", offline)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["data", "download", "ml-100k", "--cache-dir", str(tmp_path)])
    assert "could not download" in str(exit_.value) and "MFJAX_DATA_DIR" in str(exit_.value)
