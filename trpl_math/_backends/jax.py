"""The JAX back end: the functions of :mod:`trpl_math._backends.numpy`, traceable.

Everything here works under ``jax.jit`` and ``jax.vmap``: no data-dependent shapes (where NumPy
and torch project only the active states, this back end computes every state and selects with
``where``), no host transfers, and the Newton root finder runs as a ``lax.while_loop``. Custom
gradients:

* :func:`sqrtm_psd` — ``jax.custom_vjp`` with the Sylvester-equation backward of torch's
  ``SqrtmPSD`` (finite for repeated eigenvalues);
* :func:`x_minus_log1p` — ``jax.custom_jvp`` with the closed form ``x / (1 + x)``;
* :func:`kl_cov_projection` — ``jax.custom_vjp`` with the implicit gradients of the KL
  covariance projection (docs/math.md §4.2), the formulas of torch's ``KLCovProjection``.

Input checks need concrete values: under ``jax.jit`` call the functions inside
``trpl_math.no_validation()``. Imports only JAX and the core beneath it.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from trpl_math import _backend as B

Array = Any

autograd = True


def traced(x: Array) -> bool:
    """Whether ``x`` is abstract (inside ``jax.jit``, ``jax.vmap``, ...): no Python branching."""
    return isinstance(x, jax.core.Tracer)


def needs_grad(*arrays: Array) -> bool:
    """Always ``True``: under ``jax.grad`` every input may be differentiated, and a traced
    program cannot tell which."""
    return True


def stop_gradient(x: Array) -> Array:
    return lax.stop_gradient(x)


def cholesky(x: Array, *, name: str, check: bool) -> Array:
    L = jnp.linalg.cholesky(x)  # NaN where not positive definite
    if check and not traced(L) and bool(jnp.any(jnp.isnan(L))):
        raise ValueError(f"{name} is not positive definite")
    return L


def solve_tril(L: Array, b: Array, *, transpose: bool = False) -> Array:
    return lax.linalg.triangular_solve(L, b, left_side=True, lower=True, transpose_a=transpose)


def eigvalsh(x: Array) -> Array:
    return jnp.linalg.eigvalsh(x)


def eigh(x: Array) -> tuple[Array, Array]:
    return jnp.linalg.eigh(x)


def _mT(x: Array) -> Array:
    return jnp.swapaxes(x, -1, -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sqrtm_psd(x: Array, refine: bool = True) -> Array:
    return _sqrtm_fwd(x, refine)[0]


def _sqrtm_fwd(a: Array, refine: bool) -> tuple[Array, tuple[Array, Array]]:
    w, v = jnp.linalg.eigh(a)
    s = jnp.sqrt(jnp.clip(w, 0.0, None))
    if refine:
        root = v @ B.newton_root_core(_mT(v) @ a @ v, s, jnp) @ _mT(v)
    else:
        root = (v * s[..., None, :]) @ _mT(v)
    return 0.5 * (root + _mT(root)), (s, v)


def _sqrtm_bwd(refine: bool, res: tuple[Array, Array], grad: Array) -> tuple[Array]:
    s, v = res
    g = _mT(v) @ (0.5 * (grad + _mT(grad))) @ v
    denom = s[..., :, None] + s[..., None, :]
    g = g / jnp.clip(denom, jnp.finfo(s.dtype).tiny, None)
    return (v @ g @ _mT(v),)


sqrtm_psd.defvjp(_sqrtm_fwd, _sqrtm_bwd)


def to_host(xp: ModuleType, *arrays: Array) -> tuple[ModuleType, list[Array]]:
    return xp, [lax.stop_gradient(a) for a in arrays]


def from_host(x: Array, like: Array) -> Array:
    return x


@jax.custom_jvp
def _xml(x: Array) -> Array:
    from trpl_math.divergences import x_minus_log1p_values

    return x_minus_log1p_values(x, jnp)


@_xml.defjvp
def _xml_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    (x,), (dx,) = primals, tangents
    return _xml(x), dx * x / (1.0 + x)


def x_minus_log1p(x: Array, xp: ModuleType) -> Array:
    return _xml(x)


def while_loop(cond: Any, body: Any, state: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`trpl_math._backend.while_loop` under tracing: ``lax.while_loop``."""
    return lax.while_loop(lambda st: jnp.asarray(cond(st)), body, state)


