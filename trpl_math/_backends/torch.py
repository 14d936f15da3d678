"""The torch back end: non-standard linear algebra, host transfers and hand-written gradients.

The functions of :mod:`trpl_math._backends.numpy` (same contracts), with torch's
``cholesky_ex`` (a failure flag without an exception), ``solve_triangular``, NumPy views of CPU
tensors for the tiny Newton loops, and these ``torch.autograd.Function`` s:

* :class:`SqrtmPSD` — matrix square root whose gradient solves the Sylvester equation in the
  eigenbasis (finite for repeated eigenvalues, unlike a generic ``eigh`` backward).
* :class:`KLCovProjection` — the KL covariance projection (Eq. 10-11). Forward: the array code
  of :mod:`trpl_math.projections.kl` (one generalised eigendecomposition, O(d) Newton steps).
  Backward: the implicit-function gradient of the KKT system written out in the generalised
  eigenbasis ``V`` (``Vᵀ Λ_o V = I``, ``Vᵀ Λ V = diag λ``) where Σ, Σ_o, Σ̃ and both precisions
  are diagonal, so it costs a handful of matrix products and never divides by eigenvalue gaps.
* :class:`KLDiagProjection` — the whole diagonal KL projection (mean and variances, Eq. 6 and
  10-11) of CPU tensors as one node: one host transfer, the closed form and the Newton root in
  float64 NumPy, the hand-written gradients of both parts (what a small batch pays is per-call
  overhead, docs/performance.md).

Derivation (per active state, ``G = ∂L/∂Σ̃``, ``Ĝ = Vᵀ G V``, ``ν_i = (η + λ_i)/(η + 1)``):
``Σ̃ = V diag(1/ν) Vᵀ``; with ``P̂ = Ĝ / (ν_i ν_j)``, ``r_i = ½(1/ν_i² - 1/ν_i)``,
``c = -Σ_i Ĝ_ii (1 - ν_i) / (ν_i² (η+1))`` (the coefficient of dη in ⟨G, dΣ̃⟩),
``f_η = -Σ_i r_i (1 - ν_i)/(η+1)`` (= ∂KLcov/∂η) and
``M̂ = (P̂ - (c/f_η) diag r)/(η+1)``:

    ∂L/∂Σ   = V⁻ᵀ (λ_i M̂_ij λ_j) V⁻¹
    ∂L/∂Σ_o = V⁻ᵀ (η M̂ - (c/f_η) ½ diag(1 - 1/ν)) V⁻¹
    ∂L/∂ε   = c / f_η

Inactive states pass the gradient through unchanged (identity).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

from trpl_math import _backend as B
from trpl_math.projections.kl import (
    diag_cov_host,
    diag_mean_grads,
    diag_mean_host,
    kl_cov_diag_grads,
)
from trpl_math.types import Gaussian

Array = Any

autograd = True


def traced(x: Array) -> bool:
    return False


def needs_grad(*arrays: Array) -> bool:
    """Whether autograd records operations on any of ``arrays`` (grad mode on and one of them
    requires grad)."""
    return torch.is_grad_enabled() and any(a.requires_grad for a in arrays)


def stop_gradient(x: Array) -> Array:
    return x.detach()


def cholesky(x: Array, *, name: str, check: bool) -> Array:
    L, info = torch.linalg.cholesky_ex(x)
    if check and bool((info != 0).any()):
        bad = torch.nonzero(info.reshape(-1) != 0)[0].item()
        raise ValueError(
            f"{name} is not positive definite (first failing matrix at flat batch index {bad})"
        )
    return L


def solve_tril(L: Array, b: Array, *, transpose: bool = False) -> Array:
    if transpose:
        return torch.linalg.solve_triangular(L.mT, b, upper=True)
    return torch.linalg.solve_triangular(L, b, upper=False)


def eigvalsh(x: Array) -> Array:
    return torch.linalg.eigvalsh(x)


def eigh(x: Array) -> tuple[Array, Array]:
    return torch.linalg.eigh(x)


def sqrtm_psd(x: Array, refine: bool = True) -> Array:
    """Newton-refined unless ``refine`` is false. With a backward that solves the Sylvester
    equation ``S dS + dS S = dA`` in the eigenbasis, ``dA' = dS' / (s_i + s_j)``, finite when
    eigenvalues repeat (the generic ``eigh`` backward divides by their differences and gives NaN
    there)."""
    return SqrtmPSD.apply(x, refine)


def to_host(xp: ModuleType, *arrays: Array) -> tuple[ModuleType, list[Array]]:
    """CPU tensors become NumPy views and the namespace plain ``numpy`` (its per-operation
    overhead is a fraction of torch's, which dominates the O(d) Newton iterations on small
    batches); tensors on other devices stay, detached."""
    if all(a.device.type == "cpu" for a in arrays):
        return np, [a.detach().numpy() for a in arrays]
    return xp, [a.detach() for a in arrays]


def from_host(x: Array, like: Array) -> Array:
    if isinstance(x, np.ndarray | np.generic):  # NumPy gives scalars for 0-d
        return torch.as_tensor(np.asarray(x), device=like.device)
    return x


def x_minus_log1p(x: Array, xp: ModuleType) -> Array:
    return XMinusLog1p.apply(x)


def kl_cov_projection(
    cov: Array,
    old_cov: Array,
    eps: Array,
    diag: bool,
    xp: ModuleType,
    old_chol: Array | None = None,
) -> Array:
    return KLCovProjection.apply(
        cov, old_cov, eps, diag, None if old_chol is None else old_chol.detach()
    )


_FUSED_DTYPES = (torch.float32, torch.float64)


def fits_kl_diag(mean: Any, var: Any, old_mean: Any, old_var: Any, eps_m: Any, eps_c: Any) -> bool:
    """Whether :func:`kl_diag_projection` takes these arguments: four CPU tensors of one
    floating dtype (float32 or float64), each at least 1-D with one last dimension, batch
    shapes that broadcast, bounds Python numbers or real CPU tensors that broadcast too.
    (Checked attribute by attribute in their cheapest form: this runs on every call.)"""
    arrays = (mean, var, old_mean, old_var)
    tensor, strided = torch.Tensor, torch.strided
    dtype = getattr(mean, "dtype", None)
    if dtype not in _FUSED_DTYPES:
        return False
    d = mean.shape[-1] if mean.ndim else -1
    for x in arrays:
        if not isinstance(x, tensor) or x.dtype != dtype or not x.is_cpu:
            return False
        if x.layout is not strided or x.ndim < 1 or x.shape[-1] != d:
            return False
    shapes = [x.shape[:-1] for x in arrays]
    for e in (eps_m, eps_c):
        if isinstance(e, tensor):
            if not e.is_cpu or e.is_complex() or e.dtype == torch.bool:
                return False
            shapes.append(e.shape)
        elif isinstance(e, bool) or not isinstance(e, int | float):
            return False
    batch = _broadcast(shapes[:4])
    return batch is not None and _broadcast([batch, *shapes[4:]]) == batch


def _broadcast(shapes: list[Any]) -> tuple[int, ...] | None:
    """The broadcast of ``shapes`` (``None`` if they do not broadcast); equal shapes fast."""
    first = tuple(shapes[0])
    if all(tuple(x) == first for x in shapes[1:]):
        return first
    try:
        return tuple(np.broadcast_shapes(*(tuple(x) for x in shapes)))
    except ValueError:
        return None


def kl_diag_projection(
    mean: Any, var: Any, old_mean: Any, old_var: Any, eps_m: Any, eps_c: Any
) -> Gaussian:
    """The diagonal KL projection (Eq. 6, 10-11) as one autograd node (:class:`KLDiagProjection`),
    for arguments that :func:`fits_kl_diag`; results as ``kl_projection(..., diag=True)``."""
    proj_mean, proj_var = KLDiagProjection.apply(mean, var, old_mean, old_var, eps_m, eps_c)
    return Gaussian(proj_mean, proj_var)


def _sum_to(g: Any, shape: tuple[int, ...], hx: Any) -> Any:
    """``g`` summed over the axes that broadcasting added to an array of ``shape``."""
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = hx.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return hx.sum(g, axis=axes, keepdims=True) if axes else g


def _to_tensor(x: Any, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A CPU tensor of ``dtype`` and ``shape`` (broadcast, materialised) holding the host array
    ``x`` (which it may share: ``x`` must be a fresh array that nothing else writes)."""
    if tuple(x.shape) != shape:
        x = np.broadcast_to(x, shape)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=_NP_DTYPE[dtype]))


_NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}


class KLDiagProjection(torch.autograd.Function):
    """``(μ, σ², μ_o, σ_o², ε_μ, ε_Σ) -> (μ̃, σ̃²)`` of the diagonal KL projection in one node.

    Forward: one host transfer, then :func:`~trpl_math.projections.kl.diag_mean_host` (Eq. 6)
    and :func:`~trpl_math.projections.kl.diag_cov_host` (Eq. 11, the Newton root in ``t``) in
    float64 NumPy, each at the broadcast batch shape of its own inputs (a covariance shared by
    the batch is solved once). Backward: the closed forms
    :func:`~trpl_math.projections.kl.diag_mean_grads` and the implicit gradient
    :func:`~trpl_math.projections.kl.kl_cov_diag_grads` (docs/math.md §4.2), summed back to each
    input's shape. A small batch so pays one node instead of ~45 torch operations forward and
    ~28 backward (docs/performance.md).
    """

    @staticmethod
    def forward(
        ctx: Any,
        mean: torch.Tensor,
        var: torch.Tensor,
        old_mean: torch.Tensor,
        old_var: torch.Tensor,
        eps_m: Any,
        eps_c: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hx, host = B.to_host(_namespace(), mean, var, old_mean, old_var)
        m, v, om, ov = (hx.asarray(x, dtype=hx.float64) for x in host)
        e_m, e_c = (_host64_in(e, hx) for e in (eps_m, eps_c))
        d = int(mean.shape[-1])
        batch = _broadcast([x.shape[:-1] for x in (m, v, om, ov)])
        msol = diag_mean_host(m, om, ov, e_m, hx)
        csol = diag_cov_host(v, ov, e_c, hx)
        ctx.hx, ctx.msol, ctx.csol, ctx.ov, ctx.e_m = hx, msol, csol, ov, e_m
        ctx.shapes = [tuple(x.shape) for x in (mean, var, old_mean, old_var)]
        ctx.eps_shapes = [
            tuple(e.shape) if isinstance(e, torch.Tensor) else None for e in (eps_m, eps_c)
        ]
        ctx.eps_dtypes = [e.dtype if isinstance(e, torch.Tensor) else None for e in (eps_m, eps_c)]
        ctx.dtype = mean.dtype
        full = (*batch, d)
        return _to_tensor(msol.mean, mean.dtype, full), _to_tensor(csol.cov, mean.dtype, full)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_mean: torch.Tensor, g_var: torch.Tensor) -> tuple[Any, ...]:
        hx, msol, csol, ov = ctx.hx, ctx.msol, ctx.csol, ctx.ov
        n_mean, n_var, n_old_mean, n_old_var, n_em, n_ec = ctx.needs_input_grad
        s_mean, s_var, s_old_mean, s_old_var = ctx.shapes
        _, (gm, gv) = B.to_host(_namespace(), g_mean, g_var)
        out: list[Any] = [None] * 6
        g_ov = None
        if n_mean or n_old_mean or n_old_var or n_em:
            gm = _sum_to(hx.asarray(gm, dtype=hx.float64), tuple(msol.mean.shape), hx)  # linear
            need = (n_old_mean, n_old_var, n_em)
            g_m, g_om, g_ov, g_em = diag_mean_grads(gm, msol, ov, ctx.e_m, hx, need)
            out[0], out[2] = (
                _grad_out(g_m, s_mean, ctx.dtype, hx),
                _grad_out(g_om, s_old_mean, ctx.dtype, hx),
            )
            out[4] = _grad_out(g_em, ctx.eps_shapes[0], ctx.eps_dtypes[0], hx)
        if n_var or n_old_var or n_ec:
            # linear in the upstream gradient: sum the copies of a shared covariance first
            gv = _sum_to(hx.asarray(gv, dtype=hx.float64), tuple(csol.cov.shape), hx)
            g_v, g_ov_c, g_ec = kl_cov_diag_grads(
                gv, csol.std, csol.lam, csol.nu, csol.t, hx, need_old=n_old_var, need_eps=n_ec
            )
            out[1] = _grad_out(g_v, s_var, ctx.dtype, hx) if n_var else None
            out[5] = _grad_out(g_ec, ctx.eps_shapes[1], ctx.eps_dtypes[1], hx)
            if g_ov_c is not None:
                g_ov = (
                    g_ov_c
                    if g_ov is None
                    else _sum_to(g_ov, s_old_var, hx) + _sum_to(g_ov_c, s_old_var, hx)
                )
        out[3] = _grad_out(g_ov, s_old_var, ctx.dtype, hx)
        return tuple(out)


