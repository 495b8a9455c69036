r"""The slides' side-feature network: an MLP from per-rating user / movie features to the rating.

Slides (Beresnev & Klyushev, "Recommendation via approximate matrix
factorization"), after NNMF: *"As an alternative approach we decided to train
simple neural network"* with

- 4 layers ``23x64, 64x128, 128x64, 64x1``, ReLU, MSE loss, Adam ``alpha = 0.001``,
- early stopping when the held-out loss has not decreased for 3 epochs,
  at most 50 epochs,
- inputs: min-max scaled ``user_id`` and ``movie_id``, the 18 genres
  multi-hot, binary gender, and "min-max scaled first two user features
  ('feature_1' and 'feature_2')"; result: *"average loss on test set 1.1"*.

The model, for one rating ``(i, j)`` with input ``x_ij`` (:data:`FEATURES`)::

    h1 = relu(W1 x_ij + b1)         W1: 64 x 23
    h2 = relu(W2 h1 + b2)           W2: 128 x 64
    h3 = relu(W3 h2 + b3)           W3: 64 x 128
    r_ij = W4 h3 + b4               W4: 1 x 64     (relu_output=True: relu(...) as well)

    x_ij = [s(uid_i), s(mid_j), genres_j (18), gender_i, s(age_i), s(occ_i)],  s(z) = (z - min z) / (max z - min z)

trained on ``L = mean_batch (r_ij - R_ij)^2``.

Choices the slides leave open, made here and recorded in every result:

- **The two user features** are **age** and **occupation**.  ``users.dat``
  reads ``UserID::Gender::Age::Occupation::Zip-code``; with the id and the
  gender used on their own, the first two remaining columns are age and
  occupation, and the zip code (a string, partly ``"98107-2117"``) is not a
  number to min-max scale.  Age is scaled by its code (1, 18, ..., 56: the
  band's lower end), occupation by its code 0..20 (nominal, but the slides
  scale it like a number).
- **Min-max ranges** come from the aligned side tables (all users / movies of
  the rating matrix), ids being the original MovieLens ids.  No rating enters
  them, so no test information leaks.
- **ReLU "after each layer"**: here after each hidden layer, the output
  linear (a ReLU on the output cannot recover from a negative start);
  ``relu_output=True`` follows the sentence literally.
- **Batch size** is not given: 256 (:class:`SideTrainConfig`).  Adam is
  optax's (PyTorch's defaults), the initialisation PyTorch's ``nn.Linear``
  one (``U(+-1/sqrt(fan_in))`` for weights and biases): the slides' names
  (``MSELoss``) are PyTorch's.
- **Early stopping** watches a validation part of the training ratings (the
  slides say "test set"; here the test set is never seen during training)
  and the parameters of the best validation epoch are returned.

Embedding variant (``embed_dim=d``, not in the slides): the two scaled ids are
replaced by learned embeddings ``e_i, f_j in R^d`` (``nn.Embed``), so the
first layer is ``(2d + 21) x 64``; everything else stays.

Training is one jitted epoch per call: a ``lax.scan`` over minibatches of a
host permutation ``default_rng([seed, epoch])`` (the last batch padded with
zero-weight entries), features gathered inside the step from the small
per-user / per-movie tables (:class:`SideTables`), so no ``nnz x 23`` array
is built.

>>> import numpy as np
>>> cfg = SideMLPConfig()
>>> cfg.n_inputs, cfg.layer_shapes()
(23, ((23, 64), (64, 128), (128, 64), (64, 1)))
>>> SideMLPConfig(embed_dim=8).layer_shapes()[0]
(37, 64)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mfjax.data.ratings import Ratings
from mfjax.data.side import GENRES, Movies, Users

__all__ = [
    "FEATURES",
    "SideTables",
    "SideMLPConfig",
    "SideTrainConfig",
    "SideMLP",
    "SideMLPState",
    "EarlyStopping",
    "SideMLPResult",
    "min_max",
    "side_tables",
    "build_inputs",
    "early_stopping_init",
    "early_stopping_update",
    "train_side_mlp",
    "predict_side_mlp",
    "side_mlp_mse",
]

#: The 23 per-rating inputs, in column order (the slides' list).
FEATURES = ("user_id", "movie_id", *(f"genre:{g}" for g in GENRES), "gender", "age", "occupation")
_N_USER = 4    # user table columns: user_id, gender, age, occupation
_N_MOVIE = 1 + len(GENRES)


class SideTables(NamedTuple):
    """Per-user and per-movie feature rows, aligned to a rating matrix (row ``i`` = matrix row / column ``i``).

    Attributes:
      user: float32 (m, 4): ``[s(user_id), gender, s(age), s(occupation)]``.
      movie: float32 (n, 19): ``[s(movie_id), genres (18)]``.
    """

    user: jax.Array
    movie: jax.Array


def min_max(x) -> np.ndarray:
    """``(x - min x) / (max x - min x)`` as float32 (all zeros when ``x`` is constant).

    >>> [round(float(v), 3) for v in min_max([1, 18, 56])]
    [0.0, 0.309, 1.0]
    """
    x = np.asarray(x, np.float64)
    if x.size == 0:
        raise ValueError("min_max of an empty array")
    lo, hi = x.min(), x.max()
    return (np.zeros_like(x) if hi == lo else (x - lo) / (hi - lo)).astype(np.float32)


def side_tables(users: Users, movies: Movies) -> SideTables:
    """The feature tables of users / movies already aligned to a matrix (:func:`mfjax.data.align_to_ratings`).

    Ids, age and occupation are min-max scaled over the table's rows; the
    gender is 0 (F) / 1 (M); genres are the multi-hot rows.
    """
    u = np.stack([min_max(users.ids), np.asarray(users.gender, np.float32), min_max(users.age),
                  min_max(users.occupation)], axis=1)
    g = np.asarray(movies.genres, np.float32)
    if g.ndim != 2 or g.shape[1] != len(GENRES):
        raise ValueError(f"movies.genres must be (n, {len(GENRES)}), got {g.shape}")
    m = np.concatenate([min_max(movies.ids)[:, None], g], axis=1)
    return SideTables(jnp.asarray(u), jnp.asarray(m))


def build_inputs(tables: SideTables, rows, cols) -> jax.Array:
    """The ``(B, 23)`` inputs of ratings ``(rows[k], cols[k])`` in :data:`FEATURES` order (jit-friendly).

    ``[user(uid), movie(mid), movie(genres), user(gender, age, occupation)]``.
    """
    u = jnp.take(tables.user, rows, axis=0)
    m = jnp.take(tables.movie, cols, axis=0)
    return jnp.concatenate([u[:, :1], m, u[:, 1:]], axis=1)


def _torch_bias_init(fan_in: int):
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


#: PyTorch ``nn.Linear``'s weight initialisation, U(+-1/sqrt(fan_in)).
_TORCH_KERNEL = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class SideMLPConfig:
    """Architecture: hidden widths (slides: 64, 128, 64), output ReLU, optional id embeddings.

    ``embed_dim=None`` is the slides' network on the 23 inputs; an integer
    replaces the two scaled ids by learned embeddings of that size.
    """

    hidden: tuple[int, ...] = (64, 128, 64)
    relu_output: bool = False
    embed_dim: int | None = None

    def __post_init__(self):
        if not self.hidden or any(int(h) != h or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be positive integers, got {self.hidden}")
        if self.embed_dim is not None and (int(self.embed_dim) != self.embed_dim or self.embed_dim < 1):
            raise ValueError(f"embed_dim must be a positive integer or None, got {self.embed_dim}")

    @property
    def n_inputs(self) -> int:
        """Width of the first layer's input: 23, or ``2 d + 21`` with embeddings."""
        n = len(FEATURES)
        return n if self.embed_dim is None else n - 2 + 2 * int(self.embed_dim)

    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        """``(in, out)`` of each dense layer (slides: 23x64, 64x128, 128x64, 64x1)."""
        widths = (self.n_inputs, *self.hidden, 1)
        return tuple(zip(widths[:-1], widths[1:]))


