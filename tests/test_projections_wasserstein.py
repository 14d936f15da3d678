"""Unit tests of :func:`trpl_math.wasserstein_projection` (Eq. 9 and the exact geodesic one)
and of :func:`trpl_math.wasserstein_commuting_cov_part`."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import scipy.linalg
import torch
from _helpers import (
    LAND_RTOL_F64,
    ProjectionCases,
    asarray,
    assert_close,
    assert_finite,
    rotation,
    spd_sqrt,
    to_numpy,
)

import trpl_math as tm

# A non-commuting 2-D pair (different eigenbases).
OLD_COV = rotation(0.3) @ np.diag([2.0, 0.5]) @ rotation(0.3).T
COV = rotation(-0.9) @ np.diag([6.0, 0.2]) @ rotation(-0.9).T


def _w2_parts(scaled: bool):
    def parts(mean, cov, old_mean, old_cov, *, diag):
        return tm.wasserstein_distance(mean, cov, old_mean, old_cov, scaled=scaled, diag=diag)

    return staticmethod(parts)


def _eq9_parts(scaled: bool):
    def parts(mean, cov, old_mean, old_cov, *, diag):
        m = tm.wasserstein_distance(mean, cov, old_mean, old_cov, scaled=scaled, diag=diag).mean
        c = tm.wasserstein_commuting_cov_part(cov, old_cov, scaled=scaled, diag=diag)
        return m, c

    return staticmethod(parts)


def _project(scaled: bool, exact: bool):
    def project(mean, cov, old_mean, old_cov, **kw):
        return tm.wasserstein_projection(
            mean, cov, old_mean, old_cov, scaled=scaled, exact=exact, **kw
        )

    return staticmethod(project)


def _geodesic_reference(
    cov: np.ndarray, old_cov: np.ndarray, eps: float, scaled: bool
) -> np.ndarray:
    """The exact projection of docs/math.md §3.5, computed with SciPy's ``sqrtm`` and explicit
    inverses."""
    d = cov.shape[-1]
    if scaled:
        r = np.real(scipy.linalg.sqrtm(old_cov))
        r_inv = np.linalg.inv(r)
        a = r_inv @ cov @ r_inv
        a_root = np.real(scipy.linalg.sqrtm(a))
        w2 = np.trace(a + np.eye(d) - 2 * a_root)
        t = np.sqrt(eps / w2)
        m = (1 - t) * np.eye(d) + t * a_root
        return r @ m @ m @ r
    r = np.real(scipy.linalg.sqrtm(old_cov))
    r_inv = np.linalg.inv(r)
    inner = np.real(scipy.linalg.sqrtm(r @ cov @ r))
    w2 = np.trace(cov + old_cov - 2 * inner)
    t = np.sqrt(eps / w2)
    transport = r_inv @ inner @ r_inv
    m = (1 - t) * np.eye(d) + t * transport
    return m @ old_cov @ m


class TestWassersteinProjectionScaled(ProjectionCases):
    """``exact=False, scaled=True``: Eq. 9 with the cov part measured as the paper does."""

    project = _project(scaled=True, exact=False)
    parts = _eq9_parts(scaled=True)

    def test_1d_hand(self, xp: ModuleType) -> None:
        # std 2 vs old std 1: (2/1 - 1)² = 1 > ¼ -> t = ½, std 1.5, var 2.25.
        # mean: maha = 2²/1 = 4 > 1 -> t = ½, μ̃ = 1.
        for diag, c, oc, want in (
            (True, [4.0], [1.0], [2.25]),
            (False, [[4.0]], [[1.0]], [[2.25]]),
        ):
            out = tm.wasserstein_projection(
                asarray(xp, [2.0]),
                asarray(xp, c),
                asarray(xp, [0.0]),
                asarray(xp, oc),
                eps_mean=1.0,
                eps_cov=0.25,
                diag=diag,
            )
            assert_close(out.mean, asarray(xp, [1.0]))
            assert_close(out.cov, asarray(xp, want))

    def test_2d_diagonal_hand(self, xp: ModuleType) -> None:
        # stds (3, 1) vs old (1, 2): rel (2, -½), c = 4.25; ε = 4.25/4 -> t = ½: stds (2, 1.5).
        out = tm.wasserstein_projection(
            asarray(xp, [0.0, 0.0]),
            asarray(xp, np.diag([9.0, 1.0])),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, np.diag([1.0, 4.0])),
            eps_mean=1.0,
            eps_cov=4.25 / 4,
        )
        assert_close(out.cov, asarray(xp, np.diag([4.0, 2.25])))

    def test_non_commuting_true_w2_strictly_inside(self, xp: ModuleType) -> None:
        args = (asarray(xp, [0.0, 0.0]), asarray(xp, COV), asarray(xp, [0.0, 0.0]))
        args = (*args, asarray(xp, OLD_COV))
        c = float(tm.wasserstein_commuting_cov_part(args[1], args[3]))
        out = tm.wasserstein_projection(*args, eps_mean=1.0, eps_cov=0.1 * c)
        paper = tm.wasserstein_commuting_cov_part(out.cov, args[3])
        assert_close(paper, asarray(xp, 0.1 * c), rtol=LAND_RTOL_F64)
        true = float(tm.wasserstein_distance(*args[:1], out.cov, *args[2:]).cov)
        assert true < 0.1 * c * (1 - 1e-3)

    def test_commuting_pair_equals_exact(self, xp: ModuleType) -> None:
        """For commuting Σ, Σ_o, Eq. 9 is the exact projection (docs/math.md §3.4-§3.5)."""
        q = rotation(0.4)
        old_cov, cov = q @ np.diag([2.0, 0.5]) @ q.T, q @ np.diag([0.3, 3.0]) @ q.T
        args = (asarray(xp, [1.0, 0.0]), asarray(xp, cov), asarray(xp, [0.0, 0.0]))
        args = (*args, asarray(xp, old_cov))
        a = tm.wasserstein_projection(*args, eps_mean=0.1, eps_cov=0.05)
        b = tm.wasserstein_projection(*args, eps_mean=0.1, eps_cov=0.05, exact=True)
        assert_close(a.mean, b.mean, rtol=1e-12)
        assert_close(a.cov, b.cov, rtol=1e-10)


class TestWassersteinProjectionPlain(ProjectionCases):
    """``exact=False, scaled=False``: Eq. 9 in the Euclidean metric."""

    project = _project(scaled=False, exact=False)
    parts = _eq9_parts(scaled=False)

    def test_1d_hand(self, xp: ModuleType) -> None:
        # std 3 vs old std 2: (3 - 2)² = 1 > ¼ -> t = ½, std 2.5, var 6.25.
        # mean: ‖2 - 0‖² = 4 > 1 -> t = ½, μ̃ = 1 (old variance 4 plays no role).
        out = tm.wasserstein_projection(
            asarray(xp, [2.0]),
            asarray(xp, [9.0]),
            asarray(xp, [0.0]),
            asarray(xp, [4.0]),
            eps_mean=1.0,
            eps_cov=0.25,
            scaled=False,
            diag=True,
        )
        assert_close(out.mean, asarray(xp, [1.0]))
        assert_close(out.cov, asarray(xp, [6.25]))

    def test_2d_diagonal_hand(self, xp: ModuleType) -> None:
        # stds (3, 1) vs old (1, 2): gaps (2, -1), c = 5; ε = 5/4 -> t = ½: stds (2, 1.5).
        # mean (3, 4): ‖·‖² = 25 > 1 -> t = 1/5: (0.6, 0.8).
        out = tm.wasserstein_projection(
            asarray(xp, [3.0, 4.0]),
            asarray(xp, np.diag([9.0, 1.0])),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, np.diag([1.0, 4.0])),
            eps_mean=1.0,
            eps_cov=1.25,
            scaled=False,
        )
        assert_close(out.mean, asarray(xp, [0.6, 0.8]))
        assert_close(out.cov, asarray(xp, np.diag([4.0, 2.25])))

    def test_non_commuting_interpolates_square_roots(self, xp: ModuleType) -> None:
        """Eq. 9 on a non-commuting pair: Σ̃^{1/2} = (1 - t) Σ_o^{1/2} + t Σ^{1/2} (SciPy roots)."""
        root, old_root = np.real(scipy.linalg.sqrtm(COV)), np.real(scipy.linalg.sqrtm(OLD_COV))
        c = np.sum((root - old_root) ** 2)
        t = np.sqrt(0.1)
        want = ((1 - t) * old_root + t * root) @ ((1 - t) * old_root + t * root)
        out = tm.wasserstein_projection(
            asarray(xp, [0.0, 0.0]),
            asarray(xp, COV),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, OLD_COV),
            eps_mean=1.0,
            eps_cov=0.1 * c,
            scaled=False,
        )
        assert_close(out.cov, asarray(xp, want), rtol=1e-11)
        true = float(
            tm.wasserstein_distance(
                out.mean, out.cov, out.mean, asarray(xp, OLD_COV), scaled=False
            ).cov
        )
        assert true < 0.1 * c * (1 - 1e-3)


class TestWassersteinProjectionExactScaled(ProjectionCases):
    """``exact=True, scaled=True``: the geodesic projection lands on the true whitened W2."""

    project = _project(scaled=True, exact=True)
    parts = _w2_parts(scaled=True)

    def test_2d_non_commuting_against_scipy_geodesic(self, xp: ModuleType) -> None:
        c = float(tm.wasserstein_distance(np.zeros(2), COV, np.zeros(2), OLD_COV).cov)
        eps = 0.2 * c
        out = tm.wasserstein_projection(
            asarray(xp, [0.0, 0.0]),
            asarray(xp, COV),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, OLD_COV),
            eps_mean=1.0,
            eps_cov=eps,
            exact=True,
        )
        assert_close(out.cov, asarray(xp, _geodesic_reference(COV, OLD_COV, eps, True)), rtol=1e-10)

    def test_repeated_eigenvalue_gradcheck(self) -> None:
        """``cov = c · old_cov`` (A = c I): the Sylvester backward is exact there too."""
        old = torch.tensor(OLD_COV, requires_grad=True)
        cov = (3.0 * old).detach().requires_grad_()

        def fn(s, s_o):
            return tm.wasserstein_projection(
                torch.zeros(2, dtype=torch.float64),
                0.5 * (s + s.mT),
                torch.zeros(2, dtype=torch.float64),
                0.5 * (s_o + s_o.mT),
                eps_mean=1.0,
                eps_cov=0.05,
                exact=True,
            ).cov

        assert torch.autograd.gradcheck(fn, (cov, old))


class TestWassersteinProjectionExactPlain(ProjectionCases):
    """``exact=True, scaled=False``: the geodesic projection lands on the true plain W2."""

    project = _project(scaled=False, exact=True)
    parts = _w2_parts(scaled=False)

    def test_2d_non_commuting_against_scipy_geodesic(self, xp: ModuleType) -> None:
        c = float(tm.wasserstein_distance(np.zeros(2), COV, np.zeros(2), OLD_COV, scaled=False).cov)
        eps = 0.2 * c
        out = tm.wasserstein_projection(
            asarray(xp, [0.0, 0.0]),
            asarray(xp, COV),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, OLD_COV),
            eps_mean=1.0,
            eps_cov=eps,
            exact=True,
            scaled=False,
        )
        assert_close(
            out.cov, asarray(xp, _geodesic_reference(COV, OLD_COV, eps, False)), rtol=1e-10
        )

    @pytest.mark.parametrize("index", [72961, 33083, 28191])
    def test_ill_conditioned_far_pairs_within_the_fuzz_allowance(self, index: int) -> None:
        # Fuzz seed 0 (condition 2e7-6e7, numpy and torch): the covariance part was up to
        # 1e4 x tol over its bound in 50-digit arithmetic (the geodesic factor L_o⁻ᵀ R and the
        # distance that fixed t both carried the conditioning of Σ_o). Now G = L U - L_o.
        from verification import _mp, fuzz

        case = fuzz.draw_case(0, index, ["float64", "float32"], ["numpy", "torch"])
        assert case.projection == "w2_exact_plain" and not case.diag and case.cond > 1e7
        out = fuzz.run_case(case)
        assert out.status == "ok", out.message
        (check,) = [c for c in out.checks if c.part == "w2_plain.cov"]
        mean, cov = fuzz._result_values(case)
        check.value = _mp.w2_parts(mean, cov, case.old_mean, case.old_cov, scaled=False)[1]
        assert check.excess() <= 1.0, check
        assert check.value >= case.eps_cov * (1.0 - LAND_RTOL_F64), check  # on the bound

    def test_diag_ignores_exact(self, xp: ModuleType) -> None:
        args = [asarray(xp, a) for a in ([1.0, 2.0], [9.0, 1.0], [0.0, 0.0], [1.0, 4.0])]
        kw = {"eps_mean": 0.5, "eps_cov": 0.3, "scaled": False, "diag": True}
        a = tm.wasserstein_projection(*args, exact=True, **kw)
        b = tm.wasserstein_projection(*args, exact=False, **kw)
        assert bool(xp.all(a.cov == b.cov)) and bool(xp.all(a.mean == b.mean))


class TestWassersteinCommutingCovPart:
    @pytest.mark.parametrize("scaled", [True, False])
    def test_equals_w2_on_commuting_pairs(self, xp: ModuleType, scaled: bool) -> None:
        q = rotation(1.1)
        old_cov, cov = q @ np.diag([2.0, 0.5]) @ q.T, q @ np.diag([0.3, 3.0]) @ q.T
        got = tm.wasserstein_commuting_cov_part(
            asarray(xp, cov), asarray(xp, old_cov), scaled=scaled
        )
        true = tm.wasserstein_distance(
            asarray(xp, [0.0, 0.0]),
            asarray(xp, cov),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, old_cov),
            scaled=scaled,
        ).cov
        assert_close(got, true, rtol=1e-12)

    @pytest.mark.parametrize("scaled", [True, False])
    def test_hand_and_exceeds_w2_on_non_commuting_pairs(self, xp: ModuleType, scaled: bool) -> None:
        root, old_root = spd_sqrt(COV), spd_sqrt(OLD_COV)
        rel = np.linalg.solve(old_root, root) - np.eye(2) if scaled else root - old_root
        got = tm.wasserstein_commuting_cov_part(
            asarray(xp, COV), asarray(xp, OLD_COV), scaled=scaled
        )
        assert_close(got, asarray(xp, np.sum(rel * rel)), rtol=1e-12)
        true = tm.wasserstein_distance(
            asarray(xp, [0.0, 0.0]),
            asarray(xp, COV),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, OLD_COV),
            scaled=scaled,
        ).cov
        assert float(got) > float(true) * (1 + 1e-3)

    def test_diag_equals_full(self, xp: ModuleType) -> None:
        v, ov = np.array([[9.0, 0.5], [2.0, 3.0]]), np.array([[1.0, 4.0], [2.5, 0.7]])
        for scaled in (True, False):
            a = tm.wasserstein_commuting_cov_part(
                asarray(xp, v), asarray(xp, ov), scaled=scaled, diag=True
            )
            b = tm.wasserstein_commuting_cov_part(
                asarray(xp, v[..., None] * np.eye(2)),
                asarray(xp, ov[..., None] * np.eye(2)),
                scaled=scaled,
            )
            assert_close(b, a, rtol=1e-12)

    def test_gradient_finite_at_old_cov(self) -> None:
        """At ``cov = old_cov`` (all eigenvalues of A equal 1) the gradient is finite (zero)."""
        old = torch.tensor(OLD_COV)
        cov = old.clone().requires_grad_()
        (g,) = torch.autograd.grad(tm.wasserstein_commuting_cov_part(cov, old), cov)
        assert_finite(g)
        assert float(g.abs().max()) < 1e-12
        assert to_numpy(g).shape == (2, 2)
