"""Classical solvers: ALS, SGD, NMF (multiplicative updates), SVD (power iteration)."""

from mfjax.solvers.base import SolverResult, SolverTrace

__all__ = ["SolverResult", "SolverTrace"]
