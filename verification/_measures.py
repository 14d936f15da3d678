"""Float64 measures for the fuzz: each divergence part and its rounding sensitivity.

Nothing here imports :mod:`trpl_math`. The values are cancellation-free where the textbook
formulas cancel (a projection's result lies close to the old policy when the bound is small):

* KL covariance part ``½ Σ (β_i - log(1 + β_i))`` with ``β`` the eigenvalues of
  ``Σ_o^{-1/2} (Σ - Σ_o) Σ_o^{-1/2}`` (the difference is formed from the inputs) where
  ``|β_i| < ½``, and ``α_i - 1 - log α_i`` from the eigenvalues of ``Σ_o^{-1/2} Σ Σ_o^{-1/2}``
  elsewhere (each accurate in its range);
* scaled W2 covariance part ``Σ (β_i / (1 + sqrt(1 + β_i)))²`` (``= Σ (sqrt(1 + β_i) - 1)²``);
* plain W2 covariance part ``‖Σ_o^{-1/2} D‖_F²`` with ``D = R - Σ_o`` from SciPy's Bartels-Stewart
  solver, ``R D + D Σ_o = Σ_o^{1/2} (Σ - Σ_o) Σ_o^{1/2}`` (``R = (Σ_o^{1/2} Σ Σ_o^{1/2})^{1/2}``);
* the paper's Eq. 9 measure ``‖Σ_o^{-1/2} (Σ^{1/2} - Σ_o^{1/2})‖_F²`` (or unwhitened), with the
  difference of square roots from the same Sylvester equation.

:func:`sensitivity` is the first-order bound on how much a part moves when every entry of the
result is rounded to a dtype with unit roundoff ``u``: ``u (Σ_ij |∂f/∂Σ̃_ij| |Σ̃_ij| + Σ_i
|∂f/∂μ̃_i| |μ̃_i|)``, from closed-form gradients. It is the representability limit the fuzz holds
results to. Inputs: NumPy float64, one state, ``mean (d,)``, ``cov (d, d)``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

__all__ = ["MEASURES", "entropy", "input_sensitivity", "sensitivity"]


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def _eig(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.linalg.eigh(_sym(a))


def _pow(a: np.ndarray, p: float) -> np.ndarray:
    w, v = _eig(a)
    return _sym((v * np.clip(w, 1e-300, None) ** p) @ v.T)


def _whitened_delta(cov: np.ndarray, old: np.ndarray) -> np.ndarray:
    w = _pow(old, -0.5)
    return _sym(w @ (cov - old) @ w)


def _phi(x: np.ndarray) -> np.ndarray:
    """``x - log(1 + x)``, series below |x| < 1e-3."""
    small = np.abs(x) < 1e-3
    xs = np.where(small, x, 0.0)
    series = xs * xs * (0.5 - xs / 3 + xs * xs / 4 - xs**3 / 5)
    return np.where(small, series, x - np.log1p(np.where(small, 0.0, x)))


def _whitened_spectrum(cov: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(α, β)``: eigenvalues of ``A = Σ_o^{-1/2} Σ Σ_o^{-1/2}`` and of ``A - I``, both sorted.

    ``β`` comes from the difference ``Σ - Σ_o`` (accurate where ``A ≈ I``), ``α`` from ``A``
    itself (accurate relative to each eigenvalue where ``A`` is far from ``I``)."""
    w = _pow(old, -0.5)
    alpha = np.linalg.eigvalsh(_sym(w @ cov @ w))
    beta = np.linalg.eigvalsh(_whitened_delta(cov, old))
    return alpha, beta


def kl_cov(cov: np.ndarray, old: np.ndarray) -> float:
    alpha, beta = _whitened_spectrum(cov, old)
    near = np.abs(beta) < 0.5
    safe = np.where(near, 1.0, np.clip(alpha, 1e-300, None))
    far = safe - 1.0 - np.log(safe)
    return float(0.5 * np.sum(np.where(near, _phi(np.where(near, beta, 0.0)), far)))


def w2_scaled_cov(cov: np.ndarray, old: np.ndarray) -> float:
    alpha, beta = _whitened_spectrum(cov, old)
    near = np.abs(beta) < 0.5
    b = np.where(near, beta, 0.0)
    far = (np.sqrt(np.clip(alpha, 0.0, None)) - 1.0) ** 2
    return float(np.sum(np.where(near, (b / (1.0 + np.sqrt(1.0 + b))) ** 2, far)))


