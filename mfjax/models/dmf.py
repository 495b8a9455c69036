"""DMF: deep matrix factorization with two fully connected branches and a cosine head.

A row vector ``X_i`` (row ``i`` of the observed matrix, 0 where missing) and
a column vector ``Y_j`` are mapped by two branches of fully connected layers
``h_X``, ``h_Y`` to embeddings ``U_i = h_X(X_i)``, ``V_j = h_Y(Y_j)``, and the
prediction is their cosine similarity::

    F(X_i, Y_j) = <U_i, V_j> / (||U_i|| ||V_j||)  in [-1, 1],

compared with ratings scaled to ``[-1, 1]`` (paper footnote 1:
``(M - mu) / (mu - alpha)``, ``mu = (alpha + beta) / 2``) and mapped back.
The norms are ``sqrt(||u||^2 + eps)``: value and gradient are finite at a
zero embedding.

The first layer is fed sparsely.  ``X_i`` has ~165 nonzeros of 3,706 on
MovieLens 1M, so ``X_i W_1`` is computed from the COO entries as
``sum_k x_k W_1[col_k]`` (a gather of ``W_1`` rows weighted by the rating and
a ``segment_sum`` by row): a pass over the data costs
O(observed entries x width), never O(rows x columns x width).  A
:class:`SparseBatch` carries those entries; a dense ``(B, in_dim)`` array is
accepted too (same weights, used by the tests as the reference).

Extendability (paper Sec. 2, areas II-IV): a trained model embeds any row
from any input vector, so an unseen row is embedded from its revealed entries
without retraining; :func:`extension_inputs` builds those input matrices.

Side features (an mfjax addition, not in the DMF papers; ``DMFConfig.side_dims``).
Each branch can also read a fixed dense feature vector of its row / column
(ML-1M: a user's gender, age, occupation; a movie's genres, year), entering
the first layer beside the rating vector::

    h_1(X_i, f_i) = X_i W_1 + f_i S_1 + b_1,     S_1: (d_side, w_0), learned,

i.e. the first layer of ``[X_i, f_i]`` with the kernel ``[W_1; S_1]``.  The
features are data, not parameters: a :class:`SideFeatures` of per-row
``(m, d_u)`` and per-column ``(n, d_v)`` arrays is passed with the inputs and
gathered per batch.  Because every row of the matrix has its feature row,
an unseen user (areas II, IV) is embedded from its few revealed ratings *and*
its features.  With all-zero features, or ``S_1 = 0`` (its initial value),
the model is exactly plain DMF.  This is the content-feature tower input of
hybrid / two-tower recommenders (e.g. Covington, Adams, Sargin, "Deep Neural
Networks for YouTube Recommendations", RecSys 2016, where demographic and
item features are concatenated with the behavioural inputs of the network).

References:
  D. M. Nguyen, E. Tsiligianni, N. Deligiannis, "Matrix Factorization via Deep
  Learning", 2018; "Extendable neural matrix completion", ICASSP 2018.
  H.-J. Xue et al., "Deep matrix factorization models for recommender
  systems", IJCAI 2017.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mfjax.data.ratings import Ratings
from mfjax.models.sparse import (  # the sparse inputs, re-exported here as before
    CSRInputs,
    SparseBatch,
    csr_inputs,
    full_batch,
    gather_block,
    sparse_matmul,
)

__all__ = [
    "DMFConfig",
    "SideFeatures",
    "check_side_features",
    "SparseBatch",
    "CSRInputs",
    "sparse_matmul",
    "csr_inputs",
    "full_batch",
    "gather_block",
    "cosine",
    "pairwise_cosine",
    "to_unit",
    "from_unit",
    "Branch",
    "DMF",
    "init_dmf",
    "embed",
    "extension_inputs",
    "subsample_inputs",
]

_ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "relu6": nn.relu6,
    "gelu": nn.gelu,
    "identity": lambda x: x,
}


@dataclasses.dataclass(frozen=True)
class DMFConfig:
    """Architecture of the two branches.

    Attributes:
      row_widths / col_widths: layer widths of the row / column branch; the
        last width is the embedding size (both must agree).
      use_bn: BatchNorm after every fully connected layer (the authors' code
        also normalises the last, linear layer: ``bn_last=True``).
      dropout_rate: dropout after the activation of every hidden (not the
        last) layer.  The authors keep 10% of the units for DMF (rate 0.9),
        20% for DMF-D (rate 0.8).
      activation: one of relu, tanh, sigmoid, elu, relu6, gelu, identity.
      bn_momentum, bn_eps: BatchNorm running-average momentum and epsilon
        (TF1 ``batch_norm(decay=0.9)``, epsilon 1e-3 in the authors' code).
      cos_eps: ``eps`` in ``sqrt(||u||^2 + eps)``.
      rating_range: ``(alpha, beta)`` for the [-1, 1] scaling.
      input_offset: subtracted from every *observed* input entry before the
        first layer (missing entries stay 0): ``x_k = r_k - c``.  Default 0
        (the authors' raw 1..5 inputs).  An mfjax option: with raw positive
        ratings the first-layer sum ``sum_k r_k W_1[k]`` is dominated by
        *which* items were rated (``~mean(r) sum_k W_1[k]``), a pattern that
        identifies a training user; centred inputs make the preference part
        ``sum_k (r_k - c) W_1[k]`` the main signal (an item-item aggregation
        that applies unchanged to a user unseen in training, cf. item-based
        neighbourhood models / SLIM).  ``c`` between two levels (e.g. 3.5)
        keeps every observed entry nonzero, so rated and missing stay
        distinguishable.
      input_norm: exponent ``a`` of a per-vector length normalisation of
        the first layer (default 0 = off, the authors): a vector ``x`` with
        ``n_x`` observed (nonzero) entries enters as ``x / max(n_x, 1)^a``,
        i.e. ``h_1 = (sum_k x_k W_1[k]) / n_x^a + b_1`` (``a = 1``: the
        mean of the rated items' first-layer rows, ``a = 1/2``: the
        ``|N(u)|^{-1/2}`` scaling of SVD++ / asymmetric SVD, Koren, KDD
        2008).  Applied after ``input_offset``, in both branches, counting
        the entries actually present (masked or hidden entries are zeros
        and do not count).  An mfjax option: without it the first-layer
        input grows with the number of ratings, so an unseen row or column
        embedded from the revealed half of its ratings (areas II-IV) enters
        at about half the scale of the training vectors of the same
        popularity; with ``a = 1`` the expected input is the same.
        Measured on ML-1M (``experiments/results/dmf``, seed 0, ``a = 1``
        with centred inputs and row masking): worse on every pseudo area at
        every evaluation up to epoch 9 of 30, so not used.
      side_dims: ``(d_u, d_v)``, the lengths of the per-row and per-column
        side feature vectors (default ``None``: no side inputs, the authors'
        model).  When set, the row branch's first layer is
        ``X_i W_1 + f_i S_1 + b_1`` with a learned ``S_1`` (``kernel0_side``,
        ``(d_u, w_0)``, initialised at 0) and the column branch's likewise
        with ``(d_v, w_0)``; a 0 leaves that branch without side inputs.  The
        features themselves are data (:class:`SideFeatures`, passed to
        :func:`~mfjax.models.train.train_dmf`, :func:`embed`, ...).  An mfjax
        addition (module docstring).
    """

    row_widths: tuple[int, ...] = (2048, 1024)
    col_widths: tuple[int, ...] = (2048, 1024)
    use_bn: bool = True
    bn_last: bool = True
    dropout_rate: float = 0.9
    activation: str = "relu"
    bn_momentum: float = 0.9
    bn_eps: float = 1e-3
    cos_eps: float = 1e-12
    rating_range: tuple[float, float] = (1.0, 5.0)
    input_offset: float = 0.0
    input_norm: float = 0.0
    side_dims: tuple[int, int] | None = None

    def __post_init__(self):
        for name in ("row_widths", "col_widths"):
            w = tuple(int(v) for v in getattr(self, name))
            if not w or min(w) < 1:
                raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {getattr(self, name)!r}")
            object.__setattr__(self, name, w)
        if self.row_widths[-1] != self.col_widths[-1]:
            raise ValueError(
                f"embedding sizes differ: row branch ends in {self.row_widths[-1]}, "
                f"column branch in {self.col_widths[-1]}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {sorted(_ACTIVATIONS)}")
        if not 0.0 <= float(self.input_norm) <= 1.0:
            raise ValueError(f"input_norm must be in [0, 1], got {self.input_norm}")
        if self.side_dims is not None:
            d = tuple(self.side_dims)
            if len(d) != 2 or any(int(v) != v or v < 0 for v in d) or not any(d):
                raise ValueError(f"side_dims must be (d_u, d_v), non-negative ints not both 0, got {self.side_dims!r}"
                                 " (None: no side inputs)")
            object.__setattr__(self, "side_dims", (int(d[0]), int(d[1])))
        lo, hi = self.rating_range
        if not hi > lo:
            raise ValueError(f"rating_range must be (lo, hi) with hi > lo, got {self.rating_range}")

    @classmethod
    def authors(cls, **overrides) -> "DMFConfig":
        """The authors' DMF setup: [2048, 1024], FC -> BN -> ReLU -> dropout (keep 0.1), linear last layer + BN."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def authors_dmfd(cls, **overrides) -> "DMFConfig":
        """The authors' DMF-D setup: as :meth:`authors` with dropout keep 0.2."""
        return dataclasses.replace(cls(dropout_rate=0.8), **overrides)

    @classmethod
    def cpu(cls, **overrides) -> "DMFConfig":
        """A narrow variant that trains on a 2-core CPU in minutes: [256, 128], dropout 0.5."""
        return dataclasses.replace(
            cls(row_widths=(256, 128), col_widths=(256, 128), dropout_rate=0.5), **overrides
        )


# --------------------------------------------------------------------------- side features
class SideFeatures(NamedTuple):
    """Fixed dense side features of the matrix's rows and columns (``DMFConfig.side_dims``).

    Attributes:
      rows: float32 ``(m, d_u)``: row ``i`` is the feature vector of matrix row
        ``i`` (a user), or ``None`` when ``d_u = 0``.
      cols: float32 ``(n, d_v)``: row ``j`` is that of matrix column ``j`` (a
        movie), or ``None`` when ``d_v = 0``.
    """

    rows: np.ndarray | jax.Array | None
    cols: np.ndarray | jax.Array | None


def _check_one(name: str, f, count: int, dim: int, what: str):
    if dim == 0:
        if f is not None and np.asarray(f).size:
            raise ValueError(f"side features {name} given, but the model has no side inputs for that branch "
                             "(DMFConfig.side_dims)")
        return None
    if f is None:
        raise ValueError(f"side features {name} missing: side_dims asks for {dim} per {what}")
    a = np.asarray(f, np.float32)
    if a.shape != (count, dim):
        raise ValueError(f"side features {name} have shape {a.shape}, expected ({count}, {dim}): one row of "
                         f"{dim} features per matrix {what} ({count} {what}s, side_dims)")
    bad = ~np.isfinite(a)
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ValueError(f"side features {name} have {int(bad.sum())} non-finite values (first at [{i}, {k}]: {a[i, k]})")
    return a


def check_side_features(side: SideFeatures | None, shape: tuple[int, int], side_dims) -> SideFeatures | None:
    """``side`` validated against the matrix ``shape`` and ``side_dims``, as float32 host arrays.

    ``None`` is valid only when ``side_dims`` is ``None`` (and vice versa).

    Raises:
      ValueError: features given without ``side_dims`` or missing with it, a
        wrong number of rows (not one per matrix row / column) or features,
        or a non-finite value; the message names the problem.

    >>> f = check_side_features(SideFeatures(np.ones((3, 2)), None), (3, 4), (2, 0))
    >>> f.rows.shape, f.rows.dtype.name, f.cols
    ((3, 2), 'float32', None)
    """
    if side_dims is None:
        if side is not None:
            raise ValueError("side features given but the model has no side inputs: set DMFConfig.side_dims")
        return None
    if side is None:
        raise ValueError(f"the model takes side features (side_dims={tuple(side_dims)}) but none were given")
    if not isinstance(side, SideFeatures):
        raise ValueError(f"side must be a SideFeatures(rows, cols), got {type(side).__name__}")
    m, n = shape
    return SideFeatures(_check_one("rows", side.rows, m, side_dims[0], "row"),
                        _check_one("cols", side.cols, n, side_dims[1], "column"))


def _device_side(side: SideFeatures | None) -> tuple:
    """``(rows, cols)`` of ``side`` as device arrays (``None`` entries stay ``None``)."""
    if side is None:
        return (None, None)
    return tuple(None if f is None else jnp.asarray(f, jnp.float32) for f in side)


# --------------------------------------------------------------------------- cosine head
def _safe_norm(u, eps):
    return jnp.sqrt(jnp.sum(u * u, axis=-1) + eps)


def cosine(u, v, eps: float = 1e-12):
    """Row-wise cosine ``<u_k, v_k> / (sqrt(||u_k||^2+eps) sqrt(||v_k||^2+eps))``; 0 at zero vectors."""
    return jnp.sum(u * v, axis=-1) / (_safe_norm(u, eps) * _safe_norm(v, eps))


def pairwise_cosine(U, V, eps: float = 1e-12):
    """All cosines between the rows of ``U`` (a, d) and ``V`` (b, d): shape (a, b).

    >>> C = pairwise_cosine(jnp.array([[1.0, 0.0], [1.0, 1.0]]), jnp.array([[2.0, 0.0], [0.0, 3.0]]))
    >>> np.round(np.asarray(C, np.float64), 4).tolist()
    [[1.0, 0.0], [0.7071, 0.7071]]
    """
    Un = U / _safe_norm(U, eps)[:, None]
    Vn = V / _safe_norm(V, eps)[:, None]
    return Un @ Vn.T


def to_unit(x, rating_range):
    """Scale ratings from ``[alpha, beta]`` to ``[-1, 1]``: ``(x - mu) / (mu - alpha)``, ``mu = (alpha + beta) / 2``.

    >>> to_unit(np.array([1.0, 3.0, 5.0]), (1, 5)).tolist()
    [-1.0, 0.0, 1.0]
    >>> from_unit(to_unit(np.array([4.0]), (1, 5)), (1, 5)).tolist()
    [4.0]
    """
    lo, hi = rating_range
    mu = (lo + hi) / 2.0
    return (x - mu) / (mu - lo)


def from_unit(r, rating_range):
    """Inverse of :func:`to_unit`: ``r (mu - alpha) + mu``."""
    lo, hi = rating_range
    mu = (lo + hi) / 2.0
    return r * (mu - lo) + mu


# --------------------------------------------------------------------------- flax modules
class Branch(nn.Module):
    """One embedding branch: ``[FC -> BN -> act -> dropout] x (L-1) -> FC (-> BN)``.

    Input: a :class:`SparseBatch` (first layer computed sparsely) or a dense
    ``(B, in_dim)`` array.  The first layer's weights are ``kernel0`` (in_dim,
    w0) and ``bias0``.  With ``side_dim > 0`` the branch also reads dense
    side features ``side`` (B, side_dim) through ``kernel0_side`` (side_dim,
    w0), initialised at 0: ``h_1 = x kernel0 + side kernel0_side + bias0``
    (the side term is not scaled by ``input_norm``).  The name starts with
    ``kernel`` so that the ``l2`` penalty covers it.
    """

    in_dim: int
    widths: Sequence[int]
    use_bn: bool = True
    bn_last: bool = True
    dropout_rate: float = 0.0
    activation: str = "relu"
    bn_momentum: float = 0.9
    bn_eps: float = 1e-3
    input_offset: float = 0.0
    input_norm: float = 0.0
    side_dim: int = 0

    @nn.compact
    def __call__(self, x, train: bool = False, side=None):
        act = _ACTIVATIONS[self.activation]
        w0 = self.widths[0]
        kernel = self.param("kernel0", nn.initializers.xavier_uniform(), (self.in_dim, w0))
        bias = self.param("bias0", nn.initializers.zeros, (w0,))
        c = self.input_offset
        if isinstance(x, SparseBatch):
            if c:  # observed entries only (stored value != 0; padding and masked entries stay 0)
                v = jnp.asarray(x.vals, kernel.dtype)
                x = dataclasses.replace(x, vals=jnp.where(v != 0, v - c, 0.0))
            h = sparse_matmul(x, kernel)
            if self.input_norm:
                n_x = jax.ops.segment_sum((jnp.asarray(x.vals) != 0).astype(h.dtype), x.seg,
                                          num_segments=x.num_segments)
        else:
            xd = jnp.asarray(x, kernel.dtype)
            if c:
                xd = jnp.where(xd != 0, xd - c, 0.0)
            h = xd @ kernel
            if self.input_norm:
                n_x = jnp.sum((xd != 0).astype(h.dtype), axis=-1)
        if self.input_norm:  # (sum_k x_k W_1[k]) / max(n_x, 1)^a: the same as scaling the vector
            h = h / jnp.maximum(n_x, 1.0)[:, None] ** self.input_norm
        if self.side_dim:
            if side is None:
                raise ValueError(f"this branch takes side features (side_dim={self.side_dim}); pass side=")
            side = jnp.asarray(side, kernel.dtype)
            if side.shape != (h.shape[0], self.side_dim):
                raise ValueError(f"side features of shape {side.shape} for a batch of {h.shape[0]} inputs; "
                                 f"expected ({h.shape[0]}, {self.side_dim})")
            h = h + side @ self.param("kernel0_side", nn.initializers.zeros, (self.side_dim, w0))
        elif side is not None:
            raise ValueError("side features given to a branch without side inputs (DMFConfig.side_dims)")
        h = h + bias
        L = len(self.widths)
        for i, w in enumerate(self.widths):
            if i > 0:
                h = nn.Dense(w, kernel_init=nn.initializers.xavier_uniform(), name=f"fc{i}")(h)
            last = i == L - 1
            if self.use_bn and (not last or self.bn_last):
                h = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                 epsilon=self.bn_eps, name=f"bn{i}")(h)
            if not last:
                h = act(h)
                if self.dropout_rate > 0:
                    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        return h


class DMF(nn.Module):
    """The two-branch model; ``__call__`` returns the embeddings ``(U, V)``.

    ``n_rows``/``n_cols``: matrix shape.  The row branch reads vectors of
    length ``n_cols``, the column branch of length ``n_rows``; with
    ``config.side_dims`` each also reads the side features of its batch
    (``side_rows`` (B_r, d_u), ``side_cols`` (B_c, d_v)).
    """

    config: DMFConfig
    n_rows: int
    n_cols: int

    def setup(self):
        c = self.config
        kw = dict(use_bn=c.use_bn, bn_last=c.bn_last, dropout_rate=c.dropout_rate,
                  activation=c.activation, bn_momentum=c.bn_momentum, bn_eps=c.bn_eps,
                  input_offset=float(c.input_offset), input_norm=float(c.input_norm))
        du, dv = c.side_dims or (0, 0)
        self.row_branch = Branch(in_dim=self.n_cols, widths=c.row_widths, side_dim=du, **kw)
        self.col_branch = Branch(in_dim=self.n_rows, widths=c.col_widths, side_dim=dv, **kw)

    def embed_rows(self, x, train: bool = False, side=None):
        return self.row_branch(x, train, side)

    def embed_cols(self, y, train: bool = False, side=None):
        return self.col_branch(y, train, side)

    def __call__(self, x, y, train: bool = False, side_rows=None, side_cols=None):
        return self.embed_rows(x, train, side_rows), self.embed_cols(y, train, side_cols)


def init_dmf(key, config: DMFConfig, shape: tuple[int, int]):
    """Initial variables ``{"params": ..., "batch_stats": ...}`` of a DMF for an ``shape`` matrix."""
    m, n = shape
    model = DMF(config, m, n)

    du, dv = config.side_dims or (0, 0)

    def init(key):
        xr = SparseBatch(jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), jnp.zeros(1), 2)
        xc = SparseBatch(jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32), jnp.zeros(1), 2)
        sr = jnp.zeros((2, du)) if du else None
        sc = jnp.zeros((2, dv)) if dv else None
        return model.init({"params": key}, xr, xc, train=False, side_rows=sr, side_cols=sc)

    return model, jax.jit(init)(key)


