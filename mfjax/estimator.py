r"""One estimator over every model: ``fit`` / ``predict`` / ``recommend`` / ``test`` / ``save`` / ``load``.

:class:`Recommender` is the facade a recommender researcher expects from
Surprise (``fit``, ``predict(raw_user, raw_item)``, ``test``) and cornac
(``recommend(user, k)``), over mfjax's models:

==================  ==========================================================
``model``           what ``fit`` runs
==================  ==========================================================
``"als"``           :func:`mfjax.solvers.als` (biased by default, ALS-WR ridge)
``"sgd"``           :func:`mfjax.solvers.sgd` (Funk SVD with biases by default)
``"nmf"``           :func:`mfjax.solvers.nmf` (multiplicative updates; no biases)
``"dmf"``           :func:`mfjax.models.train_dmf` (two-branch cosine network)
``"dmf-d"``         the same with the learned smooth quantizer (DMF-D)
any run name        an optimizer of :func:`mfjax.fit`: ``"gd+armijo"``,
                    ``"adam+constant(step_size=0.01)"``, ``"gauss_newton+exact_mf"``
                    (:func:`mfjax.compare.parse_run`) on the masked objective
                    :func:`mfjax.objective.loss` (plain factors)
==================  ==========================================================

Raw ids.  ``fit`` takes a :class:`~mfjax.data.Ratings` (its id maps give the
raw ids; without them the indices are the ids) or a pandas DataFrame (string
ids allowed, :func:`mfjax.data.from_pandas`).  Every other method speaks raw
ids.

Unknown ids (``unknown=``, declared at construction and stored with the model):

- ``"mean"`` (default): an unknown user with a known item gets the item's
  training mean, a known user with an unknown item the user's mean, both
  unknown the global mean -- the fallbacks of Surprise's baseline
  (Surprise itself falls back to the global mean for any unknown id);
- ``"global"``: the global mean for any prediction with an unknown id;
- ``"error"``: raise :class:`KeyError` naming the first unknown ids and their count.

Every prediction carries its ``fallback`` (``"none"``, ``"item_mean"``,
``"user_mean"``, ``"global_mean"``; Surprise's ``was_impossible``), and
:meth:`Recommender.recommend` for an unknown user returns the most-rated
items, flagged ``"popular"``.

Persistence.  :meth:`Recommender.save` writes one ``.npz`` file atomically
(:func:`mfjax.store.atomic_write_bytes`): the parameters (factors, or the DMF
variables and quantizer boundaries), the id maps, the configuration, the
training entries (seen-item exclusion; DMF's input vectors), the fallback
statistics, the training data's checksum (:func:`mfjax.data.data_checksum`)
and a SHA-256 over all of it; :meth:`Recommender.load` verifies the checksum
(:class:`CorruptModelError` otherwise) and reads it back without pickle.  A
reloaded model predicts and recommends exactly as the saved one.

>>> import mfjax as mf
>>> train = mf.data.synthetic(m=40, n=30, rank=3, density=0.4, seed=0)
>>> est = Recommender("als", rank=3, num_steps=5).fit(train)
>>> p = est.predict([0, 1, 999], [2, 2, 2])
>>> p.fallback.tolist()
['none', 'none', 'item_mean']
>>> est.recommend(0, k=3).items.shape
(1, 3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mfjax import data as mfdata
from mfjax import metrics
from mfjax.core import status_name
from mfjax.core.factors import BiasedFactors, Factors, init_factors, predict as factor_predict
from mfjax.data.ratings import IdMap, Ratings
from mfjax.eval.topk import top_k
from mfjax.store import atomic_write_bytes

__all__ = ["Recommender", "Predictions", "Recommendations", "CorruptModelError", "FALLBACKS", "UNKNOWN_POLICIES",
           "MODELS", "load"]

log = logging.getLogger("mfjax")

#: The models :class:`Recommender` fits by name (any optimizer run name works as well).
MODELS = ("als", "sgd", "nmf", "dmf", "dmf-d")
#: Policies for ids not seen in training.
UNKNOWN_POLICIES = ("mean", "global", "error")
#: What a prediction fell back to (``"none"``: the model's own prediction).
FALLBACKS = ("none", "item_mean", "user_mean", "global_mean")
FORMAT = "mfjax-recommender-v1"

# per-model defaults, in each solver's own vocabulary (``l2`` in its "sum" scaling)
_DEFAULTS = {
    "als": {"l2": 0.05, "num_steps": 15, "biases": True, "options": {"weighted_l2": True}},
    "sgd": {"l2": 0.02, "num_steps": 20, "biases": True, "options": {"lr": 0.01, "weighted_l2": True}},
    "nmf": {"l2": 0.0, "num_steps": 100, "biases": False, "options": {}},
    "dmf": {"l2": None, "num_steps": None, "biases": False, "options": {}},
    "dmf-d": {"l2": None, "num_steps": None, "biases": False, "options": {}},
    "optimizer": {"l2": 1.0, "num_steps": 200, "biases": False, "options": {}},
}


class CorruptModelError(ValueError):
    """A saved model file that cannot be read back as it was written (truncated, edited, not a model)."""


class Predictions(NamedTuple):
    """Predictions at raw ``(user, item)`` pairs.

    Attributes:
      user, item: the raw ids asked for.
      rating: the predictions (clipped to the training rating scale when ``clip``).
      fallback: per prediction one of :data:`FALLBACKS` (``"none"``: the model predicted it).
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    fallback: np.ndarray

    @property
    def impossible(self) -> np.ndarray:
        """True where the model could not predict (an unknown id; Surprise's ``was_impossible``)."""
        return self.fallback != "none"

    def to_pandas(self):
        """A DataFrame with columns ``user, item, rating, fallback`` (needs pandas)."""
        from mfjax.data.frames import _pandas

        return _pandas().DataFrame(self._asdict())


