"""Joint mean-and-covariance KL projection with an entropy bound (Appendix B.5, Eq. 17-18)."""

from __future__ import annotations

import math
from typing import Any

from trpl_math import _backend as B
from trpl_math import _checks as C
from trpl_math._backend import Array
from trpl_math._checks import prepare_bound, prepare_level, prepare_pair
from trpl_math.divergences import x_minus_log1p
from trpl_math.projections._kl_solver import joint_curve, solve_in_t
from trpl_math.projections.kl import Pencil, _f64
from trpl_math.types import Gaussian

__all__ = ["kl_joint_projection"]

_LOG_2PIE = math.log(2.0 * math.pi * math.e)
POLISH_TRIGGER = 1e-10  # |KL(η*) - ε| / ε above which η* is polished on the direct evaluation
POLISH_TOL = 1e-14
POLISH_ITER = 12


@B.working_precision("float64")
def kl_joint_projection(
    mean: Array,
    cov: Array,
    old_mean: Array,
    old_cov: Array,
    *,
    eps: Any,
    entropy_bound: Any = None,
    diag: bool = False,
) -> Gaussian:
    """Project mean and covariance jointly onto a KL ball, optionally with an entropy floor.

    Solves, per state (Appendix B.5, Eq. 17, MORE-style),

        π̃ = argmin KL(π̃ ‖ π)  s.t.  KL(π̃ ‖ π_o) ≤ ε,  H(π̃) ≥ β

    whose solution has natural parameters ``Λ̃ = (η Λ_o + Λ)/(η + 1 + ω)`` and
    ``q̃ = (η q_o + q)/(η + 1 + ω)`` (Eq. 18) with multipliers ``η, ω ≥ 0``. Unlike
    :func:`kl_projection`, the mean is measured in the new precision (the true KL). For a given
    η the entropy multiplier has a closed form, which leaves a monotone 1-D root problem in η,
    solved in O(d) per step in the generalised eigenbasis; gradients are the implicit ones of the
    reduced KKT system (one Newton step with a constant derivative).

    Cases per state: inside both constraints → unchanged; only the entropy bound violated →
    covariance scaled up to ``H = β`` (mean unchanged); KL bound active → lands on
    ``KL(π̃ ‖ π_o) = ε`` (and on ``H = β`` if that binds too). If no Gaussian satisfies both
    (``H(π_o) < β`` and ε too small to raise the entropy enough), the entropy bound wins: the
    result is the old mean with the old covariance scaled to entropy β, the point of the entropy
    constraint closest to the KL ball along the solution path.

    Args:
        mean: ``(..., d)``; cov: ``(..., d, d)`` (``(..., d)`` variances if ``diag``).
        old_mean, old_cov: the old policy, shaped alike.
        eps: bound on the total ``KL(π̃ ‖ π_o)`` (float or array broadcasting to ``(...)``).
        entropy_bound: lower bound β on ``H(π̃)`` in nats, or ``None`` for no entropy constraint.
        diag: covariances are variance vectors; O(d).

    Returns:
        ``Gaussian(mean, cov)`` of the projected policy.

    Raises:
        ValueError: bad shapes or dtypes, non-finite values, covariances not positive definite,
            ``eps`` ≤ 0. TypeError: NumPy and torch mixed.

    Example:
        >>> import numpy as np
        >>> from trpl_math import kl_divergence
        >>> old = (np.zeros(2), np.eye(2))
        >>> p = kl_joint_projection(np.ones(2), 0.5 * np.eye(2), *old, eps=0.1)
        >>> round(float(kl_divergence(*p, *old).total), 12)
        0.1
    """
    p = prepare_pair(mean, cov, old_mean, old_cov, diag=diag)
    xp = p.xp
    eps_ = prepare_bound(eps, "eps", xp, p.mean, p.batch_shape)
    beta = (
        None
        if entropy_bound is None
        else prepare_level(entropy_bound, "entropy_bound", xp, p.mean, p.batch_shape)
    )
    scale = 1.0 + 0.5 * C.mean_scale(p.old_mean, p.old_cov, xp, diag=diag, metric=True)
    C.check_bound_floor(eps_, "eps", xp, scale, like=p.mean)
    if not diag:
        C.check_condition(p.old_cov, "old_cov", xp)
    check = B.validation_enabled()
    chol = old_chol = None
    if not diag:
        old_chol = B.cholesky(p.old_cov, xp, name="old_cov", check=check)
        chol = B.cholesky(p.cov, xp, name="cov", check=check)
    pencil = Pencil(p.cov, p.old_cov, chol, old_chol, diag, xp)
    ex, d = pencil.ex, p.dim
    diff = p.mean - p.old_mean

    # Entropy scalings (differentiable): b = max(1, exp(2(β - H)/d)) for π and for π_o.
    log_det, old_log_det = pencil.logdet("cov"), pencil.logdet("old_cov")
    if beta is None:
        log_b_min0 = None
        scale_new = scale_old = xp.ones_like(log_det)
    else:
        target = 2.0 * beta - d * _LOG_2PIE
        scale_new = xp.exp(xp.clip((target - log_det) / d, 0.0, None))
        scale_old = xp.exp(xp.clip((target - old_log_det) / d, 0.0, None))
        log_b_min0 = _f64(B.stop_gradient((target - old_log_det) / d, xp), xp)

    # Forward solve in the generalised eigenbasis (float64, no gradient).
    lam, z, basis = pencil.eigh(diff)
    eps64 = _f64(B.stop_gradient(eps_, xp), xp)
    kl_at_one = joint_curve(lam, z, xp.ones_like(eps64), log_b_min0, xp)[0]
    kl_active = kl_at_one > eps64
    if log_b_min0 is None:
        infeasible = xp.zeros_like(kl_active)
    else:
        b0 = xp.exp(xp.clip(log_b_min0, 0.0, None))
        infeasible = kl_active & (0.5 * d * x_minus_log1p(b0 - 1.0, xp) >= eps64)
    solve = kl_active & ~infeasible

    out_mean = xp.where(infeasible[..., None], p.old_mean, p.mean)
    out_cov = xp.where(infeasible[ex], scale_old[ex] * p.old_cov, scale_new[ex] * p.cov)
    if not B.any_true(solve, xp):
        return Gaussian(out_mean, out_cov)

    host = (lam, z, eps64, solve, kl_at_one) + (() if log_b_min0 is None else (log_b_min0,))
    hx, (lam_h, z_h, eps_h, solve_h, kl1_h, *rest) = B.to_host(xp, *host)
    log_b_h = rest[0] if rest else None

    def curve(t: Array) -> tuple[Array, Array]:
        kl, dkl, _ = joint_curve(lam_h, z_h, t, log_b_h, hx)
        return kl, dkl

    t = B.from_host(solve_in_t(curve, eps_h, solve_h, hx, kl1_h), xp, lam)
    _, dkl_dt, b = joint_curve(lam, z, t, log_b_min0, xp)
    ent_active = b > 1.0
    eta_star = xp.astype((1.0 - t) / t, p.cov.dtype)
    deta = xp.astype(-t * t * dkl_dt, p.cov.dtype)

    def evaluate(eta: Array) -> tuple[Array, Array, Array]:
        interp = pencil.interpolate(eta, diff)
        a = 1.0 + eta
        if beta is not None:
            # a such that H(π̃) = β exactly: d log a = 2β - d log 2πe - log|Σ_o| + log|K| - log|Σ|.
            a_ent = xp.exp((target - old_log_det + interp.logdet_k - log_det) / d)
            a = xp.where(ent_active, a_ent, a)
        cov_t = a[ex] * interp.cov
        kl = 0.5 * pencil.maha_old(interp.mean_offset) + pencil.kl_cov(cov_t)
        return kl - eps_, p.old_mean + interp.mean_offset, cov_t

    # One differentiable evaluation at the root η* (θ-gradients at fixed η), plus the first-order
    # term d(out)/dη · (η - η*) with d(out)/dη constant (from the eigenbasis) and η from the
    # implicit Newton step: its gradient is the implicit one, its value a Newton polish of η*.
    eta_c = B.stop_gradient(eta_star, xp)
    f, mean_t, cov_t = evaluate(eta_c)
    safe = B.stop_gradient(xp.where(solve, deta, xp.ones_like(deta)), xp)
    f_c = B.stop_gradient(f, xp)
    eps_c = B.stop_gradient(eps_, xp)
    if B.any_true(solve & ~(xp.abs(f_c) <= POLISH_TRIGGER * eps_c), xp):
        # The eigenbasis curve was inexact (ill-conditioned pair): polish η* on the direct
        # evaluation first, so that the single Newton step below starts at the root.
        eta_c = _polish(
            lambda e: B.stop_gradient(evaluate(e)[0], xp), eta_c, f_c, safe, solve, eps_c, xp
        )
        f, mean_t, cov_t = evaluate(eta_c)
    eta = xp.where(solve, eta_c - f / safe, xp.zeros_like(eta_c))
    step = eta - eta_c
    dmean, dcov = _eta_derivative(lam, z, t, b, ent_active, basis, diag, xp)
    mean_t = mean_t + xp.astype(dmean, p.mean.dtype) * step[..., None]
    cov_t = cov_t + xp.astype(dcov, p.cov.dtype) * step[ex]
    return Gaussian(
        xp.where(solve[..., None], mean_t, out_mean), xp.where(solve[ex], cov_t, out_cov)
    )


