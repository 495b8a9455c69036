"""Direction rules: optax transforms that map the gradient ``g`` to a descent direction ``p``.

Every optimizer of the slides (Algorithms 5, 7-12) has the shape::

    g_t = grad f(theta_{t-1})
    p_t = D(g_t, history)            # the direction rule  (this module)
    gamma = L(p_t)                   # the step-size rule  (mfjax.linesearch)
    theta_t = theta_{t-1} + gamma p_t

A direction rule is an :class:`optax.GradientTransformationExtraArgs` whose
``update(g, state, params)`` returns ``p`` (a *descent* direction, with the
minus sign already applied), so that ``optax.chain(direction, step_rule)``
gives ``gamma * p`` and :func:`optax.apply_updates` adds it.  Extra keyword
arguments (``value=``, ``grad=``, ``value_fn=``) are accepted and ignored.

Where a slide's rule equals an optax transform we reuse optax (and the tests
check the equality):

==============  ===============================================  ==========================
rule            slides                                            optax equivalent
==============  ===============================================  ==========================
gd              ``p = -g``                                        ``scale(-1)``
heavy_ball      ``b_t = beta b_{t-1} + g_t``, ``p = -b_t``        ``trace(beta)``, ``scale(-1)``
nesterov        ``p = -(g_t + beta b_t)``                         ``trace(beta, nesterov=True)``
rmsprop         ``v_t = a v + (1-a) g^2``, ``p = -g/(sqrt(v)+eps)``  ``scale_by_rms(a, eps, eps_in_sqrt=False, initial_scale=0)``
adam            bias-corrected ``-m/(sqrt(v)+eps)``               ``scale_by_adam(b1, b2, eps)``
==============  ===============================================  ==========================

and where it differs we implement the slides' version:

* **AdaGrad** (Algorithm 9): ``s_t = alpha s_{t-1} + g_t^2``, ``s_0 = 0``,
  ``p = -g / (sqrt(s_t) + eps)``.  ``optax.adagrad`` / ``optax.scale_by_rss``
  have no decay (``alpha = 1``), start the accumulator at ``0.1`` and put
  ``eps`` inside the root (``g / sqrt(s + eps)``).
* **RMSProp** (Algorithm 10) puts ``eps`` outside the root; the default
  ``optax.rmsprop`` puts it inside (``eps_in_sqrt=True``).  The slides'
  version is ``optax.scale_by_rms(..., eps_in_sqrt=False)``, reused here.
* **Nesterov** (Algorithm 8): the slides' ``g_t + beta b_t`` with
  ``b_t = beta b_{t-1} + g_t`` is exactly what ``optax.trace(nesterov=True)``
  (and so ``optax.sgd(nesterov=True)``) computes -- the "Sutskever" momentum
  form evaluated at the current point.  The two coincide (tested), so optax
  is reused.
* **Nonlinear conjugate gradients** (not in the slides; :func:`cg_direction`):
  ``p_t = -g_t + beta_t p_{t-1}`` (Fletcher-Reeves, Polak-Ribiere+,
  Hestenes-Stiefel+, Dai-Yuan) with restarts; no optax equivalent.  Paired
  with :func:`mfjax.linesearch.exact_mf` it is the classical nonlinear CG
  with exact line search.  ``preconditioner=`` gives preconditioned CG, e.g.
  with the Gauss-Newton (block-)Jacobi preconditioner of the MF loss
  (:func:`mfjax.optim.mf_preconditioner`; it needs the ratings, so it is not
  in :data:`REGISTRY`).
* **BFGS** (Algorithm 12): no dense BFGS exists in optax (``optax.lbfgs`` is
  the limited-memory variant); implemented in :func:`bfgs_direction`.

References:
  Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
  Nesterov, "A method for solving the convex programming problem with
  convergence rate O(1/k^2)", 1983; Sutskever, Martens, Dahl, Hinton, "On the
  importance of initialization and momentum in deep learning", 2013.
  Duchi, Hazan, Singer, "Adaptive subgradient methods for online learning and
  stochastic optimization", 2011.
  Tieleman, Hinton, "Lecture 6.5 - RMSProp", 2012.
  Kingma, Ba, "Adam: A method for stochastic optimization", 2015.
  Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006 (BFGS: Sec. 6.1;
  nonlinear conjugate gradients: Sec. 5.2).
  Hager, Zhang, "A survey of nonlinear conjugate gradient methods", Pacific
  J. Optim. 2(1), 2006.
  Beresnev, Klyushev, "Recommendation systems via approximate matrix
  factorization" (slides), 2024, Algorithms 5, 7-12.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

__all__ = [
    "gd_direction",
    "heavy_ball_direction",
    "nesterov_direction",
    "adagrad_direction",
    "AdaGradState",
    "rmsprop_direction",
    "adam_direction",
    "bfgs_direction",
    "BFGSState",
    "compact_bfgs_direction",
    "CompactBFGSState",
    "compact_inverse_hessian_product",
    "bfgs_inverse_update",
    "cg_direction",
    "CGState",
    "REGISTRY",
    "direction",
]


def _extra(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(tx)


def _check(name: str, value, lo: float, hi: float | None = None, *, lo_open=False, hi_open=False):
    """Raise a ValueError naming ``name`` and ``value`` when out of range."""
    try:
        v = float(value)
    except (TypeError, ValueError):  # traced hyper-parameters: no check
        return
    bad = (v <= lo) if lo_open else (v < lo)
    if hi is not None:
        bad = bad or ((v >= hi) if hi_open else (v > hi))
    if bad or v != v:
        lb = "(" if lo_open else "["
        ub = ")" if hi_open else "]"
        rng = f"{lb}{lo}, {hi}{ub}" if hi is not None else f"{lb}{lo}, inf)"
        raise ValueError(f"{name} must be in {rng}, got {value!r}")


# --------------------------------------------------------------------- GD
def gd_direction() -> optax.GradientTransformationExtraArgs:
    """Steepest descent (Algorithm 5): ``p_t = -g_t``.

    Equal to ``optax.scale(-1.0)`` (it is that transform).

    Example::

        opt = optax.chain(gd_direction(), mfjax.linesearch.armijo())
    """
    return _extra(optax.scale(-1.0))


# ------------------------------------------------------------ heavy ball
def heavy_ball_direction(beta: float = 0.9) -> optax.GradientTransformationExtraArgs:
    """Heavy-ball momentum (Algorithm 7)::

        b_1 = g_1,   b_t = beta b_{t-1} + g_t,   p_t = -b_t

    Equal to ``optax.chain(optax.trace(decay=beta), optax.scale(-1))``
    (``trace`` starts at 0, so ``b_1 = g_1``).  ``beta = 0`` is GD.

    Note: ``-b_t`` need not be a descent direction; a line search that only
    accepts descent (Armijo, Wolfe) then reports failure and
    :func:`mfjax.fit` stops with a status.

    Reference: Polyak, "Some methods of speeding up the convergence of
    iteration methods", 1964.
    """
    _check("beta", beta, 0.0, 1.0, hi_open=True)
    return _extra(optax.chain(optax.trace(decay=beta, nesterov=False), optax.scale(-1.0)))


def nesterov_direction(beta: float = 0.9) -> optax.GradientTransformationExtraArgs:
    """Nesterov momentum in the slides' form (Algorithm 8)::

        b_t = beta b_{t-1} + g_t,   p_t = -(g_t + beta b_t)

    This is exactly ``optax.trace(decay=beta, nesterov=True)`` followed by
    ``scale(-1)`` (tested): both evaluate the gradient at the current point
    and use the look-ahead form of Sutskever et al. (2013).

    Reference: Nesterov, "A method for solving the convex programming problem
    with convergence rate O(1/k^2)", 1983.
    """
    _check("beta", beta, 0.0, 1.0, hi_open=True)
    return _extra(optax.chain(optax.trace(decay=beta, nesterov=True), optax.scale(-1.0)))


# --------------------------------------------------------------- AdaGrad
class AdaGradState(NamedTuple):
    """State of :func:`adagrad_direction`: the decayed sum of squares ``s``."""

    sum_of_squares: Any


def adagrad_direction(alpha: float = 1.0, eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """AdaGrad with the slides' accumulator decay (Algorithm 9)::

        s_0 = 0,   s_t = alpha s_{t-1} + g_t^2,   p_t = -g_t / (sqrt(s_t) + eps)

    ``alpha = 1`` is textbook AdaGrad (Duchi et al. 2011); ``alpha < 1``
    forgets old gradients (then it is RMSProp without the ``1 - alpha``
    factor on the new term).

    Differences from ``optax.adagrad`` / ``optax.scale_by_rss`` (documented
    and tested): optax has no decay, starts ``s`` at
    ``initial_accumulator_value = 0.1`` and divides by ``sqrt(s + eps)``
    (eps inside the root).  With ``alpha = 1``, ``eps = 0`` and optax's
    ``initial_accumulator_value = 0, eps = 0`` the two agree.

    Args:
      alpha: accumulator decay in ``(0, 1]``.
      eps: added to ``sqrt(s)``; > 0 keeps ``p`` finite where ``g = 0``.
    """
    _check("alpha", alpha, 0.0, 1.0, lo_open=True)
    _check("eps", eps, 0.0)

    def init_fn(params):
        return AdaGradState(optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        s = jax.tree.map(lambda s_, g: alpha * s_ + g * g, state.sum_of_squares, updates)
        p = jax.tree.map(lambda g, s_: -g / (jnp.sqrt(s_) + eps), updates, s)
        return p, AdaGradState(s)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------- RMSProp
def rmsprop_direction(alpha: float = 0.9, eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """RMSProp as in the slides (Algorithm 10)::

        v_0 = 0,   v_t = alpha v_{t-1} + (1 - alpha) g_t^2,   p_t = -g_t / (sqrt(v_t) + eps)

    ``eps`` is OUTSIDE the root.  This is
    ``optax.scale_by_rms(decay=alpha, eps=eps, initial_scale=0., eps_in_sqrt=False)``
    followed by ``scale(-1)`` (reused; tested).  The default
    ``optax.rmsprop`` differs: ``eps_in_sqrt=True`` gives ``g / sqrt(v + eps)``.

    Reference: Tieleman, Hinton, "Lecture 6.5 - RMSProp", 2012.
    """
    _check("alpha", alpha, 0.0, 1.0, hi_open=True)
    _check("eps", eps, 0.0)
    return _extra(
        optax.chain(
            optax.scale_by_rms(decay=alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=False),
            optax.scale(-1.0),
        )
    )


# ------------------------------------------------------------------ Adam
def adam_direction(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """Adam direction (Algorithm 11)::

        m_t = b1 m + (1-b1) g,  v_t = b2 v + (1-b2) g^2,
        p_t = -(m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

    Equal to ``optax.scale_by_adam(b1, b2, eps)`` then ``scale(-1)`` (reused;
    tested), i.e. ``optax.adam(lr)`` is ``chain(adam_direction(), constant(lr))``.

    Reference: Kingma, Ba, "Adam: A method for stochastic optimization", 2015.
    """
    _check("b1", b1, 0.0, 1.0, hi_open=True)
    _check("b2", b2, 0.0, 1.0, hi_open=True)
    _check("eps", eps, 0.0)
    return _extra(optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale(-1.0)))


# ------------------------------------------------------------------ BFGS
class BFGSState(NamedTuple):
    """State of :func:`bfgs_direction`.

    Field names avoid ``value``/``grad``/``info`` so that
    :func:`optax.value_and_grad_from_state` and
    :func:`mfjax.linesearch.get_linesearch_info` find the step rule's fields
    unambiguously in a chained state.

    Attributes:
      count: number of updates so far (int32).
      prev_params: flattened parameters at the previous update.
      prev_gradient: flattened gradient at the previous update.
      inv_hessian: dense ``(n, n)`` inverse-Hessian estimate ``H``.
      num_skipped: how many curvature-violating updates were skipped.
    """

    count: jax.Array
    prev_params: jax.Array
    prev_gradient: jax.Array
    inv_hessian: jax.Array
    num_skipped: jax.Array


def bfgs_inverse_update(H, s, y):
    """One BFGS inverse-Hessian update (Algorithm 12, Nocedal-Wright eq. 6.17)::

        H+ = H + (s^T y + y^T H y) s s^T / (s^T y)^2 - (H y s^T + s y^T H) / (s^T y)

    ``H`` is assumed symmetric.  No safeguard here: see :func:`bfgs_direction`.
    """
    sy = jnp.vdot(s, y)
    Hy = H @ y
    yHy = jnp.vdot(y, Hy)
    return (
        H
        + ((sy + yHy) / (sy * sy)) * jnp.outer(s, s)
        - (jnp.outer(Hy, s) + jnp.outer(s, Hy)) / sy
    )


def _bfgs_update_and_direction(H, s, y, g, sy, ok, first, scale_init: bool):
    """``(H+, -H+ g)`` with ``H+`` the update of :func:`bfgs_inverse_update` when ``ok`` (else ``H``),
    from ``H`` reset to ``gamma0 I`` at the first accepted pair when ``scale_init``.

    Two passes over the ``n x n`` matrix instead of about seven: ``H [y, g]`` in one product, then the
    rank-2 update in one fused elementwise pass; the direction comes from the vectors,
    ``H+ g = H g + c s (s.g) - (Hy (s.g) + s (Hy.g)) / (s.y)``, not from a product with ``H+``.  The
    reset ``H = gamma0 I`` enters as ``alpha H + beta I`` with ``(alpha, beta) = (0, gamma0)`` (else
    ``(1, 0)``), so no identity matrix is written.  A skipped pair's vectors are zeroed first, so
    ``H+ = H`` exactly even when they are not finite.
    """
    dt = H.dtype
    alpha, beta = jnp.ones((), dt), jnp.zeros((), dt)
    if scale_init:
        yy = jnp.vdot(y, y)
        gamma0 = jnp.where(ok & (yy > 0), sy / jnp.where(yy > 0, yy, 1.0), 1.0)
        reset = ok & first
        alpha, beta = jnp.where(reset, 0.0, 1.0).astype(dt), jnp.where(reset, gamma0, 0.0).astype(dt)
    zero = jnp.zeros_like(s)
    s0, y0 = jnp.where(ok, s, zero), jnp.where(ok, y, zero)
    HyHg = H @ jnp.stack([y0, g], axis=1)                     # the one product with H
    Hy = alpha * HyHg[:, 0] + beta * y0
    Hg = alpha * HyHg[:, 1] + beta * g
    sy1 = jnp.where(ok, sy, 1.0)
    c = jnp.where(ok, (sy1 + jnp.vdot(y0, Hy)) / (sy1 * sy1), 0.0)
    eye = jnp.arange(H.shape[0])[:, None] == jnp.arange(H.shape[0])[None, :]
    H_upd = (alpha * H + jnp.where(eye, beta, 0.0)
             + c * jnp.outer(s0, s0) - (jnp.outer(Hy, s0) + jnp.outer(s0, Hy)) / sy1)
    sg = jnp.vdot(s0, g)
    p = -(Hg + c * sg * s0 - (Hy * sg + s0 * jnp.vdot(Hy, g)) / sy1)
    return H_upd, p


def _bfgs_pair(updates, state, params, curvature_eps):
    """The new pair of a BFGS rule's update from its state (``prev_params``, ``prev_gradient``, ``count``,
    ``num_skipped``): ``(g, unravel, x, s, y, s.y, have_pair, ok, first)``, ``ok`` the curvature safeguard
    ``s.y > curvature_eps ||s|| ||y||`` (finite), ``first`` no pair accepted before."""
    if params is None:
        raise ValueError("bfgs_direction needs params: call update(grad, state, params)")
    g, unravel = ravel_pytree(updates)
    x, _ = ravel_pytree(params)
    s = x - state.prev_params
    y = g - state.prev_gradient
    sy = jnp.vdot(s, y)
    thresh = curvature_eps * jnp.linalg.norm(s) * jnp.linalg.norm(y)
    have_pair = state.count > 0
    ok = have_pair & (sy > thresh) & jnp.isfinite(sy)
    first = (state.count - 1 - state.num_skipped) == 0
    return g, unravel, x, s, y, sy, have_pair, ok, first


def bfgs_direction(
    curvature_eps: float = 1e-8,
    scale_init: bool = True,
    memory: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Dense BFGS direction (Algorithm 12): ``p_t = -H_{t-1} g_t``.

    ``H`` is a dense matrix over the flattened parameters
    (:func:`jax.flatten_util.ravel_pytree`), so memory is O(n^2): use it for
    small problems (row subproblems, test functions), not for full MF factors
    (use ``optax.lbfgs`` there).

    The pair ``(s_t, y_t)`` is formed at the *next* update from the
    parameters and gradient stored in this rule's own state (as
    ``optax.scale_by_lbfgs`` does), so the rule needs nothing from the step
    rule::

        s = theta_t - theta_{t-1},   y = g_t - g_{t-1}

    Curvature safeguard: the update is skipped (``H`` kept) when
    ``s^T y <= curvature_eps * ||s|| ||y||`` -- this covers non-Wolfe step
    rules (constant, Armijo), zero steps and non-convex regions, and keeps
    ``H`` positive definite.  ``state.num_skipped`` counts the skips.

    First-step scaling: the slides start from ``H_0 = I``, so the first
    direction is ``-g`` (its length is left to the step rule).  With
    ``scale_init=True`` (default), before the first accepted update ``H`` is
    reset to ``(s^T y / y^T y) I`` (Nocedal & Wright eq. 6.20), which puts
    the later directions on the scale of the problem so that a unit step is
    usually accepted.  ``scale_init=False`` is the slides' ``H_0 = I``
    throughout.

    ``memory=m`` keeps the accepted pairs instead of ``H`` (the compact representation,
    :func:`compact_bfgs_direction`): the same algorithm and the same directions up to rounding
    while at most ``m`` pairs have been accepted, at O(m n) memory and work per step instead of
    O(n^2).  Give the step budget (``memory=num_steps``) for exact BFGS on problems whose ``H``
    would not fit or would cost more than the loss (``mfjax compare`` does).

    Args:
      curvature_eps: relative threshold of the curvature safeguard.
      scale_init: rescale ``H_0`` at the first update (see above).
      memory: ``None`` (default): the dense ``H``; an int: the compact representation with room
        for ``memory`` pairs.

    References:
      Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006, Sec. 6.1.
    """
    _check("curvature_eps", curvature_eps, 0.0)
    if memory is not None:
        return compact_bfgs_direction(memory, curvature_eps, scale_init)

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        n = flat.shape[0]
        return BFGSState(
            count=jnp.zeros([], jnp.int32),
            prev_params=jnp.zeros_like(flat),
            prev_gradient=jnp.zeros_like(flat),
            inv_hessian=jnp.eye(n, dtype=flat.dtype),
            num_skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra):
        del extra
        g, unravel, x, s, y, sy, have_pair, ok, first = _bfgs_pair(updates, state, params, curvature_eps)
        H_upd, p = _bfgs_update_and_direction(state.inv_hessian, s, y, g, sy, ok, first, scale_init)
        new_state = BFGSState(
            count=state.count + 1,
            prev_params=x,
            prev_gradient=g,
            inv_hessian=H_upd,
            num_skipped=state.num_skipped + (have_pair & ~ok).astype(jnp.int32),
        )
        return unravel(p), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class CompactBFGSState(NamedTuple):
    """State of :func:`compact_bfgs_direction`.

    Attributes:
      count: number of updates so far (int32).
      prev_params, prev_gradient: flattened parameters and gradient at the previous update.
      pairs_s, pairs_y: ``(memory, n)``: the accepted pairs ``s_i, y_i`` as rows, oldest first;
        rows ``>= num_pairs`` are zero.
      sy: ``(memory, memory)``: ``sy[i, j] = s_i . y_j`` for ``i <= j`` (``R`` of Byrd, Nocedal &
        Schnabel), zero below the diagonal and in unused rows / columns.
      yy: ``(memory, memory)``: ``Y Y^T``, ``yy[i, j] = y_i . y_j``.
      num_pairs: pairs held (int32, at most ``memory``).
      gamma: ``H_0 = gamma I``: ``s.y / y.y`` of the first accepted pair with ``scale_init``, else 1.
      num_skipped: how many curvature-violating updates were skipped.
    """

    count: jax.Array
    prev_params: jax.Array
    prev_gradient: jax.Array
    pairs_s: jax.Array
    pairs_y: jax.Array
    sy: jax.Array
    yy: jax.Array
    num_pairs: jax.Array
    gamma: jax.Array
    num_skipped: jax.Array


