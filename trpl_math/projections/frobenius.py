"""Frobenius trust-region projection (the paper's Eq. 6-8)."""

from __future__ import annotations

from typing import Any

from trpl_math import _backend as B
from trpl_math import _checks as C
from trpl_math._backend import Array
from trpl_math._checks import prepare_bound, prepare_pair
from trpl_math.divergences import maha_chol
from trpl_math.projections.mean import project_mean, shrink_factor
from trpl_math.types import Gaussian

__all__ = ["frobenius_projection"]


@B.working_precision("float32")
def frobenius_projection(
    mean: Array,
    cov: Array,
    old_mean: Array,
    old_cov: Array,
    *,
    eps_mean: Any,
    eps_cov: Any,
    diag: bool = False,
) -> Gaussian:
    """Project a Gaussian onto the Frobenius trust region around the old one.

    Solves, per state,

        μ̃ = argmin maha(μ̃, μ; Σ_o)  s.t.  maha(μ̃, μ_o; Σ_o) ≤ ε_μ
        Σ̃ = argmin ‖Σ̃ - Σ‖_F²       s.t.  ‖Σ̃ - Σ_o‖_F² ≤ ε_Σ

    in closed form: ``μ̃ = (μ + ω μ_o)/(1 + ω)`` (Eq. 6) and ``Σ̃ = (Σ + η Σ_o)/(1 + η)`` with
    ``η = sqrt(‖Σ - Σ_o‖_F² / ε_Σ) - 1`` (Eq. 7-8). Implements Eq. (6)-(8) of the paper. A part
    within its bound is returned unchanged (identity gradient); an active part lands exactly on
    its bound.

    Args:
        mean: ``(..., d)`` the network's mean.
        cov: ``(..., d, d)`` its covariance (``(..., d)`` variances if ``diag``).
        old_mean: ``(..., d)`` the old policy's mean.
        old_cov: the old covariance, shaped like ``cov``.
        eps_mean: bound on ``maha(μ̃, μ_o; Σ_o)``; a float or an array broadcasting to ``(...)``.
        eps_cov: bound on ``‖Σ̃ - Σ_o‖_F²``; a float or an array broadcasting to ``(...)``.
        diag: covariances are variance vectors; O(d).

    Returns:
        ``Gaussian(mean, cov)`` of the projected policy, shapes as the broadcast inputs.

    Raises:
        ValueError: bad shapes or dtypes, non-finite values, covariances not positive definite,
            bounds ≤ 0. TypeError: NumPy and torch mixed.

    Example:
        >>> import numpy as np
        >>> p = frobenius_projection(np.ones(2), 3 * np.eye(2), np.zeros(2), np.eye(2),
        ...                          eps_mean=0.5, eps_cov=2.0)
        >>> p.cov  # ‖Σ - Σ_o‖_F² = 8 > 2, so η = 1
        array([[2., 0.],
               [0., 2.]])
    """
    p = prepare_pair(mean, cov, old_mean, old_cov, diag=diag)
    xp = p.xp
    eps_m = prepare_bound(eps_mean, "eps_mean", xp, p.mean, p.batch_shape)
    eps_c = prepare_bound(eps_cov, "eps_cov", xp, p.mean, p.batch_shape)
    diff = p.mean - p.old_mean
    delta = p.cov - p.old_cov
    if diag:
        maha = xp.sum(diff * diff / p.old_cov, axis=-1)
        dist_cov = xp.sum(delta * delta, axis=-1)
    else:
        check = B.validation_enabled()
        old_chol = B.cholesky(p.old_cov, xp, name="old_cov", check=check)
        if check:
            B.cholesky(p.cov, xp, name="cov", check=True)
        maha = maha_chol(diff, old_chol, xp)
        dist_cov = xp.sum(xp.sum(delta * delta, axis=-1), axis=-1)
    _check_domain(p, eps_m, eps_c, maha, dist_cov, diag)
    t, active = shrink_factor(dist_cov, eps_c, xp)
    ex = (...,) + (None,) * (1 if diag else 2)
    proj_cov = B.select(active[ex], p.old_cov + t[ex] * delta, p.cov, xp)
    return Gaussian(project_mean(p.mean, p.old_mean, maha, eps_m, xp), proj_cov)


def _check_domain(
    p: C.Pair, eps_m: Array, eps_c: Array, maha: Array, dist: Array, diag: bool
) -> None:
    """Overflowing parts, unresolvable bounds and ill-conditioned old covariances (validation)."""
    xp = p.xp
    C.check_divergence_finite(maha, "maha(mean, old_mean; old_cov)", xp)
    C.check_divergence_finite(dist, "‖cov - old_cov‖_F²", xp)
    scale_m = C.mean_scale(p.old_mean, p.old_cov, xp, diag=diag, metric=True)
    C.check_bound_floor(eps_m, "eps_mean", xp, scale_m, like=p.mean)
    scale_c = C.cov_scale(p.old_cov, xp, diag=diag, squared=True)
    C.check_bound_floor(eps_c, "eps_cov", xp, scale_c, like=p.mean)
    if not diag:
        C.check_condition(p.old_cov, "old_cov", xp)