def _polish(
    fun: Any, eta: Array, f: Array, slope: Array, active: Array, eps: Array, xp: Any
) -> Array:
    """Secant iterations on ``f(η) = KL(π̃(η) ‖ π_o) - ε`` from ``η`` (detached, ``η ≥ 0``).

    ``f`` decreases in η; the first step uses ``slope`` (the curve's ``∂f/∂η``), later ones the
    secant through the last two direct evaluations. States with ``|f| ≤ POLISH_TOL ε`` (or
    inactive) keep their η.
    """
    done = ~active | (xp.abs(f) <= POLISH_TOL * eps)
    prev_eta, prev_f = eta, f
    step = xp.where(done, xp.zeros_like(f), f / slope)
    new = xp.where(eta - step >= 0, eta - step, 0.5 * eta)
    for _ in range(POLISH_ITER):
        f_new = fun(new)
        diff = new - prev_eta
        ok = xp.isfinite(f_new)
        done = done | ~ok | (xp.abs(f_new) <= POLISH_TOL * eps)
        eta = xp.where(done & ~ok, eta, new)
        if B.all_true(done, xp):
            break
        secant = (f_new - prev_f) / xp.where(diff != 0, diff, xp.ones_like(diff))
        secant = xp.where((diff != 0) & (secant < 0), secant, slope)
        prev_eta, prev_f = new, f_new
        cand = new - f_new / secant
        new = xp.where(done, new, xp.where(cand >= 0, cand, 0.5 * new))
    return xp.where(active, eta, xp.zeros_like(eta))


