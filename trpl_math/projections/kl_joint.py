"""Joint mean-and-covariance KL projection with an entropy bound (Appendix B.5, Eq. 17-18)."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from trpl_math import _backend as B
from trpl_math import _checks as C
from trpl_math._backend import Array
from trpl_math._checks import prepare_bound, prepare_level, prepare_pair
from trpl_math.divergences import kl_cov_diag, x_minus_log1p_series, x_minus_log1p_values
from trpl_math.projections._kl_solver import joint_curve, joint_start, solve_in_t
from trpl_math.types import Gaussian

__all__ = ["kl_joint_projection"]

_LOG_2PIE = math.log(2.0 * math.pi * math.e)
FEASIBLE_ITER = 60  # bracket steps of _feasible_root
LAND_TOL = 2e-14  # _feasible_root stops once (KL + err)/ε - 1 ∈ [-LAND_TOL, 0]
_U64 = 2.0**-53  # unit roundoff of float64
NEAR_X = 0.5  # max |b/ν_i - 1| up to which Σ̃ is built as Σ_o + V diag(x) Vᵀ
_COMPACT_MIN = 256  # batch size from which _feasible_root evaluates only its unfinished states


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
        log_b_min0 = B.as_f64(B.stop_gradient((target - old_log_det) / d, xp), xp)

    # Forward solve in the generalised eigenbasis (float64, no gradient).
    lam, z, basis = pencil.eigh(diff)
    eps64 = B.as_f64(B.stop_gradient(eps_, xp), xp)
    host = (lam, z, eps64) + (() if log_b_min0 is None else (log_b_min0,))
    hx, (lam_h, z_h, eps_h, *rest) = B.to_host(xp, *host)
    log_b_h = rest[0] if rest else None
    kl1_h = joint_curve(lam_h, z_h, hx.ones_like(eps_h), log_b_h, hx)[0]
    kl_active = kl1_h > eps_h
    if log_b_h is None:
        infeasible_h = hx.zeros_like(kl_active)
    else:
        b0 = hx.exp(hx.clip(log_b_h, 0.0, None))
        infeasible_h = kl_active & (0.5 * d * x_minus_log1p_values(b0 - 1.0, hx) >= eps_h)
    solve_h = kl_active & ~infeasible_h
    infeasible, solve = (B.from_host(a, xp, lam) for a in (infeasible_h, solve_h))

    def closed_forms() -> tuple[Array, Array]:  # inside, entropy-only and infeasible states
        out_mean = xp.where(infeasible[..., None], p.old_mean, p.mean)
        out_cov = xp.where(infeasible[ex], scale_old[ex] * p.old_cov, scale_new[ex] * p.cov)
        return out_mean, out_cov

    if not B.any_true(solve, xp):
        return Gaussian(*closed_forms())
    # every state on the KL bound (the common case of a training step's worst one): no selects,
    # whose forward and backward passes cost as much as the arithmetic on small states
    everywhere = B.all_true(solve_h, hx)

    curve = _landing_curve(lam_h, z_h, log_b_h, hx)
    target = eps_h * (1.0 - 0.5 * LAND_TOL)  # the middle of _feasible_root's accepted band
    start = joint_start(lam_h, z_h, eps_h, solve_h, hx, log_b_h)
    t_h = solve_in_t(curve, target, solve_h, hx, start=start)
    t_h = _feasible_root(lam_h, z_h, t_h, log_b_h, eps_h, solve_h, kl1_h, hx)
    inputs = (p.mean, p.cov, p.old_mean, p.old_cov, eps_) + (() if beta is None else (beta,))
    grad = B.backend(xp).needs_grad(*inputs)
    # every O(d) quantity at the root on the host, then moved once
    root_h = _root_terms(lam_h, z_h, t_h, log_b_h, hx, grad)
    root = RootTerms(*(None if a is None else B.from_host(a, xp, lam) for a in root_h))
    old = (B.stop_gradient(p.old_mean, xp), B.stop_gradient(p.old_cov, xp))
    value_mean, value_cov = _eigen_result(*old, root, basis, diag, xp)
    mean_t = xp.astype(value_mean, p.mean.dtype)
    cov_t = xp.astype(value_cov, p.cov.dtype)
    if grad:
        graph_mean, graph_cov = _implicit_graph(
            pencil, p.old_mean, diff, eps_, beta, log_det, old_log_det, root, basis,
            None if everywhere else solve, diag, xp,
        )  # fmt: skip
        mean_t = mean_t + (graph_mean - B.stop_gradient(graph_mean, xp))
        cov_t = cov_t + (graph_cov - B.stop_gradient(graph_cov, xp))
    if everywhere:
        return Gaussian(mean_t, cov_t)
    if B.any_true(infeasible_h, hx):
        out_mean, out_cov = closed_forms()
    else:  # the common case: no select with the old policy (the where below makes the copy)
        out_mean, out_cov = p.mean, scale_new[ex] * p.cov
    return Gaussian(
        xp.where(solve[..., None], mean_t, out_mean), xp.where(solve[ex], cov_t, out_cov)
    )


def _shape_x(
    lam: Array, t: Array, log_b_min0: Array | None, xp: Any
) -> tuple[Array, Array, Array, Array]:
    """``(x, r, ν, b - 1)``: ``r_i = b/ν_i``, the eigenvalues of the whitened projected
    covariance, and ``x_i = r_i - 1 = ((b - 1) - t (λ_i - 1)) / ν_i`` without cancellation, with
    ``ν_i = 1 + t(λ_i - 1)`` (docs/math.md §3.8). ``r`` is formed directly (``1 + x`` would lose
    its relative accuracy where ``r ≪ 1``). Shapes: ``lam (..., d)``, ``t, log_b_min0 (...)``
    -> ``(..., d)`` each, ``b - 1`` ``(...)``."""
    tt = t[..., None]
    dl = lam - 1.0
    nu = 1.0 + tt * dl
    if log_b_min0 is None:
        b_minus_one = xp.zeros_like(t)
    else:
        log_b = log_b_min0 + xp.mean(xp.log(nu), axis=-1)
        b_minus_one = xp.expm1(xp.clip(log_b, 0.0, None))
    x = (b_minus_one[..., None] - tt * dl) / nu
    return x, (1.0 + b_minus_one[..., None]) / nu, nu, b_minus_one


class RootTerms(NamedTuple):
    """The O(d) quantities at the root ``t`` (float64, detached; shapes ``(..., d)`` or
    ``(...)``): ``x = b/ν - 1``, ``r = b/ν`` and the mean offset ``m`` of
    :func:`_eigen_result`; ``dkl_dt`` and ``b`` of
    :func:`~trpl_math.projections._kl_solver.joint_curve`; ``ds, dm`` of
    :func:`_eta_path` (``None`` where no gradient is needed)."""

    t: Array
    x: Array
    r: Array
    m: Array
    dkl_dt: Array | None
    b: Array | None
    ds: Array | None
    dm: Array | None


def _root_terms(
    lam: Array, z: Array, t: Array, log_b_min0: Array | None, xp: Any, grad: bool
) -> RootTerms:
    """:class:`RootTerms` at ``t`` (with the gradient terms if ``grad``).
    Shapes: ``lam, z (..., d)``, ``t, log_b_min0 (...)``."""
    x, r, nu, _ = _shape_x(lam, t, log_b_min0, xp)
    m = t[..., None] * lam * z / nu
    if not grad:
        return RootTerms(t, x, r, m, None, None, None, None)
    _, dkl_dt, b = joint_curve(lam, z, t, log_b_min0, xp)
    ds, dm = _eta_path(lam, z, t, b, xp)
    return RootTerms(t, x, r, m, dkl_dt, b, ds, dm)


def _kl_at(
    lam: Array, z: Array, t: Array, log_b_min0: Array | None, xp: Any
) -> tuple[Array, Array]:
    """``KL(π̃(t) ‖ π_o) = ½ Σ_i [φ(x_i) + m_i²]`` of the result :func:`_eigen_result` builds
    (docs/math.md §3.8; ``φ(x) = x - log(1 + x)``: its series near 0, ``x - log1p(x)`` for
    ``r ≥ ½``, ``x - log r`` below), and a bound on the rounding error of that evaluation:
    ``8u`` times the magnitudes summed (``4|x_i| + |log r_i|`` where the difference cancels,
    ``φ_i`` for the series, ``m_i²``).
    Shapes: ``(..., d)``, ``(...)`` -> ``(...)`` each."""
    return _kl_parts(lam, z, t, log_b_min0, xp)[:2]


def _kl_parts(
    lam: Array, z: Array, t: Array, log_b_min0: Array | None, xp: Any
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """:func:`_kl_at`'s ``(kl, err)`` and the terms they came from, ``(x, m, ν, b - 1)``."""
    x, r, nu, b_minus_one = _shape_x(lam, t, log_b_min0, xp)
    m = t[..., None] * lam * z / nu
    small = xp.abs(x) < 1e-2
    if type(x) is np.ndarray and x.ndim > 0:  # the same values, each evaluated where used
        low = r < 0.5
        log_r = np.log1p(np.where(low, 0.0, x))
        if low.any():
            log_r[low] = np.log(r[low])
        phi = x - log_r
        if small.any():
            phi[small] = x_minus_log1p_series(x[small], np)
    else:
        # log1p(x) from the accurate x where r ≥ ½ (x's relative error stays relative), log r
        # below (log1p of x ≈ -1 would amplify x's error by 1/r)
        log_r = xp.where(r >= 0.5, xp.log1p(xp.where(r >= 0.5, x, xp.zeros_like(x))), xp.log(r))
        phi = xp.where(small, x_minus_log1p_values(x, xp), x - log_r)
    size = xp.where(small, phi, 4.0 * xp.abs(x) + xp.abs(log_r)) + m * m
    kl = 0.5 * xp.sum(phi + m * m, axis=-1)
    return kl, (8.0 * _U64) * 0.5 * xp.sum(size, axis=-1), x, m, nu, b_minus_one