def _root_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a^{1/2} - b^{1/2}`` from ``a^{1/2} X + X b^{1/2} = a - b`` (Bartels-Stewart)."""
    return sla.solve_sylvester(_pow(a, 0.5), _pow(b, 0.5), a - b)


def w2_plain_cov(cov: np.ndarray, old: np.ndarray) -> float:
    root = _pow(old, 0.5)
    p = _sym(root @ cov @ root)
    d = sla.solve_sylvester(_pow(p, 0.5), old, _sym(root @ (cov - old) @ root))
    y = np.linalg.solve(root, d)
    return float(np.sum(y * y))


def eq9_cov(cov: np.ndarray, old: np.ndarray, *, scaled: bool) -> float:
    gap = _root_difference(cov, old)
    if scaled:
        gap = np.linalg.solve(_pow(old, 0.5), gap)
    return float(np.sum(gap * gap))


def frobenius_cov(cov: np.ndarray, old: np.ndarray) -> float:
    delta = cov - old
    return float(np.sum(delta * delta))


def maha(mean: np.ndarray, old_mean: np.ndarray, old: np.ndarray) -> float:
    diff = mean - old_mean
    return float(diff @ np.linalg.solve(old, diff))


def sq(mean: np.ndarray, old_mean: np.ndarray, old: np.ndarray) -> float:
    diff = mean - old_mean
    return float(diff @ diff)


def entropy(cov: np.ndarray) -> float:
    d = cov.shape[-1]
    return float(0.5 * d * np.log(2.0 * np.pi * np.e) + 0.5 * np.linalg.slogdet(cov)[1])


# name -> (mean part(mean, old_mean, old_cov), cov part(cov, old_cov))
MEASURES = {
    "kl": (lambda m, om, oc: 0.5 * maha(m, om, oc), kl_cov),
    "w2": (maha, w2_scaled_cov),
    "w2_plain": (sq, w2_plain_cov),
    "eq9": (maha, lambda c, oc: eq9_cov(c, oc, scaled=True)),
    "eq9_plain": (sq, lambda c, oc: eq9_cov(c, oc, scaled=False)),
    "frobenius": (maha, frobenius_cov),
}


def _cov_gradient(measure: str, cov: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``∂(cov part)/∂Σ̃`` in closed form (symmetric)."""
    if measure == "kl":
        return 0.5 * (np.linalg.inv(old) - np.linalg.inv(cov))
    if measure == "w2":
        w = _pow(old, -0.5)
        a = _sym(w @ cov @ w)
        return _sym(w @ (np.eye(len(cov)) - _pow(a, -0.5)) @ w)
    if measure == "w2_plain":
        r = _pow(old, 0.5)
        return _sym(np.eye(len(cov)) - r @ _pow(_sym(r @ cov @ r), -0.5) @ r)
    if measure in ("eq9", "eq9_plain"):
        s = _pow(cov, 0.5)
        if measure == "eq9":
            w = _pow(old, -0.5)
            m = 2.0 * w @ (w @ s - np.eye(len(cov)))
        else:
            m = 2.0 * (s - _pow(old, 0.5))
        # <M, dS> with S dS + dS S = dΣ̃ equals <K, dΣ̃> for S K + K S = sym(M).
        return sla.solve_sylvester(s, s, _sym(m))
    if measure == "frobenius":
        return 2.0 * (cov - old)
    if measure == "entropy":
        return 0.5 * np.linalg.inv(cov)
    raise ValueError(f"unknown measure {measure!r}")


def _mean_gradient(measure: str, mean: np.ndarray, old_mean: np.ndarray, old: np.ndarray):
    diff = mean - old_mean
    if measure in ("w2_plain", "eq9_plain"):
        return 2.0 * diff
    g = np.linalg.solve(old, diff)
    return g if measure == "kl" else 2.0 * g


def sensitivity(
    measure: str,
    u: float,
    cov: np.ndarray,
    old: np.ndarray,
    mean: np.ndarray | None = None,
    old_mean: np.ndarray | None = None,
) -> tuple[float, float]:
    """``(mean part, cov part)`` first-order change when the result is rounded (unit roundoff u).

    ``measure`` is a key of :data:`MEASURES` or ``"entropy"`` (covariance only).
    """
    gc = _cov_gradient(measure, cov, old)
    cov_s = u * float(np.sum(np.abs(gc) * np.abs(cov)))
    if mean is None or measure == "entropy":
        return 0.0, cov_s
    gm = _mean_gradient(measure, mean, old_mean, old)
    return u * float(np.sum(np.abs(gm) * np.abs(mean))), cov_s


def input_sensitivity(
    measure: str,
    u: float,
    cov: np.ndarray,
    old: np.ndarray,
    mean: np.ndarray | None = None,
    old_mean: np.ndarray | None = None,
) -> tuple[float, float]:
    """``(mean part, cov part)`` first-order change when the *old* policy is rounded.

    The old policy is known only to its dtype's resolution too, and a part of ill-conditioned
    ``Σ_o`` moves under that rounding by ~κ u (a backward-stable solve is accurate to exactly
    this). Mean parts: ``∂ maha/∂Σ_o = -g gᵀ``, ``∂ maha/∂μ_o = -2 g`` (``g = Σ_o⁻¹(μ̃ - μ_o)``).
    Covariance parts: KL ``½(Σ_o⁻¹ - Σ_o⁻¹ Σ̃ Σ_o⁻¹)``; Frobenius, plain W2 and plain Eq. 9 are
    symmetric in their arguments (the gradient with the roles swapped); for scaled W2 and Eq. 9,
    whose arguments play near-symmetric roles where the result lies close to ``Σ_o``, the
    output's sensitivity stands in.
    """
    if measure == "entropy":
        return 0.0, 0.0
    if measure == "kl":
        inv = np.linalg.inv(old)
        gc = 0.5 * (inv - inv @ cov @ inv)
    elif measure in ("frobenius", "w2_plain", "eq9_plain"):
        gc = _cov_gradient(measure, old, cov)
    else:
        gc = None
    cov_s = (
        sensitivity(measure, u, cov, old)[1]
        if gc is None
        else u * float(np.sum(np.abs(gc) * np.abs(old)))
    )
    if mean is None:
        return 0.0, cov_s
    diff = mean - old_mean
    if measure in ("w2_plain", "eq9_plain"):
        return u * float(np.sum(np.abs(2.0 * diff) * np.abs(old_mean))), cov_s
    g = np.linalg.solve(old, diff)
    k = 0.5 if measure == "kl" else 1.0
    mean_s = k * u * float(np.abs(g) @ np.abs(old) @ np.abs(g) + 2.0 * np.abs(g) @ np.abs(old_mean))
    return mean_s, cov_s
