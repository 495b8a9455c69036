"""Data layer: the :class:`Ratings` container, loaders, synthetic data, splits."""

from mfjax.data.ratings import IdMap, Ratings, RatingsError

__all__ = ["IdMap", "Ratings", "RatingsError"]