class Recommendations(NamedTuple):
    """Top-``k`` lists for raw users.

    Attributes:
      user: the raw user ids, shape ``(u,)``.
      items: raw item ids, shape ``(u, k)``, best first.
      scores: the model's scores of those items (``"popular"``: training counts).
      fallback: per user ``"none"`` or ``"popular"`` (an unknown user gets the most-rated items).
    """

    user: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    fallback: np.ndarray

    def to_pandas(self):
        """A long DataFrame ``user, rank, item, score, fallback`` (rank 1 = best; needs pandas)."""
        from mfjax.data.frames import _pandas

        u, k = self.items.shape
        return _pandas().DataFrame({
            "user": np.repeat(self.user, k), "rank": np.tile(np.arange(1, k + 1), u),
            "item": self.items.reshape(-1), "score": self.scores.reshape(-1),
            "fallback": np.repeat(self.fallback, k)})


@dataclasses.dataclass(frozen=True)
class _Fitted:
    """What ``fit`` learned: parameters, id maps, training entries and fallback statistics."""

    params: Any                 # Factors / BiasedFactors, or a models.DMFResult
    row_ids: IdMap
    col_ids: IdMap
    train: Ratings              # host arrays, in index space
    global_mean: float
    user_mean: np.ndarray       # (m,), NaN for a user without training ratings
    item_mean: np.ndarray       # (n,)
    item_count: np.ndarray      # (n,)
    rating_scale: tuple[float, float]
    checksum: str


def _is_optimizer(model: str) -> bool:
    return model not in MODELS


def _check_model(model: str) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if _is_optimizer(model):
        from mfjax.compare.spec import parse_run

        spec = parse_run(model)
        if spec.kind != "opt":
            raise ValueError(f"model {model!r} is not a model name ({', '.join(MODELS)}) nor an optimizer run "
                             "such as 'gd+armijo'")