def _landing_curve(
    lam: Array, z: Array, log_b_min0: Array | None, xp: Any
) -> Callable[[Array], tuple[Array, Array]]:
    """``t -> (KL(t) + err(t), dKL/dt)`` (:func:`_kl_at`; the derivative of
    :func:`~trpl_math.projections._kl_solver.joint_curve`, ``err``'s own neglected): Newton on it
    lands where :func:`_feasible_root` accepts, so that one evaluation confirms the root.
    Shapes: ``lam, z (..., d)``, ``log_b_min0, t (...)``."""
    dl = lam - 1.0

    def curve(t: Array) -> tuple[Array, Array]:
        kl, err, x, m, nu, b_minus_one = _kl_parts(lam, z, t, log_b_min0, xp)
        tt = t[..., None]
        if log_b_min0 is None:  # t Σ [½ ((λ-1)/ν)² + (λz/ν)²/ν] with x = -t(λ-1)/ν, m = tλz/ν
            dkl = xp.sum(0.5 * x * x + m * m / nu, axis=-1) / t
        else:
            b = 1.0 + b_minus_one
            db = xp.where(b_minus_one > 0, b * xp.mean(dl / nu, axis=-1), 0.0)
            bb, dbb = b[..., None], db[..., None]
            terms = dbb / nu - bb * dl / (nu * nu) - dbb / bb + dl / nu + 2.0 * m * m / (tt * nu)
            dkl = 0.5 * xp.sum(terms, axis=-1)
        return kl + err, dkl

    return curve