@dataclasses.dataclass(frozen=True)
class SideTrainConfig:
    """Training schedule (slides: Adam 1e-3, patience 3, at most 50 epochs; batch size ours).

    Attributes:
      batch_size: ratings per Adam step (not in the slides; 256).
      learning_rate: Adam's step size.
      max_epochs: epochs at most.
      patience: stop once the validation MSE has not decreased for this many
        epochs in a row (``None``: never stop early).
      seed: initialisation and shuffling.
      eval_batch: chunk size of the evaluation (memory only).
    """

    batch_size: int = 256
    learning_rate: float = 1e-3
    max_epochs: int = 50
    patience: int | None = 3
    seed: int = 0
    eval_batch: int = 16384

    def __post_init__(self):
        for name in ("batch_size", "max_epochs", "eval_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.patience is not None and (int(self.patience) != self.patience or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive and finite, got {self.learning_rate!r}")


class SideMLP(nn.Module):
    """The side-feature MLP (module docstring); ``__call__(x (B, 23), rows, cols) -> (B,)`` predicted ratings.

    ``rows`` / ``cols`` (matrix indices) are read only by the embedding
    variant, which drops ``x``'s two id columns for the learned embeddings.
    """

    config: SideMLPConfig
    n_users: int
    n_items: int

    @nn.compact
    def __call__(self, x, rows, cols):
        cfg = self.config
        if cfg.embed_dim is not None:
            eu = nn.Embed(self.n_users, cfg.embed_dim, name="user_embed")(rows)
            em = nn.Embed(self.n_items, cfg.embed_dim, name="movie_embed")(cols)
            x = jnp.concatenate([eu, em, x[:, 2:]], axis=1)
        for k, (fan_in, width) in enumerate(cfg.layer_shapes()):
            x = nn.Dense(width, kernel_init=_TORCH_KERNEL, bias_init=_torch_bias_init(fan_in), name=f"dense{k}")(x)
            if k < len(cfg.hidden) or cfg.relu_output:
                x = nn.relu(x)
        return x[:, 0]


