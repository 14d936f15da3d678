"""Small result containers shared by the whole library."""

from __future__ import annotations

from typing import Any, NamedTuple


class Gaussian(NamedTuple):
    """Parameters of a batch of Gaussians.

    Attributes:
        mean: ``(..., d)``.
        cov: ``(..., d, d)`` covariance matrices, or ``(..., d)`` variances for diagonal ones.
    """

    mean: Any
    cov: Any


class DivergenceParts(NamedTuple):
    """A similarity measure split into its mean part and its covariance part (MATH.md).

    Attributes:
        mean: ``(...)`` the part that depends on the means.
        cov: ``(...)`` the part that depends on the covariances.
    """

    mean: Any
    cov: Any

    @property
    def total(self) -> Any:
        """``mean + cov``, shape ``(...)``."""
        return self.mean + self.cov