def _feasible_root(
    lam: Array,
    z: Array,
    t: Array,
    log_b_min0: Array | None,
    eps: Array,
    active: Array,
    kl_at_one: Array,
    xp: Any,
) -> Array:
    """The largest ``t`` found with ``KL(t) + err(t) ≤ ε`` (:func:`_kl_at`), starting from ``t``.

    The root finder's ``t`` may be short of convergence where the curve is steep near ``t = 1``
    (generalised eigenvalues near 0: ``ν_i = 1 - t``), or over ``ε`` by its tolerance. With
    ``g = (KL + err)/ε - 1`` a state is feasible where ``g ≤ 0`` and accepted where
    ``g ∈ [-LAND_TOL, 0]`` (:data:`LAND_TOL`). A bracket ``[lo, hi]`` with ``lo`` feasible and
    ``hi`` not (from ``t``, the power-law step ``t / sqrt(1 + g(t))``, and ``0`` or ``1``) is
    shrunk by Illinois regula falsi aimed at the middle of the accepted band,
    ``g = -LAND_TOL/2``, until ``lo`` is accepted (or the bracket is within 4e-16), for at most
    :data:`FEASIBLE_ITER` steps, and ``lo`` is returned: the result lands on the bound from the
    feasible side, inside by at most the evaluation's own rounding error (``err``, ~1e-14
    relative) plus :data:`LAND_TOL`. A state once done keeps its ``lo``; on a large NumPy batch
    the later evaluations take only the states not done (:data:`_COMPACT_MIN`). Float64, host
    namespace, no gradient.
    Shapes: ``lam, z (..., d)``; ``t, log_b_min0, eps, active, kl_at_one (...)`` -> ``(...)``.
    """
    aim = 0.5 * LAND_TOL

    def h(x: Array) -> Array:  # g(x) + aim: feasible iff h <= aim, accepted iff |h| <= aim
        kl, err = _kl_at(lam, z, x, log_b_min0, xp)
        return (kl + err) / eps - (1.0 - aim)

    def h_pending(x: Array, pending: Array, lo: Array, h_lo: Array) -> tuple[Array, Array]:
        """``(x, h(x))`` where a state is ``pending``, ``(lo, h_lo)`` (no update) where not: on
        a large NumPy batch with few states left, evaluated on those alone (the same
        arithmetic row by row, so the same values)."""
        if type(lam) is not np.ndarray or pending.size < _COMPACT_MIN:
            return x, h(x)
        idx = np.nonzero(pending)
        if 2 * idx[0].size > pending.size:
            return x, h(x)
        shape = pending.shape

        def sub(a: Array, *event: int) -> Array:
            return np.broadcast_to(a, shape + event)[idx]

        kl, err = _kl_at(
            sub(lam, lam.shape[-1]), sub(z, z.shape[-1]), x[idx],
            None if log_b_min0 is None else sub(log_b_min0), np,
        )  # fmt: skip
        x_out, h_out = lo.copy(), h_lo.copy()
        x_out[idx] = x[idx]
        h_out[idx] = (kl + err) / sub(eps) - (1.0 - aim)
        return x_out, h_out

    zero, one = xp.zeros_like(t), xp.ones_like(t)
    # lo: the largest feasible point tried (KL(0) = 0); hi: the smallest infeasible one (KL(1) > ε
    # for every active state; its h only steers the first secant step).
    lo, h_lo = zero, aim - one
    hi, h_hi = one, kl_at_one / eps - (1.0 - aim)

    def done_at(lo: Array, h_lo: Array, hi: Array) -> Array:
        return ~active | (hi - lo <= 4e-16 * hi) | (h_lo >= -aim)

    def tried(x: Array, hx_: Array, live: Array) -> None:  # a state once done keeps its lo
        nonlocal lo, h_lo, hi, h_hi
        feasible = hx_ <= aim
        up = feasible & (x > lo) & live
        lo, h_lo = xp.where(up, x, lo), xp.where(up, hx_, h_lo)
        down = ~feasible & (x < hi) & live
        hi, h_hi = xp.where(down, x, hi), xp.where(down, hx_, h_hi)

    h0 = h(t)
    tried(t, h0, ~done_at(lo, h_lo, hi))
    live = ~done_at(lo, h_lo, hi)
    if B.any_true(live, xp):  # (always taken when traced)
        # the power-law step (KL ∝ t², the small-t limit) to the middle of the accepted band
        guess = xp.clip(t / xp.sqrt(xp.clip(1.0 + h0, _U64, None)), 0.0, 1.0)
        guess, h1 = h_pending(guess, live, lo, h_lo)
        tried(guess, h1, live)
        live = ~done_at(lo, h_lo, hi)
        if B.any_true(live, xp):
            # the secant through both points (the curve's local power, where the step fell short)
            span = h1 - h0
            ok = xp.isfinite(span) & (span != 0.0)
            x2 = guess - h1 * (guess - t) / xp.where(ok, span, one)
            x2 = xp.clip(xp.where(ok & xp.isfinite(x2), x2, guess), 0.0, 1.0)
            tried(*h_pending(x2, live, lo, h_lo), live)

    def more(state: tuple[Any, ...]) -> Any:  # a step left and a state not done
        i, lo, h_lo, hi = state[:4]
        return (i < FEASIBLE_ITER) & xp.any(~done_at(lo, h_lo, hi))

    def illinois(state: tuple[Any, ...]) -> tuple[Any, ...]:
        i, lo, h_lo, hi, h_hi, side = state  # side +1: lo moved last, -1: hi moved last
        stop = done_at(lo, h_lo, hi)
        span = h_hi - h_lo
        ok = xp.isfinite(span) & (span > 0)
        x = lo - h_lo * (hi - lo) / xp.where(ok, span, one)
        x = xp.where(ok & (x > lo) & (x < hi), x, 0.5 * (lo + hi))
        hx_ = h_pending(x, ~stop, lo, h_lo)[1]  # stopped states ignore it
        feasible = (hx_ <= aim) & ~stop
        infeasible = (hx_ > aim) & ~stop
        # Illinois: an endpoint kept twice in a row has its value halved (superlinear, no stall).
        h_hi = xp.where(feasible & (side > 0), 0.5 * h_hi, h_hi)
        h_lo = xp.where(infeasible & (side < 0), 0.5 * h_lo, h_lo)
        lo, h_lo = xp.where(feasible, x, lo), xp.where(feasible, hx_, h_lo)
        hi, h_hi = xp.where(infeasible, x, hi), xp.where(infeasible, hx_, h_hi)
        side = xp.where(feasible, one, xp.where(infeasible, -one, side))
        return i + 1, lo, h_lo, hi, h_hi, side

    # a traced program (jax.jit) runs this as its back end's loop, which also stops once every
    # state is done (the steps after that change nothing), not as FEASIBLE_ITER unrolled steps
    lo = B.while_loop(more, illinois, (0, lo, h_lo, hi, h_hi, xp.zeros_like(t)), xp)[1]
    return xp.where(active, lo, t)


