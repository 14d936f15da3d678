"""The core's array-namespace helpers: one small API in front of the back-end modules.

Every public function of :mod:`trpl_math` finds the namespace of its inputs with
:func:`namespace` and calls only the helpers here for anything the array API standard does not
offer (triangular solves, Cholesky with a failure flag, a matrix square root whose gradient is
finite for repeated eigenvalues, ``stop_gradient``). Each helper dispatches to the back-end
module of the namespace (:mod:`trpl_math._backends`; docs/backends.md); everything else is plain
``xp`` code. No back end is imported here: NumPy users never import torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from trpl_math import _backends

Array = Any  # an array of a supported back end (NumPy, torch)

_VALIDATE: contextvars.ContextVar[bool] = contextvars.ContextVar("trpl_validate", default=True)


def validation_enabled() -> bool:
    """Whether input checks run (see :func:`no_validation`)."""
    return _VALIDATE.get()


@contextlib.contextmanager
def no_validation() -> Iterator[None]:
    """Skip all input checks inside the block (for hot training loops).

    Inside the block, shapes are still broadcast, but non-finite values, non-symmetric or
    non-positive-definite covariances and non-positive bounds are no longer reported: such input
    then gives undefined (possibly NaN) output. With torch this also avoids the device
    synchronisation that reading the Cholesky failure flag costs.

    Example:
        >>> import numpy as np, trpl_math
        >>> with trpl_math.no_validation():
        ...     p = trpl_math.kl_projection(np.ones(2), np.ones(2), np.zeros(2), np.ones(2),
        ...                                 eps_mean=0.1, eps_cov=0.1, diag=True)
    """
    token = _VALIDATE.set(False)
    try:
        yield
    finally:
        _VALIDATE.reset(token)


_RESULT_DTYPE: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "trpl_result_dtype", default=None
)


def result_dtype(x: Array) -> Any:
    """The dtype the caller gets back: ``x.dtype``, or the input dtype that
    :func:`working_precision` raised to the working one (limits of resolution follow it)."""
    outer = _RESULT_DTYPE.get()
    return x.dtype if outer is None else outer


_LOW = ("float16", "bfloat16")
_BITS = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def working_precision(minimum: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: compute in at least ``minimum`` ("float32" or "float64"), return the input dtype.

    When the first argument (the mean, or the covariance) has a floating dtype with fewer bits
    than ``minimum`` (float16 and bfloat16 always count as below float32), every array argument
    of that dtype is cast up, the function runs, and every array of its result (a NamedTuple of
    arrays or one array) is cast back to that dtype; differentiable with torch. Arguments of
    other dtypes pass unchanged: bounds are cast by the function itself, and mixed distribution
    dtypes are reported by its checks.
    """
    target_bits = _BITS[minimum]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            first = args[0] if args else None
            if not _is_float_array(first) or isinstance(first, np.generic):
                return fn(*args, **kwargs)
            low = first.dtype
            if _BITS.get(_dtype_name(low), 64) >= target_bits:
                return fn(*args, **kwargs)
            same = lambda a: _is_float_array(a) and a.dtype == low  # noqa: E731
            up = lambda a: _cast(a, minimum) if same(a) else a  # noqa: E731
            token = _RESULT_DTYPE.set(low) if _RESULT_DTYPE.get() is None else None
            try:
                out = fn(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})
            finally:
                if token is not None:
                    _RESULT_DTYPE.reset(token)
            if isinstance(out, tuple):
                return type(out)(*(_cast_to(x, low) for x in out))
            return _cast_to(out, low)

        return wrapper

    return decorate


def _is_float_array(x: Any) -> bool:
    return hasattr(x, "dtype") and hasattr(x, "shape") and _dtype_name(x.dtype) in _BITS


def _cast(x: Array, name: str) -> Array:
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=name)
    if hasattr(x, "to") and hasattr(x, "detach"):  # torch (differentiable)
        return x.to(getattr(sys.modules["torch"], name))
    xp = array_api_compat.array_namespace(x)
    return xp.astype(x, getattr(xp, name))


def _cast_to(x: Array, dtype: Any) -> Array:
    if isinstance(x, np.ndarray | np.generic):
        return np.asarray(x, dtype=dtype)
    if hasattr(x, "to") and hasattr(x, "detach"):
        return x.to(dtype)
    return array_api_compat.array_namespace(x).astype(x, dtype)


