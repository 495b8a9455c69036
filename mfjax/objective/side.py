r"""Side features in the masked MF objective: ``U = P + X_u A``, ``V = Q + X_v B``.

With user features ``X_u`` (m x d_u) and item features ``X_v`` (n x d_v),
the factors are a free part plus a learned linear map of the features
(collective / "feature-augmented" MF)::

    U = P + X_u A,   V = Q + X_v B                       A: (d_u, r), B: (d_v, r)
    [biased]  b = beta + X_u a,   c = gamma + X_v b      a: (d_u,),   b: (d_v,)
    xhat_ij = u_i . v_j [+ mean + b_i + c_j]

and the objective is the plain masked MF objective of the *effective* factors
with the regulariser on the free parts and the feature maps::

    f(P, Q, A, B) = s sum_k w_k (x_k - xhat_k)^2
                    + l2 (sum_i rho_i |p_i|^2 + sum_j gamma_j |q_j|^2)
                    [+ l2_bias (sum_i rho_i beta_i^2 + sum_j gamma_j gamma_j^2)]
                    + l2_side (|A|^2 + |B|^2) [+ l2_side_bias (|a|^2 + |b|^2)].

Either side is optional: a missing feature matrix is an (m, 0) / (n, 0)
array and its map an empty (0, r) array, so the formulas need no special
case.  With all features zero (or absent) ``f`` is the plain objective of
``Factors(P, Q)`` plus ``l2_side |A, B|^2``: with ``A = B = 0`` the value,
the gradient and every ``mf.fit`` trajectory are those of plain MF.

Gradient (chain rule from the plain MF gradient ``G_U = df/dU`` of the data
term at the effective factors; :mod:`mfjax.objective.formulas`)::

    df/dP = G_U + 2 l2 rho o P,          df/dA = X_u^T G_U + 2 l2_side A
    df/dbeta = G_b + 2 l2_bias rho o beta, df/da = X_u^T G_b + 2 l2_side_bias a

(and the item side alike).  :func:`side_value_and_grad` computes it in one
chunked pass over the entries; :func:`side_loss` is the fit-ready form
``side_loss(params, side)`` whose ``jax.grad`` is that closed form, so
``mf.fit(side_loss, opt, params, n, loss_args=(side,))`` (or
``mf.fit(side, opt, params, n)``) works with every direction and step rule.

Exact line search.  ``(U, V)`` are linear in the parameters, so along a
direction ``D`` the effective factors move along ``effective_factors(D)``
and ``f`` is still a quartic in the step: :func:`side_quartic_with_products`
maps the direction, reuses :mod:`mfjax.objective.directional` for the data
term (the biased model as augmented factors ``[u, b, 1, mean] . [v, 1, c,
1]``) and adds the regulariser's quadratic; :func:`mfjax.linesearch.exact_mf`
dispatches to it.  The Gauss-Newton preconditioner is per-row and supports
plain ``Factors`` only.

Cold start.  A user without ratings has ``P_i = 0`` at the optimum, so its
factor is ``X_u[i] A`` (:func:`cold_start_factors`); with a few ratings the
ALS row step (:func:`mfjax.solvers.side_fold_in`) solves ``P_i``.

References:
  Singh, A. P., Gordon, G. J. "Relational learning via collective matrix
  factorization", KDD 2008.
  Porteous, I., Asuncion, A., Welling, M. "Bayesian matrix factorization
  with side information and Dirichlet process mixtures", AAAI 2010
  (``U = P + X A``).
  Koren, Y., Bell, R., Volinsky, C. "Matrix factorization techniques for
  recommender systems", IEEE Computer 42(8), 2009 (biases).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from mfjax.core.checks import check_l2
from mfjax.core.factors import BiasedFactors, Factors, init_factors
from mfjax.objective import formulas as _f
from mfjax.objective.directional import grad_from_products, quartic_coefficients, quartic_with_products
from mfjax.objective.problem import MFObjective, mf_objective

__all__ = [
    "SideFactors",
    "SideBiasedFactors",
    "SideParams",
    "SideObjective",
    "side_objective",
    "init_side_factors",
    "effective_factors",
    "side_value",
    "side_value_and_grad",
    "side_grad",
    "side_loss",
    "side_penalty",
    "side_quartic_with_products",
    "side_grad_from_products",
    "cold_start_factors",
]


class SideFactors(NamedTuple):
    """Side-feature factors: ``U = P + X_u A`` (m, r), ``V = Q + X_v B`` (n, r).

    Attributes:
      P: (m, r) free user part; Q: (n, r) free item part;
      A: (d_u, r) user-feature map; B: (d_v, r) item-feature map (``d = 0``: no features).
    """

    P: jax.Array
    Q: jax.Array
    A: jax.Array
    B: jax.Array


class SideBiasedFactors(NamedTuple):
    """:class:`SideFactors` plus biases ``b = row_bias + X_u A_bias``, ``c = col_bias + X_v B_bias``
    and a global ``mean`` (not regularised).

    Attributes:
      P, Q, A, B: as in :class:`SideFactors`; row_bias: (m,); col_bias: (n,);
      mean: scalar; A_bias: (d_u,); B_bias: (d_v,).
    """

    P: jax.Array
    Q: jax.Array
    A: jax.Array
    B: jax.Array
    row_bias: jax.Array
    col_bias: jax.Array
    mean: jax.Array
    A_bias: jax.Array
    B_bias: jax.Array


#: Either side-feature model.
SideParams = Union[SideFactors, SideBiasedFactors]


@dataclasses.dataclass(frozen=True)
class SideObjective:
    """The masked MF objective with side features (a pytree; module docstring).

    Attributes:
      base: the plain :class:`~mfjax.objective.MFObjective` (entries, ``l2``,
        ``l2_bias``, data weight, row weights: they apply to ``P, Q, beta, gamma``).
      user_features: (m, d_u) ``X_u`` (``d_u = 0``: none).
      item_features: (n, d_v) ``X_v``.
      l2_side: ``l2_side`` on ``|A|^2 + |B|^2`` (scalar array).
      l2_side_bias: ``l2_side_bias`` on ``|a|^2 + |b|^2`` (scalar array).
    """

    base: MFObjective
    user_features: jax.Array
    item_features: jax.Array
    l2_side: jax.Array
    l2_side_bias: jax.Array

    @property
    def shape(self) -> tuple:
        """``(m, n)`` (static)."""
        return self.base.shape

    @property
    def feature_dims(self) -> tuple:
        """``(d_u, d_v)`` (static)."""
        return int(self.user_features.shape[1]), int(self.item_features.shape[1])

    @property
    def T(self) -> "SideObjective":
        """The same problem for the transposed matrix (users <-> items)."""
        return dataclasses.replace(self, base=self.base.T, user_features=self.item_features,
                                   item_features=self.user_features)

    def replace(self, **changes) -> "SideObjective":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    SideObjective,
    data_fields=["base", "user_features", "item_features", "l2_side", "l2_side_bias"],
    meta_fields=[],
)


def _features(X, size: int, what: str, dtype):
    """``X`` as a checked (size, d) array (``None``: (size, 0)); ValueError names the problem."""
    if X is None:
        return jnp.zeros((size, 0), dtype)
    if isinstance(X, jax.core.Tracer):
        if X.ndim != 2 or X.shape[0] != size:
            raise ValueError(f"{what} features must have shape ({size}, d), got {tuple(X.shape)}")
        return X.astype(dtype)
    a = np.asarray(X)
    if a.ndim != 2:
        raise ValueError(f"{what} features must be a 2-D ({size}, d) matrix, got shape {a.shape}")
    if a.shape[0] != size:
        raise ValueError(f"{what} features have {a.shape[0]} rows but the ratings have {size} "
                         f"{what}s (row i of the features must describe {what} i)")
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise ValueError(f"{what} features must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        i, k = (int(t) for t in np.argwhere(bad)[0])
        raise ValueError(f"{what} features contain a non-finite value {a[i, k]} at row {i}, column {k} "
                         f"({int(bad.sum())} non-finite in all)")
    return jnp.asarray(a, dtype)


def side_objective(ratings, user_features=None, item_features=None, l2=0.0, *, l2_side=None,
                   l2_side_bias=None, l2_bias=None, scale: str = "sum", l2_weights=None,
                   entry_weights=None, pad_to: int | None = None, dtype=None, chunk_size=None
                   ) -> SideObjective:
    """Build the :class:`SideObjective` of ``ratings`` with the given feature matrices.

    Args:
      ratings: a :class:`mfjax.data.Ratings` (or an :class:`~mfjax.objective.MFObjective`,
        used as the base as it is).
      user_features: (m, d_u) numeric matrix, row ``i`` describing user ``i`` (``None``: none).
      item_features: (n, d_v) matrix, or ``None``.
      l2: ``lambda`` on ``P, Q``; l2_bias: on the free biases (default ``l2``).
      l2_side: on ``A, B`` (default ``l2``); l2_side_bias: on the bias maps (default ``l2_side``).
      scale, l2_weights, entry_weights, pad_to, dtype, chunk_size: as in
        :func:`mfjax.objective.mf_objective`.

    Raises:
      ValueError: a feature matrix that is not 2-D, has a row count other than
        ``m`` / ``n``, is not numeric or holds NaN / inf; a negative or
        non-finite ``l2*``; anything :func:`~mfjax.objective.mf_objective` refuses.
    """
    check_l2("l2_side", l2_side)
    check_l2("l2_side_bias", l2_side_bias)
    if isinstance(ratings, MFObjective):
        base = ratings
    else:
        kw = {} if chunk_size is None else {"chunk_size": int(chunk_size)}
        base = mf_objective(ratings, l2, scale=scale, l2_bias=l2_bias, l2_weights=l2_weights,
                            entry_weights=entry_weights, pad_to=pad_to, dtype=dtype, **kw)
    dt = base.values.dtype
    m, n = base.shape
    Xu = _features(user_features, m, "user", dt)
    Xv = _features(item_features, n, "item", dt)
    ls = base.l2 if l2_side is None else jnp.asarray(l2_side, dt)
    lsb = ls if l2_side_bias is None else jnp.asarray(l2_side_bias, dt)
    return SideObjective(base, Xu, Xv, jnp.asarray(ls, dt), jnp.asarray(lsb, dt))


def init_side_factors(key, side: SideObjective, rank: int, *, biased: bool = False, mean=0.0,
                      scale: float | None = None, dtype=jnp.float32) -> SideParams:
    """Random ``P, Q`` (:func:`mfjax.init_factors`), zero feature maps (and zero biases).

    Zero maps make the start the plain MF start: with zero features every
    trajectory is then that of plain MF.
    """
    P, Q = init_factors(key, side.shape, rank, scale=scale, dtype=dtype)
    du, dv = side.feature_dims
    A, B = jnp.zeros((du, rank), dtype), jnp.zeros((dv, rank), dtype)
    if not biased:
        return SideFactors(P, Q, A, B)
    m, n = side.shape
    return SideBiasedFactors(P, Q, A, B, jnp.zeros((m,), dtype), jnp.zeros((n,), dtype),
                             jnp.asarray(mean, dtype), jnp.zeros((du,), dtype), jnp.zeros((dv,), dtype))


def _check_params(side: SideObjective, params) -> None:
    if not isinstance(params, (SideFactors, SideBiasedFactors)):
        raise TypeError(f"side-feature objectives need SideFactors or SideBiasedFactors params, "
                        f"got {type(params).__name__} (use init_side_factors)")
    du, dv = side.feature_dims
    m, n = side.shape
    P, Q, A, B = params[:4]
    r = P.shape[-1]
    want = {"P": (m, r), "Q": (n, r), "A": (du, r), "B": (dv, r)}
    for name, arr in zip("PQAB", (P, Q, A, B)):
        if tuple(arr.shape) != want[name]:
            raise ValueError(f"side factors: {name} has shape {tuple(arr.shape)}, need {want[name]} "
                             f"(ratings {(m, n)}, feature dims (d_u, d_v) = {(du, dv)}, rank {r})")


def effective_factors(params: SideParams, side: SideObjective):
    """The plain factors of the model: ``Factors(P + X_u A, Q + X_v B)`` (or ``BiasedFactors``).

    Linear in ``params``, so it also maps a direction in the parameters to
    the direction of the effective factors.  Use it for
    :func:`mfjax.metrics.rmse`, :func:`mfjax.eval.top_k` and predictions.
    """
    _check_params(side, params)
    Xu, Xv = side.user_features, side.item_features
    U = params.P + (Xu @ params.A).astype(params.P.dtype)
    V = params.Q + (Xv @ params.B).astype(params.Q.dtype)
    if isinstance(params, SideFactors):
        return Factors(U, V)
    b = params.row_bias + (Xu @ params.A_bias).astype(params.row_bias.dtype)
    c = params.col_bias + (Xv @ params.B_bias).astype(params.col_bias.dtype)
    return BiasedFactors(U, V, b, c, params.mean)


def _free(params: SideParams):
    """The free parts as plain factors (what the base objective's regulariser sees)."""
    if isinstance(params, SideFactors):
        return Factors(params.P, params.Q)
    return BiasedFactors(params.P, params.Q, params.row_bias, params.col_bias, params.mean)


def side_penalty(side: SideObjective, params: SideParams) -> jax.Array:
    """The regulariser (module docstring): the base penalty of ``P, Q`` (biases) plus the maps'."""
    out = _f.penalty(side.base, _free(params))
    out = out + side.l2_side * (jnp.sum(params.A * params.A) + jnp.sum(params.B * params.B))
    if isinstance(params, SideBiasedFactors):
        out = out + side.l2_side_bias * (jnp.sum(params.A_bias ** 2) + jnp.sum(params.B_bias ** 2))
    return out


def _penalty_grad(side: SideObjective, params: SideParams) -> SideParams:
    """Gradient of :func:`side_penalty` (same pytree type as ``params``; zero for ``mean``)."""
    g = _f.penalty_grad(side.base, _free(params))
    two_ls = 2.0 * side.l2_side
    out = [g[0], g[1], (two_ls * params.A).astype(params.A.dtype), (two_ls * params.B).astype(params.B.dtype)]
    if isinstance(params, SideFactors):
        return SideFactors(*out)
    two_lb = 2.0 * side.l2_side_bias
    return SideBiasedFactors(*out, g[2], g[3], jnp.zeros_like(params.mean),
                             (two_lb * params.A_bias).astype(params.A_bias.dtype),
                             (two_lb * params.B_bias).astype(params.B_bias.dtype))


def _pullback(side: SideObjective, params: SideParams, g_eff, s) -> SideParams:
    """``s J^T g_eff + grad R``: a gradient w.r.t. the effective factors (``Factors`` /
    ``BiasedFactors``) mapped to the parameters by the chain rule, plus the regulariser's."""
    Xu, Xv = side.user_features, side.item_features
    gU, gV = s * g_eff[0], s * g_eff[1]
    data = [gU, gV, Xu.T @ gU, Xv.T @ gV]
    if isinstance(params, SideBiasedFactors):
        gb, gc = s * g_eff[2], s * g_eff[3]
        data += [gb, gc, s * g_eff[4], Xu.T @ gb, Xv.T @ gc]
    greg = _penalty_grad(side, params)
    return type(params)(*((a + b).astype(b.dtype) for a, b in zip(data, greg)))


def _valid(side: SideObjective) -> jax.Array:
    return (_f.hyperparameters_valid(side.base) & jnp.isfinite(side.l2_side) & (side.l2_side >= 0)
            & jnp.isfinite(side.l2_side_bias) & (side.l2_side_bias >= 0))


def _guard(side, x):
    ok = _valid(side)
    return jax.tree.map(lambda a: jnp.where(ok, a, jnp.asarray(jnp.nan, a.dtype)), x)


def side_value(side: SideObjective, params: SideParams) -> jax.Array:
    """``f(params)`` (module docstring); differentiable by autodiff.  NaN for invalid traced ``l2*``."""
    eff = effective_factors(params, side)
    data = side.base.data_weight * _f.sum_sq_residuals(side.base, eff)
    return _guard(side, data + side_penalty(side, params))


def side_value_and_grad(side: SideObjective, params: SideParams):
    """``(f, df/dparams)`` by the closed form: one chunked pass, then the chain rule."""
    eff = effective_factors(params, side)
    s = side.base.data_weight
    sse, g_eff = _f._data_value_and_grad(side.base, eff)
    val = s * sse + side_penalty(side, params)
    return _guard(side, (val, _pullback(side, params, g_eff, s)))


def side_grad(side: SideObjective, params: SideParams) -> SideParams:
    """Closed-form gradient (:func:`side_value_and_grad`'s second output)."""
    return side_value_and_grad(side, params)[1]


@jax.custom_vjp
def side_loss(params: SideParams, side: SideObjective) -> jax.Array:
    """``f(params)`` as ``side_loss(params, side)``; ``jax.grad`` gives the closed form.

    ``mf.fit(side_loss, opt, params, n, loss_args=(side,))`` (or
    ``mf.fit(side, opt, params, n)``): one compiled program for every
    objective of the same shapes; :func:`mfjax.linesearch.exact_mf` reads
    the objective from the loss.  First-order only.
    """
    return side_value(side, params)


def _side_loss_fwd(params, side):
    return side_value_and_grad(side, params)


def _side_loss_bwd(g, ct):
    return (jax.tree_util.tree_map(lambda x: (ct * x).astype(x.dtype), g), None)


side_loss.defvjp(_side_loss_fwd, _side_loss_bwd)


# ------------------------------------------------------------ exact line search
def _augmented(eff, direction: bool):
    """Plain ``Factors`` whose products are the (biased) predictions' bilinear form.

    ``[u, b, 1, mean] . [v, 1, c, 1] = u.v + b + c + mean``; a direction has
    zeros in place of the constant ones (biases and mean enter linearly).
    """
    if isinstance(eff, Factors):
        return eff
    U, V = eff.U, eff.V
    m, n = U.shape[0], V.shape[0]
    one_m = jnp.full((m, 1), 0.0 if direction else 1.0, U.dtype)
    one_n = jnp.full((n, 1), 0.0 if direction else 1.0, V.dtype)
    mean = jnp.broadcast_to(jnp.asarray(eff.mean, U.dtype), (m, 1))
    return Factors(jnp.concatenate([U, eff.row_bias[:, None], one_m, mean], axis=1),
                   jnp.concatenate([V, one_n, eff.col_bias[:, None], one_n], axis=1))


def _data_only(side: SideObjective) -> MFObjective:
    z = jnp.zeros((), side.base.l2.dtype)
    return side.base.replace(l2=z, l2_bias=z, row_weights=None, col_weights=None)


def side_quartic_with_products(side: SideObjective, params: SideParams, direction: SideParams,
                               keep: bool = True):
    """``(c0, ..., c4)`` of ``a -> f(params + a direction)`` and (if ``keep``) the per-entry products.

    The data term is :func:`mfjax.objective.quartic_with_products` of the
    effective (augmented) factors and direction; the regulariser ``R`` is a
    quadratic form, so it adds ``R(x)``, ``<grad R(x), d>`` and ``R(d)`` to
    ``c0``, ``c1``, ``c2``.
    """
    x = _augmented(effective_factors(params, side), False)
    d = _augmented(effective_factors(direction, side), True)
    obj = _data_only(side)
    if keep:
        coeffs, es = quartic_with_products(obj, x, d)
    else:
        coeffs, es = quartic_coefficients(obj, x, d), None
    greg = _penalty_grad(side, params)
    c1 = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(greg), jax.tree.leaves(direction)))
    reg0, reg2 = side_penalty(side, params), side_penalty(side, direction)
    add = jnp.stack([reg0, c1, reg2, jnp.zeros_like(reg0), jnp.zeros_like(reg0)]).astype(coeffs.dtype)
    return coeffs + add, es


