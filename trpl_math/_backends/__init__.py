"""One module per array back end, chosen by the array namespace (docs/backends.md).

The array-level core is written once against the array API standard. What the standard does
not offer goes through :func:`get`, which returns the back-end module for a namespace:

* :mod:`trpl_math._backends.numpy` — NumPy (+ SciPy's batched triangular solve);
* :mod:`trpl_math._backends.torch` — torch: ``cholesky_ex``, ``solve_triangular``, host
  transfers for the tiny Newton loops, and the hand-written ``torch.autograd.Function`` s
  (matrix square root, ``x - log1p(x)``, the implicit gradients of the KL projection);
* :mod:`trpl_math._backends.jax` — JAX: the same, traceable (``jax.custom_vjp``, a
  ``lax.while_loop`` Newton solver, every state computed and selected with ``where``).

Every back-end module defines the same functions (see :mod:`trpl_math._backends.numpy` for
their contracts) and imports only the core beneath it; back-end modules are imported lazily, so
that NumPy users never import torch. Any other namespace raises ``NotImplementedError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import array_api_compat

__all__ = ["get"]


def _name(xp: object) -> str:
    return str(getattr(xp, "__name__", type(xp).__name__))


_FOUND: dict[object, ModuleType] = {}  # namespace -> back-end module, filled on first use


def get(xp: ModuleType) -> ModuleType:
    """The back-end module for the array namespace ``xp`` (looked up once per namespace: the
    core asks tens of times per projection call).

    Raises:
        NotImplementedError: no back end for ``xp`` (e.g. ``array_api_strict``, which the core
            supports only where it needs no operation outside the standard).
    """
    found = _FOUND.get(xp)
    if found is None:
        found = _FOUND[xp] = importlib.import_module(f"trpl_math._backends.{_kind(xp)}")
    return found


def _kind(xp: ModuleType) -> str:
    """``"numpy"``, ``"torch"`` or ``"jax"`` for a supported namespace."""
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    raise NotImplementedError(
        f"trpl_math has no back end for the array namespace {_name(xp)!r}: this function needs "
        "an operation outside the array API standard (a triangular solve, a Cholesky failure "
        "flag, a custom gradient); supported back ends: numpy, torch, jax"
    )