def _eigen_result(
    old_mean: Array,
    old_cov: Array,
    root: RootTerms,
    basis: Array,
    diag: bool,
    xp: Any,
) -> tuple[Array, Array]:
    """The projected policy at ``t`` built in the generalised eigenbasis (float64; detached
    inputs, no gradient).

    ``μ̃ = μ_o + V m`` and ``Σ̃ = V diag(b/ν) Vᵀ`` with ``m_i = t λ_i z_i / ν_i`` and
    ``x_i = b/ν_i - 1 = ((b - 1) - t (λ_i - 1)) / ν_i`` (docs/math.md §3.8; ``V = L_o U``, ``U``
    orthogonal, ``V Vᵀ = L_o L_oᵀ``): whitened by ``L_o`` the result has exactly the
    eigenvalues ``b/ν_i`` and the mean offset ``m`` that
    :func:`trpl_math.projections._kl_solver.joint_curve` measures, so the KL of the returned
    matrices is the curve's value at the root ``t`` up to their rounding (and to that of ``L_o``),
    whatever the accuracy of ``U``; ``log|Σ̃| = log|L_o L_oᵀ| + Σ log(b/ν_i)``, so ``H(π̃) = β``
    where the entropy binds, with the same ``log|Σ_o|`` that fixed ``b``. Near the old policy
    (``max |x_i| ≤`` :data:`NEAR_X`) the same matrix is formed as ``Σ_o + V diag(x) Vᵀ``,
    whose rounding error scales with ``x`` (the product's, ~``d u``, would be ~``2 d u / |x|``
    of the KL).

    Shapes: ``old_mean (..., d)``; ``old_cov (..., d, d)`` (``(..., d)`` diagonal, then ``basis``
    is ``(..., d)`` standard deviations); ``basis (..., d, d)``; ``root``'s ``x, r, m (..., d)``
    (:func:`_root_terms`) -> ``((..., d), old_cov's shape)``.
    """
    x, r, m = root.x, root.r, root.m
    old_mean, old_cov = xp.astype(old_mean, xp.float64), xp.astype(old_cov, xp.float64)
    if diag:  # V = diag(σ_o)
        return old_mean + basis * m, old_cov * r
    mean = old_mean + xp.sum(basis * m[..., None, :], axis=-1)
    near = xp.max(xp.abs(x), axis=-1) <= NEAR_X
    if not B.any_true(near, xp):
        return mean, B.sym((basis * r[..., None, :]) @ B.mT(basis))
    difference = old_cov + (basis * x[..., None, :]) @ B.mT(basis)
    if B.all_true(near, xp):
        return mean, B.sym(difference)
    product = (basis * r[..., None, :]) @ B.mT(basis)
    return mean, B.sym(xp.where(near[..., None, None], difference, product))


