"""Step-size rules (line searches) as optax transforms.

Every rule is an :class:`optax.GradientTransformationExtraArgs` that turns a
direction ``p`` into the update ``gamma p``; its ``update`` takes
``value=f(params)``, ``grad=grad f(params)`` and ``value_fn=f`` like
:func:`optax.scale_by_backtracking_linesearch`, so any rule goes last in an
``optax.chain`` after a direction rule::

    opt = optax.chain(optax.scale(-1.0), mfjax.linesearch.armijo())   # GD + Armijo

States hold ``value``/``grad`` at the accepted point (reusable through
:func:`optax.value_and_grad_from_state`) and a :class:`LineSearchInfo`
(``step_size, num_fun_evals, num_grad_evals, success``) that
:func:`get_linesearch_info` finds in any (chained) optax state.  See
:mod:`mfjax.linesearch.base` for the protocol and the failure convention.

Rules (slides: Beresnev & Klyushev 2024, "Recommendation systems via
approximate matrix factorization"):

========================  =====================================  ================================
rule                      what                                   evaluations / update
========================  =====================================  ================================
constant                  gamma                                  0
inverse_sqrt              gamma_0 / sqrt(k)                      0
inverse_lipschitz         Algorithm 1, 1/L estimate              value+grad per trial
armijo                    Algorithm 2, backtracking              value per trial, +1 value+grad
weak_wolfe_bisection      Algorithm 3, bisection, can grow       value+grad per trial
strong_wolfe              Algorithm 4 as written, shrink only    value+grad per trial
strong_wolfe_zoom         Nocedal-Wright bracketing + zoom       value+grad per trial
adaptive_gd               Algorithm 6 (Malitsky-Mishchenko)      0
exact_mf                  exact step for the masked MF loss      2 (+1 grad; value free)
========================  =====================================  ================================
"""

from mfjax.linesearch.backtracking import BacktrackingState, armijo, inverse_lipschitz, strong_wolfe
from mfjax.linesearch.base import LineSearchInfo, get_linesearch_info
from mfjax.linesearch.exact import (
    ExactMFState,
    exact_mf,
    exact_quadratic_step,
    mf_quartic_coefficients,
    minimize_quartic,
)
from mfjax.linesearch.simple import (
    AdaptiveGDState,
    ConstantState,
    InverseSqrtState,
    adaptive_gd,
    constant,
    inverse_sqrt,
)
from mfjax.linesearch.wolfe import WolfeState, cubic_minimizer, strong_wolfe_zoom, weak_wolfe_bisection


def _registry():
    """name -> ``factory(ratings=None, l2=0.0, scale="sum")`` with defaults for a small MF problem.

    Only ``exact_mf`` uses the problem arguments (it needs the ratings of the
    loss); the other factories ignore them.  Constant-type steps assume the
    ``"sum"``-scaled loss of a problem of tens of rows and columns.
    """

    def ignore(make):
        def factory(ratings=None, l2=0.0, scale="sum"):
            return make()

        factory.__name__ = getattr(make, "__name__", "factory")
        return factory

    def make_exact(ratings=None, l2=0.0, scale="sum"):
        if ratings is None:
            raise ValueError("REGISTRY['exact_mf'] needs the problem: factory(ratings, l2, scale)")
        return exact_mf(ratings, l2, scale=scale)

    return {
        "constant": ignore(lambda: constant(1e-3)),
        "inverse_sqrt": ignore(lambda: inverse_sqrt(1e-3)),
        "inverse_lipschitz": ignore(lambda: inverse_lipschitz()),
        "armijo": ignore(lambda: armijo()),
        "weak_wolfe_bisection": ignore(lambda: weak_wolfe_bisection()),
        "strong_wolfe": ignore(lambda: strong_wolfe()),
        "strong_wolfe_zoom": ignore(lambda: strong_wolfe_zoom()),
        "adaptive_gd": ignore(lambda: adaptive_gd()),
        "exact_mf": make_exact,
    }


REGISTRY = _registry()
"""Step rules by name: ``REGISTRY[name](ratings=None, l2=0.0, scale="sum")`` -> transform."""

__all__ = [
    "LineSearchInfo",
    "get_linesearch_info",
    "REGISTRY",
    "constant",
    "inverse_sqrt",
    "inverse_lipschitz",
    "armijo",
    "weak_wolfe_bisection",
    "strong_wolfe",
    "strong_wolfe_zoom",
    "adaptive_gd",
    "exact_mf",
    "exact_quadratic_step",
    "mf_quartic_coefficients",
    "minimize_quartic",
    "cubic_minimizer",
    "BacktrackingState",
    "WolfeState",
    "ConstantState",
    "InverseSqrtState",
    "AdaptiveGDState",
    "ExactMFState",
]
