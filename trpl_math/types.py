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

    # The covariance alone does not say whether it holds variances (``(..., d)``) or matrices
    # (``(..., d, d)``): a batch of d variance vectors has the shape of one d x d matrix. So
    # the views below take ``diag`` explicitly, like every function of the library.

    @classmethod
    def from_std(cls, mean: Any, std: Any) -> Gaussian:
        """A diagonal Gaussian from standard deviations: ``Gaussian(mean, std ** 2)``.

        The library's ``cov`` (with ``diag=True``) means *variances*; most policies hold
        standard deviations, and passing those where variances are expected cannot be detected.

        Example:
            >>> import numpy as np
            >>> Gaussian.from_std(np.zeros(2), np.array([0.5, 2.0])).cov
            array([0.25, 4.  ])
        """
        return cls(mean, std * std)

    @classmethod
    def from_scale_tril(cls, mean: Any, scale_tril: Any) -> Gaussian:
        """A full Gaussian from a lower-triangular factor ``L``: ``Gaussian(mean, L Lᵀ)``."""
        return cls(mean, scale_tril @ _mT(scale_tril))

    def _check(self, diag: bool) -> None:
        d = self.mean.shape[-1] if len(self.mean.shape) else None
        shape = tuple(self.cov.shape)
        ok = shape[-1:] == (d,) if diag else len(shape) >= 2 and shape[-2:] == (d, d)
        if not ok:
            want = "(..., d) variances" if diag else "(..., d, d) matrices"
            raise ValueError(
                f"cov has shape {shape}, expected {want} for mean of shape "
                f"{tuple(self.mean.shape)} (diag={diag})"
            )

    def std(self, *, diag: bool) -> Any:
        """Standard deviations ``sqrt(cov)`` ``(..., d)`` of a diagonal Gaussian (``diag=True``).

        Raises:
            ValueError: ``diag=False`` (a full covariance has no per-dimension standard
                deviation that describes it: use :meth:`scale_tril`), or ``cov`` of the wrong
                shape.
        """
        if not diag:
            raise ValueError(
                "std is defined for diagonal Gaussians (diag=True); for a full covariance use "
                "scale_tril(diag=False), its Cholesky factor"
            )
        self._check(diag)
        return self.cov**0.5

    def scale_tril(self, *, diag: bool) -> Any:
        """The lower Cholesky factor ``L`` of the covariance, ``cov = L Lᵀ``, ``(..., d, d)``
        (for ``diag=True`` the diagonal matrix of the standard deviations)."""
        self._check(diag)
        if _is_torch(self.cov):
            import torch

            return torch.diag_embed(self.cov**0.5) if diag else torch.linalg.cholesky(self.cov)
        import numpy as np

        if not isinstance(self.cov, np.ndarray | np.generic):  # JAX and other array-API arrays
            import array_api_compat

            xp = array_api_compat.array_namespace(self.cov)
            if diag:
                eye = xp.eye(self.cov.shape[-1], dtype=self.cov.dtype)
                return xp.sqrt(self.cov)[..., :, None] * eye
            return xp.linalg.cholesky(self.cov)
        cov = np.asarray(self.cov)
        if diag:
            return np.sqrt(cov)[..., :, None] * np.eye(cov.shape[-1], dtype=cov.dtype)
        return np.linalg.cholesky(cov)

    def to_distribution(self, *, diag: bool) -> Any:
        """The Gaussian as a ``torch.distributions`` object (torch tensors only):
        ``Independent(Normal(mean, std), 1)`` for ``diag=True``, else
        ``MultivariateNormal(mean, scale_tril=L)``; ``log_prob``, ``entropy``, ``rsample`` are
        differentiable in the parameters.

        Raises:
            TypeError: NumPy arrays (use ``scipy.stats.multivariate_normal``).

        Example:
            >>> import torch
            >>> g = Gaussian(torch.zeros(2), torch.ones(2))
            >>> float(g.to_distribution(diag=True).log_prob(torch.zeros(2)))  # -log(2 pi)
            -1.8378770351409912
        """
        if not (_is_torch(self.mean) and _is_torch(self.cov)):
            raise TypeError(
                "to_distribution needs torch tensors, got "
                f"{type(self.mean).__name__} and {type(self.cov).__name__}"
            )
        import torch.distributions as D

        if diag:
            return D.Independent(D.Normal(self.mean, self.std(diag=True)), 1)
        return D.MultivariateNormal(self.mean, scale_tril=self.scale_tril(diag=False))


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _mT(x: Any) -> Any:
    return x.mT if _is_torch(x) else x.swapaxes(-1, -2)


class DivergenceParts(NamedTuple):
    """A similarity measure split into its mean part and its covariance part (docs/math.md §2).

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
