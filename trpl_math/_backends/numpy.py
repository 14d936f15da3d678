"""The NumPy back end: the operations the core needs beyond the array API standard.

Every back-end module defines these functions with these contracts (see docs/backends.md):

* ``autograd`` — whether arrays carry gradients (selects the gradient-only terms of the core);
* ``traced(x)`` — whether ``x`` is abstract (JAX under ``jit``/``vmap``): no Python branching;
* ``needs_grad(*arrays)`` — whether a gradient can flow back to any of ``arrays`` (the
  gradient-only terms of the core are skipped where none can);
* ``stop_gradient(x)``; ``cholesky(x, *, name, check)``; ``solve_tril(L, b, *, transpose)``;
* ``eigh(x)``, ``eigvalsh(x)``; ``sqrtm_psd(x, refine)``;
* ``to_host(xp, *arrays)`` / ``from_host(x, like)`` — the namespace for the tiny Newton loops;
* ``x_minus_log1p(x)`` and ``kl_cov_projection(cov, old_cov, eps, diag, xp, old_chol=None)``
  — the core's functions with their custom gradients (plain values here); ``old_chol``, the
  factor ``L_o`` the caller took already (a constant), spares a second Cholesky where given.

Imports only NumPy, SciPy and the core beneath it (``_backend``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg

from trpl_math import _backend as B

Array = Any

autograd = False


def traced(x: Array) -> bool:
    return False


def needs_grad(*arrays: Array) -> bool:
    return False


def stop_gradient(x: Array) -> Array:
    return x


def cholesky(x: Array, *, name: str, check: bool) -> Array:
    try:
        return np.linalg.cholesky(x)
    except np.linalg.LinAlgError as err:
        if not check:
            return np.full_like(x, np.nan)
        raise ValueError(f"{name} is not positive definite") from err


def solve_tril(L: Array, b: Array, *, transpose: bool = False) -> Array:
    if 0 in L.shape or 0 in b.shape:  # SciPy refuses zero-size batches
        return np.zeros(np.broadcast_shapes(L.shape[:-1], b.shape[:-1]) + b.shape[-1:], b.dtype)
    return scipy.linalg.solve_triangular(L, b, lower=True, trans="T" if transpose else "N")


def eigvalsh(x: Array) -> Array:
    return np.linalg.eigvalsh(x)


def eigh(x: Array) -> tuple[Array, Array]:
    return np.linalg.eigh(x)


def sqrtm_psd(x: Array, refine: bool = True) -> Array:
    """The eigenbasis root, refined by one Newton step (``_backend.newton_root_core``) unless
    ``refine`` is false."""
    w, v = np.linalg.eigh(x)
    s = np.sqrt(np.clip(w, 0.0, None))
    vt = np.swapaxes(v, -1, -2)
    root = v @ B.newton_root_core(vt @ x @ v, s, np) @ vt if refine else (v * s[..., None, :]) @ vt
    return 0.5 * (root + np.swapaxes(root, -1, -2))


def to_host(xp: ModuleType, *arrays: Array) -> tuple[ModuleType, list[Array]]:
    return xp, list(arrays)


def from_host(x: Array, like: Array) -> Array:
    return x


def x_minus_log1p(x: Array, xp: ModuleType) -> Array:
    from trpl_math.divergences import x_minus_log1p_values

    return x_minus_log1p_values(x, xp)


def kl_cov_projection(
    cov: Array,
    old_cov: Array,
    eps: Array,
    diag: bool,
    xp: ModuleType,
    old_chol: Array | None = None,
) -> Array:
    from trpl_math.projections.kl import kl_cov_eigen_projection

    return kl_cov_eigen_projection(cov, old_cov, eps, diag, xp, old_chol).cov
