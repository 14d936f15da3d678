"""Input checks and broadcasting shared by every public function.

Checks run unless disabled with :func:`trpl_math.no_validation`. Positive definiteness is not
checked here: it is read off the Cholesky factorisation each function needs anyway
(:func:`trpl_math._backend.cholesky` with ``check=True``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from trpl_math._backend import Array, mT, namespace, stop_gradient, validation_enabled


class Pair(NamedTuple):
    """A new and an old Gaussian, broadcast to one batch shape."""

    xp: ModuleType
    mean: Array
    cov: Array
    old_mean: Array
    old_cov: Array
    dim: int
    batch_shape: tuple[int, ...]


def _check_float(x: Array, name: str, xp: ModuleType) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        raise ValueError(f"{name} must have a real floating dtype, got {x.dtype}")


def _check_finite(x: Array, name: str, xp: ModuleType) -> None:
    x = stop_gradient(x, xp)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains non-finite values (NaN or Inf)")


def _check_symmetric(x: Array, name: str, xp: ModuleType) -> None:
    x = stop_gradient(x, xp)
    if 0 in tuple(x.shape):
        return
    scale = float(xp.max(xp.abs(x)))
    tol = 1e3 * float(xp.finfo(x.dtype).eps) * max(scale, 1e-300)
    if float(xp.max(xp.abs(x - mT(x)))) > tol:
        raise ValueError(f"{name} is not symmetric (|{name} - {name}ᵀ| exceeds {tol:.3g})")


def check_cov(cov: Array, name: str, xp: ModuleType, *, diag: bool) -> None:
    """Rank, dtype, finiteness and symmetry (full) or positivity (diag) of a covariance."""
    _check_float(cov, name, xp)
    if diag:
        if cov.ndim < 1:
            raise ValueError(
                f"{name} must have shape (..., d) with diag=True, got {tuple(cov.shape)}"
            )
    else:
        if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
            raise ValueError(
                f"{name} must have shape (..., d, d) (use diag=True for variance vectors), "
                f"got {tuple(cov.shape)}"
            )
    if cov.shape[-1] == 0:
        raise ValueError(f"{name} must have d >= 1, got shape {tuple(cov.shape)}")
    _check_finite(cov, name, xp)
    if diag:
        if not bool(xp.all(cov > 0)):
            raise ValueError(f"{name} must hold positive variances (diag=True); found values <= 0")
    else:
        _check_symmetric(cov, name, xp)


def check_mean(mean: Array, name: str, xp: ModuleType) -> None:
    _check_float(mean, name, xp)
    if mean.ndim < 1:
        raise ValueError(f"{name} must have shape (..., d), got a scalar")
    _check_finite(mean, name, xp)


def _event_shape(cov: Array, diag: bool) -> tuple[tuple[int, ...], int]:
    if diag:
        return tuple(cov.shape[:-1]), int(cov.shape[-1])
    return tuple(cov.shape[:-2]), int(cov.shape[-1])


def prepare_pair(mean: Array, cov: Array, old_mean: Array, old_cov: Array, *, diag: bool) -> Pair:
    """Find the namespace, check all four arguments and broadcast them to one batch shape."""
    xp = namespace(mean, cov, old_mean, old_cov)
    args = {"mean": mean, "cov": cov, "old_mean": old_mean, "old_cov": old_cov}
    for name, x in args.items():
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"{name} must be a NumPy array or torch tensor, got {type(x).__name__}")
    if validation_enabled():
        check_mean(mean, "mean", xp)
        check_mean(old_mean, "old_mean", xp)
        check_cov(cov, "cov", xp, diag=diag)
        check_cov(old_cov, "old_cov", xp, diag=diag)
        for name, x in args.items():
            if x.dtype != mean.dtype:
                raise ValueError(f"{name} has dtype {x.dtype} but mean has {mean.dtype}")
    b_cov, d = _event_shape(cov, diag)
    b_old, d_old = _event_shape(old_cov, diag)
    for name, x, dd in (
        ("mean", mean, mean.shape[-1]),
        ("old_mean", old_mean, old_mean.shape[-1]),
        ("old_cov", old_cov, d_old),
    ):
        if int(dd) != d:
            raise ValueError(
                f"dimension mismatch: {name} has shape {tuple(x.shape)}, cov has shape "
                f"{tuple(cov.shape)} (diag={diag}); all must share the event dimension d"
            )
    try:
        batch = np.broadcast_shapes(
            tuple(mean.shape[:-1]), b_cov, tuple(old_mean.shape[:-1]), b_old
        )
    except ValueError as err:
        raise ValueError(
            "batch shapes do not broadcast: "
            + ", ".join(f"{k} {tuple(v.shape)}" for k, v in args.items())
            + f" (diag={diag})"
        ) from err
    ev = (d,) if diag else (d, d)
    return Pair(
        xp,
        xp.broadcast_to(mean, (*batch, d)),
        xp.broadcast_to(cov, (*batch, *ev)),
        xp.broadcast_to(old_mean, (*batch, d)),
        xp.broadcast_to(old_cov, (*batch, *ev)),
        d,
        batch,
    )


def prepare_cov(cov: Array, *, diag: bool, name: str = "cov") -> tuple[ModuleType, int]:
    """Namespace and event dimension of a lone covariance argument, checked."""
    xp = namespace(cov)
    if validation_enabled():
        check_cov(cov, name, xp, diag=diag)
    elif cov.ndim < (1 if diag else 2):
        raise ValueError(f"{name} has too few dimensions: {tuple(cov.shape)}")
    return xp, int(cov.shape[-1])


def prepare_bound(
    value: Any, name: str, xp: ModuleType, like: Array, batch_shape: tuple[int, ...]
) -> Array:
    """A bound as an array of ``batch_shape`` with the dtype and device of ``like``.

    Raises:
        ValueError: if the bound is not finite, not > 0, or does not broadcast.
    """
    arr = _as_array(value, name, xp, like)
    if validation_enabled():
        _check_finite(arr, name, xp)
        if not bool(xp.all(arr > 0)):
            raise ValueError(f"{name} must be > 0, got {_describe(value)}")
    return _broadcast_param(arr, name, xp, batch_shape)


def prepare_level(
    value: Any, name: str, xp: ModuleType, like: Array, batch_shape: tuple[int, ...]
) -> Array:
    """A finite parameter of any sign (an entropy level) broadcast to ``batch_shape``."""
    arr = _as_array(value, name, xp, like)
    if validation_enabled():
        _check_finite(arr, name, xp)
    return _broadcast_param(arr, name, xp, batch_shape)


def _as_array(value: Any, name: str, xp: ModuleType, like: Array) -> Array:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a number or an array, got {value!r}")
    if isinstance(value, int | float):
        return xp.asarray(float(value), dtype=like.dtype, device=_device(like))
    if not hasattr(value, "shape"):
        raise ValueError(f"{name} must be a number or an array, got {type(value).__name__}")
    if namespace(value, like) is not xp:
        raise TypeError(f"{name} must be of the same array kind as the distributions")
    if validation_enabled() and not xp.isdtype(value.dtype, ("real floating", "integral")):
        raise ValueError(f"{name} must be real, got dtype {value.dtype}")
    return xp.astype(value, like.dtype)


def _broadcast_param(arr: Array, name: str, xp: ModuleType, batch_shape: tuple[int, ...]) -> Array:
    try:
        shape = np.broadcast_shapes(tuple(arr.shape), batch_shape)
    except ValueError as err:
        raise ValueError(
            f"{name} of shape {tuple(arr.shape)} does not broadcast against the batch shape "
            f"{batch_shape}"
        ) from err
    if shape != batch_shape:
        raise ValueError(
            f"{name} of shape {tuple(arr.shape)} would enlarge the batch shape {batch_shape}"
        )
    return xp.broadcast_to(arr, batch_shape)


def _device(x: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _describe(value: Any) -> str:
    if isinstance(value, int | float):
        return repr(value)
    return f"an array with minimum {float(np.min(np.asarray(_to_numpy(value))))!r}"


def _to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
