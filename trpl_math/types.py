"""Small result containers shared by the whole library."""

from __future__ import annotations

from typing import Any, NamedTuple


class Gaussian(NamedTuple):
    """Parameters of a batch of Gaussians.

    Attributes:
        mean: ``(..., d)``.
        cov: ``(..., d, d)`` covariance matrices, or ``(..., d)`` variances for diagonal ones.

    Example:
        >>> import numpy as np
        >>> g = Gaussian(np.zeros(2), np.eye(2))
        >>> mean, cov = g  # a NamedTuple: unpacks, and ``*g`` passes both to a function
        >>> g.cov.shape
        (2, 2)
    """

    mean: Any
    cov: Any


class DivergenceParts(NamedTuple):
    """A similarity measure split into its mean part and its covariance part (MATH.md).

    Attributes:
        mean: ``(...)`` the part that depends on the means.
        cov: ``(...)`` the part that depends on the covariances.

    Example:
        >>> import numpy as np
        >>> parts = DivergenceParts(np.float64(0.25), np.float64(0.5))
        >>> float(parts.total)
        0.75
    """

    mean: Any
    cov: Any

    @property
    def total(self) -> Any:
        """``mean + cov``, shape ``(...)``."""
        return self.mean + self.cov