class Recommender:
    """A recommender over one mfjax model (see the module docstring for the models and policies).

    Args:
      model: one of :data:`MODELS` or an optimizer run name (``"gd+armijo"``).
      rank: factorization rank (factor models; DMF's embedding size comes from ``dmf_config``).
      l2: the ridge ``lambda`` in the model's own scaling (default per model:
        ALS 0.05 with the ALS-WR weights, SGD 0.02 Funk-style, NMF 0,
        optimizers 1.0 on the slides' sum-scaled objective).
      num_steps: sweeps / epochs / iterations / optimizer steps (default per model).
      biases: fit ``mean + b_i + c_j + u_i . v_j`` (ALS, SGD; default True for
        them, False elsewhere; NMF, DMF and optimizers refuse True).
      unknown: the unknown-id policy, one of :data:`UNKNOWN_POLICIES`.
      clip: clip predictions to the training rating scale.
      seed: the initialisation / shuffling seed.
      options: further keyword arguments of the model's fit function
        (e.g. ``lr=0.005`` for SGD, ``weighted_l2=False`` for ALS,
        ``dmf_config={"row_widths": [64, 32], ...}``,
        ``train_config={"epochs": 20}`` for DMF); JSON values only, since
        they are saved with the model.

    Raises:
      ValueError: an unknown model or policy, a bad rank / step count, or options the model does not take.
    """

    def __init__(self, model: str = "als", *, rank: int = 10, l2: float | None = None, num_steps: int | None = None,
                 biases: bool | None = None, unknown: str = "mean", clip: bool = True, seed: int = 0, **options):
        _check_model(model)
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown={unknown!r}: choose one of {UNKNOWN_POLICIES}")
        kind = "optimizer" if _is_optimizer(model) else model
        d = _DEFAULTS[kind]
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
                                      or num_steps < 1):
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        if l2 is not None and not (np.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be finite and >= 0, got {l2!r}")
        biases = d["biases"] if biases is None else bool(biases)
        if biases and kind not in ("als", "sgd"):
            raise ValueError(f"biases=True is supported by 'als' and 'sgd', not {model!r}")
        try:
            json.dumps(options)
        except TypeError as e:
            raise ValueError(f"options must be JSON values (they are saved with the model): {e}") from None
        self.config = {
            "model": model, "rank": int(rank), "l2": d["l2"] if l2 is None else float(l2),
            "num_steps": d["num_steps"] if num_steps is None else int(num_steps), "biases": biases,
            "unknown": unknown, "clip": bool(clip), "seed": int(seed), "options": {**d["options"], **options},
        }
        self._fitted: _Fitted | None = None

    # ------------------------------------------------------------------ config
    def get_params(self) -> dict:
        """The constructor arguments (a copy), as :meth:`clone` takes them."""
        c = dict(self.config)
        options = dict(c.pop("options"))
        return {**c, **options}

    def clone(self, **changes) -> "Recommender":
        """An unfitted estimator with the same configuration, ``changes`` applied (any constructor argument)."""
        params = {**self.get_params(), **changes}
        model = params.pop("model")
        return Recommender(model, **params)

    def __repr__(self) -> str:
        c = self.config
        state = "fitted" if self._fitted is not None else "not fitted"
        return (f"Recommender({c['model']!r}, rank={c['rank']}, l2={c['l2']}, num_steps={c['num_steps']}, "
                f"biases={c['biases']}, unknown={c['unknown']!r}; {state})")

    @property
    def fitted(self) -> _Fitted:
        if self._fitted is None:
            raise RuntimeError("this Recommender is not fitted: call fit(ratings) first")
        return self._fitted

    @property
    def params(self):
        """The fitted parameters (Factors / BiasedFactors, or the DMF result)."""
        return self.fitted.params

    # ------------------------------------------------------------------ fit
    def fit(self, data, *, user: str = "user", item: str = "item", rating: str = "rating") -> "Recommender":
        """Fit on ``data`` (a :class:`~mfjax.data.Ratings` or a DataFrame with columns ``user, item, rating``).

        Returns ``self``.  Raises the loaders' errors on bad input (NaN
        ratings, duplicates, ...) and ValueError for a model/data mismatch
        (negative ratings for NMF, a rank above ``min(m, n)``).
        """
        train = _as_ratings(data, user, item, rating)
        if train.nnz == 0:
            raise ValueError("cannot fit on empty ratings")
        train = _host(train)
        rank = self.config["rank"]
        if self.config["model"] not in ("dmf", "dmf-d") and rank > min(train.shape):
            raise ValueError(f"rank {rank} exceeds min(m, n) = {min(train.shape)} of the training ratings "
                             f"{train.shape}")
        m, n = train.shape
        row_ids = IdMap(_ids(train.row_ids.original, "user ids")) if train.row_ids is not None else IdMap(np.arange(m))
        col_ids = IdMap(_ids(train.col_ids.original, "item ids")) if train.col_ids is not None else IdMap(np.arange(n))
        params = _FITTERS[_kind(self.config["model"])](self.config, train)
        values = np.asarray(train.values, np.float64)
        rows, cols = np.asarray(train.rows), np.asarray(train.cols)
        with np.errstate(invalid="ignore", divide="ignore"):
            user_mean = np.bincount(rows, values, m) / np.bincount(rows, minlength=m)
            item_mean = np.bincount(cols, values, n) / np.bincount(cols, minlength=n)
        self._fitted = _Fitted(params, row_ids, col_ids, train, float(values.mean()), user_mean, item_mean,
                               np.bincount(cols, minlength=n), (float(values.min()), float(values.max())),
                               mfdata.data_checksum(train))
        return self

    # ------------------------------------------------------------------ predict
    def _lookup(self, users, items):
        f = self.fitted
        users, items = _ids(users, "users"), _ids(items, "items")
        if users.shape != items.shape:
            if users.size == 1:
                users = np.repeat(users, items.size)
            elif items.size == 1:
                items = np.repeat(items, users.size)
            else:
                raise ValueError(f"users and items disagree in length: {users.size} vs {items.size}")
        ri, rk = _lookup(f.row_ids, users)
        ci, ck = _lookup(f.col_ids, items)
        if self.config["unknown"] == "error" and not (rk.all() and ck.all()):
            bad_u, bad_i = users[~rk], items[~ck]
            parts = []
            if bad_u.size:
                parts.append(f"{bad_u.size} unknown user id(s), first {bad_u[0]!r}")
            if bad_i.size:
                parts.append(f"{bad_i.size} unknown item id(s), first {bad_i[0]!r}")
            raise KeyError("; ".join(parts) + " (unknown='error'; use unknown='mean' or 'global' to fall back)")
        return users, items, ri, rk, ci, ck

    def predict(self, users, items, *, clip: bool | None = None) -> Predictions:
        """Predictions at raw ``(users[k], items[k])`` (one of them may be a single id).

        Unknown ids follow the declared policy and are flagged in
        ``Predictions.fallback``; ``clip`` (default: the constructor's)
        clips to the training rating scale.
        """
        f = self.fitted
        users, items, ri, rk, ci, ck = self._lookup(users, items)
        known = rk & ck
        pred = np.full(users.shape, f.global_mean, np.float64)
        if known.any():
            pred[known] = self._scores_at(ri[known], ci[known])
        fallback = np.full(users.shape, "none", dtype="<U11")
        if self.config["unknown"] == "mean":
            item_only = ~rk & ck
            user_only = rk & ~ck
            pred[item_only] = _or_global(f.item_mean[ci[item_only]], f.global_mean)
            pred[user_only] = _or_global(f.user_mean[ri[user_only]], f.global_mean)
            fallback[item_only], fallback[user_only] = "item_mean", "user_mean"
            fallback[~rk & ~ck] = "global_mean"
        else:
            fallback[~known] = "global_mean"
        n_fb = int((~known).sum())
        if n_fb:
            log.info("predict: %d of %d predictions fell back (unknown ids, policy %r)", n_fb, users.size,
                     self.config["unknown"])
        if self.config["clip"] if clip is None else clip:
            pred = np.clip(pred, *f.rating_scale)
        return Predictions(users, items, pred, fallback)

    def _scores_at(self, rows, cols) -> np.ndarray:
        p = self.fitted.params
        if _kind(self.config["model"]) in ("dmf", "dmf-d"):
            from mfjax.models import predict as dmf_predict

            return np.asarray(dmf_predict(p, jnp.asarray(rows, jnp.int32), jnp.asarray(cols, jnp.int32)), np.float64)
        return np.asarray(factor_predict(p, jnp.asarray(rows), jnp.asarray(cols)), np.float64)

    def test(self, data, *, user: str = "user", item: str = "item", rating: str = "rating") -> dict:
        """RMSE and MAE on held-out ``data`` (Ratings with raw id maps, or a DataFrame); fallbacks counted.

        Returns ``{"rmse", "mae", "n", "fallbacks": {name: count}}``.
        """
        users, items, values = _raw_triplets(data, user, item, rating)
        p = self.predict(users, items)
        names, counts = np.unique(p.fallback, return_counts=True)
        return {"rmse": float(metrics.rmse_from_predictions(p.rating, values)),
                "mae": float(metrics.mae_from_predictions(p.rating, values)), "n": int(values.size),
                "fallbacks": {str(a): int(c) for a, c in zip(names, counts)}}

    # ------------------------------------------------------------------ recommend
    def recommend(self, users, k: int = 10, *, exclude_seen: bool = True) -> Recommendations:
        """The ``k`` best items for each raw user, training items excluded (``exclude_seen``).

        Factor models rank by :func:`mfjax.eval.top_k` (batched on device);
        DMF scores every item for the user.  An unknown user gets the ``k``
        most-rated training items (``fallback="popular"``, scores = counts).
        """
        f = self.fitted
        users = _ids(users, "users")
        n = f.train.shape[1]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise ValueError(f"k must be an integer in [1, {n}], got {k!r}")
        idx, known = _lookup(f.row_ids, users)
        if self.config["unknown"] == "error" and not known.all():
            raise KeyError(f"{int((~known).sum())} unknown user id(s), first {users[~known][0]!r} (unknown='error')")
        items = np.zeros((users.size, k), np.int64)
        scores = np.zeros((users.size, k), np.float64)
        if known.any():
            ki, ks = self._top_k(idx[known], k, exclude_seen)
            items[known], scores[known] = ki, ks
        popular = np.lexsort((np.arange(n), -f.item_count))[:k]
        items[~known], scores[~known] = popular, f.item_count[popular]
        fallback = np.where(known, "none", "popular").astype("<U7")
        return Recommendations(users, f.col_ids.to_original(items), scores, fallback)

    def _top_k(self, rows: np.ndarray, k: int, exclude_seen: bool):
        f = self.fitted
        exclude = f.train if exclude_seen else None
        if _kind(self.config["model"]) not in ("dmf", "dmf-d"):
            t = top_k(f.params, k, exclude=exclude, users=rows)
            return np.asarray(t.items), np.asarray(t.scores)
        m, n = f.train.shape
        train_rows, train_cols = np.asarray(f.train.rows), np.asarray(f.train.cols)
        out_i, out_s = [], []
        for start in range(0, rows.size, 256):  # DMF: score (users x all items) in batches
            rb = rows[start:start + 256]
            s = self._scores_at(np.repeat(rb, n), np.tile(np.arange(n), rb.size)).reshape(rb.size, n)
            if exclude_seen:  # position of each training entry's user in this batch (-1: not in it)
                slot = np.full(m, -1)
                slot[rb] = np.arange(rb.size)
                sel = slot[train_rows] >= 0
                s[slot[train_rows[sel]], train_cols[sel]] = -np.inf
            order = np.lexsort((np.broadcast_to(np.arange(n), s.shape), -s), axis=-1)[:, :k]
            out_i.append(order)
            out_s.append(np.take_along_axis(s, order, axis=1))
        return np.concatenate(out_i), np.concatenate(out_s)

    # ------------------------------------------------------------------ save / load
    def save(self, path) -> pathlib.Path:
        """Write the fitted model to ``path`` (one ``.npz``, atomic, checksummed); returns the path."""
        f = self.fitted
        arrays = {
            "row_ids": _id_array(f.row_ids.original), "col_ids": _id_array(f.col_ids.original),
            "train_rows": np.asarray(f.train.rows), "train_cols": np.asarray(f.train.cols),
            "train_values": np.asarray(f.train.values), "user_mean": f.user_mean, "item_mean": f.item_mean,
            "item_count": f.item_count,
        }
        meta = {"format": FORMAT, "config": self.config, "shape": list(f.train.shape),
                "global_mean": f.global_mean, "rating_scale": list(f.rating_scale), "data_checksum": f.checksum}
        if _kind(self.config["model"]) in ("dmf", "dmf-d"):
            from mfjax.models.resume import _plain

            p = f.params
            meta["dmf_config"], meta["train_config"] = _plain(p.config), _plain(p.train_config)
            for key, leaf in jax.tree_util.tree_flatten_with_path(p.variables)[0]:
                arrays["var" + jax.tree_util.keystr(key)] = np.asarray(leaf)
            if p.boundaries is not None:
                arrays["boundaries"] = np.asarray(p.boundaries)
        else:
            meta["params"] = type(f.params).__name__
            for name, leaf in f.params._asdict().items():
                arrays["param." + name] = np.asarray(leaf)
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        meta["sha256"] = _content_hash(meta, arrays)
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.array(json.dumps(meta, sort_keys=True)), **arrays)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> "Recommender":
        """Read a model written by :meth:`save` (verified; :class:`CorruptModelError` when it is not intact)."""
        path = pathlib.Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("__meta__")))
        except FileNotFoundError:
            raise
        except Exception as e:  # zip / json / missing member
            raise CorruptModelError(f"{path}: not a readable mfjax model file ({type(e).__name__}: {e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CorruptModelError(f"{path}: not an {FORMAT} file (format {meta.get('format')!r})")
        stored = meta.pop("sha256", None)
        if stored != _content_hash(meta, arrays):
            raise CorruptModelError(f"{path}: content checksum mismatch (the file was modified or corrupted)")
        c = dict(meta["config"])
        est = cls(c.pop("model"), **{k: v for k, v in c.items() if k != "options"}, **c["options"])
        shape = tuple(meta["shape"])
        row_ids, col_ids = IdMap(arrays["row_ids"]), IdMap(arrays["col_ids"])
        train = Ratings._trusted(arrays["train_rows"], arrays["train_cols"], arrays["train_values"], shape,
                                 row_ids, col_ids)
        if _kind(est.config["model"]) in ("dmf", "dmf-d"):
            params = _load_dmf(meta, arrays, train)
        else:
            fields = {k[len("param."):]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("param.")}
            params = (BiasedFactors if meta["params"] == "BiasedFactors" else Factors)(**fields)
        est._fitted = _Fitted(params, row_ids, col_ids, train, float(meta["global_mean"]), arrays["user_mean"],
                              arrays["item_mean"], arrays["item_count"], tuple(meta["rating_scale"]),
                              meta["data_checksum"])
        return est


def load(path) -> Recommender:
    """:meth:`Recommender.load`."""
    return Recommender.load(path)


# ---------------------------------------------------------------------- fitters
def _kind(model: str) -> str:
    return "optimizer" if _is_optimizer(model) else model


def _key(config):
    return jax.random.key(config["seed"])


def _fit_als(config, train):
    from mfjax import solvers

    res = solvers.als(train.device_put(), config["rank"], l2=config["l2"], num_steps=config["num_steps"],
                      biases=config["biases"], key=_key(config), **config["options"])
    return res.params


def _fit_sgd(config, train):
    from mfjax import solvers

    res = solvers.sgd(train.device_put(), config["rank"], l2=config["l2"], num_steps=config["num_steps"],
                      biases=config["biases"], key=_key(config), **config["options"])
    return res.params


def _fit_nmf(config, train):
    from mfjax import solvers

    if float(np.min(train.values)) < 0:
        raise ValueError("model 'nmf' needs nonnegative ratings; the training ratings have negative values")
    res = solvers.nmf(train.device_put(), config["rank"], l2=config["l2"], num_steps=config["num_steps"],
                      key=_key(config), **config["options"])
    return res.params


def _fit_optimizer(config, train):
    from mfjax import objective
    from mfjax.compare.run import build_optimizer
    from mfjax.compare.spec import parse_run
    from mfjax.loop import fit

    options = dict(config["options"])
    scale = options.pop("scale", "sum")
    if options:
        raise ValueError(f"optimizer models take only the option 'scale', got {sorted(options)}")
    data = train.device_put()
    opt = build_optimizer(parse_run(config["model"]), data, config["l2"], scale, num_steps=config["num_steps"])
    obj = objective.mf_objective(data, config["l2"], scale=scale)
    params0 = init_factors(_key(config), train.shape, config["rank"])
    res = fit(objective.loss, opt, params0, config["num_steps"], loss_args=(obj,))
    if not all(bool(jnp.all(jnp.isfinite(a))) for a in res.params):
        raise FloatingPointError(f"{config['model']}: the optimizer produced non-finite factors "
                                 f"(status {status_name(res.status)})")
    return res.params


def _dmf_configs(config, shape, meta=None):
    from mfjax.models import DMFConfig, QuantizerConfig, TrainConfig

    options = dict(config["options"]) if meta is None else {"dmf_config": meta["dmf_config"],
                                                            "train_config": meta["train_config"]}
    dcfg = _tuples(options.pop("dmf_config", {}) or {})
    tcfg = _tuples(options.pop("train_config", {}) or {})
    options.pop("validation_fraction", None)
    if options:
        raise ValueError(f"DMF models take the options dmf_config, train_config, validation_fraction; "
                         f"got {sorted(options)}")
    dmf = dataclasses.replace(DMFConfig.cpu(), **dcfg)
    q = tcfg.pop("quantizer", None)
    if config["model"] == "dmf-d":
        q = QuantizerConfig(**_tuples(q or {}))
    elif q is not None:
        raise ValueError("model 'dmf' takes no quantizer (use model 'dmf-d')")
    tcfg.setdefault("seed", config["seed"])
    if meta is None and config["num_steps"] is not None:
        tcfg.setdefault("epochs", config["num_steps"])
    return dmf, TrainConfig(**tcfg, quantizer=q)


def _fit_dmf(config, train):
    from mfjax.models import train_dmf

    dmf, tc = _dmf_configs(config, train.shape)
    frac = float(config["options"].get("validation_fraction", 0.0))
    valid = None
    if frac > 0:
        train, valid = mfdata.split(train, (1 - frac, frac), seed=config["seed"])
    return train_dmf(train.device_put(), None if valid is None else valid.device_put(), dmf, tc, resume="never")


def _load_dmf(meta, arrays, train):
    from mfjax.models import DMF, DMFResult, csr_inputs, init_dmf

    dmf, tc = _dmf_configs(meta["config"], train.shape, meta)
    _, template = init_dmf(jax.random.key(0), dmf, train.shape)
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for key, leaf in paths:
        name = "var" + jax.tree_util.keystr(key)
        if name not in arrays or arrays[name].shape != leaf.shape:
            raise CorruptModelError(f"DMF variable {name} is missing or has another shape")
        leaves.append(jnp.asarray(arrays[name]))
    variables = jax.tree_util.tree_unflatten(treedef, leaves)
    b = jnp.asarray(arrays["boundaries"]) if "boundaries" in arrays else None
    m, n = train.shape
    return DMFResult(DMF(dmf, m, n), variables, b, dmf, tc, csr_inputs(train, "rows"), csr_inputs(train, "cols"),
                     {}, -1, float("nan"), 0, 0.0)


_FITTERS = {"als": _fit_als, "sgd": _fit_sgd, "nmf": _fit_nmf, "dmf": _fit_dmf, "dmf-d": _fit_dmf,
            "optimizer": _fit_optimizer}


# ---------------------------------------------------------------------- helpers
def _tuples(d: dict) -> dict:
    """JSON lists back to tuples (dataclass configs hold tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(d).items()}


def _as_ratings(data, user, item, rating) -> Ratings:
    if isinstance(data, Ratings):
        return data
    if hasattr(data, "columns"):  # a DataFrame
        return mfdata.from_pandas(data, user=user, item=item, rating=rating)
    raise TypeError(f"expected Ratings or a pandas DataFrame, got {type(data).__name__}")


def _host(r: Ratings) -> Ratings:
    return Ratings._trusted(np.asarray(r.rows), np.asarray(r.cols), np.asarray(r.values), r.shape, r.row_ids,
                            r.col_ids)


def _raw_triplets(data, user, item, rating):
    """Raw ``(users, items, values)`` of held-out data (Ratings: through its id maps; DataFrame: its columns)."""
    if isinstance(data, Ratings):
        rows, cols = np.asarray(data.rows), np.asarray(data.cols)
        users = data.row_ids.to_original(rows) if data.row_ids is not None else rows
        items = data.col_ids.to_original(cols) if data.col_ids is not None else cols
        return users, items, np.asarray(data.values, np.float64)
    if hasattr(data, "columns"):
        values = np.asarray(data[rating], np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"column {rating!r} has non-finite ratings")
        return _ids(data[user].to_numpy(), "users"), _ids(data[item].to_numpy(), "items"), values
    raise TypeError(f"expected Ratings or a pandas DataFrame, got {type(data).__name__}")


def _ids(ids, what: str) -> np.ndarray:
    """Raw ids as a 1-d array: numbers or strings as such; a mix stays an object array (each id as given)."""
    if isinstance(ids, np.ndarray) and ids.dtype != object:
        a = ids.reshape(-1)
    else:
        a = np.asarray([ids] if np.isscalar(ids) else ids, dtype=object).reshape(-1)
        vals = a.tolist()
        if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in vals) or \
                all(isinstance(v, str) for v in vals):
            a = np.asarray(vals)
    if a.size == 0:
        raise ValueError(f"no {what} given")
    return a


def _lookup(id_map: IdMap, ids: np.ndarray):
    """``(index, known)``; ids of another type than the map's are unknown."""
    kinds = {id_map.original.dtype.kind, ids.dtype.kind}
    if ids.dtype == object:  # a mix of types: one id at a time
        table = {v: i for i, v in enumerate(id_map.original.tolist())}
        index = np.asarray([table.get(v, -1) for v in ids.tolist()], np.int64)
        return index, index >= 0
    if len(kinds) > 1 and not kinds <= set("iuf"):
        return np.full(ids.shape, -1, np.int64), np.zeros(ids.shape, bool)
    return id_map.lookup(ids)


def _or_global(a: np.ndarray, g: float) -> np.ndarray:
    return np.where(np.isfinite(a), a, g)


def _id_array(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == object:  # saved without pickle: strings as unicode
        a = np.asarray([str(v) for v in a.tolist()])
    return a


def _content_hash(meta: dict, arrays: dict) -> str:
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()
