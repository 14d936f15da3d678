"""KL trust-region projection (the paper's Eq. 6 and 10-11) with implicit gradients."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from trpl_math import _backend as B
from trpl_math import _checks as C
from trpl_math._backend import Array
from trpl_math._checks import prepare_bound, prepare_pair
from trpl_math.divergences import (
    kl_cov_diag,
    kl_cov_whitened,
    maha_chol,
    phi_of_ratio,
)
from trpl_math.projections._kl_solver import kl_cov_root
from trpl_math.projections.mean import project_mean
from trpl_math.types import Gaussian

__all__ = ["kl_projection"]


def kl_projection(
    mean: Array,
    cov: Array,
    old_mean: Array,
    old_cov: Array,
    *,
    eps_mean: Any,
    eps_cov: Any,
    diag: bool = False,
) -> Gaussian:
    """Project a Gaussian onto the KL trust region around the old one (the paper's KL layer).

    Mean (Eq. 5-6, measured in the old precision as the paper chooses):

        μ̃ = argmin ½ maha(μ̃, μ; Σ_o)  s.t.  ½ maha(μ̃, μ_o; Σ_o) ≤ ε_μ

    Covariance (Eq. 10-11), i.e. ``min KLcov(Σ̃ ‖ Σ)`` subject to the KL covariance part:

        Σ̃ = argmin tr(Σ⁻¹ Σ̃) - log|Σ̃|  s.t.  ½[tr(Σ_o⁻¹ Σ̃) - d + log|Σ_o| - log|Σ̃|] ≤ ε_Σ

    whose solution interpolates precisions, ``Λ̃ = (η Λ_o + Λ)/(η + 1)``, with the multiplier
    ``η ≥ 0`` the root of ``KLcov(Σ̃(η) ‖ Σ_o) = ε_Σ``. The root is found after one
    eigendecomposition per state with O(d) Newton steps (see ``_kl_solver``), to a relative
    error of ~1e-13 in float64. Its gradient is the implicit one (Appendix B.5): one Newton step
    ``η = η* - f(η*, θ) / stop_gradient(∂f/∂η)`` evaluated with Cholesky factors only, so that
    gradients with respect to all inputs (the old policy's too) are exact and finite even when
    eigenvalues repeat. Parts within their bound are returned unchanged (identity gradient).

    Args:
        mean: ``(..., d)``; cov: ``(..., d, d)`` (``(..., d)`` variances if ``diag``).
        old_mean, old_cov: the old policy, shaped alike.
        eps_mean: bound on the KL mean part ``½ maha(μ̃, μ_o; Σ_o)``.
        eps_cov: bound on the KL covariance part.
        diag: covariances are variance vectors; O(d).

    Returns:
        ``Gaussian(mean, cov)`` of the projected policy.

    Raises:
        ValueError: bad shapes or dtypes, non-finite values, covariances not positive definite,
            bounds ≤ 0. TypeError: NumPy and torch mixed.

    Example:
        >>> import numpy as np
        >>> from trpl_math import kl_divergence
        >>> old = (np.zeros(3), np.ones(3))
        >>> p = kl_projection(np.ones(3), np.full(3, 4.0), *old, eps_mean=0.1, eps_cov=0.05,
        ...                   diag=True)
        >>> [round(float(x), 12) for x in kl_divergence(*p, *old, diag=True)]
        [0.1, 0.05]
    """
    if diag:
        fused = _fused_diag(mean, cov, old_mean, old_cov, eps_mean, eps_cov)
        if fused is not None:
            return fused
    return _kl_projection(
        mean, cov, old_mean, old_cov, eps_mean=eps_mean, eps_cov=eps_cov, diag=diag
    )


@B.working_precision("float64")
def _kl_projection(
    mean: Array,
    cov: Array,
    old_mean: Array,
    old_cov: Array,
    *,
    eps_mean: Any,
    eps_cov: Any,
    diag: bool,
) -> Gaussian:
    """:func:`kl_projection` as a chain of array operations (any back end, float64 at least)."""
    p, eps_m, eps_c, maha, old_chol = _prepared(
        mean, cov, old_mean, old_cov, eps_mean, eps_cov, diag
    )
    xp = p.xp
    proj_mean = project_mean(p.mean, p.old_mean, 0.5 * maha, eps_m, xp)
    proj_cov = B.backend(xp).kl_cov_projection(p.cov, p.old_cov, eps_c, diag, xp, old_chol=old_chol)
    return Gaussian(proj_mean, proj_cov)


def _prepared(
    mean: Array,
    cov: Array,
    old_mean: Array,
    old_cov: Array,
    eps_mean: Any,
    eps_cov: Any,
    diag: bool,
) -> tuple[C.Pair, Array, Array, Array, Array | None]:
    """The inputs broadcast to one batch shape, the bounds as arrays of it, ``maha(μ, μ_o;
    Σ_o)`` ``(...)`` and the factor ``L_o`` it took (``None`` if ``diag``), after every input
    check (those that run with validation off too)."""
    p = prepare_pair(mean, cov, old_mean, old_cov, diag=diag)
    xp = p.xp
    eps_m = prepare_bound(eps_mean, "eps_mean", xp, p.mean, p.batch_shape)
    eps_c = prepare_bound(eps_cov, "eps_cov", xp, p.mean, p.batch_shape)
    diff = p.mean - p.old_mean
    old_chol = None
    if diag:
        maha = xp.sum(diff * diff / p.old_cov, axis=-1)
    else:
        old_chol = B.cholesky(p.old_cov, xp, name="old_cov", check=B.validation_enabled())
        maha = maha_chol(diff, old_chol, xp)
    C.check_divergence_finite(maha, "maha(mean, old_mean; old_cov)", xp)
    scale_m = 0.5 * C.mean_scale(p.old_mean, p.old_cov, xp, diag=diag, metric=True)
    C.check_bound_floor(eps_m, "eps_mean", xp, scale_m, like=p.mean)
    C.check_bound_floor(eps_c, "eps_cov", xp, like=p.mean)
    if not diag:
        C.check_condition(p.old_cov, "old_cov", xp)
    return p, eps_m, eps_c, maha, old_chol


@B.working_precision("float64")
def _check_diag(
    mean: Array, var: Array, old_mean: Array, old_var: Array, *, eps_mean: Any, eps_cov: Any
) -> tuple[()]:
    """Run exactly the checks of :func:`_kl_projection` (diagonal, in its working precision)."""
    _prepared(mean, var, old_mean, old_var, eps_mean, eps_cov, True)
    return ()


def _fused_diag(
    mean: Array, var: Array, old_mean: Array, old_var: Array, eps_mean: Any, eps_cov: Any
) -> Gaussian | None:
    """The diagonal projection as one autograd node of the back end, or ``None`` where it has
    none or the arguments are not all of its kind (then the array path runs, and reports any bad
    argument). Checks (with validation on) are those of the array path."""
    fused = _fused_backend(mean, var, old_mean, old_var, eps_mean, eps_cov)
    if fused is None:
        return None
    if B.validation_enabled():
        _check_diag(mean, var, old_mean, old_var, eps_mean=eps_mean, eps_cov=eps_cov)
    return fused(mean, var, old_mean, old_var, eps_mean, eps_cov)


def _fused_backend(*args: Any) -> Any:
    """The back end's fused diagonal KL projection (``kl_diag_projection``, torch's) when
    ``args`` (four arrays, two bounds) suit it, else ``None``; torch is looked up, never imported
    (NumPy users never import torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(args[0], torch.Tensor):
        return None
    if not _TORCH_BACKEND:  # looked up once: the namespace lookup costs microseconds a call
        _TORCH_BACKEND.append(B.backend(B.namespace(args[0])))
    backend = _TORCH_BACKEND[0]
    return backend.kl_diag_projection if backend.fits_kl_diag(*args) else None


_TORCH_BACKEND: list[ModuleType] = []


class EigenSolution(NamedTuple):
    """The KL covariance projection in the generalised eigenbasis (arrays without gradient).

    Only the active states (covariance part above its bound) are eigendecomposed; the batch is
    flattened, and the per-state fields below hold the ``n`` active states in order.

    Attributes:
        cov: ``(..., d, d)`` (or ``(..., d)``) projected covariances (the input where inactive).
        index: ``(n,)`` flat batch indices of the active states (all states if diagonal:
            elementwise work is cheaper than gathering; ``t = 1`` marks the inactive ones).
        basis: ``(n, d, d)`` ``V = L_o U`` with ``Vᵀ Σ_o⁻¹ V = I`` and ``Vᵀ Σ⁻¹ V = diag λ``;
            the old standard deviations ``(n, d)`` if diagonal.
        old_chol: ``(n, d, d)`` ``L_o`` (``basis`` again if diagonal).
        rot: ``(n, d, d)`` the orthogonal ``U`` of ``V = L_o U``, the eigenvectors of
            ``L_o⁻¹ Σ L_o⁻ᵀ`` (``basis`` again if diagonal).
        lam: ``(n, d)`` generalised eigenvalues λ (float64).
        nu: ``(n, d)`` ``ν = 1 + t(λ - 1)``, the whitened projected precision (float64).
        t: ``(n,)`` ``1/(1 + η)`` (float64).
    """

    cov: Array
    index: Array
    basis: Array
    old_chol: Array
    rot: Array
    lam: Array
    nu: Array
    t: Array


def kl_cov_eigen_projection(
    cov: Array,
    old_cov: Array,
    eps: Array,
    diag: bool,
    xp: ModuleType,
    old_chol: Array | None = None,
) -> EigenSolution:
    """Forward pass of the KL covariance projection after one generalised eigendecomposition.

    First the KL covariance part of every state (Cholesky factors only); then, for the active
    states alone, whitening by ``L_o`` and rotating by the eigenvectors ``U`` of ``W Wᵀ``
    (``W = L_o⁻¹ L``, eigenvalues ``1/λ_i``) makes every matrix of Eq. 11 diagonal: the
    projection is ``Σ̃ = V diag(1/ν) Vᵀ`` with ``V = L_o U`` and ``ν_i = 1 + t(λ_i - 1)``, ``t``
    the root of ``KLcov(t) = ε`` (see ``_kl_solver``), formed as ``Σ_o + V diag(1/ν - 1) Vᵀ``
    where every ``|1/ν_i - 1| ≤ ½``. Inputs are taken as constants.

    Args:
        cov, old_cov: ``(..., d, d)`` (``(..., d)`` if ``diag``) of one batch shape.
        eps: ``(...)`` bounds.
        old_chol: ``L_o`` of ``old_cov`` ``(..., d, d)`` where the caller has it already
            (taken as a constant), else ``None``.

    Raises:
        ValueError: (when validating) ``cov`` or ``old_cov`` not positive definite.
    """
    check = B.validation_enabled()
    batch, d = tuple(eps.shape), int(cov.shape[-1])
    event = (d,) if diag else (d, d)
    cov, old_cov = (xp.reshape(B.stop_gradient(x, xp), (-1, *event)) for x in (cov, old_cov))
    eps = xp.reshape(B.stop_gradient(eps, xp), (-1,))
    if diag:
        return _diag_projection(cov, old_cov, eps, batch, xp)
    if old_chol is None:
        old_chol = B.cholesky(old_cov, xp, name="old_cov", check=check)
    else:
        old_chol = xp.reshape(B.stop_gradient(old_chol, xp), (-1, *event))
    white_chol = B.solve_tril(old_chol, B.cholesky(cov, xp, name="cov", check=check), xp)
    kl_now = kl_cov_whitened(white_chol, xp)
    active = kl_now > eps
    index = xp.nonzero(active)[0]
    n = int(index.shape[0])
    every = n == int(active.shape[0])  # every state active: no gather, no scatter
    take = (lambda x: x) if every else (lambda x: xp.take(x, index, axis=0))
    w = take(white_chol)
    ratio, rot = B.eigh(w @ B.mT(w), xp)  # eigenvalues 1/λ of L_o⁻¹ Σ L_o⁻ᵀ
    old_chol = take(old_chol)
    basis = old_chol @ rot
    lam = 1.0 / B.as_f64(ratio, xp)
    hx, (lam_h, eps_h) = B.to_host(xp, lam, B.as_f64(take(eps), xp))
    ones = hx.full(eps_h.shape, True)
    t = kl_cov_root(lam_h, eps_h, ones, hx)
    t = B.from_host(t, xp, lam)
    nu = 1.0 + t[..., None] * (lam - 1.0)
    if every and n:
        out = pencil_cov(old_cov, basis, lam, nu, t, xp)
    else:
        out = xp.asarray(cov, copy=True)
        if n:
            out[index] = pencil_cov(take(old_cov), basis, lam, nu, t, xp)
    out = xp.reshape(out, (*batch, *event))
    return EigenSolution(out, index, basis, old_chol, rot, lam, nu, t)


def pencil_cov(
    old_cov: Array, basis: Array, lam: Array, nu: Array, t: Array, xp: ModuleType
) -> Array:
    """``Σ̃ = V diag(1/ν) Vᵀ`` in the dtype of ``old_cov`` (docs/math.md §3.7, "Output").

    Where every ``|1/ν_i - 1| ≤ ½`` it is formed as ``Σ_o + V diag(1/ν - 1) Vᵀ`` (``V Vᵀ =
    Σ_o``, ``1/ν - 1 = -t(λ - 1)/ν``): the old covariance enters exactly and the rounding of
    ``V`` touches only the change; farther out directly, which keeps a ``Σ̃ ≪ Σ_o`` to its own
    relative accuracy.

    Shapes: ``old_cov, basis (n, d, d)``; ``lam, nu (n, d)`` float64; ``t (n,)`` -> ``(n, d, d)``.
    """
    step = -t[..., None] * (lam - 1.0) / nu
    near = xp.max(xp.abs(step), axis=-1) <= 0.5

    def congruence(w: Array) -> Array:
        return B.sym((basis * xp.astype(w, old_cov.dtype)[..., None, :]) @ B.mT(basis))

    if B.all_true(near, xp):  # eager: one congruence where every state agrees
        return old_cov + congruence(step)
    if not B.any_true(near, xp):
        return congruence(1.0 / nu)
    return xp.where(near[..., None, None], old_cov + congruence(step), congruence(1.0 / nu))


def _diag_projection(
    var: Array, old_var: Array, eps: Array, batch: tuple[int, ...], xp: ModuleType
) -> EigenSolution:
    """:func:`kl_cov_eigen_projection` for variance vectors ``(n, d)``, all O(d) elementwise.

    Every state is solved (``t = 1`` where inactive): elementwise work costs less than gathering
    the active ones. The whole solve runs in float64 on the host namespace (plain NumPy for CPU
    tensors, whose per-operation overhead is what a small batch pays for).
    """
    hx, (var_h, old_h, eps_h) = B.to_host(xp, var, old_var, eps)
    var_h, old_h, eps_h = (hx.asarray(x, dtype=hx.float64) for x in (var_h, old_h, eps_h))
    sol = diag_cov_host(var_h, old_h, eps_h, hx)
    std, lam, nu, t, out = (
        B.from_host(x, xp, var) for x in (sol.std, sol.lam, sol.nu, sol.t, sol.cov)
    )
    out = xp.reshape(xp.astype(out, var.dtype), (*batch, int(var.shape[-1])))
    index = xp.arange(int(var.shape[0]), device=_device(var))
    std = xp.astype(std, var.dtype)
    return EigenSolution(out, index, std, std, std, lam, nu, t)


class DiagCovSolution(NamedTuple):
    """The diagonal KL covariance projection of every state, float64 host arrays.

    Attributes:
        cov: ``(..., d)`` projected variances (the input where inactive).
        std: ``(..., d)`` old standard deviations; lam: ``(..., d)`` ``λ = σ_o²/σ²``;
        nu: ``(..., d)`` ``ν = 1 + t(λ - 1)``; t: ``(...)`` ``1/(1 + η)``, 1 where inactive.
    """

    cov: Array
    std: Array
    lam: Array
    nu: Array
    t: Array


def diag_cov_host(var: Array, old_var: Array, eps: Array, hx: ModuleType) -> DiagCovSolution:
    """Eq. 11 for variance vectors, every state: ``σ̃² = σ_o²/ν`` with ``ν_i = 1 + t(λ_i - 1)`` and
    ``t`` the root of ``KLcov(t) = ε`` (docs/math.md §3.7, §4.2) where ``KLcov(1) > ε``.

    Args:
        var, old_var: ``(..., d)`` float64; eps: ``(...)`` float64 (all broadcasting to one
            batch shape); hx: a host namespace (NumPy).
    """
    kl = _kl_cov_diag_host(var, old_var, hx) if hx is np else kl_cov_diag(var, old_var, hx)
    active = kl > eps
    lam = old_var / var
    t = kl_cov_root(lam, eps, active, hx)
    nu = 1.0 + t[..., None] * (lam - 1.0)
    out = hx.where(active[..., None], old_var / nu, var)
    return DiagCovSolution(out, hx.sqrt(old_var), lam, nu, t)


def _kl_cov_diag_host(var: Array, old_var: Array, hx: ModuleType) -> Array:
    """:func:`~trpl_math.divergences.kl_cov_diag` ``(..., d) -> (...)`` on the host, the same
    values bit for bit, through :func:`~trpl_math.divergences.phi_of_ratio`'s NumPy path (the
    series only on the entries that need it)."""
    return 0.5 * hx.sum(phi_of_ratio(var / old_var, hx), axis=-1)


class DiagMeanSolution(NamedTuple):
    """The KL mean projection (Eq. 6) for variance vectors, float64 host arrays.

    Attributes:
        mean: ``(..., d)`` projected means (the input where inactive).
        diff: ``(..., d)`` ``μ - μ_o``; dist: ``(...)`` ``½ maha(μ, μ_o; Σ_o)``;
        t: ``(...)`` ``sqrt(ε_μ / dist)``, 1 where inactive; active: ``(...)`` ``dist > ε_μ``.
    """

    mean: Array
    diff: Array
    dist: Array
    t: Array
    active: Array


def diag_mean_host(
    mean: Array, old_mean: Array, old_var: Array, eps: Array, hx: ModuleType
) -> DiagMeanSolution:
    """Eq. 6 in the old precision, ``μ̃ = μ_o + t (μ - μ_o)``, ``t = sqrt(ε_μ / m)`` where
    ``m = ½ Σ_i (μ_i - μ_o,i)²/σ²_o,i > ε_μ`` (the operations of :func:`project_mean`, in the
    same order, so that float64 results agree bit for bit).

    Args:
        mean, old_mean, old_var: ``(..., d)`` float64; eps: ``(...)`` float64 (broadcasting).
    """
    diff = mean - old_mean
    dist = 0.5 * hx.sum(diff * diff / old_var, axis=-1)
    active = dist > eps
    safe = hx.where(active, dist, eps)
    t = hx.where(active, hx.sqrt(eps / safe), 1.0)
    out = hx.where(active[..., None], old_mean + t[..., None] * diff, mean)
    return DiagMeanSolution(out, diff, dist, t, active)


def diag_mean_grads(
    grad: Array,
    sol: DiagMeanSolution,
    old_var: Array,
    eps: Array,
    hx: ModuleType,
    need: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Array, Array | None, Array | None, Array | None]:
    """Backward of :func:`diag_mean_host`: with ``G = ∂L/∂μ̃``, ``s = Σ_i G_i (μ_i - μ_o,i)`` and
    ``c = -s t / (2m)`` (``∂L/∂m``, through ``t = sqrt(ε/m)``), for active states

        ∂L/∂μ = t G + c (μ - μ_o)/σ_o²,   ∂L/∂μ_o = G - ∂L/∂μ,
        ∂L/∂σ_o² = -½ c (μ - μ_o)²/σ_o⁴,   ∂L/∂ε_μ = s t / (2 ε_μ);

    inactive states pass ``G`` to ``μ`` and 0 elsewhere (docs/math.md §4, Eq. 6).

    Args:
        grad: ``(..., d)`` float64 of the batch shape of ``sol.mean``; old_var: ``(..., d)``;
            eps: ``(...)`` (broadcasting).
        need: whether ``∂L/∂μ_o``, ``∂L/∂σ_o²``, ``∂L/∂ε_μ`` are wanted (else ``None``).

    Returns:
        ``(∂L/∂μ, ∂L/∂μ_o, ∂L/∂σ_o²)`` ``(..., d)`` and ``∂L/∂ε_μ`` ``(...)``, float64, of the
        full batch shape.
    """
    act = sol.active[..., None]
    s = hx.sum(grad * sol.diff, axis=-1)
    c = hx.where(sol.active, -s * sol.t / (2.0 * hx.where(sol.active, sol.dist, 1.0)), 0.0)
    c_ = c[..., None]
    g_mean = hx.where(act, sol.t[..., None] * grad + c_ * sol.diff / old_var, grad)
    g_old_mean = hx.where(act, grad - g_mean, 0.0) if need[0] else None
    g_old_var = -0.5 * c_ * sol.diff * sol.diff / (old_var * old_var) if need[1] else None
    g_eps = hx.where(sol.active, s * sol.t / (2.0 * eps), 0.0) if need[2] else None
    return g_mean, g_old_mean, g_old_var, g_eps


def kl_cov_diag_grads(
    grad: Any,
    std: Any,
    lam: Any,
    nu: Any,
    t: Any,
    xp: Any,
    *,
    need_old: bool = True,
    need_eps: bool = True,
) -> tuple[Any, Any, Any]:
    """Backward of the diagonal KL covariance projection for every state, in namespace ``xp``.

    The formulas of docs/math.md §4.2 (the back ends' implicit gradients) with ``V = diag(σ_o)``
    (so ``V⁻ᵀ X V⁻¹ = X / σ_o²``), worked in float64; states with ``t = 1`` (inactive) pass
    ``grad`` through unchanged.

    Args:
        grad: ``(n, d)`` upstream gradient; std: ``(n, d)`` old standard deviations;
        lam, nu: ``(n, d)``; t: ``(n,)``.
        need_old, need_eps: compute ``∂L/∂Σ_o``, ``∂L/∂ε`` (else ``None`` in their place).

    Returns:
        ``(∂L/∂Σ (n, d), ∂L/∂Σ_o (n, d), ∂L/∂ε (n,))``, float64.
    """
    f64 = xp.float64
    grad, var_o = xp.asarray(grad, dtype=f64), xp.asarray(std, dtype=f64) ** 2
    eta1 = 1.0 / t[..., None]  # η + 1
    active = t < 1.0
    act = active[..., None]
    nu2, one_nu = nu**2, 1.0 - nu
    r = 0.5 * (1.0 / nu2 - 1.0 / nu)
    f_eta = -xp.sum(r * one_nu, axis=-1, keepdims=True) / eta1
    f_eta = xp.where(act, f_eta, -1.0)  # 0 where inactive: keep the division finite
    g_hat = grad * var_o
    c = -xp.sum(g_hat * one_nu / nu2, axis=-1, keepdims=True) / eta1
    k = c / f_eta
    m_hat = (g_hat / nu2 - k * r) / eta1
    g_cov = xp.where(act, lam * lam * m_hat / var_o, grad)
    g_old = None
    if need_old:
        g_old = xp.where(act, ((eta1 - 1.0) * m_hat - k * 0.5 * (1.0 - 1.0 / nu)) / var_o, 0.0)
    return g_cov, g_old, xp.where(active, k[..., 0], 0.0) if need_eps else None


def _device(x: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(x)
