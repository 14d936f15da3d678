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
from trpl_math.projections.kl import kl_cov_diag_grads

Array = Any

autograd = True


def traced(x: Array) -> bool:
    return False


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


def sqrtm_psd(x: Array) -> Array:
    """With a backward that solves the Sylvester equation ``S dS + dS S = dA`` in the
    eigenbasis, ``dA' = dS' / (s_i + s_j)``, finite when eigenvalues repeat (the generic
    ``eigh`` backward divides by their differences and gives NaN there)."""
    return SqrtmPSD.apply(x)


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


def kl_cov_projection(cov: Array, old_cov: Array, eps: Array, diag: bool, xp: ModuleType) -> Array:
    return KLCovProjection.apply(cov, old_cov, eps, diag)


class SqrtmPSD(torch.autograd.Function):
    """Symmetric square root of SPD matrices with a Sylvester-equation backward."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> torch.Tensor:
        w, v = torch.linalg.eigh(a)
        s = w.clamp_min(0).sqrt()
        ctx.save_for_backward(s, v)
        root = (v * s.unsqueeze(-2)) @ v.mT.contiguous()
        return 0.5 * (root + root.mT)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        s, v = ctx.saved_tensors
        g = v.mT @ (0.5 * (grad + grad.mT)) @ v
        denom = s.unsqueeze(-1) + s.unsqueeze(-2)
        g = g / denom.clamp_min(torch.finfo(s.dtype).tiny)
        return v @ g @ v.mT.contiguous()


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
    """``(cov, old_cov, eps) -> projected cov`` of the KL projection, implicit gradients."""

    @staticmethod
    def forward(
        ctx: Any, cov: torch.Tensor, old_cov: torch.Tensor, eps: torch.Tensor, diag: bool
    ) -> torch.Tensor:
        from trpl_math.projections.kl import kl_cov_eigen_projection

        sol = kl_cov_eigen_projection(cov, old_cov, eps, diag, B.namespace(cov))
        ctx.diag = diag
        ctx.save_for_backward(sol.index, sol.basis, sol.old_chol, sol.lam, sol.nu, sol.t)
        return sol.cov

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        index, basis, old_chol, lam, nu, t = ctx.saved_tensors
        diag = ctx.diag
        event = grad.shape[-1:] if diag else grad.shape[-2:]
        flat = grad.reshape(-1, *event)
        if diag:  # every state was solved; t == 1 marks the inactive ones (identity)
            xp = B.namespace(grad)
            hx, host = to_host(xp, flat, basis, lam, nu, t)
            g_cov, g_old, g_eps = (
                from_host(g, grad).to(grad.dtype).reshape(shape)
                for g, shape in zip(
                    kl_cov_diag_grads(*host, hx),
                    (grad.shape, grad.shape, grad.shape[:-1]),
                    strict=True,
                )
            )
            return g_cov, g_old, g_eps, None
        g_cov_flat = flat.clone()
        g_old_flat = torch.zeros_like(flat)
        g_eps_flat = flat.new_zeros(flat.shape[0])
        if index.numel():
            g_cov, g_old, g_eps = KLCovProjection._active_grads(
                flat[index], basis, old_chol, lam, nu, t
            )
            g_cov_flat[index], g_old_flat[index], g_eps_flat[index] = g_cov, g_old, g_eps
        batch = grad.shape[: grad.ndim - len(event)]
        return (
            g_cov_flat.reshape(grad.shape),
            g_old_flat.reshape(grad.shape),
            g_eps_flat.reshape(batch),
            None,
        )

    @staticmethod
    def _active_grads(
        grad: torch.Tensor,
        basis: torch.Tensor,
        old_chol: torch.Tensor,
        lam: torch.Tensor,
        nu: torch.Tensor,
        t: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradients for the active states of full covariances (arrays hold only those)."""
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
        rot = torch.linalg.solve_triangular(old_chol, basis, upper=False)  # U = L_o⁻¹ V

        def back(x: torch.Tensor) -> torch.Tensor:  # V⁻ᵀ x V⁻¹ = L_o⁻ᵀ U x Uᵀ L_o⁻¹
            y = rot @ x @ rot.mT.contiguous()
            y = torch.linalg.solve_triangular(old_chol.mT, y, upper=True)
            return torch.linalg.solve_triangular(old_chol.mT, y.mT, upper=True).mT

        g_cov = back(lam.unsqueeze(-1) * m_hat * lam.unsqueeze(-2))
        d_old = eta.unsqueeze(-1) * m_hat - (k * 0.5 * (1.0 - 1.0 / nu)).unsqueeze(-1) * eye
        g_old = back(d_old)
        return B.sym(g_cov), B.sym(g_old), k.squeeze(-1)
