"""mfjax: masked matrix factorization and matrix completion in JAX.

Public API (explicit; each submodule lists its own ``__all__``):

- :mod:`mfjax.data`        ratings container, loaders, synthetic data, splits
- :mod:`mfjax.store`       atomic result files, the resumable config-hashed results store
- :mod:`mfjax.core`        run statuses, pytree helpers, argument checks
- :mod:`mfjax.objective`   the masked MF objective pytree and its formulas
- :mod:`mfjax.losses`      masked MF losses (dense-mask and COO), NMF divergences
- :mod:`mfjax.metrics`     RMSE / MAE (clipped, discrete)
- :mod:`mfjax.eval`        top-k lists, ranking metrics (precision, recall, NDCG, MAP, MRR, hit rate)
- :mod:`mfjax.linesearch`  step-size rules as optax transforms
- :mod:`mfjax.optim`       direction rules and optimizers (direction + step rule)
- :mod:`mfjax.loop`        ``fit`` (lax.scan) / ``fit_until`` (while_loop)
- :mod:`mfjax.solvers`     ALS, SGD, NMF, SVD, row-wise vector descent
- :mod:`mfjax.models`      DMF / DMF-D (Flax; imported on first use)
- :mod:`mfjax.compare`     optimizer comparisons (the CLI's main job)
- :mod:`mfjax.estimator`   ``Recommender``: fit / predict / recommend / test / save / load over every model
- :mod:`mfjax.selection`   ``cross_validate``, ``grid_search``, ``random_search`` (resumable)

Layers (imports point down only; checked by ``tests/test_layers.py``)::

    data, store -> core -> objective, losses -> metrics, eval -> linesearch, optim
    -> loop -> solvers -> models -> compare, cli, estimator, selection

Example::

    import jax, mfjax as mf
    ratings = mf.data.synthetic()
    train, test = mf.data.split(ratings, fractions=(0.9, 0.1), seed=0)
    params = mf.init_factors(jax.random.key(0), train.shape, rank=10)
    loss = mf.losses.masked_mse(train, l2=2.0)
    opt = mf.optim.gd(linesearch=mf.linesearch.inverse_lipschitz())
    result = mf.fit(loss, opt, params, num_steps=200)
    print(mf.metrics.rmse(result.params, test))
"""

import importlib

from mfjax import core, data, eval, linesearch, loop, losses, metrics, objective, optim, solvers, store
from mfjax.losses import Factors, init_factors
from mfjax.loop import FitResult, FitTrace, fit, fit_until

__version__ = "0.1.0"

__all__ = [
    "data",
    "store",
    "core",
    "objective",
    "losses",
    "metrics",
    "eval",
    "linesearch",
    "optim",
    "loop",
    "solvers",
    "models",
    "compare",
    "estimator",
    "selection",
    "Factors",
    "init_factors",
    "fit",
    "fit_until",
    "FitResult",
    "FitTrace",
    "__version__",
]

_LAZY = {"models", "compare", "estimator", "selection"}  # flax / matplotlib-using modules load on first use


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"mfjax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'mfjax' has no attribute {name!r}")