def side_grad_from_products(side: SideObjective, new_params: SideParams, products, a) -> SideParams:
    """``grad f`` at ``new_params = params + a direction`` from the stored products (no new predictions)."""
    eff = effective_factors(new_params, side)
    g_aug = grad_from_products(_data_only(side), _augmented(eff, False), products, a)
    if isinstance(eff, Factors):
        g_eff = g_aug
    else:
        r = eff.U.shape[1]
        gU, gV = g_aug
        g_eff = BiasedFactors(gU[:, :r], gV[:, :r], gU[:, r], gV[:, r + 1], jnp.sum(gU[:, r + 2]))
    # grad_from_products already carries the data weight s
    return _pullback(side, new_params, g_eff, 1.0)


# ------------------------------------------------------------------ cold start
def cold_start_factors(params: SideParams, user_features=None, item_features=None):
    """Factors of new users / items from their features alone (``P_i = 0``, ``Q_j = 0``).

    Returns ``(U_new, b_new)`` for ``user_features`` (k, d_u) and / or
    ``(V_new, c_new)`` for ``item_features``: ``X A`` and ``X a`` (biases
    ``None`` for :class:`SideFactors`).  A tuple ``(users, items)``; a side
    not asked for is ``None``.

    Raises:
      ValueError: a feature matrix whose width is not ``d_u`` / ``d_v``, or non-finite.
    """
    out = []
    for X, M, mb, what in ((user_features, params.A, getattr(params, "A_bias", None), "user"),
                           (item_features, params.B, getattr(params, "B_bias", None), "item")):
        if X is None:
            out.append(None)
            continue
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != M.shape[0]:
            raise ValueError(f"new {what} features must have shape (k, {M.shape[0]}), got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError(f"new {what} features contain non-finite values")
        X = jnp.asarray(X, M.dtype)
        out.append((X @ M, None if mb is None else X @ mb))
    return tuple(out)