def newton_log(fun: Any, active: Array, start: Array) -> Array:
    """:func:`trpl_math.projections._kl_solver.newton_log` as a ``lax.while_loop`` (the same
    steps; finished states stay fixed while the others iterate)."""
    from trpl_math.projections._kl_solver import LOG_TOL, MAX_ITER, OVER_TOL, RESID_TOL, STEP_TOL

    s0 = jnp.where(active, start, jnp.zeros_like(start))
    hi0, lo0 = jnp.zeros_like(start), jnp.full_like(start, -math.inf)
    nan = jnp.full_like(start, math.nan)

    def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
        i, s, hi, lo, done, _, s_prev, dg_prev = state
        g, dg = fun(s)
        g = jnp.where(done, jnp.zeros_like(g), g)
        done = done | ((g <= OVER_TOL) & (g >= -LOG_TOL))
        pos = g > 0
        hi = jnp.where(pos, s, hi)
        lo = jnp.where(pos, lo, s)
        step = s - g / dg
        ok = jnp.isfinite(step) & (step < hi) & (step > lo)
        fallback = jnp.where(jnp.isfinite(lo), 0.5 * (lo + hi), hi - 1.0)
        s_new = jnp.where(done, s, jnp.where(ok, step, fallback))
        all_done = jnp.all(done)
        ok = ok & (jnp.abs(s_new - s) <= STEP_TOL)
        # as in newton_log: no secant on the first iteration (NaN), the step accepted there
        bent = jnp.abs(dg - dg_prev) * (s_new - s) ** 2 <= (2.0 * RESID_TOL) * jnp.abs(s - s_prev)
        ok = ok & ((i == 0) | bent)
        done = done | ok
        return i + 1, s_new, hi, lo, done, all_done, s, dg

    def cond(state: tuple[Any, ...]) -> Array:
        return (state[0] < MAX_ITER) & ~state[5]

    init = (0, s0, hi0, lo0, ~active, jnp.asarray(False), nan, nan)
    return lax.while_loop(cond, body, init)[1]


# --- the KL covariance projection -----------------------------------------------------------


def kl_cov_projection(
    cov: Array,
    old_cov: Array,
    eps: Array,
    diag: bool,
    xp: ModuleType,
    old_chol: Array | None = None,
) -> Array:
    """``old_chol`` is not used: under ``jit`` XLA computes the one Cholesky factor of
    ``old_cov`` once anyway (common subexpressions are merged), and passing it into the
    ``custom_vjp`` would add an input whose cotangent is always zero."""
    from trpl_math._backend import validation_enabled

    if not diag and validation_enabled():  # the checks of the NumPy path, outside custom_vjp
        cholesky(cov, name="cov", check=True)
    return _kl_cov(cov, old_cov, eps, diag)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _kl_cov(cov: Array, old_cov: Array, eps: Array, diag: bool) -> Array:
    return _kl_cov_fwd(cov, old_cov, eps, diag)[0]


def _kl_cov_fwd(cov: Array, old_cov: Array, eps: Array, diag: bool) -> tuple[Array, Any]:
    from trpl_math.projections.kl import kl_cov_eigen_projection

    if diag:  # elementwise for every state already
        sol = kl_cov_eigen_projection(cov, old_cov, eps, True, jnp)
        return sol.cov, (sol.basis, sol.lam, sol.nu, sol.t)
    return _kl_full_all_states(cov, old_cov, eps)


def _kl_full_all_states(cov: Array, old_cov: Array, eps: Array) -> tuple[Array, Any]:
    """``kl_cov_eigen_projection`` for full covariances, every state solved (``t = 1`` where
    inactive, which reproduces ``Σ``) and the input selected where inactive."""
    from trpl_math.divergences import kl_cov_whitened
    from trpl_math.projections._kl_solver import kl_cov_curve, solve_in_t
    from trpl_math.projections.kl import pencil_cov

    batch, d = tuple(eps.shape), int(cov.shape[-1])
    cov_f, old_f = (jnp.reshape(lax.stop_gradient(x), (-1, d, d)) for x in (cov, old_cov))
    eps_f = jnp.reshape(lax.stop_gradient(eps), (-1,))
    old_chol = jnp.linalg.cholesky(old_f)
    white = solve_tril(old_chol, jnp.linalg.cholesky(cov_f))
    kl_now = kl_cov_whitened(white, jnp)
    active = kl_now > eps_f
    ratio, rot = jnp.linalg.eigh(white @ _mT(white))
    basis = old_chol @ rot
    f64 = jnp.float64
    lam = 1.0 / jnp.asarray(ratio, dtype=f64)
    t = solve_in_t(
        lambda t: kl_cov_curve(lam, t, jnp),
        jnp.asarray(eps_f, dtype=f64),
        active,
        jnp,
        jnp.asarray(kl_now, dtype=f64),
    )
    t = jnp.where(active, t, 1.0)
    nu = 1.0 + t[..., None] * (lam - 1.0)
    proj = pencil_cov(old_f, basis, lam, nu, t, jnp)
    out = jnp.where(active[..., None, None], proj, cov_f)
    return jnp.reshape(out, (*batch, d, d)), (basis, old_chol, rot, lam, nu, t, active)