def namespace(*arrays: Any) -> ModuleType:
    """Return the array namespace shared by ``arrays`` (Python scalars and ``None`` ignored).

    Raises:
        TypeError: if the arrays come from different libraries (e.g. NumPy and torch mixed).
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, int | float)]
    try:
        return array_api_compat.array_namespace(*arrs)
    except TypeError as err:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrs})
        raise TypeError(
            f"all array arguments must be of one kind (NumPy, torch or JAX arrays), "
            f"got a mix of {', '.join(kinds)}"
        ) from err


def backend(xp: ModuleType) -> ModuleType:
    """The back-end module for ``xp`` (:func:`trpl_math._backends.get`).

    Raises:
        NotImplementedError: for a namespace without a back end (e.g. ``array_api_strict``).
    """
    return _backends.get(xp)


def any_true(x: Array, xp: ModuleType) -> bool:
    """``bool(any(x))`` for a branch that only saves work; ``True`` for a traced array (a
    traced program, e.g. under ``jax.jit``, takes the branch and selects with ``where``)."""
    return True if backend(xp).traced(x) else bool(xp.any(x))


def all_true(x: Array, xp: ModuleType) -> bool:
    """``bool(all(x))`` for an early loop exit; ``False`` for a traced array (the loop then runs
    its fixed number of masked iterations)."""
    return False if backend(xp).traced(x) else bool(xp.all(x))


def as_f64(x: Array, xp: ModuleType) -> Array:
    """``x`` in float64 (the dtype of every internal solve)."""
    return xp.astype(x, xp.float64)


def while_loop(cond: Any, body: Any, state: tuple[Any, ...], xp: ModuleType) -> tuple[Any, ...]:
    """``while cond(state): state = body(state)``, as the back end's own loop (JAX's
    ``lax.while_loop``) where the state is traced: a traced program then stops once ``cond``
    fails, instead of unrolling every step. ``state[1]`` must be an array (it tells tracing)."""
    loop = getattr(backend(xp), "while_loop", None)
    if loop is not None and backend(xp).traced(state[1]):
        return loop(cond, body, state)
    while cond(state):
        state = body(state)
    return state


def select(cond: Array, a: Array, b: Array, xp: ModuleType) -> Array:
    """``xp.where(cond, a, b)``, or ``a`` itself where ``cond`` holds everywhere and ``a`` has
    the result's shape (eager only): the same values and gradients, without a select whose
    forward and backward passes cost as much as a projection's arithmetic on small states (every
    state outside its bound is a benchmark's worst case and a training step's common one)."""
    if a.shape == b.shape and not _jax_traced(cond) and bool(xp.all(cond)):
        return a
    return xp.where(cond, a, b)


def _jax_traced(x: Array) -> bool:
    """Whether ``x`` is an abstract JAX value, asked without a back end (:func:`select` also
    serves namespaces with none, such as ``array_api_strict``)."""
    if not array_api_compat.is_jax_array(x):
        return False
    return backend(array_api_compat.array_namespace(x)).traced(x)


def mT(x: Array) -> Array:
    """Swap the last two axes (a contiguous copy for torch, whose batched matmul is several
    times slower on a transposed view)."""
    if isinstance(x, np.ndarray):
        return np.swapaxes(x, -1, -2)
    return x.mT.contiguous() if hasattr(x, "contiguous") else x.mT


def sym(x: Array) -> Array:
    """Symmetrise a batch of square matrices."""
    return 0.5 * (x + mT(x))


def stop_gradient(x: Array, xp: ModuleType) -> Array:
    """``x`` as a constant: detached from the autograd graph (a no-op for NumPy).

    For a namespace without a back end (e.g. ``array_api_strict``) ``x`` itself: the array API
    standard has no autograd, so its arrays are constants already (the input checks read their
    values through this helper; docs/backends.md, "Standard-only functions").
    """
    try:
        be = backend(xp)
    except NotImplementedError:
        return x
    return be.stop_gradient(x)


def cholesky(x: Array, xp: ModuleType, *, name: str, check: bool) -> Array:
    """Lower Cholesky factor of a batch of matrices.

    With ``check`` a failure raises ``ValueError`` naming ``name``; without it the factor of a
    non-positive-definite matrix is undefined (torch returns a partial factor, no sync).
    """
    return backend(xp).cholesky(x, name=name, check=check)


def solve_tril(L: Array, b: Array, xp: ModuleType, *, transpose: bool = False) -> Array:
    """Solve ``L x = b`` (or ``Lᵀ x = b`` with ``transpose``) for lower-triangular ``L``.

    Shapes: ``L (..., d, d)``, ``b (..., d, k)``; batch dimensions must already agree.
    """
    return backend(xp).solve_tril(L, b, transpose=transpose)


def solve_tril_vec(L: Array, b: Array, xp: ModuleType) -> Array:
    """Solve ``L x = b`` for a batch of vectors ``b (..., d)``."""
    return solve_tril(L, b[..., None], xp)[..., 0]


def eigvalsh(x: Array, xp: ModuleType) -> Array:
    """Ascending eigenvalues of a batch of symmetric matrices (differentiable with torch)."""
    return backend(xp).eigvalsh(x)


def to_host(xp: ModuleType, *arrays: Array) -> tuple[ModuleType, list[Array]]:
    """Detached ``arrays`` in the namespace best for many tiny elementwise steps.

    CPU torch tensors become NumPy views and the namespace is plain ``numpy`` (its per-operation
    overhead is a fraction of torch's, and of the ``array_api_compat`` wrappers', which dominates
    the O(d) Newton iterations on small batches); anything else stays as it is. Code run on the
    host namespace uses only functions that plain NumPy (from 1.26 on) and the array API spell
    alike: no ``astype`` or ``bool`` attributes, say (``asarray(x, dtype=...)`` instead).
    """
    return backend(xp).to_host(xp, *arrays)


def from_host(x: Array, xp: ModuleType, like: Array) -> Array:
    """Inverse of :func:`to_host`: ``x`` back in ``xp`` on the device of ``like``."""
    return backend(xp).from_host(x, like)


def eigh(x: Array, xp: ModuleType) -> tuple[Array, Array]:
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric matrices; no gradient use."""
    return backend(xp).eigh(x)