def _grad_out(g: Any, shape: tuple[int, ...] | None, dtype: Any, hx: Any) -> torch.Tensor | None:
    """A host gradient summed to ``shape`` as a CPU tensor of ``dtype`` (``None`` for ``None``,
    a bound given as a number or a non-floating tensor)."""
    if g is None or shape is None or not dtype.is_floating_point:
        return None
    g = _sum_to(g, shape, hx)
    return torch.from_numpy(np.ascontiguousarray(g, dtype=_NP_DTYPE.get(dtype, np.float64))).to(
        dtype
    )


def _host64_in(e: Any, hx: Any) -> Any:
    """A bound as float64 on the host: a NumPy array for a tensor, else a Python float."""
    if isinstance(e, torch.Tensor):
        return hx.asarray(B.to_host(_namespace(), e)[1][0], dtype=hx.float64)
    return float(e)


_XP: list[ModuleType] = []


def _namespace() -> ModuleType:
    """The array namespace of torch tensors (looked up once: it costs microseconds a call)."""
    if not _XP:
        _XP.append(B.namespace(torch.zeros(())))
    return _XP[0]


class SqrtmPSD(torch.autograd.Function):
    """Symmetric square root of SPD matrices with a Sylvester-equation backward."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, refine: bool) -> torch.Tensor:
        w, v = torch.linalg.eigh(a)
        s = w.clamp_min(0).sqrt()
        ctx.save_for_backward(s, v)
        vt = v.mT.contiguous()
        if refine:
            root = v @ B.newton_root_core(vt @ a @ v, s, B.namespace(a)) @ vt
        else:
            root = (v * s.unsqueeze(-2)) @ vt
        return 0.5 * (root + root.mT)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        s, v = ctx.saved_tensors
        g = v.mT @ (0.5 * (grad + grad.mT)) @ v
        denom = s.unsqueeze(-1) + s.unsqueeze(-2)
        g = g / denom.clamp_min(torch.finfo(s.dtype).tiny)
        return v @ g @ v.mT.contiguous(), None


class XMinusLog1p(torch.autograd.Function):
    """``φ(x) = x - log(1 + x)`` elementwise with the gradient ``φ'(x) = x / (1 + x)``.

    The value is the series/direct evaluation of :func:`trpl_math.divergences.x_minus_log1p`,
    computed on the host namespace (NumPy for CPU tensors, whose per-operation cost is far lower
    on the small arrays of a training step); the backward is one differentiable expression, so
    higher derivatives work too.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        from trpl_math.divergences import x_minus_log1p_values

        hx, (xh,) = to_host(B.namespace(x), x)
        ctx.save_for_backward(x)
        return torch.as_tensor(x_minus_log1p_values(xh, hx), device=x.device)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * x / (1.0 + x)