def _kl_cov_bwd(diag: bool, res: Any, grad: Array) -> tuple[Array, Array, Array]:
    if diag:
        from trpl_math.projections.kl import kl_cov_diag_grads

        std, lam, nu, t = res
        d = grad.shape[-1]
        flat = jnp.reshape(grad, (-1, d))
        g = kl_cov_diag_grads(flat, std, lam, nu, t, jnp)
        shapes = (grad.shape, grad.shape, grad.shape[:-1])
        return tuple(  # type: ignore[return-value]
            jnp.reshape(jnp.asarray(x, dtype=grad.dtype), s) for x, s in zip(g, shapes, strict=True)
        )
    basis, old_chol, rot, lam, nu, t, active = res
    d = grad.shape[-1]
    flat = jnp.reshape(grad, (-1, d, d))
    g_cov, g_old, g_eps = _full_grads(flat, basis, old_chol, rot, lam, nu, t, active)
    return (
        jnp.reshape(g_cov, grad.shape),
        jnp.reshape(g_old, grad.shape),
        jnp.reshape(g_eps, grad.shape[:-2]),
    )


_kl_cov.defvjp(_kl_cov_fwd, _kl_cov_bwd)


def _full_grads(
    grad: Array,
    basis: Array,
    old_chol: Array,
    rot: Array,
    lam: Array,
    nu: Array,
    t: Array,
    active: Array,
) -> tuple[Array, Array, Array]:
    """torch's ``KLCovProjection._active_grads`` for every state; identity where inactive
    (``∂L/∂Σ_o`` always: a ``custom_vjp`` returns a cotangent for every input)."""
    dt = grad.dtype
    lam, nu, t = (jnp.asarray(x, dtype=dt) for x in (lam, nu, t))
    eta1 = (1.0 / t)[..., None]  # η + 1
    eta = eta1 - 1.0
    r = 0.5 * (1.0 / nu**2 - 1.0 / nu)
    f_eta = -jnp.sum(r * (1.0 - nu), axis=-1, keepdims=True) / eta1
    f_eta = jnp.where(active[..., None], f_eta, -1.0)  # 0 where inactive: keep it finite
    g_sym = 0.5 * (grad + _mT(grad))
    g_hat = _mT(basis) @ g_sym @ basis
    g_diag = jnp.diagonal(g_hat, axis1=-2, axis2=-1)
    c = -jnp.sum(g_diag * (1.0 - nu) / nu**2, axis=-1, keepdims=True) / eta1
    k = c / f_eta
    eye = jnp.eye(nu.shape[-1], dtype=dt)
    p_hat = g_hat / (nu[..., :, None] * nu[..., None, :])
    m_hat = (p_hat - (k * r)[..., None] * eye) / eta1[..., None]
    inv_t = solve_tril(old_chol, rot, transpose=True)  # V⁻ᵀ = L_o⁻ᵀ U, U orthogonal

    def back(x: Array) -> Array:  # V⁻ᵀ x V⁻¹
        return inv_t @ x @ _mT(inv_t)

    g_cov = back(lam[..., :, None] * m_hat * lam[..., None, :])
    d_old = eta[..., None] * m_hat - (k * 0.5 * (1.0 - 1.0 / nu))[..., None] * eye
    g_old = back(d_old)
    sel = active[..., None, None]
    g_cov = jnp.where(sel, 0.5 * (g_cov + _mT(g_cov)), grad)
    g_old = jnp.where(sel, 0.5 * (g_old + _mT(g_old)), 0.0)
    return g_cov, g_old, jnp.where(active, k[..., 0], 0.0)
