"""Independent NumPy/SciPy evaluation of the divergences and random test instances.

Nothing here imports :mod:`trpl_math`: these are the second, independent implementations that the
library's results are measured with (float64, eigendecompositions and ``scipy.linalg``, none of
the library's Cholesky-based tricks). Formulas from docs/math.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

__all__ = [
    "Instance",
    "entropy",
    "frobenius_parts",
    "kl_parts",
    "maha",
    "random_instance",
    "random_orthogonal",
    "random_spd",
    "sqrtm_psd",
    "w2_cov_between",
    "w2_parts",
]


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite ``(d, d)`` matrix (eigh)."""
    a = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def maha(x: np.ndarray, y: np.ndarray, cov: np.ndarray) -> float:
    """``(x - y)ᵀ cov⁻¹ (x - y)`` for ``x, y: (d,)``, ``cov: (d, d)``."""
    diff = x - y
    return float(diff @ np.linalg.solve(cov, diff))


def kl_parts(
    mean: np.ndarray, cov: np.ndarray, old_mean: np.ndarray, old_cov: np.ndarray
) -> tuple[float, float]:
    """KL(N(mean, cov) ‖ N(old_mean, old_cov)) split into (mean part, covariance part).

    Mean part ``½ maha(μ, μ_o; Σ_o)``, covariance part
    ``½ [tr(Σ_o⁻¹ Σ) - d + log|Σ_o| - log|Σ|]``.
    """
    d = cov.shape[-1]
    tr = float(np.trace(np.linalg.solve(old_cov, cov)))
    logdet = np.linalg.slogdet(cov)[1]
    old_logdet = np.linalg.slogdet(old_cov)[1]
    return 0.5 * maha(mean, old_mean, old_cov), 0.5 * (tr - d + old_logdet - logdet)


def w2_parts(
    mean: np.ndarray,
    cov: np.ndarray,
    old_mean: np.ndarray,
    old_cov: np.ndarray,
    *,
    scaled: bool,
) -> tuple[float, float]:
    """Squared Wasserstein-2 split into (mean part, covariance part).

    Plain: ``‖μ - μ_o‖²`` and ``tr(Σ + Σ_o - 2 (Σ_o^{1/2} Σ Σ_o^{1/2})^{1/2})``. Scaled: the same
    after whitening both Gaussians with ``Σ_o^{-1/2}`` (``scipy.linalg.sqrtm``-free: eigh).
    """
    if scaled:
        w, v = np.linalg.eigh(old_cov)
        whiten = (v / np.sqrt(w)) @ v.T
        a = whiten @ cov @ whiten
        root = sqrtm_psd(a)
        diff = whiten @ (mean - old_mean)
        return float(diff @ diff), float(np.trace(a) + cov.shape[-1] - 2.0 * np.trace(root))
    old_root = sqrtm_psd(old_cov)
    cross = sqrtm_psd(old_root @ cov @ old_root)
    diff = mean - old_mean
    return float(diff @ diff), float(np.trace(cov) + np.trace(old_cov) - 2.0 * np.trace(cross))


def w2_cov_between(cov: np.ndarray, other: np.ndarray, metric: np.ndarray | None = None) -> float:
    """W2 covariance part between ``cov`` and ``other``, whitened by ``metric`` if given.

    ``metric=Σ_o`` gives the scaled W2 objective ``W2cov(Σ_o^{-1/2} Σ̃ Σ_o^{-1/2},
    Σ_o^{-1/2} Σ Σ_o^{-1/2})`` of the projection problem; ``None`` the plain one.
    """
    if metric is not None:
        w, v = np.linalg.eigh(metric)
        whiten = (v / np.sqrt(w)) @ v.T
        cov, other = whiten @ cov @ whiten, whiten @ other @ whiten
    root = sqrtm_psd(other)
    cross = sqrtm_psd(root @ cov @ root)
    return float(np.trace(cov) + np.trace(other) - 2.0 * np.trace(cross))


def frobenius_parts(
    mean: np.ndarray, cov: np.ndarray, old_mean: np.ndarray, old_cov: np.ndarray
) -> tuple[float, float]:
    """Frobenius measure split into (``maha(μ, μ_o; Σ_o)``, ``‖Σ - Σ_o‖_F²``)."""
    return maha(mean, old_mean, old_cov), float(np.sum((cov - old_cov) ** 2))


def entropy(cov: np.ndarray) -> float:
    """Differential entropy ``½ d log(2πe) + ½ log|Σ|`` of ``N(·, cov)``."""
    d = cov.shape[-1]
    return 0.5 * d * np.log(2.0 * np.pi * np.e) + 0.5 * np.linalg.slogdet(cov)[1]


def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-distributed orthogonal ``(d, d)`` matrix (QR of a Gaussian, signs fixed)."""
    q, r = sla.qr(rng.standard_normal((d, d)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def random_spd(
    rng: np.random.Generator,
    d: int,
    *,
    log_scale: float = 1.0,
    basis: np.ndarray | None = None,
) -> np.ndarray:
    """``Q diag(exp(u)) Qᵀ``, ``u ~ U(-log_scale, log_scale)``: condition ≤ ``exp(2 log_scale)``.

    ``basis`` fixes ``Q`` (pass the same one to make commuting pairs; the identity for diagonal).
    """
    q = random_orthogonal(rng, d) if basis is None else basis
    u = rng.uniform(-log_scale, log_scale, size=d)
    return (q * np.exp(u)) @ q.T


@dataclass(frozen=True)
class Instance:
    """One state: the network's prediction ``(mean, cov)`` and the old policy (float64, full)."""

    mean: np.ndarray
    cov: np.ndarray
    old_mean: np.ndarray
    old_cov: np.ndarray

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]


def random_instance(
    rng: np.random.Generator,
    d: int,
    *,
    structure: str = "general",
    log_scale: float = 1.0,
    min_kl_part: float = 1e-3,
) -> Instance:
    """A random prediction/old-policy pair in ``d`` dimensions.

    ``structure``: ``"general"`` (independent eigenbases, non-commuting), ``"commuting"`` (a shared
    random eigenbasis) or ``"diagonal"`` (the identity as eigenbasis). Pairs whose KL mean or
    covariance part is below ``min_kl_part`` are redrawn: with bounds set relative to those parts,
    a near-coincident pair would ask the solver for an accuracy far below its tolerance.
    """
    for _ in range(1000):
        inst = _draw_instance(rng, d, structure, log_scale)
        if min(kl_parts(inst.mean, inst.cov, inst.old_mean, inst.old_cov)) >= min_kl_part:
            return inst
    raise ValueError(f"could not draw a pair with KL parts >= {min_kl_part}")  # pragma: no cover


def _draw_instance(rng: np.random.Generator, d: int, structure: str, log_scale: float) -> Instance:
    if structure == "general":
        cov, old_cov = (
            random_spd(rng, d, log_scale=log_scale),
            random_spd(rng, d, log_scale=log_scale),
        )
    elif structure in ("commuting", "diagonal"):
        q = random_orthogonal(rng, d) if structure == "commuting" else np.eye(d)
        cov = random_spd(rng, d, log_scale=log_scale, basis=q)
        old_cov = random_spd(rng, d, log_scale=log_scale, basis=q)
    else:
        raise ValueError(
            f"structure must be 'general', 'commuting' or 'diagonal', got {structure!r}"
        )
    old_mean = rng.standard_normal(d)
    mean = old_mean + rng.standard_normal(d)
    return Instance(mean, cov, old_mean, old_cov)
