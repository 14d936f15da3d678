"""Unit tests of :func:`trpl_math.kl_projection` (the paper's Eq. 6 and 10-11)."""

from __future__ import annotations

import contextlib
import math
from types import ModuleType

import numpy as np
import pytest
import scipy.optimize
import torch
from _helpers import (
    LAND_RTOL_F64,
    ProjectionCases,
    asarray,
    assert_close,
    problem,
    rotation,
    spd,
    sym_param,
    to_numpy,
)

import trpl_math as tm
from verification import _mp


def _kl_cov_np(cov: np.ndarray, old_cov: np.ndarray) -> float:
    """½[tr(Σ_o⁻¹Σ) - d + log|Σ_o| - log|Σ|] with explicit inverses (test-side reference)."""
    d = cov.shape[-1]
    return 0.5 * (
        np.trace(np.linalg.solve(old_cov, cov))
        - d
        + np.linalg.slogdet(old_cov)[1]
        - np.linalg.slogdet(cov)[1]
    )


def _precision_interpolation(cov: np.ndarray, old_cov: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 11 with η found by ``brentq``: Σ̃ = ((η Λ_o + Λ)/(η + 1))⁻¹."""

    def sigma(eta: float) -> np.ndarray:
        return np.linalg.inv((eta * np.linalg.inv(old_cov) + np.linalg.inv(cov)) / (eta + 1.0))

    eta = scipy.optimize.brentq(
        lambda e: _kl_cov_np(sigma(e), old_cov) - eps, 0.0, 1e8, xtol=1e-14, rtol=1e-15
    )
    return sigma(eta)


class TestKLProjection(ProjectionCases):
    project = staticmethod(tm.kl_projection)
    parts = staticmethod(tm.kl_divergence)

    @pytest.mark.parametrize("ratio", [4.0, 0.25])
    @pytest.mark.parametrize("diag", [True, False])
    def test_1d_hand_brentq(self, xp: ModuleType, ratio: float, diag: bool) -> None:
        """In 1-D the bound alone fixes r = σ̃²/σ_o²: ½(r - 1 - log r) = ε on the side of σ²."""
        eps, old_var = 0.05, 1.7
        bracket = (1.0, ratio) if ratio > 1 else (ratio, 1.0)
        r = scipy.optimize.brentq(lambda x: 0.5 * (x - 1 - math.log(x)) - eps, *bracket, xtol=1e-15)
        shape = (lambda v: [[v]]) if diag else (lambda v: [[[v]]])
        out = tm.kl_projection(
            asarray(xp, [[0.0]]),
            asarray(xp, shape(ratio * old_var)),
            asarray(xp, [[0.0]]),
            asarray(xp, shape(old_var)),
            eps_mean=0.1,
            eps_cov=eps,
            diag=diag,
        )
        assert_close(out.cov, asarray(xp, shape(r * old_var)), rtol=1e-12)

    def test_1d_mean_hand(self, xp: ModuleType) -> None:
        # m = ½ (3 - 1)²/2 = 1 > ε = ¼: t = sqrt(¼) = ½, μ̃ = 1 + ½·2 = 2.
        out = tm.kl_projection(
            asarray(xp, [[3.0]]),
            asarray(xp, [[2.0]]),
            asarray(xp, [[1.0]]),
            asarray(xp, [[2.0]]),
            eps_mean=0.25,
            eps_cov=0.1,
            diag=True,
        )
        assert_close(out.mean, asarray(xp, [[2.0]]))
        assert bool(xp.all(out.cov == asarray(xp, [[2.0]])))

    def test_2d_diagonal_hand_brentq(self, xp: ModuleType) -> None:
        old_var, var, eps = np.array([1.0, 4.0]), np.array([3.0, 0.5]), 0.02
        want = np.diag(_precision_interpolation(np.diag(var), np.diag(old_var), eps))
        out = tm.kl_projection(
            asarray(xp, [[0.0, 0.0]]),
            asarray(xp, [var]),
            asarray(xp, [[0.0, 0.0]]),
            asarray(xp, [old_var]),
            eps_mean=0.1,
            eps_cov=eps,
            diag=True,
        )
        assert_close(out.cov, asarray(xp, [want]), rtol=1e-11)

    def test_2d_full_non_commuting_brentq(self, xp: ModuleType) -> None:
        old_cov = rotation(0.3) @ np.diag([2.0, 0.5]) @ rotation(0.3).T
        cov = rotation(-0.9) @ np.diag([6.0, 0.2]) @ rotation(-0.9).T
        eps = 0.05
        out = tm.kl_projection(
            asarray(xp, [[0.0, 0.0]]),
            asarray(xp, [cov]),
            asarray(xp, [[0.0, 0.0]]),
            asarray(xp, [old_cov]),
            eps_mean=0.1,
            eps_cov=eps,
        )
        want = _precision_interpolation(cov, old_cov, eps)
        assert_close(out.cov, asarray(xp, [want]), rtol=1e-10)

    @pytest.mark.parametrize("diag", [True, False])
    def test_d1_active_gradient_wrt_cov_vanishes(self, diag: bool) -> None:
        """In 1-D an active projection is fixed by the bound alone: ∂Σ̃/∂Σ = 0 (docs/math.md §3.7,
        §4.2)."""
        shape = (lambda v: [[v]]) if diag else (lambda v: [[[v]]])
        for ratio in (4.0, 0.25):
            cov = torch.tensor(shape(ratio * 1.3), dtype=torch.float64, requires_grad=True)
            old_cov = torch.tensor(shape(1.3), dtype=torch.float64)
            zero = torch.zeros(1, 1, dtype=torch.float64)
            out = tm.kl_projection(zero, cov, zero, old_cov, eps_mean=0.1, eps_cov=0.05, diag=diag)
            (g,) = torch.autograd.grad(out.cov.sum(), cov)
            assert float(g.abs().max()) < 1e-8

    def test_gradient_wrt_eps_matches_finite_difference(self) -> None:
        """dΣ̃/dε from the implicit backward against a central difference of the brentq solution."""
        old_cov = rotation(0.3) @ np.diag([2.0, 0.5]) @ rotation(0.3).T
        cov = rotation(-0.9) @ np.diag([6.0, 0.2]) @ rotation(-0.9).T
        eps = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        zero = torch.zeros(1, 2, dtype=torch.float64)
        out = tm.kl_projection(
            zero,
            torch.tensor(cov[None]),
            zero,
            torch.tensor(old_cov[None]),
            eps_mean=0.1,
            eps_cov=eps,
        )
        (g,) = torch.autograd.grad(out.cov[0, 0, 1], eps)
        h = 1e-5
        fd = (
            _precision_interpolation(cov, old_cov, 0.05 + h)[0, 1]
            - _precision_interpolation(cov, old_cov, 0.05 - h)[0, 1]
        ) / (2 * h)
        np.testing.assert_allclose(float(g), fd, rtol=1e-6)

    def test_tiny_bound_lands(self, xp: ModuleType) -> None:
        """ε = 1e-8 of a KL of order 1 still lands within 1e-10 relative (the series KL)."""
        old = (asarray(xp, [[0.0, 0.0]]), asarray(xp, [np.eye(2)]))
        out = tm.kl_projection(
            asarray(xp, [[1.0, 0.0]]),
            asarray(xp, [[[3.0, 1.0], [1.0, 2.0]]]),
            *old,
            eps_mean=1e-8,
            eps_cov=1e-8,
        )
        parts = tm.kl_divergence(*out, *old)
        assert_close(parts.mean, asarray(xp, [1e-8]), rtol=LAND_RTOL_F64)
        assert_close(parts.cov, asarray(xp, [1e-8]), rtol=LAND_RTOL_F64)


class TestLargeRatios:
    @pytest.mark.parametrize("diag", [True, False])
    def test_far_shrunk_covariance_lands_on_the_bound(self, xp: ModuleType, diag: bool) -> None:
        # λ = Σ_o/Σ = 1e8, ε_Σ = 10: at the root ν = 1 + t(λ - 1) ~ 6e4, and log1p of
        # 1/ν - 1 (near -1) carried ν times its rounding (2.4e-13 relative off the bound).
        old_var = np.array([1.0, 2.0])
        old = old_var if diag else np.diag(old_var)
        new = old / 1e8
        args = [asarray(xp, a) for a in (np.zeros(2), new, np.zeros(2), old)]
        out = tm.kl_projection(*args, eps_mean=1.0, eps_cov=10.0, diag=diag)
        cov = to_numpy(out.cov)
        ratio = cov / old_var if diag else np.diag(cov) / old_var
        import mpmath

        with mpmath.workdps(40):
            part = 0.5 * sum(mpmath.mpf(r) - 1 - mpmath.log(mpmath.mpf(r)) for r in ratio)
        assert abs(float(part / 10.0 - 1)) <= 2e-15

    def test_a_batch_mixing_near_and_far_states_gives_each_its_own_result(
        self, xp: ModuleType
    ) -> None:
        # Σ̃ is built about Σ_o where every |1/ν - 1| ≤ ½ and directly elsewhere
        # (projections.kl.pencil_cov): a mixed batch selects per state, bit for bit the result
        # each state gets alone, and both land on their bounds.
        old = spd(3, cond=10.0, seed=1)
        covs = np.stack([old / 1e8, old + 0.3 * spd(3, cond=3.0, seed=2)])
        olds, zeros = np.stack([old, old]), np.zeros((2, 3))
        eps = np.array([10.0, 1e-3])
        args = [asarray(xp, a) for a in (zeros, covs, zeros, olds)]
        both = to_numpy(tm.kl_projection(*args, eps_mean=1.0, eps_cov=asarray(xp, eps)).cov)
        for i in range(2):
            alone = [asarray(xp, a[i : i + 1]) for a in (zeros, covs, zeros, olds)]
            one = tm.kl_projection(*alone, eps_mean=1.0, eps_cov=float(eps[i])).cov
            np.testing.assert_array_equal(both[i], to_numpy(one)[0])
            got = _mp.kl_parts(np.zeros(3), both[i], np.zeros(3), old)[1]
            assert abs(got / eps[i] - 1.0) <= 1e-13


class _OldNumpy:
    """NumPy as 1.26 spells it: without the array-API additions of 2.x."""

    MISSING = frozenset(
        {"astype", "bool", "concat", "permute_dims", "matrix_transpose", "vecdot", "pow", "isdtype"}
    )

    def __getattr__(self, name: str):
        if name in self.MISSING:
            raise AttributeError(f"numpy 1.26 has no {name}")
        return getattr(np, name)


@pytest.mark.parametrize("diag", [True, False])
@pytest.mark.parametrize("joint", [False, True])
def test_host_solve_needs_only_numpy_1_26(monkeypatch, diag: bool, joint: bool) -> None:
    """The Newton solves and the diagonal backward run on plain NumPy for CPU tensors; they must
    not use what only NumPy 2 has (the project allows numpy>=1.26)."""
    from trpl_math import _backend as B

    rng = np.random.default_rng(3)
    d = 3
    old_mean, mean = rng.normal(size=(5, d)), rng.normal(size=(5, d))
    if diag:
        old_cov, cov = rng.uniform(0.5, 2.0, (5, d)), rng.uniform(0.2, 4.0, (5, d))
    else:
        a, b = rng.normal(size=(2, 5, d, d))
        old_cov, cov = (
            a @ a.transpose(0, 2, 1) + np.eye(d),
            b @ b.transpose(0, 2, 1) + 0.5 * np.eye(d),
        )

    def run() -> list[np.ndarray]:
        args = [torch.tensor(x, requires_grad=True) for x in (mean, cov, old_mean, old_cov)]
        if joint:
            proj = tm.kl_joint_projection(*args, eps=0.05, diag=diag)
        else:
            proj = tm.kl_projection(*args, eps_mean=0.05, eps_cov=0.01, diag=diag)
        (proj.mean.square().sum() + proj.cov.square().sum()).backward()
        return [proj.mean.detach().numpy(), proj.cov.detach().numpy()] + [
            x.grad.numpy() for x in args
        ]

    want = run()
    real = B.to_host

    def old_host(xp, *arrays):
        hx, out = real(xp, *arrays)
        return (_OldNumpy() if hx is np else hx), out

    monkeypatch.setattr(B, "to_host", old_host)
    got = run()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def _mixed_diag_problem(
    batch: int, d: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """``(mean, var, old_mean, old_var)`` with a quarter of the states inside both bounds, a
    quarter outside the mean bound alone, a quarter outside the covariance bound alone and the
    rest outside both (for ``eps_mean = 0.03``, ``eps_cov = 1e-3``)."""
    g = torch.Generator().manual_seed(seed)
    q = batch // 4
    near_m = torch.tensor([0.01] * q + [1.0] * q + [0.01] * q + [1.0] * (batch - 3 * q))
    near_c = torch.tensor([1e-3] * 2 * q + [1.0] * (batch - 2 * q))
    old_mean = torch.randn(batch, d, generator=g, dtype=torch.float64)
    mean = old_mean + near_m[:, None] * torch.randn(batch, d, generator=g, dtype=torch.float64)
    old_var = torch.rand(batch, d, generator=g, dtype=torch.float64) + 0.5
    noise = torch.randn(batch, d, generator=g, dtype=torch.float64)
    var = old_var * torch.exp(near_c[:, None] * noise)
    return tuple(x.to(dtype) for x in (mean, var, old_mean, old_var))


def _array_path(*args, **kw):
    """The projection as a chain of torch operations (the path before the fused node)."""
    from trpl_math.projections.kl import _kl_projection

    return _kl_projection(*args, **kw)


class TestFusedDiagonalNode:
    """The diagonal KL projection of CPU tensors runs as one autograd node
    (``KLDiagProjection``); it must agree with the array path in values and gradients."""

    def test_node_is_used(self) -> None:
        args = [x.requires_grad_() for x in _mixed_diag_problem(8, 3, torch.float64)]
        out = tm.kl_projection(*args, eps_mean=0.03, eps_cov=1e-3, diag=True)
        assert type(out.mean.grad_fn).__name__ == "KLDiagProjectionBackward"
        assert out.mean.grad_fn is out.cov.grad_fn

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    @pytest.mark.parametrize("validate", [True, False])
    @pytest.mark.parametrize("shape", ["batch", "shared_cov", "shared_old"])
    def test_matches_array_path(self, dtype: torch.dtype, validate: bool, shape: str) -> None:
        """Outputs and every gradient (tensor bounds too) against the array path, states
        active and inactive mixed, covariances per state or shared by the batch."""
        mean, var, old_mean, old_var = _mixed_diag_problem(16, 5, dtype)
        if shape == "shared_cov":
            var = var[4:5]
        elif shape == "shared_old":
            old_var, var = old_var[9:10], var[9:10] * 1.5
        g = torch.Generator().manual_seed(7)
        eps_m = torch.tensor(0.03, dtype=torch.float64)
        eps_c = torch.full((16,), 1e-3, dtype=dtype)

        def run(fn) -> list[torch.Tensor]:
            args = [x.clone().requires_grad_() for x in (mean, var, old_mean, old_var)]
            bounds = [e.clone().requires_grad_() for e in (eps_m, eps_c)]
            ctx = contextlib.nullcontext() if validate else tm.no_validation()
            with ctx:
                out = fn(*args, eps_mean=bounds[0], eps_cov=bounds[1], diag=True)
            weights = [torch.randn(o.shape, generator=g.manual_seed(3 + i), dtype=dtype)
                       for i, o in enumerate(out)]  # fmt: skip
            sum((o * w).sum() for o, w in zip(out, weights, strict=True)).backward()
            return [o.detach() for o in out] + [x.grad for x in (*args, *bounds)]

        got, want = run(tm.kl_projection), run(_array_path)
        rtol = 1e-13 if dtype == torch.float64 else 1e-6
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            scale = float(b.abs().max()) or 1.0
            assert float((a - b).abs().max()) <= rtol * scale

    def test_gradcheck_mixed_active(self) -> None:
        """``gradcheck`` of the node with respect to all six inputs, float64, active and inactive
        states of both parts mixed, a bound per state and one shared."""
        raw = _mixed_diag_problem(8, 3, torch.float64, seed=1)
        inputs = [x.clone().requires_grad_() for x in raw]
        eps_m = torch.tensor(0.03, dtype=torch.float64, requires_grad=True)
        eps_c = torch.full((8,), 1e-3, dtype=torch.float64, requires_grad=True)

        def fn(*a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with tm.no_validation():
                out = tm.kl_projection(*a[:4], eps_mean=a[4], eps_cov=a[5], diag=True)
            return out.mean, out.cov

        assert torch.autograd.gradcheck(fn, (*inputs, eps_m, eps_c))

    def test_other_arguments_take_the_array_path(self) -> None:
        """Mixed dtypes or NumPy bounds are not the node's: the array path takes them (and
        reports what is wrong with them) and gives what it always gave."""
        mean, var, old_mean, old_var = _mixed_diag_problem(4, 2, torch.float64)
        kw = {"eps_mean": 0.03, "eps_cov": 1e-3, "diag": True}
        mixed = (mean.float(), var, old_mean, old_var)
        got, want = tm.kl_projection(*mixed, **kw), _array_path(*mixed, **kw)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and bool((a == b).all())
        with pytest.raises(TypeError):
            tm.kl_projection(
                mean, var, old_mean, old_var, eps_mean=np.float32(0.1), eps_cov=0.1, diag=True
            )

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_training_grads_only(self, dtype: torch.dtype) -> None:
        """As in a training step: gradients for the mean and the variance alone (the old policy
        and the bounds constant, the covariance shared by the batch)."""
        mean, var, old_mean, old_var = _mixed_diag_problem(12, 3, dtype, seed=2)
        var, old_var = var[5:6], old_var[5:6]

        def run(fn) -> list[torch.Tensor]:
            m, v = mean.clone().requires_grad_(), var.clone().requires_grad_()
            with tm.no_validation():
                out = fn(m, v, old_mean, old_var, eps_mean=0.03, eps_cov=1e-3, diag=True)
            (out.mean.square().sum() + 3.0 * out.cov.sum()).backward()
            return [out.mean.detach(), out.cov.detach(), m.grad, v.grad]

        rtol = 1e-13 if dtype == torch.float64 else 1e-6
        for a, b in zip(run(tm.kl_projection), run(_array_path), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert float((a - b).abs().max()) <= rtol * float(b.abs().max())


class TestFullCovarianceNode:
    """``KLCovProjection`` on full covariances: a batch whose states are all active takes a
    path without gather and scatter, a mixed one gathers the active states and scatters their
    gradients back, and ``∂L/∂Σ_o`` is formed only when the old covariance asks for it."""

    @staticmethod
    def _batch() -> tuple[list[torch.Tensor], torch.Tensor]:
        """Four states and a covariance bound per state: states 1 and 3 inside their bound."""
        raw = [torch.from_numpy(a) for a in problem(seed=3, batch=4)]
        c = tm.kl_divergence(*raw).cov
        eps_c = torch.where(torch.arange(4) % 2 == 1, 2.0 * c, 0.3 * c)
        return raw, eps_c

    @staticmethod
    def _grads(raw: list[torch.Tensor], eps_c: torch.Tensor, *, old: bool) -> list[torch.Tensor]:
        """Projected covariance, ∂L/∂Σ, ∂L/∂ε_Σ (and ∂L/∂Σ_o with ``old``) of a fixed loss."""
        cov = raw[1].clone().requires_grad_()
        old_cov = raw[3].clone().requires_grad_(old)
        eps = eps_c.clone().requires_grad_()
        out = tm.kl_projection(raw[0], cov, raw[2], old_cov, eps_mean=1.0, eps_cov=eps)
        d = out.cov.shape[-1]
        weight = torch.linspace(-1.0, 2.0, d * d, dtype=torch.float64).reshape(d, d)
        loss = (out.cov * weight).sum()  # the same weights for every state
        wrt = (cov, eps, old_cov) if old else (cov, eps)
        return [out.cov.detach(), *torch.autograd.grad(loss, wrt)]

    def test_mixed_batch_gives_each_state_its_own_result(self) -> None:
        raw, eps_c = self._batch()
        batch = self._grads(raw, eps_c, old=True)
        for b in range(4):
            alone = self._grads([x[b : b + 1] for x in raw], eps_c[b : b + 1], old=True)
            for got, want in zip(batch, alone, strict=True):
                assert_close(got[b : b + 1], want, rtol=1e-13, atol=1e-15)
        for b in (1, 3):  # inside: identity for Σ, nothing for Σ_o and ε
            assert bool((batch[3][b] == 0).all()) and float(batch[2][b]) == 0.0

    def test_all_active_batch_matches_the_gathering_path(self) -> None:
        """The same active states with and without an inactive one among them."""
        raw, eps_c = self._batch()
        mixed = self._grads(raw, eps_c, old=True)
        keep = torch.tensor([0, 2])
        active = self._grads([x[keep] for x in raw], eps_c[keep], old=True)
        for got, want in zip(active, mixed, strict=True):
            assert_close(got, want[keep], rtol=1e-13, atol=1e-15)

    def test_old_covariance_gradient_only_when_asked(self) -> None:
        raw, eps_c = self._batch()
        with_old = self._grads(raw, eps_c, old=True)
        without = self._grads(raw, eps_c, old=False)
        for got, want in zip(without, with_old[:3], strict=True):
            assert bool((got == want).all())

    def test_gradcheck_mixed_batch(self) -> None:
        raw, eps_c = self._batch()
        cov, old_cov = (x.clone().requires_grad_() for x in (raw[1], raw[3]))
        eps = eps_c.clone().requires_grad_()

        def fn(c: torch.Tensor, c_o: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
            return tm.kl_projection(
                raw[0], sym_param(c), raw[2], sym_param(c_o), eps_mean=1.0, eps_cov=e
            ).cov

        assert torch.autograd.gradcheck(fn, (cov, old_cov, eps))


class TestOneFactorOfTheOldCovariance:
    """The mean's Mahalanobis part and the covariance projection share one Cholesky factor of
    ``Σ_o`` (it used to be taken twice per call): the same bits, one factorisation less."""

    @pytest.mark.parametrize("lib", ["numpy", "torch"])
    def test_each_covariance_factorised_once(self, lib: str, monkeypatch) -> None:
        from trpl_math import _backend

        names: list[str] = []
        real = _backend.cholesky

        def counting(x, xp, *, name, check):
            names.append(name)
            return real(x, xp, name=name, check=check)

        raw = problem(seed=4, batch=3)
        args = raw if lib == "numpy" else tuple(torch.from_numpy(a) for a in raw)
        want = tm.kl_projection(*args, eps_mean=0.01, eps_cov=0.01)
        monkeypatch.setattr(_backend, "cholesky", counting)
        got = tm.kl_projection(*args, eps_mean=0.01, eps_cov=0.01)
        assert sorted(names) == ["cov", "old_cov"]
        for a, b in zip(got, want, strict=True):
            assert bool((a == b).all())

    @pytest.mark.parametrize("lib", ["numpy", "torch"])
    def test_given_factor_gives_the_same_bits(self, lib: str) -> None:
        from trpl_math import _backend
        from trpl_math.projections.kl import kl_cov_eigen_projection

        _, cov, _, old_cov = problem(seed=5, batch=4)
        eps = np.full(4, 0.01)
        if lib == "torch":
            cov, old_cov, eps = (torch.from_numpy(a) for a in (cov, old_cov, eps))
        xp = _backend.namespace(cov)
        factor = _backend.cholesky(old_cov, xp, name="old_cov", check=True)
        given = kl_cov_eigen_projection(cov, old_cov, eps, False, xp, factor)
        taken = kl_cov_eigen_projection(cov, old_cov, eps, False, xp)
        for a, b in zip(given, taken, strict=True):
            assert bool((a == b).all())


class TestNewtonStart:
    """The first guess of the covariance root (``kl_cov_start``) changes the cost of Newton's
    method, not its result."""

    def test_root_independent_of_the_guess(self) -> None:
        from trpl_math.projections._kl_solver import kl_cov_curve, kl_cov_root, solve_in_t

        rng = np.random.default_rng(4)
        for sigma in (0.01, 0.3, 1.0, 3.0):
            lam = np.exp(sigma * rng.normal(size=(200, 5)))
            kl = 0.5 * np.sum(1.0 / lam - 1.0 + np.log(lam), axis=-1)
            for eps in (1e-8, 1e-3, 0.1):
                active = kl > eps
                got = kl_cov_root(lam, eps, active, np)
                want = solve_in_t(lambda t, lam=lam: kl_cov_curve(lam, t, np), eps, active, np, kl)
                # at ε = 1e-8 the direct φ(x) of the curve is itself only good to ~1e-11
                np.testing.assert_allclose(got, want, rtol=1e-12 if eps >= 1e-3 else 1e-10)
                assert np.all(got[~active] == 1.0)

    def test_guess_finite_for_extreme_ratios(self) -> None:
        from trpl_math.projections._kl_solver import kl_cov_start

        lam = np.array([[1e-150, 1.0], [1e150, 1.0], [1e300, 1e-300], [1.0 + 1e-12, 1.0]])
        s = kl_cov_start(lam, 1e-3, np.ones(4, dtype=bool), np)
        assert np.all(np.isfinite(s)) and np.all(s <= 0.0)