def _eta_derivative(
    lam: Array,
    z: Array,
    t: Array,
    b: Array,
    ent_active: Array,
    basis: Array,
    diag: bool,
    xp: Any,
) -> tuple[Array, Array]:
    """``dμ̃/dη`` and ``dΣ̃/dη`` along the solution path (entropy constraint kept tight).

    In the eigenbasis ``V``: ``Σ̃ = V diag(a/(η+λ)) Vᵀ``, ``μ̃ = μ_o + V m``,
    ``m_i = λ_i z_i/(η+λ_i)``; with ``η + λ = ν/t`` and ``a = b/t``:
    ``d(a/(η+λ_i))/dη = a' t/ν_i - b t/ν_i²`` (``a' = 1``, or ``a mean_j(t/ν_j)`` when the
    entropy bound is tight) and ``dm_i/dη = -λ_i z_i t²/ν_i²``. Float64, no gradient.
    """
    tt = t[..., None]
    nu = 1.0 + tt * (lam - 1.0)
    a_prime = xp.where(ent_active, (b / t) * xp.mean(tt / nu, axis=-1), xp.ones_like(t))
    ds = a_prime[..., None] * tt / nu - b[..., None] * tt / (nu * nu)
    dm = -lam * z * tt * tt / (nu * nu)
    if diag:
        return basis * dm, basis * basis * ds
    return xp.sum(basis * dm[..., None, :], axis=-1), (basis * ds[..., None, :]) @ B.mT(basis)