def _drop_oldest(S, Y, SY, YY, k):
    """The buffers without their oldest pair: rows (and columns) shifted up by one, the last zero."""
    def shift(a, axis):
        rest = jax.lax.slice_in_dim(a, 1, None, axis=axis)
        return jnp.concatenate([rest, jnp.zeros_like(jax.lax.slice_in_dim(a, 0, 1, axis=axis))], axis=axis)

    return shift(S, 0), shift(Y, 0), shift(shift(SY, 0), 1), shift(shift(YY, 0), 1), k - 1


def compact_inverse_hessian_product(S, Y, SY, YY, num_pairs, gamma, v, Sv=None, Yv=None):
    """``H v`` for the BFGS matrix of the pairs ``(S, Y)`` started from ``H_0 = gamma I``, in compact form.

    Byrd, Nocedal & Schnabel (1994), Theorem 2.2, pairs as rows of ``S``, ``Y``: with ``R`` the
    upper triangle of ``S Y^T`` (``R_ij = s_i . y_j``, ``i <= j``) and ``D`` its diagonal,

        H v = gamma v + S^T w - gamma Y^T q,
        q = R^{-1} S v,   w = R^{-T} ((D + gamma Y Y^T) q - gamma Y v),

    which equals ``v`` multiplied by ``num_pairs`` BFGS updates (:func:`bfgs_inverse_update`) of
    ``gamma I``.  Two passes over ``S`` and ``Y`` and two triangular solves of size ``memory``;
    unused rows (``>= num_pairs``) are zero and ``R`` has 1 on their diagonal, so they add nothing.
    ``Sv``, ``Yv``: ``S v`` and ``Y v`` when the caller has them (then one pass over each).
    """
    m = S.shape[0]
    valid = jnp.arange(m) < num_pairs
    a = S @ v if Sv is None else Sv
    b = Y @ v if Yv is None else Yv
    R = jnp.triu(SY) + jnp.diag(jnp.where(valid, 0.0, 1.0).astype(SY.dtype))
    q = jax.scipy.linalg.solve_triangular(R, a, lower=False)
    t = jnp.diagonal(SY) * q + gamma * (YY @ q) - gamma * b
    w = jax.scipy.linalg.solve_triangular(R, t, lower=False, trans="T")
    return gamma * v + w @ S - gamma * (q @ Y)


