"""Helpers for the core's unit tests: array comparison, test matrices and shared projection cases.

``assert_close`` and ``assert_equal`` compare namespace, dtype and shape before values (like
SciPy's ``xp_assert_close``), with a tolerance scaled to the dtype's machine epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np
import pytest
import torch

import trpl_math as tm

Array = Any

#: Relative tolerance in units of the dtype's machine epsilon used by default.
DEFAULT_ULPS = 256.0

#: Relative error allowed for "lands exactly on the bound" in float64.
LAND_RTOL_F64 = 1e-10


def to_numpy(x: Array) -> np.ndarray:
    """``x`` as a NumPy array (detached and on the CPU for torch)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _dtype_name(x: Array) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]  # "torch.float64", "array_api_strict.float64"


def _check_meta(actual: Array, expected: Array) -> None:
    xa = array_api_compat.array_namespace(actual)
    xe = array_api_compat.array_namespace(expected)
    assert xa is xe, f"namespace {xa.__name__} != expected {xe.__name__}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != expected {expected.dtype}"
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    )


def assert_close(
    actual: Array,
    expected: Array,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    err_msg: str = "",
) -> None:
    """Assert that ``actual`` equals ``expected`` within a dtype-scaled tolerance.

    Namespace, dtype and shape must match exactly. The default relative tolerance is
    ``DEFAULT_ULPS`` machine epsilons of the dtype (5.7e-14 for float64, 3.1e-5 for float32);
    the default absolute tolerance is that relative tolerance times ``max(|expected|)``, so
    that zero entries of a matrix are judged against the matrix's scale.
    """
    _check_meta(actual, expected)
    eps = float(np.finfo(_dtype_name(actual)).eps)
    rtol = DEFAULT_ULPS * eps if rtol is None else rtol
    e = to_numpy(expected)
    if atol is None:
        atol = rtol * float(np.max(np.abs(e))) if e.size else 0.0
    np.testing.assert_allclose(to_numpy(actual), e, rtol=rtol, atol=atol, err_msg=err_msg)


def assert_equal(actual: Array, expected: Array, err_msg: str = "") -> None:
    """Assert bitwise equality (and equal namespace, dtype and shape)."""
    _check_meta(actual, expected)
    np.testing.assert_array_equal(to_numpy(actual), to_numpy(expected), err_msg=err_msg)


def assert_finite(*arrays: Array) -> None:
    """Assert that every entry of every array is finite."""
    for i, a in enumerate(arrays):
        assert a is not None, f"array {i} is None (no gradient?)"
        assert np.all(np.isfinite(to_numpy(a))), f"array {i} has NaN or Inf entries"


def asarray(xp: ModuleType, x: Any, dtype: str = "float64") -> Array:
    """``x`` (nested lists, NumPy) in namespace ``xp`` with the named dtype."""
    return xp.asarray(np.array(x, dtype=dtype), dtype=getattr(xp, dtype))


def rotation(theta: float) -> np.ndarray:
    """The ``2 × 2`` rotation by ``theta``."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def spd(d: int, cond: float = 10.0, seed: int = 0) -> np.ndarray:
    """A ``(d, d)`` SPD matrix ``Q diag(s) Qᵀ`` with log-spaced ``s`` of condition number ``cond``.

    ``Q`` is a random orthogonal matrix (QR of a Gaussian matrix seeded by ``seed``); the
    largest eigenvalue is ``sqrt(cond)``, the smallest ``1/sqrt(cond)``. The result is exactly
    symmetric.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.logspace(-0.5, 0.5, d) ** math.log10(cond) if d > 1 else np.ones(1)
    a = (q * s) @ q.T
    return 0.5 * (a + a.T)


def spd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root by eigendecomposition (test-side reference)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(w)) @ v.T


# --- a fixed non-trivial test problem -------------------------------------------------------

D = 3


def problem(seed: int = 1, batch: int = 2) -> tuple[np.ndarray, ...]:
    """``(mean, cov, old_mean, old_cov)`` of shapes ``(B, 3)`` and ``(B, 3, 3)``, non-commuting."""
    rng = np.random.default_rng(seed)
    old_mean = rng.standard_normal((batch, D))
    mean = old_mean + rng.standard_normal((batch, D))
    old_cov = np.stack([spd(D, 5.0, seed + 10 * b) for b in range(batch)])
    cov = np.stack([2.5 * spd(D, 8.0, seed + 10 * b + 5) for b in range(batch)])
    return mean, cov, old_mean, old_cov


