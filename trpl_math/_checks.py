"""Input checks and broadcasting shared by every public function.

Checks run unless disabled with :func:`trpl_math.no_validation`. Positive definiteness is not
checked here: it is read off the Cholesky factorisation each function needs anyway
(:func:`trpl_math._backend.cholesky` with ``check=True``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from trpl_math._backend import (
    Array,
    eigvalsh,
    mT,
    namespace,
    result_dtype,
    stop_gradient,
    validation_enabled,
)


class Pair(NamedTuple):
    """A new and an old Gaussian, broadcast to one batch shape."""

    xp: ModuleType
    mean: Array
    cov: Array
    old_mean: Array
    old_cov: Array
    dim: int
    batch_shape: tuple[int, ...]


def _check_not_meta(x: Array, name: str) -> None:
    device = getattr(x, "device", None)
    if getattr(device, "type", None) == "meta":
        raise ValueError(
            f"{name} is a meta tensor (shape and dtype only, no values): the projections branch "
            f"on values (which states are active, the root of the KL constraint), so they need "
            f"real tensors"
        )


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


def finfo(dtype: Any) -> Any:
    """``finfo`` of a floating dtype: torch's for torch, else NumPy's, by name for a dtype of
    another array-API namespace (``array_api_strict.float64`` -> ``numpy.float64``)."""
    if "torch" in str(dtype):
        import torch

        return torch.finfo(dtype)
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        return np.finfo(dtype)
    return np.finfo(str(dtype).rsplit(".", 1)[-1])


def magnitude_limits(dtype: Any) -> tuple[float, float]:
    """``(lo, hi)``: the range of variances (and ``|mean|`` up to ``hi``) a dtype can handle.

    Divergences square covariances and means (Frobenius ``‖Σ - Σ_o‖²``, ``Σ_o^{1/2} Σ Σ_o^{1/2}``)
    and divide by them, so entries must stay 1e4 inside ``sqrt(tiny)`` and ``sqrt(max)``: float64
    about ``[1.5e-150, 1.3e150]``, float32 ``[1.1e-15, 1.8e15]``.
    """
    fi = finfo(dtype)
    return float(fi.tiny) ** 0.5 * 1e4, float(fi.max) ** 0.5 / 1e4


def condition_limit(dtype: Any) -> float:
    """Largest condition number of a full covariance a projection accepts: ``1 / (512 u)``.

    Beyond it the covariance is not determined by its entries in the dtype well enough for any
    result to land on its bound (float64: 1.8e13; float32: 3.3e4; ``u`` the unit roundoff).
    Half-precision input is solved in float32 and follows float32's limit.
    """
    return 1.0 / (512.0 * float(finfo(dtype).eps) / 2.0)


def resolution_floor(dtype: Any) -> float:
    """``(16 u)²``: the smallest relative divergence a result in ``dtype`` can resolve.

    A Gaussian whose entries differ from the old one's by ``k`` units of roundoff lies at a
    divergence ~ ``(k u)²`` (relative measures: KL, scaled W2); bounds below ``(16 u)²`` cannot
    be met to better than ~10% (float64: 3.2e-30, float32: 9.1e-13).
    """
    return (16.0 * float(finfo(dtype).eps) / 2.0) ** 2


def _check_magnitude(x: Array, name: str, xp: ModuleType, *, cov: bool, diag: bool) -> None:
    if 0 in tuple(x.shape):
        return
    x = stop_gradient(x, xp)
    lo, hi = magnitude_limits(x.dtype)
    vals = (x if diag else _diag(x, xp)) if cov else x
    big = float(xp.max(xp.abs(x)))
    if big > hi:
        raise ValueError(
            f"{name} has entries up to {big:.3g}, above {hi:.3g}, the largest magnitude "
            f"{x.dtype} can handle here (its square must not overflow); rescale the problem"
        )
    if cov:
        small = float(xp.min(vals))
        if 0 < small < lo:
            what = "variances" if diag else "diagonal entries"
            raise ValueError(
                f"{name} has {what} down to {small:.3g}, below {lo:.3g}, the smallest "
                f"{x.dtype} can handle here (its square must not underflow); rescale the problem"
            )


def _diag(x: Array, xp: ModuleType) -> Array:
    return xp.linalg.diagonal(x) if hasattr(xp, "linalg") else np.diagonal(x, axis1=-2, axis2=-1)


def check_condition(cov: Array, name: str, xp: ModuleType) -> None:
    """Refuse full covariances whose condition number exceeds :func:`condition_limit`.

    The limit follows :func:`trpl_math._backend.result_dtype` (the dtype of the result, which is
    what must resolve the answer). Runs only while validating; costs one ``eigvalsh``.
    """
    if not validation_enabled() or 0 in tuple(cov.shape):
        return
    ev = eigvalsh(stop_gradient(cov, xp), xp)
    lo, hi = ev[..., 0], ev[..., -1]
    if not bool(xp.all(lo > 0)):
        return  # not positive definite: the Cholesky check reports it by name
    cond = float(xp.max(hi / lo))
    dtype = result_dtype(cov)
    if float(finfo(dtype).bits) < 32:  # half precision: rounded copies of a float32 solve
        dtype = cov.dtype
    limit = condition_limit(dtype)
    if cond > limit:
        raise ValueError(
            f"{name} is too ill-conditioned for {dtype}: condition number "
            f"{cond:.3g} exceeds {limit:.3g} (1/(512 u)); no projection can be resolved there"
        )


def check_bound_floor(
    eps: Array, name: str, xp: ModuleType, scale: Array | float = 1.0, *, like: Array
) -> None:
    """Refuse bounds below what the result's dtype can resolve (see :func:`resolution_floor`).

    ``scale`` makes the floor absolute for measures with units (``tr Σ_o`` for plain W2,
    ``‖Σ_o‖_F²`` for Frobenius; a mean part's own metric norm of ``μ_o``); the floor is never
    below ``tiny / u`` of the working dtype (underflow).
    """
    if not validation_enabled() or 0 in tuple(eps.shape):
        return
    dtype = result_dtype(like)
    work = finfo(like.dtype)  # underflow is the working dtype's concern
    floor = resolution_floor(dtype) * scale + float(work.tiny) / (float(work.eps) / 2.0)
    eps = stop_gradient(eps, xp)
    floor = stop_gradient(floor + xp.zeros_like(eps), xp)  # an array even for a float scale
    bad = eps < floor
    if bool(xp.any(bad)):
        gap = float(xp.min(eps / floor))
        at = float(xp.max(xp.where(bad, floor, xp.zeros_like(floor))))
        raise ValueError(
            f"{name} = {float(xp.min(xp.where(bad, eps, floor))):.3g} is below what {dtype} can "
            f"resolve here ({at:.3g} = (16u)² times the measure's scale; {gap:.2g} of it): the "
            f"bound cannot be met; use a larger bound or a wider dtype"
        )


def mean_scale(
    old_mean: Array, old_cov: Array, xp: ModuleType, *, diag: bool, metric: bool
) -> Array:
    """``max_i μ_o,i² / Σ_o,ii`` (``metric``) or ``max_i μ_o,i²``: the size of the old mean in a
    mean part's own units; a mean one rounding unit away from ``μ_o`` in its largest entry lies
    about ``u²`` times this away. ``(...)``."""
    sq = old_mean * old_mean
    if metric:
        sq = sq / (old_cov if diag else _diag(old_cov, xp))
    return xp.max(sq, axis=-1)


def cov_scale(old_cov: Array, xp: ModuleType, *, diag: bool, squared: bool) -> Array:
    """``max_ij Σ_o,ij²`` (``squared``, Frobenius) or ``max_i Σ_o,ii`` (plain W2), ``(...)``: how
    far (in the measure) a covariance one rounding unit away from ``Σ_o`` lies, over ``u²``."""
    var = old_cov if diag else _diag(old_cov, xp)
    if squared:
        return xp.max(var * var, axis=-1)  # |Σ_ij| <= max_i Σ_ii for positive definite Σ
    return xp.max(var, axis=-1)


def check_divergence_finite(value: Array, what: str, xp: ModuleType) -> None:
    """Raise if a divergence overflowed (the distributions lie too far apart for the dtype)."""
    if not validation_enabled() or 0 in tuple(value.shape):
        return
    v = stop_gradient(value, xp)
    if not bool(xp.all(xp.isfinite(v))):
        raise ValueError(
            f"{what} overflows {value.dtype} (inf): the new and the old Gaussian lie too far "
            f"apart for this dtype; rescale the problem"
        )


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
    _check_magnitude(cov, name, xp, cov=True, diag=diag)


def check_mean(mean: Array, name: str, xp: ModuleType) -> None:
    _check_float(mean, name, xp)
    if mean.ndim < 1:
        raise ValueError(f"{name} must have shape (..., d), got a scalar")
    _check_finite(mean, name, xp)
    _check_magnitude(mean, name, xp, cov=False, diag=False)


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
            raise TypeError(f"{name} must be a NumPy, torch or JAX array, got {type(x).__name__}")
        _check_not_meta(x, name)
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
    _check_not_meta(cov, name)
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