def _implicit_graph(
    pencil: Pencil,
    old_mean: Array,
    diff: Array,
    eps: Array,
    beta: Array | None,
    log_det: Array,
    old_log_det: Array,
    root: RootTerms,
    basis: Array,
    solve: Array | None,
    diag: bool,
    xp: Any,
) -> tuple[Array, Array]:
    """The differentiable result whose gradient is the implicit one (docs/math.md §4.3);
    ``solve`` masks the states solved (``None``: all of them).

    One evaluation of the precision interpolation at the root ``η* = (1 - t)/t`` (θ-gradients
    at fixed η) plus the first-order term ``d(out)/dη · (η - η*)`` with ``d(out)/dη`` constant
    (from the eigenbasis) and ``η`` from one implicit Newton step. Its value equals the
    eigenbasis result only to the accuracy of the pencil (it is replaced by
    :func:`_eigen_result` in the forward pass); its gradient is the one of the KKT system.

    Shapes: as :func:`kl_joint_projection`'s, batch ``(...)``.
    """
    d, ex = root.x.shape[-1], pencil.ex
    t, dkl_dt, b = root.t, root.dkl_dt, root.b
    ent_active = b > 1.0
    dtype = pencil.cov.dtype
    eta_c = B.stop_gradient(xp.astype((1.0 - t) / t, dtype), xp)
    deta = xp.astype(-t * t * dkl_dt, dtype)
    interp = pencil.interpolate(eta_c, diff)
    a = 1.0 + eta_c
    log_a = None if diag else xp.log1p(eta_c)  # only the full form of f needs it
    # where no entropy bound binds a stays 1 + η (unless β asks for its gradient, 0 then)
    if beta is not None and (B.any_true(ent_active, xp) or B.backend(xp).needs_grad(beta)):
        # a such that H(π̃) = β exactly: d log a = 2β - d log 2πe - log|Σ_o| + log|K| - log|Σ|.
        target = 2.0 * beta - d * _LOG_2PIE
        log_a_ent = (target - old_log_det + interp.logdet_k - log_det) / d
        a = B.select(ent_active, xp.exp(log_a_ent), a, xp)
        if log_a is not None:
            log_a = B.select(ent_active, log_a_ent, log_a, xp)
    cov_t = a[ex] * interp.cov
    # only its gradient is used: no factor of cov_t needed (Pencil.kl_interpolated)
    f = pencil.kl_interpolated(interp, cov_t, a, log_a, log_det) - eps
    mean_t = old_mean + interp.mean_offset
    if solve is None:  # every state solved
        eta = eta_c - f / B.stop_gradient(deta, xp)
    else:
        safe = B.stop_gradient(xp.where(solve, deta, xp.ones_like(deta)), xp)
        eta = xp.where(solve, eta_c - f / safe, xp.zeros_like(eta_c))
    step = eta - eta_c
    dmean, dcov = _eta_derivative(root.ds, root.dm, basis, diag, xp)
    mean_t = mean_t + xp.astype(dmean, mean_t.dtype) * step[..., None]
    cov_t = cov_t + xp.astype(dcov, dtype) * step[ex]
    return mean_t, cov_t


