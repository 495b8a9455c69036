"""mfjax: masked matrix factorization and matrix completion in JAX.

Public API (explicit; see each submodule's ``__all__``):

- :mod:`mfjax.data`       ratings container, loaders, synthetic data, splits
- :mod:`mfjax.losses`     masked MF losses (dense-mask and COO forms)
"""

from mfjax import data, losses, metrics, solvers
from mfjax.losses import Factors, init_factors

__version__ = "0.1.0"

__all__ = ["data", "losses", "metrics", "solvers", "Factors", "init_factors", "__version__"]