def compact_bfgs_direction(
    memory: int,
    curvature_eps: float = 1e-8,
    scale_init: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """BFGS direction (Algorithm 12) from the stored pairs instead of a dense ``H``.

    The rule of :func:`bfgs_direction` -- the pair ``(s_t, y_t)`` formed from the rule's own
    state, the curvature safeguard, ``H_0 = I`` until the first accepted pair and
    ``(s.y / y.y) I`` from it with ``scale_init`` -- but ``H`` is never formed: the rule keeps the
    accepted pairs, ``R`` (upper triangle of ``S Y^T``) and ``Y Y^T``, and applies ``H`` in the
    compact representation of Byrd, Nocedal & Schnabel (:func:`compact_inverse_hessian_product`).
    Per step: one product of the pairs with ``[y, g]`` (the new column of ``R`` and of ``Y Y^T``,
    and ``S g``, ``Y g``), one for the direction, and two ``memory x memory`` triangular solves:
    two passes over the pairs, O(memory n) memory and work instead of O(n^2).

    While at most ``memory`` pairs have been accepted, the directions are those of the dense rule
    (equal up to rounding).  After that the oldest pair is dropped for each new one: a
    limited-memory BFGS with the fixed ``H_0 = gamma I``, no longer the dense algorithm.  Give
    the step budget as ``memory`` for exact BFGS.

    Args:
      memory: how many pairs to keep (an int >= 1).
      curvature_eps, scale_init: as :func:`bfgs_direction`.

    Raises:
      ValueError: ``memory`` is not an int >= 1, or ``curvature_eps < 0``.

    References:
      Byrd, Nocedal, Schnabel, "Representations of quasi-Newton matrices and their use in limited
      memory methods", Math. Programming 63, 1994, Theorem 2.2.
      Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006, Sec. 7.2.
    """
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise ValueError(f"memory must be an int >= 1 (the number of pairs to keep), got {memory!r}")
    _check("curvature_eps", curvature_eps, 0.0)
    m = memory

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        n, dt = flat.shape[0], flat.dtype
        return CompactBFGSState(
            count=jnp.zeros([], jnp.int32),
            prev_params=jnp.zeros_like(flat),
            prev_gradient=jnp.zeros_like(flat),
            pairs_s=jnp.zeros((m, n), dt),
            pairs_y=jnp.zeros((m, n), dt),
            sy=jnp.zeros((m, m), dt),
            yy=jnp.zeros((m, m), dt),
            num_pairs=jnp.zeros([], jnp.int32),
            gamma=jnp.ones([], dt),
            num_skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra):
        del extra
        g, unravel, x, s, y, sy, have_pair, ok, first = _bfgs_pair(updates, state, params, curvature_eps)
        S, Y, SY, YY, k = jax.lax.cond(ok & (state.num_pairs == m), _drop_oldest, lambda *a: a,
                                       state.pairs_s, state.pairs_y, state.sy, state.yy, state.num_pairs)
        # write the pair into slot k; a skipped pair (k may be m then) rewrites slot min(k, m-1) unchanged
        zero = jnp.zeros_like(s)
        s0, y0 = jnp.where(ok, s, zero), jnp.where(ok, y, zero)
        kk = jnp.minimum(k, m - 1)
        here = jnp.arange(m) == k
        yg = jnp.stack([y0, g], axis=1)
        PS, PY = S @ yg, Y @ yg                                    # one pass over each: s_i . [y, g], y_i . [y, g]
        col_sy = jnp.where(here, jnp.vdot(s0, y0), PS[:, 0])      # s_i . y of the held pairs, then s . y
        col_yy = jnp.where(here, jnp.vdot(y0, y0), PY[:, 0])
        Sg = jnp.where(here, jnp.vdot(s0, g), PS[:, 1])           # S g, Y g with the new pair
        Yg = jnp.where(here, jnp.vdot(y0, g), PY[:, 1])
        keep = lambda new, a, axis: jnp.where(ok, new, jax.lax.dynamic_index_in_dim(a, kk, axis, False))
        SY = jax.lax.dynamic_update_index_in_dim(SY, keep(col_sy, SY, 1), kk, 1)
        YY = jax.lax.dynamic_update_index_in_dim(YY, keep(col_yy, YY, 1), kk, 1)
        YY = jax.lax.dynamic_update_index_in_dim(YY, keep(col_yy, YY, 0), kk, 0)
        S = jax.lax.dynamic_update_index_in_dim(S, keep(s0, S, 0), kk, 0)
        Y = jax.lax.dynamic_update_index_in_dim(Y, keep(y0, Y, 0), kk, 0)
        gamma = state.gamma
        if scale_init:
            yy = jnp.vdot(y0, y0)
            gamma0 = jnp.where(yy > 0, sy / jnp.where(yy > 0, yy, 1.0), 1.0).astype(gamma.dtype)
            gamma = jnp.where(ok & first, gamma0, gamma)
        k = k + ok.astype(jnp.int32)
        p = -compact_inverse_hessian_product(S, Y, SY, YY, k, gamma, g, Sg, Yg)
        new_state = CompactBFGSState(
            count=state.count + 1, prev_params=x, prev_gradient=g, pairs_s=S, pairs_y=Y, sy=SY, yy=YY,
            num_pairs=k, gamma=gamma,
            num_skipped=state.num_skipped + (have_pair & ~ok).astype(jnp.int32),
        )
        return unravel(p), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# -------------------------------------------------------- nonlinear CG
class CGState(NamedTuple):
    """State of :func:`cg_direction`.

    Field names avoid ``value``/``grad``/``info`` (see :class:`BFGSState`).

    Attributes:
      count: number of updates so far (int32).
      prev_gradient: ``g_{t-1}`` (a pytree like the params).
      prev_direction: ``p_{t-1}`` as returned (before the step rule scales it).
      num_restarts: how many times ``p_t = -g_t`` (``-z_t`` when preconditioned)
        was forced after the first update (periodic restart, ``beta`` not
        finite, or no descent).
      prev_scaled: ``z_{t-1} = M^{-1} g_{t-1}`` (``None`` without a preconditioner).
      preconditioner_state: the preconditioner's own state (``None`` without one).
    """

    count: jax.Array
    prev_gradient: Any
    prev_direction: Any
    num_restarts: jax.Array
    prev_scaled: Any = None
    preconditioner_state: Any = None


_CG_BETAS = ("fr", "pr+", "hs+", "dy")


def cg_direction(beta: str = "pr+", restart_every: int | None = None, *,
                 preconditioner: optax.GradientTransformation | None = None
                 ) -> optax.GradientTransformationExtraArgs:
    r"""Nonlinear conjugate-gradient direction: ``p_1 = -g_1``, ``p_t = -g_t + beta_t p_{t-1}``.

    With ``y_t = g_t - g_{t-1}`` (Nocedal & Wright Sec. 5.2; Hager & Zhang 2006)::

        "fr"   Fletcher-Reeves     beta = g_t.g_t / g_{t-1}.g_{t-1}
        "pr+"  Polak-Ribiere+      beta = max(0, g_t.y_t / g_{t-1}.g_{t-1})
        "hs+"  Hestenes-Stiefel+   beta = max(0, g_t.y_t / p_{t-1}.y_t)
        "dy"   Dai-Yuan            beta = g_t.g_t / p_{t-1}.y_t

    Inner products run over all leaves of the params pytree (``U`` and ``V``
    together).  On a strictly convex quadratic with exact line searches all
    four coincide with linear CG and reach the minimiser in at most ``n``
    steps (tested); on the MF loss pair it with the exact step
    :func:`mfjax.linesearch.exact_mf`, for which ``g_t . p_{t-1} = 0`` and
    ``g_t . p_t = -|g_t|^2 < 0``.

    Restarts (``p_t = -g_t``): at the first update; every ``restart_every``
    updates when given; when ``beta`` is not finite (zero denominator); and
    whenever ``p_t`` would not be a descent direction (``g_t . p_t >= 0``,
    possible with inexact steps), so the returned ``p`` is always a descent
    direction for ``g != 0``.  ``max(0, .)`` in PR+/HS+ restarts
    automatically when successive gradients stop being near-orthogonal.
    The ``(g_{t-1}, p_{t-1})`` pair is taken from this rule's own state, so a
    step rule that rejects a step (step 0) leaves ``y_t = 0`` and hence
    ``beta = 0`` for PR+/HS+.

    Preconditioned CG (``preconditioner=`` an optax transformation mapping
    ``g`` to ``z = M^{-1} g`` with ``M`` symmetric positive definite, e.g.
    :func:`mfjax.optim.mf_preconditioner`; Nocedal & Wright Algorithm 5.3,
    Hager & Zhang Sec. 9): ``p_1 = -z_1``, ``p_t = -z_t + beta_t p_{t-1}`` with::

        "fr"   beta = z_t.g_t / z_{t-1}.g_{t-1}
        "pr+"  beta = max(0, z_t.y_t / z_{t-1}.g_{t-1})
        "hs+"  beta = max(0, z_t.y_t / p_{t-1}.y_t)
        "dy"   beta = z_t.g_t / p_{t-1}.y_t

    (``z = g`` gives the formulas above; it is CG in the variables
    ``M^{1/2} x`` when ``M`` is fixed).  ``M`` may change from step to step
    (the MF preconditioners are rebuilt at the current point); PR+ is the
    usual choice then.  Restarts use ``p_t = -z_t``, which is a descent
    direction since ``g . z > 0``.  Not chainable as
    ``optax.chain(preconditioner, cg_direction())``: that would form the
    inner products of ``z`` with itself instead of ``z . g``.

    Args:
      beta: ``"pr+"`` (default), ``"hs+"``, ``"fr"`` or ``"dy"``.
      restart_every: restart period in updates (``None``: no periodic restart).
      preconditioner: optional transformation ``g -> M^{-1} g`` (its
        ``update`` gets the params of this rule's ``update``).

    References:
      Nocedal, Wright, "Numerical Optimization", 2nd ed., 2006, Sec. 5.2.
      Hager, Zhang, "A survey of nonlinear conjugate gradient methods", 2006.
      Polak, Ribiere (1969); Hestenes, Stiefel (1952); Fletcher, Reeves (1964);
      Dai, Yuan (1999); Gilbert, Nocedal (1992) for the ``max(0, .)`` variants.
    """
    if beta not in _CG_BETAS:
        raise ValueError(f"beta must be one of {_CG_BETAS}, got {beta!r}")
    if restart_every is not None and (int(restart_every) != restart_every or restart_every < 1):
        raise ValueError(f"restart_every must be a positive integer or None, got {restart_every!r}")

    pre = None if preconditioner is None else optax.with_extra_args_support(preconditioner)

    def init_fn(params):
        z = lambda: optax.tree.zeros_like(params)  # noqa: E731
        return CGState(jnp.zeros([], jnp.int32), z(), z(), jnp.zeros([], jnp.int32),
                       None if pre is None else z(), None if pre is None else pre.init(params))

    def update_fn(updates, state, params=None, **extra):
        g, g0, p0 = updates, state.prev_gradient, state.prev_direction
        if pre is None:
            zg, z0, pre_state = g, g0, None
        else:
            zg, pre_state = pre.update(g, state.preconditioner_state, params, **extra)
            z0 = state.prev_scaled
        dot = lambda a, b: optax.tree.real(optax.tree.vdot(a, b))  # noqa: E731
        y = jax.tree.map(lambda a, b: a - b, g, g0)
        zg_g, z0g0 = dot(zg, g), dot(z0, g0)
        if beta == "fr":
            num, den = zg_g, z0g0
        elif beta == "pr+":
            num, den = dot(zg, y), z0g0
        elif beta == "hs+":
            num, den = dot(zg, y), dot(p0, y)
        else:  # "dy"
            num, den = zg_g, dot(p0, y)
        b = num / jnp.where(den != 0, den, 1)
        if beta in ("pr+", "hs+"):
            b = jnp.maximum(b, 0)
        restart = (state.count == 0) | (den == 0) | ~jnp.isfinite(b)
        if restart_every is not None:
            restart = restart | (state.count % restart_every == 0)
        b = jnp.where(restart, 0, b)
        p = jax.tree.map(lambda zi, pi: (-zi + b * pi).astype(zi.dtype), zg, p0)
        no_descent = ~(dot(g, p) < 0)
        p = jax.tree.map(lambda pi, zi: jnp.where(no_descent, -zi, pi), p, zg)
        forced = (state.count > 0) & (restart | (no_descent & (b != 0)))
        new_state = CGState(state.count + 1, g, p, state.num_restarts + forced.astype(jnp.int32),
                            None if pre is None else zg, pre_state)
        return p, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# -------------------------------------------------------------- registry
REGISTRY: dict[str, Callable[..., optax.GradientTransformationExtraArgs]] = {
    "gd": gd_direction,
    "heavy_ball": heavy_ball_direction,
    "nesterov": nesterov_direction,
    "adagrad": adagrad_direction,
    "rmsprop": rmsprop_direction,
    "adam": adam_direction,
    "bfgs": bfgs_direction,
    "cg": cg_direction,
}
"""Direction-rule factories by name; each callable with no arguments gives the slides' defaults."""


def direction(name: str, **kwargs) -> optax.GradientTransformationExtraArgs:
    """The direction rule ``REGISTRY[name](**kwargs)``.

    Raises:
      KeyError: unknown ``name`` (the message lists the known names).
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown direction rule {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name](**kwargs)