def _eta_path(lam: Array, z: Array, t: Array, b: Array, xp: Any) -> tuple[Array, Array]:
    """The eigenbasis coordinates ``(ds, dm)`` of ``dΣ̃/dη`` and ``dμ̃/dη`` along the solution
    path (entropy constraint kept tight where it binds, ``b > 1``).

    In the eigenbasis ``V``: ``Σ̃ = V diag(a/(η+λ)) Vᵀ``, ``μ̃ = μ_o + V m``,
    ``m_i = λ_i z_i/(η+λ_i)``; with ``η + λ = ν/t`` and ``a = b/t``:
    ``ds_i = d(a/(η+λ_i))/dη = a' t/ν_i - b t/ν_i²`` (``a' = 1``, or ``a mean_j(t/ν_j)`` when the
    entropy bound is tight) and ``dm_i = -λ_i z_i t²/ν_i²``. Float64, no gradient.
    Shapes: ``lam, z (..., d)``, ``t, b (...)`` -> ``(..., d)`` each.
    """
    tt = t[..., None]
    nu = 1.0 + tt * (lam - 1.0)
    a_prime = xp.where(b > 1.0, (b / t) * xp.mean(tt / nu, axis=-1), xp.ones_like(t))
    ds = a_prime[..., None] * tt / nu - b[..., None] * tt / (nu * nu)
    dm = -lam * z * tt * tt / (nu * nu)
    return ds, dm