def logdet_from_chol(L: Array, xp: ModuleType) -> Array:
    """``log|L Lᵀ|`` from its lower Cholesky factor, shape ``(...)``."""
    logs = xp.log(diagonal(L, xp))
    return xp.sum(logs + logs, axis=-1)  # no Python-float factor: NumPy 1.x would upcast a scalar


def diagonal(x: Array, xp: ModuleType) -> Array:
    """Diagonal of a batch of matrices, shape ``(..., d)``."""
    return xp.linalg.diagonal(x) if hasattr(xp, "linalg") else np.diagonal(x, axis1=-2, axis2=-1)


def eye_like(x: Array, d: int, xp: ModuleType) -> Array:
    """The ``d × d`` identity with the dtype and device of ``x``."""
    return xp.eye(d, dtype=x.dtype, device=array_api_compat.device(x))


def newton_root_core(m: Array, s: Array, xp: ModuleType) -> Array:
    """The eigenbasis core ``K`` of one Newton step for ``X² = A`` from ``X₀ = V diag(s) Vᵀ``.

    With ``M = Vᵀ A V``, ``X₀ E + E X₀ = A - X₀²`` reads ``E'_ij (s_i + s_j) = M_ij - δ_ij s_i²``
    in the eigenbasis, so ``K = diag(s) + E' = (M + diag(s²)) / (s_i + s_j)`` and the refined
    root is ``V K Vᵀ`` (docs/math.md §2.6). The step measures the residual against ``A`` itself,
    so the backward error of ``eigh`` (a multiple of u‖A‖ that differs between LAPACK builds)
    drops out to first order and what remains is the rounding of ``M``. Pairs with
    ``s_i + s_j = 0`` (singular ``A``) keep ``K_ij = 0``. Shared by every back end's
    ``sqrtm_psd``.

    Shapes: ``m (..., d, d)``, ``s (..., d)`` -> ``(..., d, d)``.
    """
    eye = eye_like(s, int(s.shape[-1]), xp)
    return sylvester_eigen(m + eye * (s * s)[..., None, :], s, xp)


def sylvester_eigen(m: Array, s: Array, xp: ModuleType) -> Array:
    """``M_ij / (s_i + s_j)``: the solution of ``S X + X S = M`` in the eigenbasis of
    ``S = diag(s)`` (0 where ``s_i + s_j = 0``). Shapes: ``m (..., d, d)``, ``s (..., d)``."""
    denom = s[..., :, None] + s[..., None, :]
    positive = denom > 0
    return xp.where(positive, m / xp.where(positive, denom, 1.0), 0.0)