class SideMLPState(NamedTuple):
    """What a step changes: flax ``params``, the Adam state, the step count (int32)."""

    params: dict
    opt_state: optax.OptState
    step: jax.Array


class EarlyStopping(NamedTuple):
    """Early-stopping bookkeeping: best validation loss so far, its epoch, epochs since, and the verdict."""

    best: float
    best_epoch: int
    since_best: int
    stop: bool


def early_stopping_init() -> EarlyStopping:
    """No epoch seen yet (best ``inf``, epoch 0)."""
    return EarlyStopping(float("inf"), 0, 0, False)


def early_stopping_update(es: EarlyStopping, epoch: int, loss: float, patience: int | None) -> EarlyStopping:
    """Record epoch ``epoch``'s validation ``loss``: a strict decrease resets the count, anything else adds one.

    ``stop`` once ``since_best >= patience`` (the slides: "loss is not
    decreasing for 3 iterations"); a NaN loss never counts as a decrease.

    >>> es = early_stopping_init()
    >>> for e, l in enumerate([1.0, 0.9, 0.95, 0.9, 0.91], start=1):
    ...     es = early_stopping_update(es, e, l, patience=3)
    >>> es
    EarlyStopping(best=0.9, best_epoch=2, since_best=3, stop=True)
    """
    if loss < es.best:
        return EarlyStopping(float(loss), int(epoch), 0, False)
    since = es.since_best + 1
    return EarlyStopping(es.best, es.best_epoch, since, patience is not None and since >= patience)


class SideMLPResult(NamedTuple):
    """A trained model (parameters of the best validation epoch) and its record.

    Attributes:
      model: the :class:`SideMLP` module; params: its best-epoch parameters.
      config, train_config: the configurations.
      trace: per-epoch ``train_loss`` (mean minibatch MSE), ``val_mse`` and
        ``<name>_mse`` for each ``extra_eval`` set (recorded, never used to
        choose), ``epoch_s`` (seconds per epoch, the first with compilation).
      best_epoch, best_val: the selected epoch (1-based) and its validation MSE.
      epochs_run: epochs trained; stopped_early: early stopping fired;
      wall_time: seconds in all.
    """

    model: SideMLP
    params: dict
    config: SideMLPConfig
    train_config: SideTrainConfig
    trace: dict
    best_epoch: int
    best_val: float
    epochs_run: int
    stopped_early: bool
    wall_time: float


