"""Projection of the mean onto a Mahalanobis (or Euclidean) ball, the paper's Eq. 5-6."""

from __future__ import annotations

from types import ModuleType

from trpl_math import _backend as B
from trpl_math._backend import Array


def shrink_factor(dist: Array, eps: Array, xp: ModuleType) -> tuple[Array, Array]:
    """Interpolation weight ``t = sqrt(eps / dist)`` where ``dist > eps``, else 1.

    Every closed-form projection of the paper is ``old + t (new - old)`` in some
    parametrisation, with ``t = 1 / (1 + η)`` and ``η = sqrt(dist / eps) - 1`` (Eq. 6, 8, 9).
    Inactive states get ``t = 1`` through a safe denominator, so neither branch of the final
    ``where`` can produce an infinite or NaN gradient (e.g. at ``dist = 0``).

    Args:
        dist: ``(...)`` the part of the measure being bounded.
        eps: ``(...)`` its bound.

    Returns:
        ``(t, active)``: ``(...)`` weights and the boolean mask ``dist > eps``.
    """
    active = dist > eps
    safe = xp.where(active, dist, eps)
    return xp.where(active, xp.sqrt(eps / safe), xp.ones_like(dist)), active


def project_mean(mean: Array, old_mean: Array, dist: Array, eps: Array, xp: ModuleType) -> Array:
    """Eq. 6: ``μ̃ = (μ + ω μ_o) / (1 + ω)`` with ``ω = sqrt(m / ε_μ) - 1`` where ``m > ε_μ``.

    ``m = dist`` is the measure's mean part, a quadratic form in ``μ - μ_o``; the result lies
    exactly on ``m(μ̃) = ε_μ`` and equals ``mean`` (same values, identity gradient) inside.

    Args:
        mean, old_mean: ``(..., d)``.
        dist, eps: ``(...)``.

    Returns:
        ``(..., d)`` projected means.
    """
    t, active = shrink_factor(dist, eps, xp)
    proj = old_mean + t[..., None] * (mean - old_mean)
    return B.select(active[..., None], proj, mean, xp)
