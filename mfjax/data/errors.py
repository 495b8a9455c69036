"""The data layer's errors: one base class, one subclass per kind of failure.

Every error raised by :mod:`mfjax.data` is a :class:`RatingsError` (itself a
``ValueError``, so ``except ValueError`` keeps working) or one of:

- :class:`MalformedFileError`: a ratings file line that cannot be parsed; the
  message names the file, the line number and the line.
- :class:`ChecksumError`: a file whose size / MD5 / SHA-256 disagrees with the
  expected value.
- :class:`DataNotFoundError`: a data set found in none of the places looked at
  (also a ``FileNotFoundError``); the message lists them.

This module imports nothing, so every other data module (the container, the
checks, the parsers, the downloads) can depend on it without a cycle.

>>> issubclass(MalformedFileError, ValueError), issubclass(DataNotFoundError, FileNotFoundError)
(True, True)
"""

from __future__ import annotations

__all__ = ["RatingsError", "MalformedFileError", "ChecksumError", "DataNotFoundError", "DownloadError"]


class RatingsError(ValueError):
    """Bad rating data: the message names the problem and the offending value."""


class MalformedFileError(RatingsError):
    """A ratings file line that cannot be parsed (names the file and line number)."""


class ChecksumError(RatingsError):
    """A file whose size or checksum disagrees with the expected value."""


class DataNotFoundError(RatingsError, FileNotFoundError):
    """A data set that was not found; the message lists every place looked at."""


class DownloadError(RatingsError, OSError):
    """A download that could not be made (no network, a refused or failed request).

    The message names the URL, the reason and the manual route (download the
    archive elsewhere and pass its folder as ``data_dir`` / ``$MFJAX_DATA_DIR``).
    """
