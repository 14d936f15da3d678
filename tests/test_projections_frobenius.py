"""Unit tests of :func:`trpl_math.frobenius_projection` (the paper's Eq. 6-8)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
from _helpers import ProjectionCases, asarray, assert_close

import trpl_math as tm


class TestFrobeniusProjection(ProjectionCases):
    project = staticmethod(tm.frobenius_projection)
    parts = staticmethod(tm.frobenius_distance)

    def test_1d_hand(self, xp: ModuleType) -> None:
        # maha = (3 - 1)² / 1 = 4 > ε_μ = 1: t = sqrt(1/4), μ̃ = 1 + ½·2 = 2.
        # ‖5 - 1‖² = 16 > ε_Σ = 4: t = sqrt(4/16) = ½, Σ̃ = 1 + ½·4 = 3.
        for diag, cov, old_cov, want in (
            (True, [5.0], [1.0], [3.0]),
            (False, [[5.0]], [[1.0]], [[3.0]]),
        ):
            out = tm.frobenius_projection(
                asarray(xp, [3.0]),
                asarray(xp, cov),
                asarray(xp, [1.0]),
                asarray(xp, old_cov),
                eps_mean=1.0,
                eps_cov=4.0,
                diag=diag,
            )
            assert_close(out.mean, asarray(xp, [2.0]))
            assert_close(out.cov, asarray(xp, want))

    def test_2d_diagonal_hand(self, xp: ModuleType) -> None:
        # maha((1, 2), 0; diag(1, 4)) = 1 + 1 = 2 > ½: t = ½ -> (½, 1).
        # ‖diag(3, 2) - diag(1, 4)‖_F² = 4 + 4 = 8 > 2: t = ½ -> diag(2, 3).
        out = tm.frobenius_projection(
            asarray(xp, [1.0, 2.0]),
            asarray(xp, np.diag([3.0, 2.0])),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, np.diag([1.0, 4.0])),
            eps_mean=0.5,
            eps_cov=2.0,
        )
        assert_close(out.mean, asarray(xp, [0.5, 1.0]))
        assert_close(out.cov, asarray(xp, np.diag([2.0, 3.0])))

    def test_2d_full_hand(self, xp: ModuleType) -> None:
        # Σ = Σ_o + Δ with Δ = [[1, 1], [1, -1]], ‖Δ‖_F² = 4 > ε = 1: Σ̃ = Σ_o + ½Δ.
        old_cov = np.array([[3.0, 1.0], [1.0, 3.0]])
        delta = np.array([[1.0, 1.0], [1.0, -1.0]])
        # Mean: maha((2, 0); Σ_o) = 4·3/8 = 1.5 (Σ_o⁻¹ = [[3, -1], [-1, 3]]/8); ε = 1.5/9 -> t = ⅓.
        out = tm.frobenius_projection(
            asarray(xp, [2.0, 0.0]),
            asarray(xp, old_cov + delta),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, old_cov),
            eps_mean=1.5 / 9.0,
            eps_cov=1.0,
        )
        assert_close(out.mean, asarray(xp, [2.0 / 3.0, 0.0]))
        assert_close(out.cov, asarray(xp, [[3.5, 1.5], [1.5, 2.5]]))

    def test_mean_and_cov_parts_independent(self, xp: ModuleType) -> None:
        """Only the covariance part is active: the mean is returned bitwise unchanged."""
        out = tm.frobenius_projection(
            asarray(xp, [0.1, 0.0]),
            asarray(xp, np.diag([3.0, 2.0])),
            asarray(xp, [0.0, 0.0]),
            asarray(xp, np.diag([1.0, 4.0])),
            eps_mean=1.0,
            eps_cov=2.0,
        )
        assert bool(xp.all(out.mean == asarray(xp, [0.1, 0.0])))
        assert_close(out.cov, asarray(xp, np.diag([2.0, 3.0])))