_EMBED_FNS: dict = {}


def embed(model: DMF, variables, csr: CSRInputs, axis: str, chunk: int | None = 32768, side=None):
    """Eval-mode embeddings of every input vector in ``csr`` (rows or columns branch); jitted once per model.

    ``side``: with ``model.config.side_dims``, the side features of the
    embedded vectors, ``(csr.num_rows, d)`` (``SideFeatures.rows`` for
    ``axis="rows"``, ``.cols`` for ``"cols"``); vector ``i`` is embedded from
    ``csr`` row ``i`` and feature row ``i``.
    """
    if axis not in ("rows", "cols"):
        raise ValueError(f"axis must be 'rows' or 'cols', got {axis!r}")
    dims = model.config.side_dims
    d = 0 if dims is None else dims[0 if axis == "rows" else 1]
    if d or side is not None:
        side = _check_one(axis, side, csr.num_rows, d, "row" if axis == "rows" else "column")
    key = (model.config, model.n_rows, model.n_cols, axis)
    if key not in _EMBED_FNS:
        method = DMF.embed_rows if axis == "rows" else DMF.embed_cols
        _EMBED_FNS[key] = jax.jit(lambda v, x, s: model.apply(v, x, train=False, side=s, method=method))
    return _EMBED_FNS[key](variables, full_batch(csr, chunk), None if side is None else jnp.asarray(side))


