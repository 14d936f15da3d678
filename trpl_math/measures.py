"""The registry of the trust-region measures: one entry per measure, used by every caller.

Each :class:`Measure` ties a name to its projection, the divergence that projection bounds, and
the scaling of its mean part (the Eq. 12 penalty of a non-contextual covariance). The torch
layer, the training config and command line, the grid, and the benchmarks all look measures up
here, so a new measure is added in one place.

Names (docs/math.md §2, §3):

========== ===================================================== ==========================
name       projection                                            bounds
========== ===================================================== ==========================
frob       :func:`frobenius_projection` (Eq. 7)                  ``eps_mean``, ``eps_cov``
w2         :func:`wasserstein_projection` (Eq. 9, commuting)     ``eps_mean``, ``eps_cov``
w2_exact   :func:`wasserstein_projection` (exact, the geodesic)  ``eps_mean``, ``eps_cov``
kl         :func:`kl_projection` (Eq. 6, 10-11)                  ``eps_mean``, ``eps_cov``
kl_joint   :func:`kl_joint_projection` (Appendix B.5)            ``eps`` (the whole KL)
========== ===================================================== ==========================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trpl_math import _backend as B
from trpl_math.divergences import (
    frobenius_distance,
    kl_divergence,
    maha_chol,
    wasserstein_distance,
)
from trpl_math.projections import (
    frobenius_projection,
    kl_joint_projection,
    kl_projection,
    wasserstein_commuting_cov_part,
    wasserstein_projection,
)
from trpl_math.types import DivergenceParts, Gaussian

Array = Any


@dataclass(frozen=True)
class Measure:
    """One trust-region measure.

    Attributes:
        name: the registry key (``"kl"``, ...).
        joint: one bound ``eps`` on the whole divergence instead of ``eps_mean``/``eps_cov``.
        mean_factor: the mean part is ``mean_factor * maha(mu, mu_o; Sigma_o)`` (0.5 for KL);
            plain W2 (``scaled=False``) uses ``||mu - mu_o||^2`` instead.
        uses_scaled: whether ``scaled`` (W2 in the old covariance's metric) applies.
    """

    name: str
    joint: bool
    mean_factor: float
    uses_scaled: bool
    _project: Callable[..., Gaussian]
    _divergence: Callable[..., DivergenceParts]

    def project(
        self,
        mean: Array,
        cov: Array,
        old_mean: Array,
        old_cov: Array,
        *,
        eps_mean: float | None = None,
        eps_cov: float | None = None,
        eps: float | None = None,
        scaled: bool = True,
        diag: bool = False,
        entropy_bound: Any = None,
    ) -> Gaussian:
        """This measure's projection of ``N(mean, cov)`` onto the region around the old
        Gaussian (shapes as the projection functions). ``entropy_bound`` is accepted by the
        joint projection alone (the others apply entropy control after projecting)."""
        if self.joint:
            if eps is None:
                raise ValueError(f"{self.name} needs eps (the bound on the whole KL)")
            return kl_joint_projection(
                mean, cov, old_mean, old_cov, eps=eps, entropy_bound=entropy_bound, diag=diag
            )
        if eps_mean is None or eps_cov is None:
            raise ValueError(f"{self.name} needs eps_mean and eps_cov")
        if entropy_bound is not None:
            raise ValueError(f"{self.name} takes no entropy_bound; project the entropy after it")
        kw: dict[str, Any] = {"eps_mean": eps_mean, "eps_cov": eps_cov, "diag": diag}
        if self.uses_scaled:
            kw["scaled"] = scaled
        return self._project(mean, cov, old_mean, old_cov, **kw)

    def divergence(
        self,
        mean: Array,
        cov: Array,
        old_mean: Array,
        old_cov: Array,
        *,
        scaled: bool = True,
        diag: bool = False,
    ) -> DivergenceParts:
        """The divergence this measure's projection bounds, split into its parts."""
        kw: dict[str, Any] = {"diag": diag}
        if self.uses_scaled:
            kw["scaled"] = scaled
        return self._divergence(mean, cov, old_mean, old_cov, **kw)

    def mean_part(
        self, target: Array, mean: Array, cov: Array, *, scaled: bool = True, diag: bool = False
    ) -> Array:
        """The mean part between ``N(target, cov)`` and ``N(mean, cov)`` (equal covariances,
        so the covariance part is 0): the penalty of Eq. 12 for a non-contextual covariance.
        Shapes: ``target, mean (..., d)``, ``cov`` broadcasting against them."""
        xp = B.namespace(target, mean, cov)
        diff = target - mean
        if self.uses_scaled and not scaled:
            return xp.sum(diff * diff, axis=-1)
        if diag:
            maha = xp.sum(diff * diff / cov, axis=-1)
        else:
            chol = B.cholesky(cov, xp, name="cov", check=True)
            chol = xp.broadcast_to(chol, (*diff.shape[:-1], *cov.shape[-2:]))
            maha = maha_chol(diff, chol, xp)
        return self.mean_factor * maha if self.mean_factor != 1.0 else maha


def _w2_commuting(mean, cov, old_mean, old_cov, *, scaled, diag) -> DivergenceParts:
    """Eq. 9's own measure (the commuting covariance part), which the W2 projection bounds."""
    mean_part = wasserstein_distance(mean, cov, old_mean, old_cov, scaled=scaled, diag=diag).mean
    cov_part = wasserstein_commuting_cov_part(cov, old_cov, scaled=scaled, diag=diag)
    return DivergenceParts(mean_part, cov_part)


def _w2_exact_projection(mean, cov, old_mean, old_cov, **kw) -> Gaussian:
    return wasserstein_projection(mean, cov, old_mean, old_cov, exact=True, **kw)


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("frob", False, 1.0, False, frobenius_projection, frobenius_distance),
        Measure("w2", False, 1.0, True, wasserstein_projection, _w2_commuting),
        Measure("w2_exact", False, 1.0, True, _w2_exact_projection, wasserstein_distance),
        Measure("kl", False, 0.5, False, kl_projection, kl_divergence),
        Measure("kl_joint", True, 0.5, False, kl_joint_projection, kl_divergence),
    )
}


def get_measure(name: str) -> Measure:
    """The registered measure ``name``.

    Raises:
        ValueError: naming the registered measures, for an unknown ``name``.
    """
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"measure must be one of {tuple(MEASURES)}, got {name!r}") from None
