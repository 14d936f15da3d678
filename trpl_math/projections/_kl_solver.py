"""Numerical core of the KL projections: O(d) constraint functions and a batched root finder.

Both KL projections interpolate precisions, ``Λ̃ = (η Λ_o + Λ) / a`` (Eq. 11 and 18). In the
generalised eigenbasis of the pair (whitened by the old covariance, rotated to diagonalise the
new precision, eigenvalues ``λ_i``), with ``t = 1/(1 + η) ∈ (0, 1]``:

* the whitened projected precision has eigenvalues ``ν_i / b`` with ``ν_i = 1 + t (λ_i - 1)``,
  ``b = t a`` (``b = 1`` without an entropy constraint);
* the whitened projected mean is ``m_i = t λ_i z_i / ν_i`` (``z``: the whitened, rotated
  ``μ - μ_o``);
* ``KL(π̃ ‖ π_o) = ½ Σ_i [φ(b/ν_i - 1) + m_i²]`` with ``φ(x) = x - log(1 + x)``.

Every evaluation is O(d) per state for the whole batch at once. The root in ``t`` is found by
Newton's method on ``log KL`` against ``log t`` (nearly linear: KL ≈ c t² for small t), kept
inside a bracket that it shrinks every step, with bisection as the fallback (docs/math.md §3.7,
"The route
to speed for KL").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import numpy as np

from trpl_math import _backend as B
from trpl_math._backend import Array
from trpl_math.divergences import x_minus_log1p

LOG_TOL = 1e-14  # converged where log KL(t) - log ε ∈ [-LOG_TOL, OVER_TOL] (relative error)
OVER_TOL = 3e-15  # the violating side's share of that band (~27 u), inside the fuzz's allowance
STEP_TOL = 3e-8  # a Newton step this small is final, where its predicted residual is small:
RESID_TOL = 1e-15  # ½ |g''| step² ≤ RESID_TOL, g'' the secant of g' over the last two iterates
MAX_ITER = 100


def newton_log(
    fun: Callable[[Array], tuple[Array, Array]],
    active: Array,
    xp: ModuleType,
    start: Array,
) -> Array:
    """Solve ``g(s) = 0`` for ``s = log t ≤ 0`` where ``g`` increases and ``g(0) > 0``.

    Args:
        fun: ``s -> (g(s), g'(s))``, each ``(...)``.
        active: ``(...)`` states to solve; the others return ``s = 0``.
        start: ``(...)`` first guesses ``≤ 0`` (float64); the bracket starts as ``(-∞, 0]``.

    Returns:
        ``(...)`` roots ``s``.
    """
    if xp is np:
        return _newton_log_numpy(fun, active, start)
    traced = getattr(B.backend(xp), "newton_log", None)  # a back end without Python loops
    if traced is not None:
        return traced(fun, active, start)
    s = xp.where(active, start, xp.zeros_like(start))
    like = start
    hi = xp.zeros_like(like)
    lo = xp.full_like(like, -math.inf)
    done = ~active
    s_prev = dg_prev = None
    for _ in range(MAX_ITER):
        g, dg = fun(s)
        g = xp.where(done, xp.zeros_like(g), g)
        done = done | ((g <= OVER_TOL) & (g >= -LOG_TOL))
        if bool(xp.all(done)):
            break
        pos = g > 0
        hi = xp.where(pos, s, hi)
        lo = xp.where(pos, lo, s)
        step = s - g / dg
        ok = xp.isfinite(step) & (step < hi) & (step > lo)
        fallback = xp.where(xp.isfinite(lo), 0.5 * (lo + hi), hi - 1.0)
        s_new = xp.where(done, s, xp.where(ok, step, fallback))
        # A Newton step below STEP_TOL leaves a residual ½ g'' step² (quadratic convergence):
        # accept it without spending another evaluation on confirming it, unless the curve is
        # so bent there that the residual would exceed RESID_TOL.
        ok = ok & (xp.abs(s_new - s) <= STEP_TOL)
        if s_prev is not None:
            ok = ok & _bent(s_new - s, s - s_prev, dg - dg_prev, xp)
        done = done | ok
        s_prev, dg_prev, s = s, dg, s_new
    return s


def _bent(step: Array, last: Array, ddg: Array, xp: ModuleType) -> Array:
    """Whether the Newton ``step`` leaves a predicted ``|g|`` of at most :data:`RESID_TOL`:
    ``½ |g''| step² ≤ RESID_TOL`` with ``g''`` the secant ``ddg / last`` of ``g'`` over the last
    move, multiplied out (no division: a state that did not move is accepted only where ``g'``
    did not change either). Shapes ``(...)``."""
    return xp.abs(ddg) * (step * step) <= (2.0 * RESID_TOL) * xp.abs(last)


def _newton_log_numpy(
    fun: Callable[[Array], tuple[Array, Array]], active: Array, start: Array
) -> Array:
    """:func:`newton_log` for plain NumPy arrays, the same iterates bit for bit, in fewer
    operations: masks and brackets updated in place, the bisection fallback formed only in an
    iteration where some Newton step leaves its bracket. On the small arrays of a training step
    each NumPy call costs ~1 µs whatever its size, and this loop is most of the diagonal KL
    projection's time (docs/performance.md)."""
    s = np.where(active, start, 0.0)
    hi = np.zeros_like(s)
    lo = np.full_like(s, -math.inf)
    done = np.logical_not(active)
    s_prev = dg_prev = None
    for _ in range(MAX_ITER):
        g, dg = fun(s)
        g = np.where(done, 0.0, g)
        done |= (g <= OVER_TOL) & (g >= -LOG_TOL)
        if done.all():
            break
        pos = g > 0
        np.copyto(hi, s, where=pos)
        np.copyto(lo, s, where=~pos)
        step = s - g / dg
        ok = np.isfinite(step)
        ok &= step < hi
        ok &= step > lo
        if not ok.all():
            fallback = np.where(np.isfinite(lo), 0.5 * (lo + hi), hi - 1.0)
            step = np.where(ok, step, fallback)
        s_new = np.where(done, s, step)
        # as in newton_log: a step below STEP_TOL is final where its residual is small
        step = s_new - s
        ok &= np.abs(step) <= STEP_TOL
        if s_prev is not None and ok.any():
            ok &= _bent(step, s - s_prev, dg - dg_prev, np)
        done |= ok
        s_prev, dg_prev, s = s, dg, s_new
    return s


def kl_cov_curve_numpy(lam: Array) -> Callable[[Array], tuple[Array, Array]]:
    """``t -> (KLcov(t), dKLcov/dt)`` of :func:`kl_cov_curve` for NumPy arrays ``lam (..., d)``,
    the same values bit for bit, with ``λ - 1`` formed once and the temporaries reused (and
    ``log ν`` only where ``ν ≥ 2``)."""
    dl = lam - 1.0

    def curve(t: Array) -> tuple[Array, Array]:
        u = t[..., None] * dl
        x = np.add(1.0, u)  # ν
        far = x >= 2.0
        log_nu = np.log1p(u[far]) if far.any() else None  # log ν where 1/ν ≤ ½
        np.divide(np.negative(u, out=u), x, out=x)  # 1/ν - 1 = -t(λ-1)/(1 + t(λ-1))
        log_r = np.log1p(x, out=u)
        if log_nu is not None:
            log_r[far] = -log_nu
        kl = np.subtract(x, log_r, out=u).sum(axis=-1)
        kl *= 0.5
        dkl = np.multiply(x, x, out=x).sum(axis=-1)
        dkl *= 0.5
        dkl /= t
        return kl, dkl

    return curve


def kl_cov_start(lam: Array, eps: Array, active: Array, xp: ModuleType) -> Array:
    """First guess ``s = log t`` for ``KLcov(t) = ε`` from the curve's expansion at ``t = 0``.

    With ``u_i = t(λ_i - 1)``, ``φ(1/ν_i - 1) = u_i²/2 - 2u_i³/3 + O(u⁴)``, so
    ``KLcov ≈ ¼ t² A (1 - (4/3) t B/A)`` with ``A = Σ(λ_i - 1)²``, ``B = Σ(λ_i - 1)³``; its
    Padé form ``¼ t² A / (1 + (4/3) t B/A) = ε`` is the quadratic
    ``(A/4) t² - c t - ε = 0``, ``c = (4/3) ε B/A``, whose positive root is taken without
    cancellation. Newton then needs 3-4 curve evaluations where the power law
    ``t = sqrt(ε / KLcov(1))`` needed 5-6 (docs/performance.md); the bracketed iteration does
    not depend on the guess for its result, only for its cost.

    Shapes: ``lam (..., d)``; eps, active ``(...)``. Returns ``(...)``, ``≤ 0``, finite
    (``0``, i.e. ``t = 1``, where the expansion overflows or the state is inactive).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # caught by the where
        dl = lam - 1.0
        dl2 = dl * dl
        a = xp.where(active, xp.sum(dl2, axis=-1), 1.0)
        c = (4.0 / 3.0) * eps * xp.sum(dl2 * dl, axis=-1) / a
        root = xp.sqrt(c * c + a * eps)
        t = xp.where(c > 0, (c + root) / (0.5 * a), (2.0 * eps) / (root - c))
        s = xp.log(t)
    return xp.where(active & xp.isfinite(s) & (s < 0.0), s, 0.0)


def joint_start(
    lam: Array,
    z: Array,
    eps: Array,
    active: Array,
    xp: ModuleType,
    log_b_min0: Array | None = None,
) -> Array:
    """First guess ``s = log t`` for the joint curve ``KL(t) = ε`` without an entropy bound
    (:func:`joint_curve`, ``b = 1``), from its expansion at ``t = 0``.

    With ``u_i = λ_i - 1``, ``KL(t) = P t² - Q t³ + O(t⁴)`` where ``P = ¼ Σ u_i² + ½ Σ λ_i² z_i²``
    and ``Q = ⅓ Σ u_i³ + Σ λ_i² z_i² u_i``; as in :func:`kl_cov_start`, the Padé form
    ``P t² / (1 + t Q/P) = ε`` is the quadratic ``P t² - c t - ε = 0``, ``c = ε Q/P``, whose
    positive root is taken without cancellation (Newton then needs two evaluations fewer than
    from the power law ``sqrt(ε / KL(1))``).

    With an entropy bound (``log_b_min0``, :func:`joint_curve`) the curve follows another branch
    where the bound binds, ``b = b₀ exp(L)``, ``L = mean_i log ν_i``, ``b₀ = exp(log_b_min0)``:
    there ``Σ_i log(b/ν_i) = d log b₀`` at every ``t``, so
    ``KL = ½ [b₀ e^L Σ_i 1/ν_i - d - d log b₀ + Σ_i m_i²] = K₀ + P_b t² + O(t³)`` with
    ``K₀ = ½ d φ(b₀ - 1)`` and ``P_b = ¼ b₀ Σ_i (u_i - ū)² + ½ Σ_i λ_i² z_i²``
    (``e^L Σ 1/ν_i = d (1 + ½ t² var(u) + O(t³))``). Where the bound binds at the start above,
    the start is ``t = sqrt((ε - K₀)/P_b)`` instead (10-14 curve evaluations of a batch whose
    old policies lie below the bound came down to 4-5, docs/performance.md). The bracketed
    iteration does not depend on the guess for its result, only for its cost.

    Shapes: ``lam, z (..., d)``; eps, active, log_b_min0 ``(...)``. Returns ``(...)``, ``≤ 0``,
    finite (``0``, i.e. ``t = 1``, where the expansion overflows or the state is inactive).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # caught by the where
        dl = lam - 1.0
        dl2 = dl * dl
        lz2 = (lam * z) ** 2
        p2 = xp.where(active, 0.25 * xp.sum(dl2, axis=-1) + 0.5 * xp.sum(lz2, axis=-1), 1.0)
        q3 = xp.sum(dl2 * dl, axis=-1) / 3.0 + xp.sum(lz2 * dl, axis=-1)
        c = eps * q3 / p2
        root = xp.sqrt(c * c + 4.0 * p2 * eps)
        t = xp.where(c > 0, (c + root) / (2.0 * p2), (2.0 * eps) / (root - c))
        if log_b_min0 is not None:
            b0 = xp.exp(log_b_min0)
            binds = log_b_min0 + xp.mean(xp.log1p(t[..., None] * dl), axis=-1) > 0
            k0 = 0.5 * lam.shape[-1] * x_minus_log1p(xp.expm1(log_b_min0), xp)
            dev = dl - xp.mean(dl, axis=-1, keepdims=True)
            pb = 0.25 * b0 * xp.sum(dev * dev, axis=-1) + 0.5 * xp.sum(lz2, axis=-1)
            t_bind = xp.sqrt((eps - k0) / pb)
            ok = binds & xp.isfinite(t_bind) & (t_bind > 0)
            t = xp.where(ok, t_bind, t)
        s = xp.log(t)
    return xp.where(active & xp.isfinite(s) & (s < 0.0), s, 0.0)


def kl_cov_root(lam: Array, eps: Array, active: Array, xp: ModuleType) -> Array:
    """``t ∈ (0, 1]`` of ``KLcov(t) = ε`` (:func:`solve_in_t` of :func:`kl_cov_curve`, from
    :func:`kl_cov_start`), through :func:`kl_cov_curve_numpy` when ``xp`` is NumPy; 1 where not
    ``active``. Shapes: ``lam (..., d)``, others ``(...)``."""
    start = kl_cov_start(lam, eps, active, xp)
    curve = kl_cov_curve_numpy(lam) if xp is np else (lambda t: kl_cov_curve(lam, t, xp))
    return solve_in_t(curve, eps, active, xp, start=start)


def kl_cov_curve(lam: Array, t: Array, xp: ModuleType) -> tuple[Array, Array]:
    """``KLcov(t)`` and ``dKLcov/dt`` of the covariance-only KL projection.

    ``KLcov = ½ Σ φ(1/ν_i - 1)``, ``dKLcov/dt = ½ Σ t (λ_i - 1)² / ν_i²`` (docs/math.md §3.7, in t).

    Args:
        lam: ``(..., d)`` generalised eigenvalues (of ``Σ_o^{1/2} Λ Σ_o^{1/2}``).
        t: ``(...)``.
    """
    tt = t[..., None]
    dl = lam - 1.0
    u = tt * dl
    nu = 1.0 + u
    x = -u / nu  # 1/ν - 1
    # Direct x - log1p(x): relative error ~ 2u/|x|, below 1e-11 for bounds >= 1e-8 (|x| >~ 1e-4);
    # the accurate series form would double the cost of every Newton step. Where 1/ν ≤ ½,
    # log(1/ν) = -log1p(t(λ-1)): log1p of x near -1 would amplify x's rounding by ν.
    far = nu >= 2.0
    log_r = xp.where(far, -xp.log1p(xp.where(far, u, 0.0)), xp.log1p(xp.where(far, 0.0, x)))
    kl = 0.5 * xp.sum(x - log_r, axis=-1)
    dkl = 0.5 * xp.sum(x * x, axis=-1) / t  # t (λ-1)²/ν² = x²/t
    return kl, dkl


def joint_curve(
    lam: Array, z: Array, t: Array, log_b_min0: Array | None, xp: ModuleType
) -> tuple[Array, Array, Array]:
    """``KL(π̃(t) ‖ π_o)``, its total derivative in ``t`` and ``b`` for the joint projection.

    With an entropy bound, ``b = max(1, b_min)``, ``log b_min = log_b_min0 + mean_i log ν_i``
    keeps ``H(π̃) ≥ β`` tight when it binds (``log_b_min0 = 2(β - H(π_o))/d``); the derivative
    follows ``b(t)`` (by the envelope theorem the dual's derivative is ``ε - KL``).

    Args:
        lam: ``(..., d)`` generalised eigenvalues; z: ``(..., d)`` whitened rotated mean offset.
        t: ``(...)``; log_b_min0: ``(...)`` or ``None`` (no entropy bound).

    Returns:
        ``(kl, dkl_dt, b)``, each ``(...)``.
    """
    tt = t[..., None]
    dl = lam - 1.0
    nu = 1.0 + tt * dl
    if log_b_min0 is None:
        # b = 1: x_i = b/ν_i - 1 = -t (λ_i - 1)/ν_i without cancellation, m_i = t λ_i z_i/ν_i,
        # dKL/dt = t Σ [½ ((λ_i - 1)/ν_i)² + (λ_i z_i/ν_i)²/ν_i]
        w = 1.0 / nu
        q = dl * w
        p = lam * z * w
        m = tt * p
        kl = 0.5 * xp.sum(x_minus_log1p(-tt * q, xp) + m * m, axis=-1)
        dkl = t * xp.sum(0.5 * q * q + p * p * w, axis=-1)
        return kl, dkl, xp.ones_like(t)
    m = tt * lam * z / nu
    dm = lam * z / (nu * nu)
    log_b = log_b_min0 + xp.mean(xp.log(nu), axis=-1)
    ent_active = log_b > 0
    b_minus_one = xp.expm1(xp.clip(log_b, 0.0, None))  # 0 where the entropy bound is slack
    b = 1.0 + b_minus_one
    db = xp.where(ent_active, b * xp.mean(dl / nu, axis=-1), 0.0)
    bb, dbb = b[..., None], db[..., None]
    x = (b_minus_one[..., None] - tt * dl) / nu  # b/ν - 1 without cancellation
    kl = 0.5 * xp.sum(x_minus_log1p(x, xp) + m * m, axis=-1)
    dkl = 0.5 * xp.sum(dbb / nu - bb * dl / (nu * nu) - dbb / bb + dl / nu + 2.0 * m * dm, axis=-1)
    return kl, dkl, b


def solve_in_t(
    curve: Callable[[Array], tuple[Array, Array]],
    eps: Array,
    active: Array,
    xp: ModuleType,
    kl_at_one: Array | None = None,
    *,
    start: Array | None = None,
) -> Array:
    """Root ``t ∈ (0, 1]`` of ``curve(t)[0] = eps`` for the ``active`` states (1 elsewhere).

    ``curve`` returns ``(KL(t), dKL/dt)`` with KL increasing in t and ``KL(1) > eps`` where
    active. Works in float64 whatever the input dtype. With ``kl_at_one`` (``KL(1)``) Newton
    starts from the power-law guess ``t = sqrt(eps / KL(1))`` (exact for KL ∝ t², the small-t
    limit), which saves two or three steps; with ``start`` (``log t ≤ 0`` per state, e.g.
    :func:`kl_cov_start`) from there; otherwise from ``t = 1``.
    """
    log_eps = xp.log(eps)
    if start is None and kl_at_one is None:
        start = xp.zeros_like(eps)
    elif start is None:
        start = xp.clip(0.5 * (log_eps - xp.log(xp.where(active, kl_at_one, eps))), None, 0.0)

    def fun(s: Array) -> tuple[Array, Array]:
        t = xp.exp(s)
        kl, dkl = curve(t)
        if xp is np:  # the same values, two temporaries fewer
            g = np.log(kl)
            g -= log_eps
            dg = t * dkl
            dg /= kl  # in place for arrays (a 0-d state gives NumPy scalars: rebound)
            return g, dg
        return xp.log(kl) - log_eps, t * dkl / kl

    # log(0) and 0/0 can occur for inactive states or underflowing trial points; the bracket
    # logic handles both (non-finite steps fall back to bisection), so silence NumPy about them.
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.exp(newton_log(fun, active, xp, start))