# --------------------------------------------------------------------------- extendability
def extension_inputs(train: Ratings, revealed: Ratings | None, held_rows, held_cols):
    """Input matrices for predicting areas I-IV with a model trained on ``train`` (area I).

    The paper extends DMF by feeding ``M^{(I)&(II)}_{t,:}`` to the row branch
    and ``M^{(I)&(III)}_{:,k}`` to the column branch.  Here:

    * row branch input = (train + revealed) restricted to columns NOT held
      out: seen rows get their training row, an unseen row ``t`` its revealed
      entries in seen columns (area II);
    * column branch input = (train + revealed) restricted to rows NOT held
      out: seen columns get their training column, an unseen column ``k`` its
      revealed entries in seen rows (area III).

    Entries in held-out columns never enter the row branch (their first-layer
    weights saw only zeros in training), and likewise for the column branch;
    area IV entries are never inputs.  No test entry is ever an input.
    Side features (``DMFConfig.side_dims``) need no extension: they are
    indexed by the matrix row / column, so an unseen row or column reads its
    own feature row with these inputs (``predict`` / ``predict_areas`` pass
    the result's :class:`SideFeatures`).

    Returns:
      ``(row_inputs, col_inputs)`` as :class:`CSRInputs`.
    """
    m, n = train.shape
    hr = np.zeros(m, bool)
    hr[np.asarray(held_rows, np.int64)] = True
    hc = np.zeros(n, bool)
    hc[np.asarray(held_cols, np.int64)] = True
    parts = [train] if revealed is None or revealed.nnz == 0 else [train, revealed]
    if revealed is not None and tuple(revealed.shape) != tuple(train.shape):
        raise ValueError(f"revealed shape {revealed.shape} != train shape {train.shape}")
    rows = np.concatenate([np.asarray(p.rows) for p in parts])
    cols = np.concatenate([np.asarray(p.cols) for p in parts])
    vals = np.concatenate([np.asarray(p.values, np.float32) for p in parts])
    keep_r = ~hc[cols]
    keep_c = ~hr[rows]
    row_in = Ratings(rows[keep_r].astype(np.int32), cols[keep_r].astype(np.int32), vals[keep_r], (m, n))
    col_in = Ratings(rows[keep_c].astype(np.int32), cols[keep_c].astype(np.int32), vals[keep_c], (m, n))
    return csr_inputs(row_in, "rows"), csr_inputs(col_in, "cols")