def diag_problem(seed: int = 1, batch: int = 2) -> tuple[np.ndarray, ...]:
    """``(mean, var, old_mean, old_var)`` of shapes ``(B, 3)`` with variances far apart."""
    rng = np.random.default_rng(seed)
    old_mean = rng.standard_normal((batch, D))
    mean = old_mean + rng.standard_normal((batch, D))
    old_var = np.exp(rng.uniform(-1, 1, (batch, D)))
    var = old_var * np.exp(rng.choice([-1.5, 1.5], (batch, D)))
    return mean, var, old_mean, old_var


def diag_embed(v: np.ndarray) -> np.ndarray:
    """``(..., d)`` -> ``(..., d, d)`` diagonal matrices."""
    return v[..., None] * np.eye(v.shape[-1])


def sym_param(a: torch.Tensor) -> torch.Tensor:
    """``(A + Aᵀ)/2``: a symmetric covariance parametrisation for ``gradcheck``."""
    return 0.5 * (a + a.mT)


# --- shared projection cases ----------------------------------------------------------------


class ProjectionCases:
    """Cases every mean/covariance projection shares; subclasses name the function under test.

    A subclass (named ``Test...``) sets:

    * ``project(mean, cov, old_mean, old_cov, *, eps_mean, eps_cov, diag)`` -> ``Gaussian``;
    * ``parts(mean, cov, old_mean, old_cov, *, diag)`` -> ``(mean part, cov part)``, the measure
      the projection bounds (the library's own divergence functions);
    * ``repeated_eig_finite``: whether to check gradients at repeated eigenvalues.
    """

    project: Callable[..., tm.Gaussian]
    parts: Callable[..., tuple[Array, Array]]

    # -- helpers --

    def _inputs(self, xp: ModuleType, diag: bool, dtype: str = "float64") -> tuple[Array, ...]:
        raw = diag_problem() if diag else problem()
        return tuple(asarray(xp, a, dtype) for a in raw)

    # -- the three cases --

    @pytest.mark.parametrize("diag", [False, True])
    def test_inside_unchanged_bitwise(self, xp: ModuleType, diag: bool) -> None:
        args = self._inputs(xp, diag)
        m, c = type(self).parts(*args, diag=diag)
        out = type(self).project(*args, eps_mean=2.0 * m, eps_cov=2.0 * c, diag=diag)
        assert_equal(out.mean, args[0])
        assert_equal(out.cov, args[1])

    @pytest.mark.parametrize("diag", [False, True])
    def test_on_boundary_unchanged(self, xp: ModuleType, diag: bool) -> None:
        args = self._inputs(xp, diag)
        m, c = type(self).parts(*args, diag=diag)
        out = type(self).project(*args, eps_mean=m, eps_cov=c, diag=diag)
        assert_close(out.mean, args[0], rtol=1e-12)
        assert_close(out.cov, args[1], rtol=1e-10)

    @pytest.mark.parametrize("diag", [False, True])
    @pytest.mark.parametrize("shrink", [0.5, 1e-3])
    def test_outside_lands_on_bound(self, xp: ModuleType, diag: bool, shrink: float) -> None:
        args = self._inputs(xp, diag)
        m, c = type(self).parts(*args, diag=diag)
        eps_m, eps_c = shrink * m, shrink * c
        out = type(self).project(*args, eps_mean=eps_m, eps_cov=eps_c, diag=diag)
        m2, c2 = type(self).parts(out.mean, out.cov, args[2], args[3], diag=diag)
        assert_close(m2, eps_m, rtol=LAND_RTOL_F64)
        assert_close(c2, eps_c, rtol=LAND_RTOL_F64)

    @pytest.mark.parametrize("diag", [False, True])
    def test_mixed_batch_with_array_bounds(self, xp: ModuleType, diag: bool) -> None:
        """State 0 inside both bounds (unchanged), state 1 outside both (lands on them)."""
        args = self._inputs(xp, diag)
        m, c = type(self).parts(*args, diag=diag)
        scale = asarray(xp, [2.0, 0.25])
        out = type(self).project(*args, eps_mean=scale * m, eps_cov=scale * c, diag=diag)
        assert_equal(out.mean[0], args[0][0])
        assert_equal(out.cov[0], args[1][0])
        m2, c2 = type(self).parts(out.mean, out.cov, args[2], args[3], diag=diag)
        assert_close(m2[1], 0.25 * m[1], rtol=LAND_RTOL_F64)
        assert_close(c2[1], 0.25 * c[1], rtol=LAND_RTOL_F64)

    # -- parametrisations, back ends and dtypes --

    def test_diag_equals_full_on_diagonal_inputs(self, xp: ModuleType) -> None:
        mean, var, old_mean, old_var = self._inputs(xp, diag=True)
        full = (mean, xp.asarray(diag_embed(to_numpy(var))), old_mean)
        full = (*full, xp.asarray(diag_embed(to_numpy(old_var))))
        kw = {"eps_mean": 0.1, "eps_cov": 0.05}
        out_d = type(self).project(mean, var, old_mean, old_var, diag=True, **kw)
        out_f = type(self).project(*full, diag=False, **kw)
        assert_close(out_f.mean, out_d.mean, rtol=1e-12)
        assert_close(out_f.cov, xp.asarray(diag_embed(to_numpy(out_d.cov))), rtol=1e-10)

    @pytest.mark.parametrize("diag", [False, True])
    def test_numpy_matches_torch(self, diag: bool) -> None:
        raw = diag_problem() if diag else problem()
        kw = {"eps_mean": 0.1, "eps_cov": 0.05, "diag": diag}
        out_np = type(self).project(*raw, **kw)
        out_t = type(self).project(*(torch.from_numpy(a) for a in raw), **kw)
        for a, b in zip(out_t, out_np, strict=True):
            assert isinstance(a, torch.Tensor) and isinstance(b, np.ndarray)
            np.testing.assert_allclose(to_numpy(a), b, rtol=1e-11, atol=1e-13)

    @pytest.mark.parametrize("diag", [False, True])
    def test_float32_close_to_float64_and_dtype_kept(self, xp: ModuleType, diag: bool) -> None:
        kw = {"eps_mean": 0.1, "eps_cov": 0.05, "diag": diag}
        out64 = type(self).project(*self._inputs(xp, diag, "float64"), **kw)
        out32 = type(self).project(*self._inputs(xp, diag, "float32"), **kw)
        for a32, a64 in zip(out32, out64, strict=True):
            assert a32.dtype == xp.float32
            assert_close(a32, xp.astype(a64, xp.float32), rtol=2e-4)

    def test_broadcast_noncontextual_old(self, xp: ModuleType) -> None:
        """An old policy ``(d,)``, ``(d, d)`` against a batch ``(B, d)``, ``(B, d, d)``."""
        mean, cov, old_mean, old_cov = self._inputs(xp, diag=False)
        kw = {"eps_mean": 0.1, "eps_cov": 0.05, "diag": False}
        out = type(self).project(mean, cov, old_mean[0], old_cov[0], **kw)
        assert tuple(out.mean.shape) == (2, D) and tuple(out.cov.shape) == (2, D, D)
        for b in range(2):
            sl = slice(b, b + 1)
            ref = type(self).project(mean[sl], cov[sl], old_mean[:1], old_cov[:1], **kw)
            assert_close(out.mean[sl], ref.mean, rtol=1e-12)
            assert_close(out.cov[sl], ref.cov, rtol=1e-12)

    @pytest.mark.parametrize("diag", [False, True])
    def test_unbatched_matches_batched(self, xp: ModuleType, diag: bool) -> None:
        """No batch dimension at all: ``mean (d,)``, ``cov (d, d)`` (or ``(d,)``), active parts."""
        args = self._inputs(xp, diag)
        kw = {"eps_mean": 0.01, "eps_cov": 0.01, "diag": diag}
        batched = type(self).project(*args, **kw)
        single = type(self).project(*(a[0] for a in args), **kw)
        assert_close(single.mean, batched.mean[0], rtol=1e-12)
        assert_close(single.cov, batched.cov[0], rtol=1e-12)

    # -- gradients (torch, float64) --

    @pytest.mark.parametrize("diag", [False, True])
    def test_gradcheck_all_inputs(self, diag: bool) -> None:
        raw = [torch.from_numpy(a) for a in (diag_problem() if diag else problem())]
        mean, cov, old_mean, old_cov = (a.clone().requires_grad_() for a in raw)
        m, c = type(self).parts(*(a.detach() for a in (mean, cov, old_mean, old_cov)), diag=diag)
        eps_m = (0.3 * m).requires_grad_()
        eps_c = (0.3 * c).requires_grad_()

        def fn(mu, s, mu_o, s_o, e_m, e_c):
            if not diag:
                s, s_o = sym_param(s), sym_param(s_o)
            out = type(self).project(mu, s, mu_o, s_o, eps_mean=e_m, eps_cov=e_c, diag=diag)
            return out.mean, out.cov

        assert torch.autograd.gradcheck(fn, (mean, cov, old_mean, old_cov, eps_m, eps_c))

    @pytest.mark.parametrize("diag", [False, True])
    def test_inactive_identity_jacobian(self, diag: bool) -> None:
        raw = [torch.from_numpy(a) for a in (diag_problem() if diag else problem())]
        mean, cov, old_mean, old_cov = (a.clone().requires_grad_() for a in raw)
        m, c = type(self).parts(*raw, diag=diag)
        out = type(self).project(
            mean, cov, old_mean, old_cov, eps_mean=2 * m, eps_cov=2 * c, diag=diag
        )
        gen = torch.Generator().manual_seed(0)
        w_mean = torch.randn(out.mean.shape, generator=gen, dtype=torch.float64)
        w_cov = torch.randn(out.cov.shape, generator=gen, dtype=torch.float64)
        loss = (out.mean * w_mean).sum() + (out.cov * w_cov).sum()
        g = torch.autograd.grad(loss, (mean, cov, old_mean, old_cov), allow_unused=True)
        assert_equal(g[0], w_mean)
        assert_equal(g[1], w_cov)
        for gi in g[2:]:
            assert gi is None or bool((gi == 0).all())

    @pytest.mark.parametrize("diag", [False, True])
    def test_repeated_eigenvalues_finite_gradients(self, diag: bool) -> None:
        """``cov = c · old_cov`` and ``cov = c · I`` (active), gradients w.r.t. all inputs."""
        old_cov_np = np.full(D, 1.7) if diag else spd(D, 4.0, 3)
        eye = np.ones(D) if diag else np.eye(D)
        for cov_np in (3.0 * old_cov_np, 3.0 * eye, 0.2 * old_cov_np):
            mean = torch.ones(1, D, dtype=torch.float64, requires_grad=True)
            old_mean = torch.zeros(1, D, dtype=torch.float64, requires_grad=True)
            cov = torch.tensor(cov_np[None], requires_grad=True)
            old_cov = torch.tensor(old_cov_np[None], requires_grad=True)
            out = type(self).project(
                mean, cov, old_mean, old_cov, eps_mean=0.01, eps_cov=0.01, diag=diag
            )
            loss = out.mean.square().sum() + out.cov.square().sum()
            grads = torch.autograd.grad(loss, (mean, cov, old_mean, old_cov))
            assert_finite(out.mean, out.cov, *grads)

    # -- ill-conditioned inputs --

    @pytest.mark.parametrize("bound", [1e-8, 10.0])
    @pytest.mark.parametrize("d", [1, 17, 64])
    @pytest.mark.parametrize(("dtype", "cond"), [("float64", 1e8), ("float32", 1e4)])
    def test_ill_conditioned_finite(self, d: int, dtype: str, cond: float, bound: float) -> None:
        """Full and diagonal covariances of condition number ``cond``: finite values and grads."""
        rng = np.random.default_rng(d)
        old_mean = rng.standard_normal(d)
        mean = old_mean + rng.standard_normal(d)
        spread = np.logspace(-0.5, 0.5, d) ** math.log10(cond) if d > 1 else np.ones(1)
        cases = {
            False: (spd(d, cond, seed=d), 0.5 * spd(d, cond, seed=d + 1)),
            True: (spread, 0.5 * rng.permutation(spread)),
        }
        for diag, (old_cov, cov) in cases.items():
            raw = (mean, cov, old_mean, old_cov)
            ts = [torch.tensor(a[None], dtype=getattr(torch, dtype)) for a in raw]  # batch of 1
            ts = [t.requires_grad_() for t in ts]
            out = type(self).project(*ts, eps_mean=bound, eps_cov=bound, diag=diag)
            assert out.mean.dtype == ts[0].dtype and out.cov.dtype == ts[0].dtype
            loss = out.mean.sum() + out.cov.sum()
            grads = torch.autograd.grad(loss, ts)
            assert_finite(out.mean, out.cov, *grads)