def _eta_derivative(ds: Array, dm: Array, basis: Array, diag: bool, xp: Any) -> tuple[Array, Array]:
    """``dμ̃/dη = V dm`` and ``dΣ̃/dη = V diag(ds) Vᵀ`` from :func:`_eta_path`'s coordinates
    (``V = diag(σ_o)`` if ``diag``)."""
    if diag:
        return basis * dm, basis * basis * ds
    return xp.sum(basis * dm[..., None, :], axis=-1), (basis * ds[..., None, :]) @ B.mT(basis)


class Interpolated(NamedTuple):
    """``S = Σ_o (η Σ + Σ_o)⁻¹ Σ`` (so ``Σ̃ = a S``), ``μ̃ - μ_o`` and ``log|K|``; for full
    covariances also what :meth:`Pencil.kl_interpolated` needs: the Cholesky factor ``L_K`` of
    ``K = η Σ + Σ_o`` and ``v = K⁻¹ (μ - μ_o)`` (``None`` for diagonal ones, or without a
    mean)."""

    cov: Array
    mean_offset: Array | None
    logdet_k: Array
    chol_k: Array | None
    solved: Array | None


class Pencil:
    """A batch of covariance pairs (Σ, Σ_o) and the precision interpolations between them.

    ``Λ̃ = (η Λ_o + Λ)/a`` has covariance ``a Σ_o K⁻¹ Σ`` with ``K = η Σ + Σ_o``, and the natural
    mean interpolation ``q̃ = (η q_o + q)/a`` has mean ``μ_o + Σ_o K⁻¹ (μ - μ_o)`` (Eq. 11, 18),
    so one Cholesky factor of K serves both, without forming any precision matrix.
    """

    def __init__(
        self,
        cov: Array,
        old_cov: Array,
        chol: Array | None,
        old_chol: Array | None,
        diag: bool,
        xp: ModuleType,
    ) -> None:
        self.cov, self.old_cov, self.chol, self.old_chol = cov, old_cov, chol, old_chol
        self.diag, self.xp = diag, xp
        self.ex = (...,) + (None,) * (1 if diag else 2)

    def eigh(self, diff: Array) -> tuple[Array, Array, Array]:
        """``(λ, z, V)`` in float64, detached: generalised eigenvalues, the offset
        ``z = V⁻¹(μ - μ_o)`` and the basis ``V = L_o U`` (``Vᵀ Λ_o V = I``, ``Vᵀ Λ V = diag λ``);
        ``V`` is the vector of old standard deviations if diagonal."""
        xp = self.xp
        diff = B.as_f64(B.stop_gradient(diff, xp), xp)
        if self.diag:
            std = xp.sqrt(B.as_f64(B.stop_gradient(self.old_cov, xp), xp))
            lam = B.as_f64(B.stop_gradient(self.old_cov / self.cov, xp), xp)
            return lam, diff / std, std
        w = self._whitened_chol()
        evals, evecs = B.eigh(w @ B.mT(w), xp)
        old_chol = B.as_f64(B.stop_gradient(self.old_chol, xp), xp)
        white = B.solve_tril_vec(old_chol, diff, xp)
        return 1.0 / evals, xp.sum(evecs * white[..., :, None], axis=-2), old_chol @ evecs

    def _whitened_chol(self) -> Array:
        xp = self.xp
        chol = B.as_f64(B.stop_gradient(self.chol, xp), xp)
        old_chol = B.as_f64(B.stop_gradient(self.old_chol, xp), xp)
        return B.solve_tril(old_chol, chol, xp)  # L_o⁻¹ L: W Wᵀ = Σ_o^{-1/2}-whitened Σ

    def interpolate(self, eta: Array, diff: Array | None = None) -> Interpolated:
        """``Σ_o K⁻¹ Σ``, ``Σ_o K⁻¹ (μ - μ_o)`` (if ``diff``) and ``log|K|``, ``K = η Σ + Σ_o``."""
        xp = self.xp
        if self.diag:
            k = eta[..., None] * self.cov + self.old_cov
            offset = None if diff is None else self.old_cov * diff / k
            cov = self.old_cov * self.cov / k
            return Interpolated(cov, offset, xp.sum(xp.log(k), axis=-1), None, None)
        k = eta[..., None, None] * self.cov + self.old_cov
        chol_k = B.cholesky(k, xp, name="interpolated precision", check=False)
        left = B.solve_tril(chol_k, self.old_cov, xp)
        right = B.solve_tril(chol_k, self.cov, xp)
        offset = v = None
        if diff is not None:
            v = B.solve_tril(
                chol_k, B.solve_tril_vec(chol_k, diff, xp)[..., None], xp, transpose=True
            )[..., 0]
            offset = xp.sum(self.old_cov * v[..., None, :], axis=-1)
        logdet_k = B.logdet_from_chol(chol_k, xp)
        return Interpolated(B.sym(B.mT(left) @ right), offset, logdet_k, chol_k, v)

    def kl_interpolated(
        self, interp: Interpolated, cov_t: Array, a: Array, log_a: Array | None, log_det: Array
    ) -> Array:
        """``KL(N(μ_o + Σ_o v, a S) ‖ N(μ_o, Σ_o))`` of an interpolation (:meth:`interpolate`
        with a mean; ``cov_t = a S``) for the implicit-gradient graph of
        :func:`kl_joint_projection`, whose value is replaced (docs/math.md §4.3).

        Full covariances: from ``K`` alone, without a factor of ``a S``,
        ``½[vᵀ Σ_o v + a ‖L_K⁻¹ L‖_F² - d - d log a + log|K| - log|Σ|]``, since
        ``Σ_o⁻¹ S = K⁻¹ Σ`` and ``log|S| = log|Σ_o| - log|K| + log|Σ|``. Its terms cancel to the
        KL, which leaves the gradient a relative rounding error of ~``u/√ε`` (5e-12 at
        ``ε = 1e-8``). Diagonal ones: the sum of small terms ``½ Σ_i [(μ̃ - μ_o)_i²/σ²_o,i +
        φ(cov_t,i/σ²_o,i - 1)]``, which costs no factorisation either; the cancelling form would
        leave ~``u/ε`` there (5e-9 at ``ε = 1e-8``). Shapes: ``a, log_a, log_det (...)``
        (``log_a = log a``, only for full covariances; ``log_det = log|Σ|``) -> ``(...)``."""
        xp = self.xp
        if self.diag:
            offset = interp.mean_offset
            maha = xp.sum(offset * offset / self.old_cov, axis=-1)
            return 0.5 * maha + kl_cov_diag(cov_t, self.old_cov, xp)
        w = B.solve_tril(interp.chol_k, self.chol, xp)
        trace = xp.sum(xp.sum(w * w, axis=-1), axis=-1)
        maha = xp.sum(interp.mean_offset * interp.solved, axis=-1)
        d = int(self.cov.shape[-1])
        return 0.5 * (maha + a * trace - d - d * log_a + interp.logdet_k - log_det)

    def logdet(self, which: str) -> Array:
        """``log|Σ|`` (``which="cov"``) or ``log|Σ_o|`` (``"old_cov"``)."""
        xp = self.xp
        if self.diag:
            return xp.sum(xp.log(self.cov if which == "cov" else self.old_cov), axis=-1)
        return B.logdet_from_chol(self.chol if which == "cov" else self.old_chol, xp)