def subsample_inputs(csr: CSRInputs, keep_frac: float, seed, rows=None) -> CSRInputs:
    """Input vectors with only part of their observed entries: a validation proxy for unseen rows.

    Each vector ``r`` (of ``rows``, default all) keeps ``round(keep_frac * k_r)``
    of its ``k_r`` stored entries, chosen uniformly at random without
    replacement (``numpy.random.default_rng(seed)``); the other vectors are
    unchanged.  Nothing is added: the result's entries are a subset of
    ``csr``'s, so it can be built from training inputs alone.

    Used for model selection without test entries (``experiments/dmf``): in
    ``extendability_split(.., reveal_frac=0.5, fractions=(0.75, ..))`` a
    held-out user is embedded from half of its ratings in seen columns, a seen
    user from the ~75% that went to training, so ``keep_frac = 0.5 / 0.75``
    makes seen users' inputs as long as held-out users' revealed rows; their
    area-I validation entries then mimic area II (and, with both branches
    thinned, area IV).

    Args:
      csr: input vectors (e.g. ``csr_inputs(train, "rows")``).
      keep_frac: fraction kept per vector, in [0, 1].
      seed: seed (anything ``default_rng`` accepts).
      rows: optional indices of the vectors to thin.
    """
    if not 0.0 <= keep_frac <= 1.0:
        raise ValueError(f"keep_frac must be in [0, 1], got {keep_frac}")
    rng = np.random.default_rng(seed)
    indptr = np.asarray(csr.indptr, np.int64)
    lens = np.diff(indptr)
    sel = np.zeros(csr.num_rows, bool)
    sel[np.arange(csr.num_rows) if rows is None else np.asarray(rows, np.int64)] = True
    # a random rank within each vector: keep the entries ranked below round(keep_frac * k)
    owner = np.repeat(np.arange(csr.num_rows), lens)
    order = np.lexsort((rng.random(owner.size), owner))
    rank = np.empty(owner.size, np.int64)
    rank[order] = np.arange(owner.size) - indptr[owner[order]]
    quota = np.where(sel, np.round(keep_frac * lens).astype(np.int64), lens)
    keep = rank < quota[owner]
    new_lens = np.bincount(owner[keep], minlength=csr.num_rows)
    new_indptr = np.zeros(csr.num_rows + 1, np.int32)
    np.cumsum(new_lens, out=new_indptr[1:])
    return CSRInputs(new_indptr, np.asarray(csr.indices)[keep], np.asarray(csr.values)[keep],
                     csr.num_rows, csr.dim)
