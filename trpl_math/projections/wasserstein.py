"""Wasserstein-2 trust-region projections: the paper's Eq. 9 and the exact geodesic one."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from trpl_math import _backend as B
from trpl_math import _checks as C
from trpl_math._backend import Array
from trpl_math._checks import prepare_bound, prepare_cov, prepare_pair
from trpl_math.divergences import maha_chol, w2_plain_factor_gap
from trpl_math.projections.mean import project_mean, shrink_factor
from trpl_math.types import Gaussian

__all__ = ["wasserstein_commuting_cov_part", "wasserstein_projection"]


@B.working_precision("float64")
def wasserstein_projection(
    mean: Array,
    cov: Array,
    old_mean: Array,
    old_cov: Array,
    *,
    eps_mean: Any,
    eps_cov: Any,
    scaled: bool = True,
    exact: bool = False,
    diag: bool = False,
) -> Gaussian:
    """Project a Gaussian onto the Wasserstein-2 trust region around the old one.

    Solves, per state, ``min W2(π̃, π)`` over mean and covariance separately, subject to the
    mean part and the covariance part of ``W2(π̃, π_o)`` staying within ``ε_μ`` and ``ε_Σ``.

    * Mean: Eq. 6 in the measure's metric (``Σ_o⁻¹`` if ``scaled``, Euclidean otherwise).
    * ``exact=False`` — the paper's Eq. 9, derived assuming Σ, Σ_o commute: interpolate square
      roots, ``Σ̃^{1/2} = (Σ^{1/2} + η Σ_o^{1/2}) / (1 + η)``, with ``η = sqrt(c / ε_Σ) - 1`` and
      ``c`` measured as the paper does (``‖Σ_o^{-1/2} Σ^{1/2} - I‖_F²`` scaled,
      ``‖Σ^{1/2} - Σ_o^{1/2}‖_F²`` plain; see :func:`wasserstein_commuting_cov_part`). Exact for
      commuting pairs (always for ``diag``); for others ``c`` exceeds the true W2, so the result
      is feasible but strictly inside the ball.
    * ``exact=True`` — beyond the paper: the closest point of a W2 ball lies on the geodesic from
      its centre, ``Σ(t) = ((1-t) I + t T) Σ_o ((1-t) I + t T)`` with the optimal transport map
      ``T``, and ``W2cov(Σ(t), Σ_o) = t² W2cov(Σ, Σ_o)``, so ``t = sqrt(ε_Σ / W2cov)``. With
      ``scaled`` this is done in coordinates whitened by ``Σ_o``. Lands exactly on the bound of
      :func:`trpl_math.wasserstein_distance` for any pair.

    Implements Eq. (6) and (9) of the paper and the exact projection of docs/math.md §3.5. Parts
    within their
    bound are returned unchanged (identity gradient). Gradients through matrix square roots use a
    Sylvester-equation backward that stays finite for repeated eigenvalues.

    Args:
        mean: ``(..., d)``; cov: ``(..., d, d)`` (``(..., d)`` variances if ``diag``).
        old_mean, old_cov: the old policy, shaped alike.
        eps_mean, eps_cov: bounds (floats or arrays broadcasting to the batch shape ``(...)``).
        scaled: measure in the metric of the old covariance (the paper's default).
        exact: use the exact geodesic projection instead of Eq. 9 (no effect with ``diag``).
        diag: covariances are variance vectors; O(d).

    Returns:
        ``Gaussian(mean, cov)`` of the projected policy.

    Raises:
        ValueError: bad shapes or dtypes, non-finite values, covariances not positive definite,
            bounds ≤ 0. TypeError: NumPy and torch mixed.

    Example:
        >>> import numpy as np
        >>> p = wasserstein_projection(np.zeros(1), np.array([4.0]), np.zeros(1), np.array([1.0]),
        ...                            eps_mean=0.1, eps_cov=0.25, diag=True)
        >>> p.cov  # std 2 -> 1 + sqrt(0.25) = 1.5
        array([2.25])
    """
    p = prepare_pair(mean, cov, old_mean, old_cov, diag=diag)
    xp = p.xp
    eps_m = prepare_bound(eps_mean, "eps_mean", xp, p.mean, p.batch_shape)
    eps_c = prepare_bound(eps_cov, "eps_cov", xp, p.mean, p.batch_shape)
    diff = p.mean - p.old_mean
    scale_m = C.mean_scale(p.old_mean, p.old_cov, xp, diag=diag, metric=scaled)
    C.check_bound_floor(eps_m, "eps_mean", xp, scale_m, like=p.mean)
    scale_c = 1.0 if scaled else C.cov_scale(p.old_cov, xp, diag=diag, squared=False)
    C.check_bound_floor(eps_c, "eps_cov", xp, scale_c, like=p.mean)
    if diag:
        maha = xp.sum(diff * diff / (p.old_cov if scaled else xp.ones_like(p.old_cov)), axis=-1)
        C.check_divergence_finite(maha, "the W2 mean part", xp)
        std, old_std = xp.sqrt(p.cov), xp.sqrt(p.old_cov)
        gap = std - old_std
        rel = gap / old_std if scaled else gap
        t, active = shrink_factor(xp.sum(rel * rel, axis=-1), eps_c, xp)
        proj_std = old_std + t[..., None] * gap
        proj_cov = B.select(active[..., None], proj_std * proj_std, p.cov, xp)
        return Gaussian(project_mean(p.mean, p.old_mean, maha, eps_m, xp), proj_cov)

    C.check_condition(p.old_cov, "old_cov", xp)
    check = B.validation_enabled()
    old_chol = B.cholesky(p.old_cov, xp, name="old_cov", check=check)
    chol = B.cholesky(p.cov, xp, name="cov", check=check)
    maha = maha_chol(diff, old_chol, xp) if scaled else xp.sum(diff * diff, axis=-1)
    C.check_divergence_finite(maha, "the W2 mean part", xp)
    if exact:
        proj_cov, active = _geodesic_cov(p.cov, p.old_cov, chol, old_chol, eps_c, scaled, xp)
    else:
        proj_cov, active = _commuting_cov(p.cov, p.old_cov, eps_c, scaled, xp)
    proj_cov = B.select(active[..., None, None], proj_cov, p.cov, xp)
    return Gaussian(project_mean(p.mean, p.old_mean, maha, eps_m, xp), proj_cov)


def _root_gap(
    cov: Array, old_cov: Array, scaled: bool, xp: ModuleType, *, refine: bool = True
) -> tuple[Array, ...]:
    """Square roots, their difference and the paper's covariance part ``c`` (full matrices).

    The old root is taken to full float64 accuracy (:func:`B.sqrtm_psd_extended`): the
    projection builds ``Σ̃`` about ``Σ_o`` exactly, so the root of ``Σ̃`` is ``F_o + t G`` only
    if ``F_o`` is the root of ``Σ_o`` itself; a miss of ~u‖Σ_o‖/λ_min^{1/2} moved the measured
    part of ill-conditioned pairs over its tolerance, plain and scaled (docs/math.md §2.6).
    The new root's error only changes ``G``, with which ``c`` and ``Σ̃`` agree, so the
    projection passes ``refine=False`` (the eigenbasis root, no Newton step); the measure
    refines it, to report ``c`` of ``cov`` itself.
    """
    root = B.sqrtm_psd(cov, xp, refine=refine)
    old_root = B.sqrtm_psd_extended(old_cov, xp)
    gap = root - old_root
    if scaled:
        # Σ_o^{-1/2} Σ^{1/2} - I = Σ_o^{-1/2} (Σ^{1/2} - Σ_o^{1/2}): no cancellation near Σ_o.
        old_root_chol = B.cholesky(old_root, xp, name="old_cov", check=False)
        rel = B.solve_tril(old_root_chol, gap, xp)
        rel = B.solve_tril(old_root_chol, rel, xp, transpose=True)
    else:
        rel = gap
    return root, old_root, gap, xp.sum(xp.sum(rel * rel, axis=-1), axis=-1)


@B.working_precision("float64")
def wasserstein_commuting_cov_part(
    cov: Array, old_cov: Array, *, scaled: bool = True, diag: bool = False
) -> Array:
    """The covariance part of W2 as the paper's Eq. 9 measures it (assumes commuting Σ, Σ_o).

    ``‖Σ_o^{-1/2} Σ^{1/2} - I‖_F²`` (scaled) or ``‖Σ^{1/2} - Σ_o^{1/2}‖_F²`` (plain). Equal to
    the true W2 covariance part when Σ and Σ_o commute, and larger otherwise.

    Args:
        cov, old_cov: ``(..., d, d)`` (``(..., d)`` if ``diag``), broadcasting.

    Returns:
        ``(...)``.

    Raises:
        ValueError: bad shapes or dtypes, non-finite values, covariances not positive definite.

    Example:
        >>> import numpy as np
        >>> float(wasserstein_commuting_cov_part(np.array([4.0]), np.array([1.0]), diag=True))
        1.0
    """
    B.namespace(cov, old_cov)  # TypeError for NumPy and torch mixed
    xp, d = prepare_cov(cov, diag=diag, name="cov")
    prepare_cov(old_cov, diag=diag, name="old_cov")
    if B.validation_enabled():
        if old_cov.dtype != cov.dtype:
            raise ValueError(f"old_cov has dtype {old_cov.dtype} but cov has {cov.dtype}")
        if int(old_cov.shape[-1]) != d:
            raise ValueError(
                f"dimension mismatch: old_cov has shape {tuple(old_cov.shape)}, cov has shape "
                f"{tuple(cov.shape)}"
            )
        if not diag:
            B.cholesky(cov, xp, name="cov", check=True)
            B.cholesky(old_cov, xp, name="old_cov", check=True)
    if diag:
        std, old_std = xp.sqrt(cov), xp.sqrt(old_cov)
        rel = (std - old_std) / old_std if scaled else std - old_std
        return xp.sum(rel * rel, axis=-1)
    return _root_gap(cov, old_cov, scaled, xp)[3]


def _commuting_cov(
    cov: Array, old_cov: Array, eps: Array, scaled: bool, xp: ModuleType
) -> tuple[Array, Array]:
    """Eq. 9: interpolate the symmetric square roots."""
    _, old_root, gap, c = _root_gap(cov, old_cov, scaled, xp, refine=False)
    t, active = shrink_factor(c, eps, xp)
    return _expand_square(old_cov, old_root, gap, t, xp), active


def _expand_square(old_cov: Array, old: Array, gap: Array, t: Array, xp: ModuleType) -> Array:
    """``(F_o + t G)(F_o + t G)ᵀ`` as ``Σ_o + t (F_o Gᵀ + G F_oᵀ) + t² G Gᵀ`` (``F_o F_oᵀ = Σ_o``).

    The old covariance enters exactly instead of through its recomputed factor (a square root
    from an eigendecomposition carries an absolute error ~u‖Σ_o‖/λ_min^½, which the square would
    add to Σ̃ in full), so the error of Σ̃ - Σ_o scales with t: near the old policy, where small
    bounds put the result, Σ̃ is as accurate as its dtype allows.
    """
    tt = t[..., None, None]
    cross = old @ B.mT(gap)
    return B.sym(old_cov + tt * (cross + B.mT(cross)) + (tt * tt) * (gap @ B.mT(gap)))


def _geodesic_cov(
    cov: Array,
    old_cov: Array,
    chol: Array,
    old_chol: Array,
    eps: Array,
    scaled: bool,
    xp: ModuleType,
) -> tuple[Array, Array]:
    """Exact projection along the W2 geodesic from ``old_cov`` to ``cov`` (docs/math.md §3.5)."""
    d = cov.shape[-1]
    eye = B.eye_like(cov, d, xp)
    if scaled:
        # Whitened by L_o: Σ_o -> I, Σ -> A = W Wᵀ, T -> A^{1/2}; W2cov = ‖A^{1/2} - I‖_F².
        w = B.solve_tril(old_chol, chol, xp)
        gap = B.sqrtm_psd(w @ B.mT(w), xp) - eye
        t, active = shrink_factor(xp.sum(xp.sum(gap * gap, axis=-1), axis=-1), eps, xp)
        # L_o ((1-t) I + t A^{1/2}) = L_o + t L_o (A^{1/2} - I)
        return _expand_square(old_cov, old_chol, old_chol @ gap, t, xp), active
    return _plain_geodesic_cov(cov, chol, old_cov, old_chol, eps, xp)


def _plain_geodesic_cov(
    cov: Array, chol: Array, old_cov: Array, old_chol: Array, eps: Array, xp: ModuleType
) -> tuple[Array, Array]:
    """Plain exact projection: ``F(t) = L_o + t G``, ``G = L U - L_o = (T - I) L_o``.

    ``G`` comes in float64 from the polar factor ``U`` of ``Lᵀ L_o``
    (:func:`trpl_math.divergences.w2_plain_factor_gap`, docs/math.md §3.5): no solve with the
    ill-conditioned ``L_o``, and ``W2cov = ‖G‖_F²`` is a sum of squares. The same ``G`` fixes
    ``t = sqrt(ε / ‖G‖_F²)`` and builds ``Σ̃ = F Fᵀ``; since ``F(t) - L_o = t G`` with an
    orthogonal ``U``, ``W2cov(F Fᵀ, L_o L_oᵀ) ≤ t² ‖G‖_F² = ε`` holds whatever the error of
    ``U``: the result is feasible up to the rounding of ``Σ̃`` itself. With torch and JAX the
    gradient is that of ``G = L_o⁻ᵀ (L_oᵀ Σ L_o)^{1/2} - L_o`` (the same matrix), added as
    ``g - stop_gradient(g)``, which is exactly 0.

    Shapes: ``cov, chol, old_cov, old_chol (..., d, d)``, ``eps (...)`` -> ``((..., d, d), (...))``.
    """
    host, (c_h, o_h) = B.to_host(xp, chol, old_chol)
    gap = xp.astype(B.from_host(w2_plain_factor_gap(c_h, o_h, host), xp, cov), cov.dtype)
    if B.backend(xp).autograd:
        root = B.sqrtm_psd(B.sym(B.mT(old_chol) @ cov @ old_chol), xp)
        graph = B.solve_tril(old_chol, root, xp, transpose=True) - old_chol
        gap = gap + (graph - B.stop_gradient(graph, xp))
    t, active = shrink_factor(xp.sum(xp.sum(gap * gap, axis=-1), axis=-1), eps, xp)
    return _expand_square(old_cov, old_chol, gap, t, xp), active
