"""Gaussian similarity measures, each split into a mean part and a covariance part.

All measures compare a new Gaussian ``N(mean, cov)`` with an old one ``N(old_mean, old_cov)``
(Sec. 3-4 of the paper; docs/math.md §2). Inverses are never formed: Mahalanobis
distances and traces come from triangular solves with Cholesky factors, log-determinants from
the factors' diagonals, and small divergences are summed from non-negative terms so that they
keep their relative accuracy down to ~1e-12 (a naive ``tr - d + logdet`` loses it below ~1e-8).
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from trpl_math import _backend as B
from trpl_math._backend import Array
from trpl_math._checks import check_divergence_finite, prepare_cov, prepare_pair
from trpl_math.types import DivergenceParts

__all__ = ["entropy", "frobenius_distance", "kl_divergence", "wasserstein_distance"]

NEAR_REL = 1e-2  # ‖Σ - Σ_o‖_F / ‖Σ_o‖_F up to which w2_plain_cov_values uses the Sylvester form


# --- building blocks shared with the projections -------------------------------------------


def x_minus_log1p(x: Array, xp: ModuleType) -> Array:
    """``x - log(1 + x)`` for ``x > -1``, accurate to full relative precision near 0.

    This is ``r - 1 - log r`` with ``r = 1 + x``, the building block of every Gaussian KL.
    For ``|x| < 0.01`` the Taylor series ``Σ_{k≥2} (-1)^k x^k / k`` (to ``x^10``) replaces the
    cancelling difference. Torch tensors go through one autograd node whose gradient is the
    closed form ``x / (1 + x)`` (instead of a graph through every term of the series).
    """
    return B.backend(xp).x_minus_log1p(x, xp)


def x_minus_log1p_values(x: Array, xp: ModuleType) -> Array:
    """The values of :func:`x_minus_log1p` in any namespace (no autograd glue).

    For a NumPy array the series is evaluated only on the entries that need it (mostly none),
    the same values bit for bit.
    """
    if type(x) is np.ndarray and x.ndim > 0:
        return x_minus_log1p_numpy(x)
    small = xp.abs(x) < 1e-2
    series = x_minus_log1p_series(xp.where(small, x, xp.zeros_like(x)), xp)
    direct = x - xp.log1p(xp.where(small, xp.zeros_like(x), x))
    return xp.where(small, series, direct)


def x_minus_log1p_series(x: Array, xp: ModuleType) -> Array:
    """``Σ_{k=2}^{10} (-1)^k x^k / k`` by Horner's rule: ``x - log(1 + x)`` to full relative
    precision for ``|x| < 0.01`` (the next term is below ``1e-18`` of the sum). In place for a
    NumPy array."""
    series = x * 0.1  # (0 + 1/10) x: the first Horner step
    inplace = type(series) is np.ndarray
    for k in range(9, 1, -1):
        c = (1.0 if k % 2 == 0 else -1.0) / k
        if inplace:
            series += c
            series *= x
        else:
            series = (series + c) * x
    return series * x


def x_minus_log1p_numpy(x: np.ndarray) -> np.ndarray:
    """:func:`x_minus_log1p_values` for a NumPy array, the same values bit for bit: ``x -
    log1p(x)``, the series (:func:`x_minus_log1p_series`) where ``|x| < 0.01``, each evaluated
    only where it is used."""
    small = np.abs(x) < 1e-2
    n_small = int(np.count_nonzero(small))
    if n_small == 0:
        return x - np.log1p(x)
    if n_small == small.size:
        return x_minus_log1p_series(x, np)
    phi = x - np.log1p(np.where(small, 0.0, x))
    phi[small] = x_minus_log1p_series(x[small], np)
    return phi


def maha_chol(diff: Array, chol: Array, xp: ModuleType) -> Array:
    """``diffᵀ Σ⁻¹ diff`` with ``Σ = L Lᵀ``: ``(..., d)``, ``(..., d, d)`` -> ``(...)``."""
    y = B.solve_tril_vec(chol, diff, xp)
    return xp.sum(y * y, axis=-1)


def kl_cov_chol(chol: Array, old_chol: Array, xp: ModuleType) -> Array:
    """Covariance part of ``KL(N(·, Σ) ‖ N(·, Σ_o))`` from the Cholesky factors of both.

    With ``W = L_o⁻¹ L`` (lower triangular),
    ``½[tr(Σ_o⁻¹Σ) - d + log|Σ_o| - log|Σ|] = ½[Σ_{i>j} W_ij² + Σ_i φ(W_ii² - 1)]`` with
    ``φ(x) = x - log(1 + x) ≥ 0``: a sum of non-negative terms, accurate when small.
    """
    return kl_cov_whitened(B.solve_tril(old_chol, chol, xp), xp)


def kl_cov_whitened(w: Array, xp: ModuleType) -> Array:
    """:func:`kl_cov_chol` from ``W = L_o⁻¹ L`` (lower triangular, ``(..., d, d)``)."""
    off = xp.tril(w, k=-1)
    wd = B.diagonal(w, xp)
    x = (wd - 1.0) * (wd + 1.0)  # W_ii² - 1 without cancellation near 1
    # below W_ii² = ½, φ = x - 2 log|W_ii| (log1p of x near -1 would be off by ~u/W_ii²)
    low = wd * wd < 0.5
    phi = xp.where(
        low,
        x - 2.0 * xp.log(xp.abs(xp.where(low, wd, xp.ones_like(wd)))),
        x_minus_log1p(xp.where(low, xp.zeros_like(x), x), xp),
    )
    return 0.5 * (xp.sum(xp.sum(off * off, axis=-1), axis=-1) + xp.sum(phi, axis=-1))


def kl_cov_diag(var: Array, old_var: Array, xp: ModuleType) -> Array:
    """Covariance part of the KL for variance vectors ``(..., d)`` -> ``(...)``:
    ``½ Σ φ(r_i - 1)``, ``r = var/old_var`` (:func:`phi_of_ratio`)."""
    return 0.5 * xp.sum(phi_of_ratio(var / old_var, xp), axis=-1)


def phi_of_ratio(r: Array, xp: ModuleType) -> Array:
    """``φ(r - 1) = r - 1 - log r`` for ``r > 0``, accurate for every ``r``: :func:`x_minus_log1p`
    of ``r - 1`` where ``r ≥ ½``, ``(r - 1) - log r`` below (where ``r - 1`` has rounded away
    the low bits of ``r``, so ``log1p(r - 1)`` would be off by ~``u/r``)."""
    x = r - 1.0
    if type(r) is np.ndarray and r.ndim > 0:
        phi = x_minus_log1p_numpy(x)
        low = r < 0.5
        if low.any():
            phi[low] = x[low] - np.log(r[low])
        return phi
    low = r < 0.5
    one = xp.ones_like(r)
    zero = xp.zeros_like(r)
    return xp.where(
        low, x - xp.log(xp.where(low, r, one)), x_minus_log1p(xp.where(low, zero, x), xp)
    )


def w2_plain_cov(cov: Array, old_cov: Array, old_chol: Array, xp: ModuleType) -> Array:
    """Plain W2 covariance part ``tr(Σ + Σ_o - 2 (Σ_o^{1/2} Σ Σ_o^{1/2})^{1/2})``, no cancellation.

    The value is :func:`w2_plain_cov_values` (float64, a sum of squares, docs/math.md §2.2); with
    torch and JAX its gradient is that of the trace formula, ``I - T`` (the same function,
    written through :func:`trpl_math._backend.sqrtm_psd`, whose backward is finite for repeated
    eigenvalues), added as ``naive - stop_gradient(naive)``, which is exactly 0.

    Shapes: ``cov, old_cov, old_chol (..., d, d)`` of one batch shape -> ``(...)``.
    """
    host, (c_h, o_h) = B.to_host(xp, cov, old_cov)
    value = B.from_host(w2_plain_cov_values(c_h, o_h, host), xp, cov)
    value = xp.astype(value, cov.dtype)
    if not B.backend(xp).autograd:
        return value
    inner = B.sqrtm_psd(B.sym(B.mT(old_chol) @ cov @ old_chol), xp)
    naive = xp.sum(
        B.diagonal(cov, xp) + B.diagonal(old_cov, xp) - 2.0 * B.diagonal(inner, xp), axis=-1
    )
    return value + (naive - B.stop_gradient(naive, xp))


def w2_plain_cov_values(cov: Array, old_cov: Array, xp: ModuleType) -> Array:
    """Values of :func:`w2_plain_cov` in float64 (no gradient): ``‖L U - L_o‖_F²``.

    ``L, L_o`` are the Cholesky factors of ``Σ, Σ_o`` and ``U`` the polar factor of ``Lᵀ L_o``
    (:func:`w2_plain_factor_gap`, docs/math.md §2.2): a sum of squares of the difference of two
    factors, no difference of large equal traces, within the representability tolerance (the
    first-order effect of rounding both arguments) of 50-digit arithmetic for condition numbers
    up to 1e8. For near pairs (relative difference ≤ :data:`NEAR_REL`) the Sylvester form
    :func:`_w2_plain_cov_sylvester`, accurate to ~1e-12 relative there.

    Shapes: ``cov, old_cov (..., d, d)`` -> ``(...)``.
    """
    cov = xp.asarray(cov, dtype=xp.float64)
    old_cov = xp.asarray(old_cov, dtype=xp.float64)
    chol = B.cholesky(cov, xp, name="cov", check=False)
    old_chol = B.cholesky(old_cov, xp, name="old_cov", check=False)
    gap = w2_plain_factor_gap(chol, old_chol, xp)
    polar = xp.sum(xp.sum(gap * gap, axis=-1), axis=-1)
    # Near pairs (‖Σ - Σ_o‖_F ≤ 1e-2 ‖Σ_o‖_F): the Sylvester form keeps its relative accuracy
    # (~1e-12) where the polar form's is only within the representability tolerance.
    delta = cov - old_cov
    near = xp.sum(xp.sum(delta * delta, axis=-1), axis=-1) <= NEAR_REL**2 * xp.sum(
        xp.sum(old_cov * old_cov, axis=-1), axis=-1
    )
    return xp.where(near, _w2_plain_cov_sylvester(cov, old_cov, xp), polar)


def _w2_plain_cov_sylvester(cov: Array, old_cov: Array, xp: ModuleType) -> Array:
    """Plain W2 covariance part in float64 from the difference ``Δ = Σ - Σ_o`` (near pairs).

    In the eigenbasis ``V`` of ``Σ_o = V diag(s) Vᵀ`` (all matrices below rotated into it), with
    ``P = s^{1/2} Σ s^{1/2}`` and ``Q = s^{1/2} Δ s^{1/2}``, the difference of square roots
    ``D = P^{1/2} - diag(s)`` solves ``diag(s) D + D diag(s) + D² = Q``, and the W2 covariance part
    is ``‖(T - I) Σ_o^{1/2}‖_F² = ‖diag(s)^{-1/2} D‖_F²`` (``T`` the optimal transport map;
    ``tr((T - I) Σ_o (T - I)) = tr Σ + tr Σ_o - 2 tr(T Σ_o)``). With ``P = K diag(a²) Kᵀ``, the
    Sylvester form ``P^{1/2} D + D diag(s) = Q`` gives ``D = K X`` with
    ``X_ij = (Kᵀ Q)_ij / (a_i + s_j)``: only sums of positive numbers in the denominators, no
    difference of large equal traces. One Newton step on the quadratic equation (residual
    computed from ``Q`` directly, correction ``K[(Kᵀ R K)_ij / (a_i + a_j)]Kᵀ``) removes the
    error of the eigendecomposition of ``P`` (~u‖P‖), which would otherwise not scale with ``Δ``.
    Accurate to ~1e-12 relative against 50-digit arithmetic for condition numbers up to 1e8.
    """
    cov = xp.asarray(cov, dtype=xp.float64)
    old_cov = xp.asarray(old_cov, dtype=xp.float64)
    s, v = B.eigh(B.sym(old_cov), xp)
    s = xp.clip(s, 1e-300, None)
    rs = xp.sqrt(s)
    vt = B.mT(v)
    delta = B.sym(vt @ (cov - old_cov) @ v)
    p = rs[..., :, None] * B.sym(vt @ cov @ v) * rs[..., None, :]
    a2, k = B.eigh(B.sym(p), xp)
    a = xp.sqrt(xp.clip(a2, 0.0, None))
    q = rs[..., :, None] * delta * rs[..., None, :]
    kt = B.mT(k)
    x = (kt @ q) / (a[..., :, None] + s[..., None, :])
    d = B.sym(k @ x)
    res = q - (s[..., :, None] + s[..., None, :]) * d - d @ d
    d = B.sym(d + k @ ((kt @ res @ k) / (a[..., :, None] + a[..., None, :])) @ kt)
    y = d / rs[..., :, None]
    return xp.sum(xp.sum(y * y, axis=-1), axis=-1)


def w2_plain_factor_gap(chol: Array, old_chol: Array, xp: ModuleType) -> Array:
    """``G = L U - L_o = (T - I) L_o``: the optimally aligned difference of two factors.

    ``U = P Qᵀ`` from the SVD ``Lᵀ L_o = P S Qᵀ`` is the orthogonal matrix that maximises
    ``tr(Uᵀ Lᵀ L_o)``, so ``‖L U - L_o‖_F² = tr Σ + tr Σ_o - 2 ‖Lᵀ L_o‖_* = W2cov(Σ, Σ_o)``
    and ``L U = T L_o`` (``T`` the optimal transport map; docs/math.md §2.2, §3.5). For any
    orthogonal ``U``, ``‖L U - L_o‖_F² ≥ W2cov``: an error of ``U`` along the orthogonal group
    changes the value to second order only, and never below the distance.

    Shapes: ``chol, old_chol (..., d, d)`` lower triangular (any namespace with ``linalg.svd``)
    -> ``(..., d, d)``.
    """
    p, _, qt = xp.linalg.svd(B.mT(chol) @ old_chol)
    return chol @ (p @ qt) - old_chol


# --- public measures ------------------------------------------------------------------------


@B.working_precision("float32")
def kl_divergence(
    mean: Array, cov: Array, old_mean: Array, old_cov: Array, *, diag: bool = False
) -> DivergenceParts:
    """Reverse KL divergence ``KL(N(mean, cov) ‖ N(old_mean, old_cov))`` split in two parts.

    ``mean part = ½ (μ - μ_o)ᵀ Σ_o⁻¹ (μ - μ_o)``,
    ``cov part = ½ [tr(Σ_o⁻¹ Σ) - d + log|Σ_o| - log|Σ|]`` (docs/math.md §2.1).

    Args:
        mean: ``(..., d)`` mean of the new Gaussian.
        cov: ``(..., d, d)`` covariance of the new Gaussian (``(..., d)`` variances if ``diag``).
        old_mean: ``(..., d)`` mean of the old Gaussian.
        old_cov: covariance of the old Gaussian, shaped like ``cov``.
        diag: covariances are variance vectors; everything is O(d).

    Returns:
        ``DivergenceParts(mean, cov)``, each of the broadcast batch shape ``(...)``.

    Raises:
        ValueError: bad shapes, dtypes, non-finite values, a covariance not positive definite.
        TypeError: NumPy and torch arguments mixed.

    Example:
        >>> import numpy as np
        >>> parts = kl_divergence(np.array([1.0]), np.array([[2.0]]), np.zeros(1), np.eye(1))
        >>> round(float(parts.mean), 12), round(float(parts.cov), 12)  # ½(2 - 1 - log 2)
        (0.5, 0.15342640972)
    """
    p = prepare_pair(mean, cov, old_mean, old_cov, diag=diag)
    xp, check = p.xp, B.validation_enabled()
    diff = p.mean - p.old_mean
    if diag:
        return DivergenceParts(
            0.5 * xp.sum(diff * diff / p.old_cov, axis=-1), kl_cov_diag(p.cov, p.old_cov, xp)
        )
    old_chol = B.cholesky(p.old_cov, xp, name="old_cov", check=check)
    chol = B.cholesky(p.cov, xp, name="cov", check=check)
    return DivergenceParts(0.5 * maha_chol(diff, old_chol, xp), kl_cov_chol(chol, old_chol, xp))


@B.working_precision("float64")
def wasserstein_distance(
    mean: Array,
    cov: Array,
    old_mean: Array,
    old_cov: Array,
    *,
    scaled: bool = True,
    diag: bool = False,
) -> DivergenceParts:
    """Squared Wasserstein-2 distance, exact for any pair of covariances.

    Plain (``scaled=False``):
    ``‖μ - μ_o‖² + tr(Σ + Σ_o - 2 (Σ_o^{1/2} Σ Σ_o^{1/2})^{1/2})``.
    Scaled (the paper's default): W2 after whitening both Gaussians with the old covariance,
    ``maha(μ, μ_o; Σ_o) + tr(A + I - 2 A^{1/2})`` with ``A = Σ_o^{-1/2} Σ Σ_o^{-1/2}``.
    No commutativity is assumed (for commuting pairs the paper's Eq. 9 measure agrees).

    Args:
        mean, cov, old_mean, old_cov: as in :func:`kl_divergence`.
        scaled: measure in the metric of the old covariance.
        diag: covariances are variance vectors.

    Returns:
        ``DivergenceParts(mean, cov)`` of shape ``(...)``.

    Example:
        >>> import numpy as np
        >>> wasserstein_distance(np.zeros(1), np.array([4.0]), np.ones(1), np.array([1.0]),
        ...                      diag=True, scaled=False)
        DivergenceParts(mean=np.float64(1.0), cov=np.float64(1.0))
    """
    p = prepare_pair(mean, cov, old_mean, old_cov, diag=diag)
    xp, check = p.xp, B.validation_enabled()
    diff = p.mean - p.old_mean
    if diag:
        std, old_std = xp.sqrt(p.cov), xp.sqrt(p.old_cov)
        if scaled:
            r = std / old_std - 1.0
            return DivergenceParts(xp.sum(diff * diff / p.old_cov, axis=-1), xp.sum(r * r, axis=-1))
        r = std - old_std
        return DivergenceParts(xp.sum(diff * diff, axis=-1), xp.sum(r * r, axis=-1))
    old_chol = B.cholesky(p.old_cov, xp, name="old_cov", check=check)
    if scaled:
        chol = B.cholesky(p.cov, xp, name="cov", check=check)
        w = B.solve_tril(old_chol, chol, xp)
        root = B.sqrtm_psd(w @ B.mT(w), xp) - B.eye_like(w, p.dim, xp)
        return DivergenceParts(
            maha_chol(diff, old_chol, xp), xp.sum(xp.sum(root * root, axis=-1), axis=-1)
        )
    if check:
        B.cholesky(p.cov, xp, name="cov", check=True)
    return DivergenceParts(
        xp.sum(diff * diff, axis=-1), w2_plain_cov(p.cov, p.old_cov, old_chol, xp)
    )


@B.working_precision("float32")
def frobenius_distance(
    mean: Array, cov: Array, old_mean: Array, old_cov: Array, *, diag: bool = False
) -> DivergenceParts:
    """Frobenius measure: ``maha(μ, μ_o; Σ_o) + ‖Σ - Σ_o‖_F²`` (docs/math.md §2.4).

    Args:
        mean, cov, old_mean, old_cov: as in :func:`kl_divergence`.
        diag: covariances are variance vectors (``‖Σ - Σ_o‖_F² = Σ (σ² - σ_o²)²``).

    Returns:
        ``DivergenceParts(mean, cov)`` of shape ``(...)``.

    Example:
        >>> import numpy as np
        >>> parts = frobenius_distance(np.zeros(2), np.eye(2), np.ones(2), 2 * np.eye(2))
        >>> round(float(parts.mean), 12), round(float(parts.cov), 12)
        (1.0, 2.0)
    """
    p = prepare_pair(mean, cov, old_mean, old_cov, diag=diag)
    xp = p.xp
    diff = p.mean - p.old_mean
    delta = p.cov - p.old_cov
    if diag:
        out = DivergenceParts(
            xp.sum(diff * diff / p.old_cov, axis=-1), xp.sum(delta * delta, axis=-1)
        )
    else:
        old_chol = B.cholesky(p.old_cov, xp, name="old_cov", check=B.validation_enabled())
        if B.validation_enabled():
            B.cholesky(p.cov, xp, name="cov", check=True)
        out = DivergenceParts(
            maha_chol(diff, old_chol, xp), xp.sum(xp.sum(delta * delta, axis=-1), axis=-1)
        )
    check_divergence_finite(out.mean, "maha(mean, old_mean; old_cov)", xp)
    check_divergence_finite(out.cov, "‖cov - old_cov‖_F²", xp)
    return out


@B.working_precision("float32")
def entropy(cov: Array, *, diag: bool = False) -> Array:
    """Differential entropy ``H = ½ d log(2πe) + ½ log|Σ|`` of Gaussians with covariance ``cov``.

    Args:
        cov: ``(..., d, d)`` covariances, or ``(..., d)`` variances if ``diag``.
        diag: covariances are variance vectors.

    Returns:
        ``(...)`` entropies in nats.

    Example:
        >>> import numpy as np
        >>> round(float(entropy(np.eye(2))), 6)  # log(2πe)
        2.837877
    """
    xp, d = prepare_cov(cov, diag=diag)
    # an array in cov's dtype: NumPy 1.x would promote a Python float + float32 scalar to float64
    const = xp.asarray(0.5 * d * math.log(2.0 * math.pi * math.e), dtype=cov.dtype)
    half = xp.asarray(0.5, dtype=cov.dtype)
    if diag:
        return const + half * xp.sum(xp.log(cov), axis=-1)
    chol = B.cholesky(cov, xp, name="cov", check=B.validation_enabled())
    return const + half * B.logdet_from_chol(chol, xp)
