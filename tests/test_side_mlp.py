"""The slides' side-feature MLP: inputs, architecture, training, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

import mfjax as mf
from mfjax.data import GENRES, Movies, Users
from mfjax.models import side_mlp as S


def _tables(m=60, n=40, seed=0):
    rng = np.random.default_rng(seed)
    users = Users(np.arange(m, dtype=np.int64) * 3 + 5, rng.integers(0, 2, m).astype(np.int8),
                  rng.choice(mf.data.AGE_CODES, m).astype(np.int16), rng.integers(0, 21, m).astype(np.int16),
                  np.array(["00000"] * m))
    genres = (rng.random((n, len(GENRES))) < 0.2).astype(np.float32)
    movies = Movies(np.arange(n, dtype=np.int64) * 2 + 1, np.array([f"m{j}" for j in range(n)]),
                    np.full(n, 1990, np.int32), genres)
    return users, movies


def _ratings(users, movies, seed=0, density=0.6, flip=False):
    """Ratings that depend on the features: a gender x genre interaction plus an age trend (in [1, 5])."""
    rng = np.random.default_rng(seed)
    m, n = len(users.ids), len(movies.ids)
    r, c = np.nonzero(rng.random((m, n)) < density)
    g = movies.genres
    score = (1.5 * users.gender[r] * g[c, 0] - 1.5 * (1 - users.gender[r]) * g[c, 7] + 1.2 * g[c, 4]
             + (users.age[r] / 56.0) - 0.5)
    vals = np.clip(3 + (-score if flip else score), 1, 5)
    return mf.data.Ratings.create(r, c, vals, (m, n))


def test_defaults_are_the_slides_recipe():
    cfg, tc = S.SideMLPConfig(), S.SideTrainConfig()
    assert cfg.layer_shapes() == ((23, 64), (64, 128), (128, 64), (64, 1))
    assert (tc.learning_rate, tc.patience, tc.max_epochs, tc.batch_size) == (1e-3, 3, 50, 256)
    assert len(S.FEATURES) == 23 and S.FEATURES[:2] == ("user_id", "movie_id")
    assert S.FEATURES[-3:] == ("gender", "age", "occupation")
    with pytest.raises(ValueError, match="batch_size"):
        S.SideTrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="embed_dim"):
        S.SideMLPConfig(embed_dim=0)


def test_side_tables_and_inputs_scaling_and_order():
    users, movies = _tables()
    t = S.side_tables(users, movies)
    assert t.user.shape == (60, 4) and t.movie.shape == (40, 19)
    for col in (t.user[:, 0], t.user[:, 2], t.user[:, 3], t.movie[:, 0]):  # min-max scaled
        assert float(col.min()) == 0.0 and float(col.max()) == 1.0
    rows, cols = np.array([0, 59, 7]), np.array([39, 0, 3])
    x = np.asarray(S.build_inputs(t, rows, cols))
    assert x.shape == (3, 23)
    np.testing.assert_allclose(x[:, 0], (users.ids[rows] - 5) / (users.ids.max() - 5), rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], (movies.ids[cols] - 1) / (movies.ids.max() - 1), rtol=1e-6)
    np.testing.assert_array_equal(x[:, 2:20], movies.genres[cols])
    np.testing.assert_array_equal(x[:, 20], users.gender[rows])
    np.testing.assert_allclose(x[:, 21], (users.age[rows] - users.age.min()) / (users.age.max() - users.age.min()),
                               rtol=1e-6)
    np.testing.assert_allclose(x[:, 22], users.occupation[rows] / users.occupation.max(), rtol=1e-6)
    assert S.min_max([4, 4]).tolist() == [0.0, 0.0]


def test_model_layers_have_the_slides_shapes():
    users, movies = _tables()
    t = S.side_tables(users, movies)
    model = S.SideMLP(S.SideMLPConfig(), 60, 40)
    import jax

    x = S.build_inputs(t, np.array([0, 1]), np.array([0, 1]))
    params = model.init(jax.random.PRNGKey(0), x, np.array([0, 1]), np.array([0, 1]))["params"]
    assert [params[f"dense{k}"]["kernel"].shape for k in range(4)] == [(23, 64), (64, 128), (128, 64), (64, 1)]
    assert model.apply({"params": params}, x, np.array([0, 1]), np.array([0, 1])).shape == (2,)


def test_training_reduces_held_out_loss():
    users, movies = _tables()
    ratings = _ratings(users, movies)
    train, valid = mf.data.split(ratings, (0.8, 0.2), seed=0)
    t = S.side_tables(users, movies)
    tc = S.SideTrainConfig(batch_size=32, learning_rate=3e-3, max_epochs=25, patience=None)
    res = S.train_side_mlp(train, valid, t, train_config=tc)
    v = res.trace["val_mse"]
    assert res.epochs_run == 25 and not res.stopped_early and len(v) == 25
    mean_mse = float(np.var(np.asarray(valid.values)))
    assert v[-1] < 0.5 * v[0] and min(v) < 0.6 * mean_mse, (v[0], v[-1], mean_mse)
    assert res.best_val == min(v) and res.best_epoch == int(np.argmin(v)) + 1
    # the returned parameters are the best epoch's
    assert S.side_mlp_mse(res.model, res.params, t, valid) == pytest.approx(res.best_val, rel=1e-5)


def test_early_stopping_fires_when_held_out_loss_rises():
    users, movies = _tables()
    train = _ratings(users, movies, seed=0)
    anti = _ratings(users, movies, seed=1, flip=True)      # the opposite relation: fitting train hurts it
    t = S.side_tables(users, movies)
    tc = S.SideTrainConfig(batch_size=32, learning_rate=3e-3, max_epochs=30, patience=3)
    res = S.train_side_mlp(train, anti, t, train_config=tc, extra_eval={"train": train})
    v = res.trace["val_mse"]
    assert res.stopped_early and res.epochs_run == res.best_epoch + 3 < 30
    assert all(x >= res.best_val for x in v[res.best_epoch:])      # no decrease in the last 3 epochs
    assert res.trace["train_mse"][-1] < res.trace["train_mse"][res.best_epoch - 1]  # train kept improving


def test_early_stopping_update_counts_non_decreases():
    es = S.early_stopping_init()
    seen = []
    for e, loss in enumerate([3.0, 2.0, 2.0, 1.5, 1.6, float("nan"), 1.7], start=1):
        es = S.early_stopping_update(es, e, loss, patience=3)
        seen.append((es.best_epoch, es.since_best, es.stop))
    assert seen == [(1, 0, False), (2, 0, False), (2, 1, False), (4, 0, False), (4, 1, False), (4, 2, False),
                    (4, 3, True)]
    assert not S.early_stopping_update(S.early_stopping_init()._replace(since_best=99), 1, 5.0, None).stop


def test_embedding_variant_and_relu_output():
    users, movies = _tables()
    ratings = _ratings(users, movies)
    train, valid = mf.data.split(ratings, (0.8, 0.2), seed=0)
    t = S.side_tables(users, movies)
    tc = S.SideTrainConfig(batch_size=64, max_epochs=2, patience=None)
    res = S.train_side_mlp(train, valid, t, S.SideMLPConfig(embed_dim=4, relu_output=True), tc)
    assert res.params["user_embed"]["embedding"].shape == (60, 4)
    assert res.params["movie_embed"]["embedding"].shape == (40, 4)
    assert res.params["dense0"]["kernel"].shape == (29, 64)
    p = S.predict_side_mlp(res.model, res.params, t, valid.rows, valid.cols, batch=7)
    assert p.shape == (valid.nnz,) and (p >= 0).all()


def test_bad_inputs_are_named():
    users, movies = _tables()
    t = S.side_tables(users, movies)
    ratings = _ratings(users, movies)
    other = mf.data.Ratings.create([0], [0], [3.0], (5, 5))
    with pytest.raises(ValueError, match=r"valid has shape \(5, 5\).*\(60, 40\)"):
        S.train_side_mlp(ratings, other, t)
    with pytest.raises(ValueError, match="movies.genres must be"):
        S.side_tables(users, movies._replace(genres=movies.genres[:, :5]))