def sqrtm_psd(x: Array, xp: ModuleType, *, refine: bool = True) -> Array:
    """Symmetric square root of a batch of symmetric positive-definite matrices.

    ``V diag(s) Vᵀ`` from ``eigh``, refined by one Newton step measured against ``x`` itself
    (:func:`newton_root_core`, docs/math.md §2.6) unless ``refine`` is false. Its gradient (with
    torch; JAX alike) solves the Sylvester equation ``S dS + dS S = dA`` in the eigenbasis,
    ``dA' = dS' / (s_i + s_j)``, which stays finite when eigenvalues repeat (the generic ``eigh``
    backward divides by their differences and gives NaN there).
    """
    return backend(xp).sqrtm_psd(x, refine)


def split_rows(x: Array, bits: int, xp: ModuleType) -> tuple[Array, Array]:
    """``x = hi + lo`` exactly, each row of ``hi`` on a grid of one power of two, ≤ ``bits + 1``
    significant bits: ``hi = (x + σ) - σ`` with ``σ = 2^{e + 53 - bits}``, ``2^e ≥ max_k |x_ik|``
    (the error-free splitting of Ozaki et al.; float64 only, no reassociation).

    Shapes: ``(..., d, d)`` -> two of ``(..., d, d)``.
    """
    mu = xp.max(xp.abs(x), axis=-1, keepdims=True)
    e = xp.ceil(xp.log2(xp.where(mu > 0, mu, 1.0)))
    sigma = xp.pow(xp.asarray(2.0, dtype=x.dtype), e + float(53 - bits))
    hi = (x + sigma) - sigma
    return hi, x - hi


def square_residual(a: Array, f: Array, xp: ModuleType) -> Array:
    """``A - F Fᵀ`` to ~2^{-3β}‖A‖ in float64 arithmetic (``β = ⌊(51 - ⌈log₂ d⌉)/2⌋``, 23 at
    d = 32), where the plain product loses everything below u‖A‖.

    ``F = F₁ + F₂ + F₃`` by :func:`split_rows` (twice, β bits): every product ``F_a F_bᵀ`` of
    the β-bit slices is a sum of ``d`` terms on a common grid with at most ``2β + 2 + log₂ d ≤
    53`` bits, hence exact; the terms with ``F₃`` (~2^{-2β}‖A‖) are rounded far below the result,
    those of order 2^{-3β} are dropped, and the partial sums shrink as they are subtracted.

    Shapes: ``a, f (..., d, d)`` -> ``(..., d, d)``.
    """
    d = int(f.shape[-1])
    bits = (51 - max(0, (d - 1).bit_length())) // 2
    f1, rest = split_rows(f, bits, xp)
    f2, f3 = split_rows(rest, bits, xp)
    p12 = f1 @ mT(f2)
    p13 = (f1 + f2) @ mT(f3)
    return ((a - f1 @ mT(f1)) - (p12 + mT(p12))) - (f2 @ mT(f2) + (p13 + mT(p13)))


def sqrtm_psd_extended(x: Array, xp: ModuleType) -> Array:
    """The symmetric root of SPD ``x`` (float64) accurate to about the rounding of its entries.

    The eigenbasis root ``F = V diag(s) Vᵀ`` plus one Newton step
    ``V [(Vᵀ R V)_ij / (s_i + s_j)] Vᵀ`` whose residual ``R = x - F²`` comes from
    :func:`square_residual` (docs/math.md §2.6): a float64 residual is itself only good to
    ~u‖x‖, so a root refined in float64 still misses by ~u‖x‖/(s_i + s_j), which the Eq. 9
    projection, plain and scaled (a root compared with the root of a nearby matrix), turns into
    errors above its tolerance. Newton converges quadratically, so the one exact-residual step
    from ``F`` (off by ~c u‖x‖/(s_i + s_j)) leaves ~(c u)² κ(x)^{3/2} relative to the root, below
    its rounding. The gradient, where one can flow, is that of :func:`sqrtm_psd` (the same
    matrix up to rounding), added as ``g - stop_gradient(g)``.

    Shapes: ``(..., d, d)`` -> ``(..., d, d)``.
    """
    const = stop_gradient(x, xp)
    w, v = eigh(const, xp)
    s = xp.sqrt(xp.where(w > 0, w, 0.0))
    vt = mT(v)
    f = (v * s[..., None, :]) @ vt
    f = 0.5 * (f + mT(f))
    step = v @ sylvester_eigen(vt @ square_residual(const, f, xp) @ v, s, xp) @ vt
    root = f + 0.5 * (step + mT(step))
    if backend(xp).autograd and backend(xp).needs_grad(x):
        graph = sqrtm_psd(x, xp)
        root = root + (graph - stop_gradient(graph, xp))
    return root
