"""Unit tests of :func:`trpl_math.entropy_projection` and :func:`trpl_math.entropy_schedule`
(Sec. 4.2, Algorithm 1; docs/math.md §5)."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest
import torch
from _helpers import (
    asarray,
    assert_close,
    assert_equal,
    assert_finite,
    diag_embed,
    problem,
    spd,
    sym_param,
    to_numpy,
)

import trpl_math as tm

LOG_2PIE = math.log(2 * math.pi * math.e)


class TestEntropyProjection:
    @pytest.mark.parametrize("diag", [True, False])
    def test_1d_hand(self, xp: ModuleType, diag: bool) -> None:
        """In 1-D, H(σ²) = β means σ² = exp(2β) / (2πe), whatever the input variance."""
        beta = 0.7
        c = [0.1] if diag else [[0.1]]
        out = tm.entropy_projection(asarray(xp, c), entropy_bound=beta, diag=diag)
        want = math.exp(2 * beta) / (2 * math.pi * math.e)
        assert_close(out, asarray(xp, [want] if diag else [[want]]))

    def test_2d_full_hand(self, xp: ModuleType) -> None:
        """Σ ↦ s Σ with s² |Σ| = exp(2β) / (2πe)², |[[2, 1], [1, 2]]| = 3."""
        beta = 4.0
        cov = np.array([[2.0, 1.0], [1.0, 2.0]])
        s = math.exp(beta) / (2 * math.pi * math.e) / math.sqrt(3.0)
        assert_close(
            tm.entropy_projection(asarray(xp, cov), entropy_bound=beta), asarray(xp, s * cov)
        )

    @pytest.mark.parametrize("diag", [False, True])
    def test_inequality_only_where_below(self, xp: ModuleType, diag: bool) -> None:
        _, cov, _, _ = problem(batch=3)
        cov = cov * np.array([0.1, 1.0, 10.0])[:, None, None]
        if diag:
            cov = np.diagonal(cov, axis1=-2, axis2=-1).copy()
        c = asarray(xp, cov)
        h = tm.entropy(c, diag=diag)
        beta = float(h[1])  # state 0 below, state 1 on, state 2 above the bound
        out = tm.entropy_projection(c, entropy_bound=beta, diag=diag)
        assert_close(tm.entropy(out, diag=diag)[0], asarray(xp, beta))
        assert_equal(out[1:], c[1:])

    @pytest.mark.parametrize("diag", [False, True])
    def test_equality_everywhere(self, xp: ModuleType, diag: bool) -> None:
        _, cov, _, _ = problem(batch=3)
        cov = cov * np.array([0.1, 1.0, 10.0])[:, None, None]
        if diag:
            cov = np.diagonal(cov, axis1=-2, axis2=-1).copy()
        beta = asarray(xp, [1.0, 2.0, 3.0])  # bounds as an array of the batch shape
        out = tm.entropy_projection(asarray(xp, cov), entropy_bound=beta, equality=True, diag=diag)
        assert_close(tm.entropy(out, diag=diag), beta)

    def test_inside_unchanged_bitwise(self, xp: ModuleType) -> None:
        c = asarray(xp, spd(3, 5.0))
        assert_equal(tm.entropy_projection(c, entropy_bound=-10.0), c)

    def test_diag_equals_full(self, xp: ModuleType) -> None:
        v = np.array([[0.5, 2.0, 0.1], [3.0, 0.1, 7.0]])
        for equality in (False, True):
            d = tm.entropy_projection(
                asarray(xp, v), entropy_bound=3.0, diag=True, equality=equality
            )
            f = tm.entropy_projection(
                asarray(xp, diag_embed(v)), entropy_bound=3.0, equality=equality
            )
            assert_close(f, asarray(xp, diag_embed(to_numpy(d))))

    def test_numpy_matches_torch_and_float32(self) -> None:
        _, cov, _, _ = problem(batch=2)
        a = tm.entropy_projection(cov, entropy_bound=5.0, equality=True)
        b = tm.entropy_projection(torch.from_numpy(cov), entropy_bound=5.0, equality=True)
        c = tm.entropy_projection(torch.from_numpy(cov).float(), entropy_bound=5.0, equality=True)
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-13)
        assert c.dtype == torch.float32
        np.testing.assert_allclose(c.numpy(), a, rtol=1e-5)

    def test_broadcast_scalar_bound_batch_cov(self, xp: ModuleType) -> None:
        _, cov, _, _ = problem(batch=3)
        out = tm.entropy_projection(asarray(xp, cov), entropy_bound=asarray(xp, 5.0), equality=True)
        assert tuple(out.shape) == (3, 3, 3)
        assert_close(tm.entropy(out), asarray(xp, [5.0, 5.0, 5.0]))

    @pytest.mark.parametrize("equality", [False, True])
    def test_gradcheck(self, equality: bool) -> None:
        _, cov, _, _ = problem(batch=2)
        c = torch.from_numpy(cov).requires_grad_()
        beta = tm.entropy(c.detach()) + torch.tensor([0.5, -0.5], dtype=torch.float64)
        beta.requires_grad_()

        def fn(s, b):
            return tm.entropy_projection(sym_param(s), entropy_bound=b, equality=equality)

        assert torch.autograd.gradcheck(fn, (c, beta))

    def test_inactive_identity_jacobian(self) -> None:
        c = torch.from_numpy(spd(3, 5.0)).requires_grad_()
        out = tm.entropy_projection(c, entropy_bound=-10.0)
        w = torch.randn_like(out)
        (g,) = torch.autograd.grad((out * w).sum(), c)
        assert_equal(g, w)

    @pytest.mark.parametrize("d", [1, 17, 64])
    def test_ill_conditioned_finite(self, d: int) -> None:
        for dtype, cond in ((torch.float64, 1e8), (torch.float32, 1e4)):
            c = torch.tensor(spd(d, cond, d), dtype=dtype, requires_grad=True)
            out = tm.entropy_projection(c, entropy_bound=0.5 * d, equality=True)
            assert out.dtype == dtype
            assert_finite(out, *torch.autograd.grad(out.sum(), c))


class TestEntropySchedule:
    def test_exp_hand(self) -> None:
        # d κ = 3 · (-1) = -3; β = -3 + (2 + 3) · 0.5^(10 · 5/10) = -3 + 5/32.
        got = tm.entropy_schedule(5, 10, 2.0, -1.0, 3, kind="exp", temperature=0.5)
        assert got == pytest.approx(-3.0 + 5.0 / 32.0, rel=1e-15)

    def test_exp_endpoints(self) -> None:
        assert tm.entropy_schedule(0, 10, 2.0, -1.0, 3) == pytest.approx(2.0, rel=1e-15)
        end = tm.entropy_schedule(10, 10, 2.0, -1.0, 3, temperature=0.5)
        assert end == pytest.approx(-3.0 + 5.0 * 0.5**10, rel=1e-15)

    def test_linear_hand(self) -> None:
        # β = 2 + 0.3 (-3 - 2) = 0.5; at the end d κ = -3.
        assert tm.entropy_schedule(3, 10, 2.0, -1.0, 3, kind="linear") == pytest.approx(0.5)
        assert tm.entropy_schedule(10, 10, 2.0, -1.0, 3, kind="linear") == pytest.approx(-3.0)
        assert tm.entropy_schedule(0, 10, 2.0, -1.0, 3, kind="linear") == pytest.approx(2.0)

    def test_temperature_one_is_constant(self) -> None:
        assert tm.entropy_schedule(7, 10, 2.0, -1.0, 3, temperature=1.0) == pytest.approx(2.0)

    def test_returns_python_float(self) -> None:
        assert isinstance(tm.entropy_schedule(1, 10, 2.0, 0.0, 2), float)