def _check_set(name: str, r: Ratings, tables: SideTables) -> None:
    m, n = int(tables.user.shape[0]), int(tables.movie.shape[0])
    if tuple(r.shape) != (m, n):
        raise ValueError(f"{name} has shape {tuple(r.shape)} but the side tables cover ({m}, {n}) users x movies "
                         "(align them with mfjax.data.align_to_ratings)")
    if r.nnz == 0:
        raise ValueError(f"{name} has no ratings")
    v = np.asarray(r.values)
    if not np.isfinite(v).all():
        k = int(np.flatnonzero(~np.isfinite(v))[0])
        raise ValueError(f"{name} rating {v[k]} at entry {k} is not finite")


def _padded_batches(idx: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``idx`` cut into ``(S, batch)`` rows, the last padded with index 0 and weight 0."""
    s = -(-idx.size // batch)
    out = np.zeros(s * batch, np.int32)
    w = np.zeros(s * batch, np.float32)
    out[: idx.size], w[: idx.size] = idx, 1.0
    return out.reshape(s, batch), w.reshape(s, batch)


def _make_epoch_fn(model: SideMLP, opt):
    """The jitted epoch ``(state, tables, rows, cols, values, idx (S,B), w (S,B)) -> (state, losses (S,))``."""

    def loss_fn(params, x, r, c, y, w):
        pred = model.apply({"params": params}, x, r, c)
        return jnp.sum(w * (pred - y) ** 2) / jnp.maximum(jnp.sum(w), 1.0)

    grad_fn = jax.value_and_grad(loss_fn)

    def epoch(state: SideMLPState, tables, rows, cols, values, idx, w):
        def step(st: SideMLPState, xs):
            b, wb = xs
            r, c = rows[b], cols[b]
            loss, g = grad_fn(st.params, build_inputs(tables, r, c), r, c, values[b], wb)
            upd, opt_state = opt.update(g, st.opt_state, st.params)
            return SideMLPState(optax.apply_updates(st.params, upd), opt_state, st.step + 1), loss

        return jax.lax.scan(step, state, (idx, w))

    return jax.jit(epoch)


def _make_predict_fn(model: SideMLP):
    def pred(params, tables, rows, cols):  # rows, cols: (S, B) chunks
        def one(rc):
            r, c = rc
            return model.apply({"params": params}, build_inputs(tables, r, c), r, c)

        return jax.lax.map(one, (rows, cols)).reshape(-1)

    return jax.jit(pred)


def predict_side_mlp(model: SideMLP, params, tables: SideTables, rows, cols, *, batch: int = 16384,
                     predict_fn=None) -> np.ndarray:
    """Predicted ratings at ``(rows[k], cols[k])`` (host float32), in chunks of ``batch`` (one compilation per size)."""
    rows, cols = np.asarray(rows, np.int32).reshape(-1), np.asarray(cols, np.int32).reshape(-1)
    n = rows.size
    if n == 0:
        return np.zeros(0, np.float32)
    b = min(int(batch), n)
    r, _ = _padded_batches(rows, b)
    c, _ = _padded_batches(cols, b)
    fn = predict_fn or _make_predict_fn(model)
    return np.asarray(fn(params, tables, jnp.asarray(r), jnp.asarray(c)))[:n]


def side_mlp_mse(model: SideMLP, params, tables: SideTables, ratings: Ratings, *, batch: int = 16384,
                 predict_fn=None) -> float:
    """Mean squared error ``mean_k (r_k - R_k)^2`` of the model on ``ratings`` (float64 on the host)."""
    p = predict_side_mlp(model, params, tables, ratings.rows, ratings.cols, batch=batch, predict_fn=predict_fn)
    return float(np.mean((p.astype(np.float64) - np.asarray(ratings.values, np.float64)) ** 2))


def train_side_mlp(train: Ratings, valid: Ratings, tables: SideTables, config: SideMLPConfig | None = None,
                   train_config: SideTrainConfig | None = None, *, extra_eval: dict | None = None,
                   log: Callable[[str], None] | None = None) -> SideMLPResult:
    """Train the side-feature MLP on ``train`` with early stopping on ``valid``.

    Each epoch: one pass over ``train`` in a fresh order
    (``default_rng([seed, epoch])``), Adam steps on minibatch MSE; then the
    MSE on ``valid`` feeds :func:`early_stopping_update`.  Training stops at
    ``max_epochs`` or when early stopping fires; the parameters of the best
    validation epoch are returned.

    Args:
      train, valid: ratings of the same shape as the tables (``valid``: a
        part of the training ratings, never the test set).
      tables: :func:`side_tables` of the aligned side tables.
      config, train_config: architecture / schedule (defaults: the slides').
      extra_eval: ``{name: Ratings}`` evaluated every epoch into
        ``trace[name + "_mse"]`` (e.g. the test set, for the plot): recorded
        only, never used for a decision.
      log: optional callable receiving one line per epoch.

    Raises:
      ValueError: a set of another shape than the tables, empty, or with a
        non-finite rating; FloatingPointError: a non-finite training loss.
    """
    config = config or SideMLPConfig()
    tc = train_config or SideTrainConfig()
    _check_set("train", train, tables)
    _check_set("valid", valid, tables)
    for name, r in (extra_eval or {}).items():
        _check_set(f"extra_eval[{name!r}]", r, tables)
    t0 = time.perf_counter()
    m, n = train.shape
    model = SideMLP(config, m, n)
    k0 = jax.random.PRNGKey(tc.seed)
    z = jnp.zeros((1,), jnp.int32)
    params = model.init(k0, jnp.zeros((1, len(FEATURES)), jnp.float32), z, z)["params"]
    opt = optax.adam(tc.learning_rate)
    state = SideMLPState(params, opt.init(params), jnp.zeros((), jnp.int32))
    epoch_fn, pred_fn = _make_epoch_fn(model, opt), _make_predict_fn(model)
    rows, cols = jnp.asarray(train.rows, jnp.int32), jnp.asarray(train.cols, jnp.int32)
    values = jnp.asarray(train.values, jnp.float32)
    evals = {"val": valid, **(extra_eval or {})}
    trace = {"train_loss": [], "epoch_s": [], **{f"{k}_mse": [] for k in evals}}
    es, best_params = early_stopping_init(), params
    epoch = 0
    while epoch < tc.max_epochs and not es.stop:
        te = time.perf_counter()
        perm = np.random.default_rng([tc.seed, epoch]).permutation(train.nnz)
        idx, w = _padded_batches(perm, min(tc.batch_size, train.nnz))
        state, losses = epoch_fn(state, SideTables(*tables), rows, cols, values, jnp.asarray(idx), jnp.asarray(w))
        epoch += 1
        wsum = w.sum(1)
        train_loss = float(np.sum(np.asarray(losses) * wsum) / wsum.sum())
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"side MLP training loss became {train_loss} at epoch {epoch}")
        for k, r in evals.items():
            trace[f"{k}_mse"].append(side_mlp_mse(model, state.params, tables, r, batch=tc.eval_batch,
                                                  predict_fn=pred_fn))
        trace["train_loss"].append(train_loss)
        trace["epoch_s"].append(time.perf_counter() - te)
        es = early_stopping_update(es, epoch, trace["val_mse"][-1], tc.patience)
        if es.best_epoch == epoch:
            best_params = state.params
        if log:
            log(f"epoch {epoch}: train {train_loss:.4f}  "
                + "  ".join(f"{k} {trace[f'{k}_mse'][-1]:.4f}" for k in evals)
                + f"  [{trace['epoch_s'][-1]:.1f}s]" + ("  (best)" if es.best_epoch == epoch else ""))
    return SideMLPResult(model, best_params, config, tc, trace, es.best_epoch, es.best, epoch, es.stop,
                         time.perf_counter() - t0)
