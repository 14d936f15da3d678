"""Regression tests for the numerics at the edges of the domain (issue 11, items 1-3).

Each test is named after what it guards; references come from 50-digit arithmetic
(:mod:`verification._mp`, independent of the library) or from hand-made closed forms.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch

import trpl_math as tm
from tests._helpers import asarray, to_numpy
from verification import _mp


def _spd(rng: np.random.Generator, d: int, cond: float) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    u = np.linspace(-0.5, 0.5, d) * np.log(cond) if d > 1 else np.zeros(1)
    return (q * np.exp(rng.permutation(u))) @ q.T


def _near_pairs(seed: int, n: int, max_cond: float = 1e8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``(Σ, Σ_o)`` with Σ_o of condition up to ``max_cond`` and Σ - Σ_o from 1e-8 to 1."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        d = int(rng.integers(1, 7))
        cond = 10.0 ** rng.uniform(0, np.log10(max_cond))
        old = _spd(rng, d, cond)
        cov = old + 10.0 ** rng.uniform(-8, 0) * _spd(rng, d, cond)
        out.append((cov, old))
    return out


class TestPlainW2FullCovariance:
    """``wasserstein_distance(scaled=False)`` on full matrices had a cancelling trace formula."""

    def test_nearby_float32_reproducer_not_zero(self, xp: ModuleType) -> None:
        # issue 11: old_cov = diag(300, 1, 0.1), cov = 1.0003 old_cov in float32 gave 0.0.
        old = np.diag([300.0, 1.0, 0.1]).astype(np.float32)
        cov = (np.float32(1.0003) * old).astype(np.float32)
        z = np.zeros(3, np.float32)
        truth = _mp.w2_parts(z, cov, z, old, scaled=False)[1]
        args = [asarray(xp, x, "float32") for x in (z, cov, z, old)]
        got = tm.wasserstein_distance(*args, scaled=False).cov
        assert str(got.dtype).endswith("float32")
        assert abs(float(got) - truth) <= 1e-5 * truth
        diag = tm.wasserstein_distance(
            *[asarray(xp, np.diag(x) if x.ndim == 2 else x, "float32") for x in (z, cov, z, old)],
            scaled=False,
            diag=True,
        )
        assert abs(float(got) - float(diag.cov)) <= 1e-3 * truth

    def test_float64_near_and_ill_conditioned_pairs_match_50_digits(self, xp: ModuleType) -> None:
        for cov, old in _near_pairs(seed=0, n=12):
            z = np.zeros(cov.shape[-1])
            truth = _mp.w2_parts(z, cov, z, old, scaled=False)[1]
            args = [asarray(xp, x) for x in (z, cov, z, old)]
            got = float(tm.wasserstein_distance(*args, scaled=False).cov)
            assert abs(got - truth) <= 1e-10 * truth, (got, truth)

    def test_gradient_matches_finite_differences(self) -> None:
        rng = np.random.default_rng(5)
        old = torch.tensor(_spd(rng, 3, 30.0))
        cov = torch.tensor(_spd(rng, 3, 30.0), requires_grad=True)
        z = torch.zeros(3, dtype=torch.float64)

        def fun(c: torch.Tensor) -> torch.Tensor:
            return tm.wasserstein_distance(z, 0.5 * (c + c.mT), z, old, scaled=False).cov

        assert torch.autograd.gradcheck(fun, (cov,), atol=1e-7, rtol=1e-5)


class TestExactPlainW2Projection:
    """The exact projection took ``t`` from the cancelling formula and missed its bound."""

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_lands_on_bound_at_50_digits(self, xp: ModuleType, dtype: str) -> None:
        rng = np.random.default_rng(11)
        max_cond = 1e8 if dtype == "float64" else 1e3
        for cov, old in _near_pairs(seed=1, n=8, max_cond=max_cond):
            cov, old = cov.astype(dtype), old.astype(dtype)
            z = np.zeros(cov.shape[-1], dtype)
            dist = _mp.w2_parts(z, cov, z, old, scaled=False)[1]
            eps = dist * 10.0 ** rng.uniform(-6, -0.1)
            args = [asarray(xp, x, dtype) for x in (z, cov, z, old)]
            proj = tm.wasserstein_projection(
                *args, eps_mean=1.0, eps_cov=eps, exact=True, scaled=False
            )
            got = _mp.w2_parts(z, to_numpy(proj.cov), z, old, scaled=False)[1]
            # The result itself is rounded to the dtype, which moves W2 by up to about
            # 2 sqrt(ε) u ‖Σ̃‖ / λ_min(Σ_o)^½ (u the unit roundoff): the representability limit.
            u = float(np.finfo(dtype).eps) / 2
            lam_min = float(np.linalg.eigvalsh(old.astype(float))[0])
            tol = 64 * u * eps + 8 * u * np.sqrt(eps) * float(np.abs(cov).max()) / lam_min**0.5
            assert abs(got - eps) <= tol, (got, eps)