class KLCovProjection(torch.autograd.Function):
    """``(cov, old_cov, eps) -> projected cov`` of the KL projection, implicit gradients (a
    factor ``L_o`` of ``old_cov`` the caller has taken already may come along, as a constant)."""

    @staticmethod
    def forward(
        ctx: Any,
        cov: torch.Tensor,
        old_cov: torch.Tensor,
        eps: torch.Tensor,
        diag: bool,
        old_chol: torch.Tensor | None,
    ) -> torch.Tensor:
        from trpl_math.projections.kl import kl_cov_eigen_projection

        sol = kl_cov_eigen_projection(cov, old_cov, eps, diag, B.namespace(cov), old_chol)
        ctx.diag = diag
        ctx.save_for_backward(sol.index, sol.basis, sol.old_chol, sol.rot, sol.lam, sol.nu, sol.t)
        return sol.cov

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        index, basis, old_chol, rot, lam, nu, t = ctx.saved_tensors
        need_cov, need_old, need_eps = ctx.needs_input_grad[:3]
        diag = ctx.diag
        event = grad.shape[-1:] if diag else grad.shape[-2:]
        batch = grad.shape[: grad.ndim - len(event)]
        flat = grad.reshape(-1, *event)
        if diag:  # every state was solved; t == 1 marks the inactive ones (identity)
            xp = B.namespace(grad)
            hx, host = to_host(xp, flat, basis, lam, nu, t)
            grads = kl_cov_diag_grads(*host, hx, need_old=need_old, need_eps=need_eps)
            return (
                *(
                    None if g is None else from_host(g, grad).to(grad.dtype).reshape(shape)
                    for g, shape in zip(grads, (grad.shape, grad.shape, batch), strict=True)
                ),
                None,
                None,
            )
        n = int(index.shape[0])
        if n == flat.shape[0]:  # every state active: no gather, no scatter
            g_cov, g_old, g_eps = KLCovProjection._active_grads(
                flat, basis, old_chol, rot, lam, nu, t, need_old
            )
        else:
            g_cov = flat.clone()
            g_old = torch.zeros_like(flat) if need_old else None
            g_eps = flat.new_zeros(flat.shape[0])
            if n:
                a_cov, a_old, a_eps = KLCovProjection._active_grads(
                    flat[index], basis, old_chol, rot, lam, nu, t, need_old
                )
                g_cov[index], g_eps[index] = a_cov, a_eps
                if need_old:
                    g_old[index] = a_old
        return (
            g_cov.reshape(grad.shape) if need_cov else None,
            g_old.reshape(grad.shape) if need_old else None,
            g_eps.reshape(batch) if need_eps else None,
            None,
            None,
        )

    @staticmethod
    def _active_grads(
        grad: torch.Tensor,
        basis: torch.Tensor,
        old_chol: torch.Tensor,
        rot: torch.Tensor,
        lam: torch.Tensor,
        nu: torch.Tensor,
        t: torch.Tensor,
        need_old: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Gradients for the active states of full covariances (arrays hold only those);
        ``∂L/∂Σ_o`` only with ``need_old`` (else ``None``)."""
        dt = grad.dtype
        lam, nu, t = lam.to(dt), nu.to(dt), t.to(dt)
        eta1 = (1.0 / t).unsqueeze(-1)  # η + 1
        eta = eta1 - 1.0
        r = 0.5 * (1.0 / nu**2 - 1.0 / nu)
        f_eta = -(r * (1.0 - nu)).sum(-1, keepdim=True) / eta1
        g_sym = 0.5 * (grad + grad.mT)
        g_hat = basis.mT.contiguous() @ g_sym @ basis  # V = L_o U
        g_diag = torch.diagonal(g_hat, dim1=-2, dim2=-1)
        c = -(g_diag * (1.0 - nu) / nu**2).sum(-1, keepdim=True) / eta1
        k = c / f_eta
        eye = torch.diag_embed(torch.ones_like(nu))
        p_hat = g_hat / (nu.unsqueeze(-1) * nu.unsqueeze(-2))
        m_hat = (p_hat - (k * r).unsqueeze(-1) * eye) / eta1.unsqueeze(-1)
        # V⁻ᵀ = L_o⁻ᵀ U (U orthogonal): V⁻ᵀ x V⁻¹ = A x Aᵀ with one triangular solve for A
        inv_t = torch.linalg.solve_triangular(old_chol.mT, rot, upper=True)

        def back(x: torch.Tensor) -> torch.Tensor:
            return inv_t @ x @ inv_t.mT.contiguous()

        g_cov = B.sym(back(lam.unsqueeze(-1) * m_hat * lam.unsqueeze(-2)))
        g_old = None
        if need_old:
            d_old = eta.unsqueeze(-1) * m_hat - (k * 0.5 * (1.0 - 1.0 / nu)).unsqueeze(-1) * eye
            g_old = B.sym(back(d_old))
        return g_cov, g_old, k.squeeze(-1)
