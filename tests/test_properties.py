"""Property-based tests (hypothesis) of the projections and divergences.

Every expectation is computed here independently (float64 NumPy, formulas from docs/math.md §2-§3,
§6), never
with the library's own helpers. Profiles: ``HYPOTHESIS_PROFILE=ci`` (default) or ``dev``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from _strategies import (
    Pair,
    dims,
    etas,
    inside_ratios,
    orthogonal,
    outside_ratios,
    pairs,
    spd,
    vectors,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import trpl_math as tm
from verification import _linalg as la

BOUND_RTOL = 1e-9  # the library lands on the bound to 1e-10 relative; our evaluation adds a bit
ENTROPY_ATOL = 1e-9


def _logdet(a: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(a)
    assert sign > 0
    return float(value)


def _h(cov: np.ndarray) -> float:
    """Entropy from docs/math.md §2.5: ½ d log(2πe) + ½ log|Σ|."""
    return 0.5 * cov.shape[-1] * math.log(2 * math.pi * math.e) + 0.5 * _logdet(cov)


def _transport(cov: np.ndarray, old_cov: np.ndarray) -> np.ndarray:
    """Optimal transport map T = Σ_o^{-1/2} (Σ_o^{1/2} Σ Σ_o^{1/2})^{1/2} Σ_o^{-1/2}."""
    root = la.sqrtm_psd(old_cov)
    inv = np.linalg.inv(root)
    return inv @ la.sqrtm_psd(root @ cov @ root) @ inv


# ------------------------------------------------------------------------- Theorem 1


def frobenius_interpolation(cov, old_cov, eta):
    """Eq. 7: Σ̃ = (Σ + η Σ_o) / (1 + η)."""
    return (cov + eta * old_cov) / (1 + eta)


def w2_eq9_interpolation(cov, old_cov, eta):
    """Eq. 9: Σ̃^{1/2} = (Σ^{1/2} + η Σ_o^{1/2}) / (1 + η)."""
    root = (la.sqrtm_psd(cov) + eta * la.sqrtm_psd(old_cov)) / (1 + eta)
    return root @ root


def w2_geodesic_interpolation(cov, old_cov, eta):
    """The geodesic of docs/math.md §3.5 with t = 1/(1+η): ((1-t)I + tT) Σ_o ((1-t)I + tT)."""
    t = 1.0 / (1.0 + eta)
    step = (1 - t) * np.eye(cov.shape[-1]) + t * _transport(cov, old_cov)
    return step @ old_cov @ step


def kl_interpolation(cov, old_cov, eta):
    """Eq. 10: Λ̃ = (η Λ_o + Λ) / (η + 1)."""
    return np.linalg.inv((eta * np.linalg.inv(old_cov) + np.linalg.inv(cov)) / (eta + 1))


def _theorem1(h_new: float, h: float, h_old: float, eta: float, *, lower: bool) -> None:
    """Both forms of Theorem 1: the η-weighted average bound and the min/max bound."""
    average = h / (1 + eta) + eta * h_old / (1 + eta)
    if lower:  # Frobenius and W2
        assert h_new >= average - ENTROPY_ATOL
        assert average >= min(h, h_old) - ENTROPY_ATOL
    else:  # KL
        assert h_new <= average + ENTROPY_ATOL
        assert average <= max(h, h_old) + ENTROPY_ATOL


class TestTheorem1Interpolations:
    @pytest.mark.parametrize(
        ("interp", "lower"),
        [
            (frobenius_interpolation, True),
            (w2_eq9_interpolation, True),
            (w2_geodesic_interpolation, True),
            (kl_interpolation, False),
        ],
        ids=["frobenius", "w2_eq9", "w2_geodesic", "kl"],
    )
    @given(p=pairs(), eta=etas)
    def test_entropy_bounds(self, interp, lower, p: Pair, eta: float):
        new = interp(p.cov, p.old_cov, eta)
        _theorem1(_h(new), _h(p.cov), _h(p.old_cov), eta, lower=lower)

    @given(p=pairs())
    def test_endpoints(self, p: Pair):
        # η = 0 gives the prediction for every interpolation (a sanity check of the formulas).
        for interp in (frobenius_interpolation, w2_eq9_interpolation, kl_interpolation):
            np.testing.assert_allclose(interp(p.cov, p.old_cov, 0.0), p.cov, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(
            w2_geodesic_interpolation(p.cov, p.old_cov, 0.0), p.cov, rtol=1e-8, atol=1e-8
        )


class TestTheorem1LibraryOutputs:
    """The projections' outputs are the interpolations above, so Theorem 1 holds for them."""

    @given(p=pairs(), ratio=outside_ratios)
    def test_frobenius(self, p: Pair, ratio: float):
        dist = float(np.sum((p.cov - p.old_cov) ** 2))
        assume(dist > 1e-8)
        eps = ratio * dist
        out = tm.frobenius_projection(*p.args(), eps_mean=1e9, eps_cov=eps)
        eta = math.sqrt(dist / eps) - 1  # Eq. 8
        _theorem1(_h(out.cov), _h(p.cov), _h(p.old_cov), eta, lower=True)

    @pytest.mark.parametrize("scaled", [True, False])
    @given(p=pairs(), ratio=outside_ratios)
    def test_w2_eq9(self, scaled: bool, p: Pair, ratio: float):
        c = _paper_w2_cov(p.cov, p.old_cov, scaled)
        assume(c > 1e-8)
        eps = ratio * c
        out = tm.wasserstein_projection(*p.args(), eps_mean=1e9, eps_cov=eps, scaled=scaled)
        eta = math.sqrt(c / eps) - 1  # Eq. 9
        _theorem1(_h(out.cov), _h(p.cov), _h(p.old_cov), eta, lower=True)

    @pytest.mark.parametrize("scaled", [True, False])
    @given(p=pairs(), ratio=outside_ratios)
    def test_w2_exact(self, scaled: bool, p: Pair, ratio: float):
        # Scaled: the geodesic in whitened coordinates; log-det shifts by log|Σ_o| both sides.
        w2 = la.w2_cov_between(p.cov, p.old_cov, p.old_cov if scaled else None)
        assume(w2 > 1e-8)
        out = tm.wasserstein_projection(
            *p.args(), eps_mean=1e9, eps_cov=ratio * w2, scaled=scaled, exact=True
        )
        eta = 1 / math.sqrt(ratio) - 1  # t = sqrt(ε / W2) = 1/(1+η)
        _theorem1(_h(out.cov), _h(p.cov), _h(p.old_cov), eta, lower=True)

    @given(p=pairs(), ratio=outside_ratios)
    def test_kl(self, p: Pair, ratio: float):
        kl = la.kl_parts(*p.args())[1]
        assume(kl > 1e-8)
        out = tm.kl_projection(*p.args(), eps_mean=1e9, eps_cov=ratio * kl)
        # Recover η from Λ̃ - Λ = η (Λ_o - Λ̃) by least squares; check the fit and η ≥ 0.
        prec, old_prec, new_prec = (np.linalg.inv(x) for x in (p.cov, p.old_cov, out.cov))
        lhs, rhs = new_prec - prec, old_prec - new_prec
        eta = float(np.sum(lhs * rhs) / np.sum(rhs * rhs))
        assert eta >= 0
        np.testing.assert_allclose(lhs, eta * rhs, atol=1e-7 * (1 + eta) * np.abs(prec).max())
        _theorem1(_h(out.cov), _h(p.cov), _h(p.old_cov), eta, lower=False)


def _paper_w2_cov(cov: np.ndarray, old_cov: np.ndarray, scaled: bool) -> float:
    """Eq. 9's measure: ‖Σ_o^{-1/2}(Σ^{1/2} - Σ_o^{1/2})‖² scaled, ‖Σ^{1/2} - Σ_o^{1/2}‖² plain."""
    old_root = la.sqrtm_psd(old_cov)
    gap = la.sqrtm_psd(cov) - old_root
    if scaled:
        gap = np.linalg.solve(old_root, gap)
    return float(np.sum(gap * gap))


# ------------------------------------------------------------------------- projections


@dataclass(frozen=True)
class Variant:
    """A projection, the measure its bounds are in, and the objective it minimises."""

    name: str
    project: Callable[..., tm.Gaussian]  # (mean, cov, old_mean, old_cov, bounds, diag)
    parts: Callable[[np.ndarray, ...], tuple[float, ...]]  # constraint parts vs old
    objective: Callable[..., float]  # distance of (mean, cov) from the prediction, per variant
    joint: bool = False


def _w2_metric_parts(scaled: bool):
    def parts(m, c, om, oc):
        return la.w2_parts(m, c, om, oc, scaled=scaled)

    return parts


def _mean_metric(m, om, metric):
    return la.maha(m, om, metric) if metric is not None else float(np.sum((m - om) ** 2))


def _variants() -> list[Variant]:
    def frob(m, c, om, oc, b, diag=False):
        return tm.frobenius_projection(m, c, om, oc, eps_mean=b[0], eps_cov=b[1], diag=diag)

    def w2(scaled, exact):
        def f(m, c, om, oc, b, diag=False):
            return tm.wasserstein_projection(
                m, c, om, oc, eps_mean=b[0], eps_cov=b[1], scaled=scaled, exact=exact, diag=diag
            )

        return f

    def kl(m, c, om, oc, b, diag=False):
        return tm.kl_projection(m, c, om, oc, eps_mean=b[0], eps_cov=b[1], diag=diag)

    def kl_joint(m, c, om, oc, b, diag=False):
        return tm.kl_joint_projection(m, c, om, oc, eps=b[0], diag=diag)

    def w2_objective(scaled):
        def obj(m, c, pred, old):
            metric = old.old_cov if scaled else None
            return (
                _mean_metric(m, pred.mean, metric),
                la.w2_cov_between(c, pred.cov, metric),
            )

        return obj

    def eq9_parts(scaled):
        def parts(m, c, om, oc):
            return la.w2_parts(m, c, om, oc, scaled=scaled)[0], _paper_w2_cov(c, oc, scaled)

        return parts

    def eq9_objective(scaled):
        def obj(m, c, pred, old):
            gap = la.sqrtm_psd(c) - la.sqrtm_psd(pred.cov)
            if scaled:
                gap = np.linalg.solve(la.sqrtm_psd(old.old_cov), gap)
            metric = old.old_cov if scaled else None
            return _mean_metric(m, pred.mean, metric), float(np.sum(gap * gap))

        return obj

    return [
        Variant(
            "frobenius",
            frob,
            la.frobenius_parts,
            lambda m, c, pred, old: (
                la.maha(m, pred.mean, old.old_cov),
                float(np.sum((c - pred.cov) ** 2)),
            ),
        ),
        Variant("w2_exact_scaled", w2(True, True), _w2_metric_parts(True), w2_objective(True)),
        Variant("w2_exact_plain", w2(False, True), _w2_metric_parts(False), w2_objective(False)),
        Variant("w2_eq9_scaled", w2(True, False), eq9_parts(True), eq9_objective(True)),
        Variant("w2_eq9_plain", w2(False, False), eq9_parts(False), eq9_objective(False)),
        Variant(
            "kl",
            kl,
            la.kl_parts,
            # Eq. 6 minimises the mean distance in Λ_o; the covariance minimises KL(Σ̃ ‖ Σ).
            lambda m, c, pred, old: (
                la.maha(m, pred.mean, old.old_cov),
                la.kl_parts(pred.mean, c, pred.mean, pred.cov)[1],
            ),
        ),
        Variant(
            "kl_joint",
            kl_joint,
            lambda m, c, om, oc: (sum(la.kl_parts(m, c, om, oc)),),
            lambda m, c, pred, old: (sum(la.kl_parts(m, c, pred.mean, pred.cov)),),
            joint=True,
        ),
    ]


VARIANTS = _variants()
VARIANT_IDS = [v.name for v in VARIANTS]


def _bounds(v: Variant, p: Pair, ratio: float) -> tuple[float, ...]:
    parts = v.parts(*p.args())
    assume(min(parts) > 1e-6)
    return tuple(ratio * x for x in parts)


def _project(v: Variant, p: Pair, bounds, diag: bool = False) -> tm.Gaussian:
    out = v.project(*p.args(diag), bounds, diag)
    cov = np.diag(out.cov) if diag else out.cov
    return tm.Gaussian(np.asarray(out.mean), np.asarray(cov))


@pytest.mark.parametrize("v", VARIANTS, ids=VARIANT_IDS)
class TestProjectionProperties:
    @given(p=pairs(), ratio=inside_ratios)
    def test_inside_unchanged(self, v: Variant, p: Pair, ratio: float):
        out = _project(v, p, _bounds(v, p, ratio))
        np.testing.assert_array_equal(out.mean, p.mean)
        np.testing.assert_array_equal(out.cov, p.cov)

    @given(p=pairs(), ratio=outside_ratios)
    def test_outside_lands_on_bound(self, v: Variant, p: Pair, ratio: float):
        bounds = _bounds(v, p, ratio)
        out = _project(v, p, bounds)
        got = v.parts(out.mean, out.cov, p.old_mean, p.old_cov)
        np.testing.assert_allclose(got, bounds, rtol=BOUND_RTOL)

    @given(p=pairs(), ratio=st.one_of(inside_ratios, outside_ratios))
    def test_idempotent(self, v: Variant, p: Pair, ratio: float):
        bounds = _bounds(v, p, ratio)
        once = _project(v, p, bounds)
        twice = _project(v, Pair(once.mean, once.cov, p.old_mean, p.old_cov), bounds)
        np.testing.assert_allclose(twice.mean, once.mean, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(twice.cov, once.cov, rtol=1e-8, atol=1e-10)

    @given(p=pairs(), ratio=outside_ratios)
    def test_never_farther_than_old(self, v: Variant, p: Pair, ratio: float):
        out = _project(v, p, _bounds(v, p, ratio))
        new = v.objective(out.mean, out.cov, p, p)
        old = v.objective(p.old_mean, p.old_cov, p, p)
        for a, b in zip(new, old, strict=True):
            assert a <= b * (1 + 1e-9) + 1e-12

    @given(p=pairs(), ratio=st.one_of(inside_ratios, outside_ratios), data=st.data())
    def test_rotation_equivariant(self, v: Variant, p: Pair, ratio: float, data):
        q = data.draw(orthogonal(p.dim))
        bounds = _bounds(v, p, ratio)
        out = _project(v, p, bounds)
        rot = Pair(q @ p.mean, q @ p.cov @ q.T, q @ p.old_mean, q @ p.old_cov @ q.T)
        rot_out = _project(v, rot, bounds)
        np.testing.assert_allclose(rot_out.mean, q @ out.mean, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(rot_out.cov, q @ out.cov @ q.T, rtol=1e-7, atol=1e-8)

    @given(p=pairs("diagonal"), ratio=st.one_of(inside_ratios, outside_ratios))
    def test_diag_equals_full(self, v: Variant, p: Pair, ratio: float):
        bounds = _bounds(v, p, ratio)
        full = _project(v, p, bounds)
        diag = _project(v, p, bounds, diag=True)
        np.testing.assert_allclose(diag.mean, full.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(diag.cov, full.cov, rtol=1e-9, atol=1e-12)

    @pytest.mark.parametrize("diag", [False, True])
    @given(data=st.data(), ratio=st.one_of(inside_ratios, outside_ratios))
    def test_numpy_equals_torch(self, v: Variant, diag: bool, data, ratio: float):
        p = data.draw(pairs("diagonal" if diag else "general"))
        bounds = _bounds(v, p, ratio)
        expected = v.project(*p.args(diag), bounds, diag)
        got = v.project(*(torch.from_numpy(x) for x in p.args(diag)), bounds, diag)
        assert isinstance(got.mean, torch.Tensor) and got.cov.dtype == torch.float64
        np.testing.assert_allclose(got.mean.numpy(), expected.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.cov.numpy(), expected.cov, rtol=1e-10, atol=1e-12)


@st.composite
def invertible(draw: st.DrawFn, d: int) -> np.ndarray:
    """A well-conditioned invertible matrix U diag(s) Vᵀ, s ∈ [e^-1, e^1], with a random sign."""
    u, w = draw(orthogonal(d)), draw(orthogonal(d))
    s = np.exp(np.array(draw(st.lists(st.floats(-1, 1), min_size=d, max_size=d))))
    return (u * s) @ w.T


class TestKLAffineInvariance:
    """KL is invariant under a ↦ A a + b, so the KL projections are equivariant."""

    @given(p=pairs(), ratio=st.one_of(inside_ratios, outside_ratios), data=st.data())
    def test_kl_projection(self, p: Pair, ratio: float, data):
        a = data.draw(invertible(p.dim))
        b = data.draw(vectors(p.dim))
        m, c = la.kl_parts(*p.args())
        assume(min(m, c) > 1e-6)
        kw = {"eps_mean": ratio * m, "eps_cov": ratio * c}
        out = tm.kl_projection(*p.args(), **kw)
        moved = tm.kl_projection(
            a @ p.mean + b, a @ p.cov @ a.T, a @ p.old_mean + b, a @ p.old_cov @ a.T, **kw
        )
        np.testing.assert_allclose(moved.mean, a @ out.mean + b, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(moved.cov, a @ out.cov @ a.T, rtol=1e-7, atol=1e-8)

    @given(p=pairs(), ratio=outside_ratios, shift=st.floats(-1, 0.05), data=st.data())
    def test_kl_joint_projection_with_entropy(self, p: Pair, ratio: float, shift: float, data):
        # The entropy moves by log|det A| under the map; shift the bound with it.
        a = data.draw(invertible(p.dim))
        b = data.draw(vectors(p.dim))
        kl = sum(la.kl_parts(*p.args()))
        assume(kl > 1e-6)
        eps = ratio * kl
        beta = _h(p.old_cov) + shift
        out = tm.kl_joint_projection(*p.args(), eps=eps, entropy_bound=beta)
        log_det_a = float(np.linalg.slogdet(a)[1])
        moved = tm.kl_joint_projection(
            a @ p.mean + b,
            a @ p.cov @ a.T,
            a @ p.old_mean + b,
            a @ p.old_cov @ a.T,
            eps=eps,
            entropy_bound=beta + log_det_a,
        )
        np.testing.assert_allclose(moved.mean, a @ out.mean + b, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(moved.cov, a @ out.cov @ a.T, rtol=1e-7, atol=1e-8)


class TestKLJointEntropyBound:
    @given(p=pairs(), ratio=outside_ratios, shift=st.floats(-1, 0.05))
    def test_feasible_and_not_farther(self, p: Pair, ratio: float, shift: float):
        # β up to 0.05 nats above H(π_o). The floor must always hold (where no Gaussian meets
        # both constraints, the library lets the entropy win). With β ≤ H(π_o), π_o itself is
        # feasible, so the result is inside the KL ball and no farther from π than π_o.
        kl = sum(la.kl_parts(*p.args()))
        assume(kl > 1e-6)
        eps = ratio * kl
        beta = _h(p.old_cov) + shift
        out = tm.kl_joint_projection(*p.args(), eps=eps, entropy_bound=beta)
        assert _h(out.cov) >= beta - 1e-9 * max(1.0, abs(beta))
        if shift <= 0:
            # π_o is feasible, so the optimum is no farther from π than π_o is, and in the ball.
            assert sum(la.kl_parts(out.mean, out.cov, p.old_mean, p.old_cov)) <= eps * (
                1 + BOUND_RTOL
            )
            new = sum(la.kl_parts(out.mean, out.cov, p.mean, p.cov))
            old = sum(la.kl_parts(p.old_mean, p.old_cov, p.mean, p.cov))
            assert new <= old * (1 + 1e-9)


# ------------------------------------------------------------------------- divergences

DIVERGENCES = {
    "kl": lambda *a, **k: tm.kl_divergence(*a, **k),
    "w2_scaled": lambda *a, **k: tm.wasserstein_distance(*a, scaled=True, **k),
    "w2_plain": lambda *a, **k: tm.wasserstein_distance(*a, scaled=False, **k),
    "frobenius": lambda *a, **k: tm.frobenius_distance(*a, **k),
}


@pytest.mark.parametrize("name", list(DIVERGENCES))
class TestDivergenceProperties:
    @given(d=dims, data=st.data())
    def test_zero_at_equal(self, name: str, d: int, data):
        mean, cov = data.draw(vectors(d)), data.draw(spd(d))
        parts = DIVERGENCES[name](mean, cov, mean, cov)
        assert abs(float(parts.mean)) <= 1e-12
        assert abs(float(parts.cov)) <= 1e-10 * d

    @given(p=pairs())
    def test_non_negative_and_positive_when_different(self, name: str, p: Pair):
        parts = DIVERGENCES[name](*p.args())
        assert float(parts.mean) >= 0 and float(parts.cov) >= -1e-12
        # Means differ by construction unless the drawn offset is 0; covariances unless equal.
        if np.linalg.norm(p.mean - p.old_mean) > 1e-3:
            assert float(parts.mean) > 0
        if np.linalg.norm(p.cov - p.old_cov) > 1e-3:
            assert float(parts.cov) > 0

    @given(p=pairs())
    def test_matches_independent_evaluation(self, name: str, p: Pair):
        parts = DIVERGENCES[name](*p.args())
        ref = {
            "kl": la.kl_parts,
            "w2_scaled": _w2_metric_parts(True),
            "w2_plain": _w2_metric_parts(False),
            "frobenius": la.frobenius_parts,
        }[name](*p.args())
        np.testing.assert_allclose(
            [float(parts.mean), float(parts.cov)], ref, rtol=1e-9, atol=1e-12
        )


class TestSymmetry:
    @given(p=pairs())
    def test_plain_w2_symmetric(self, p: Pair):
        a = tm.wasserstein_distance(*p.args(), scaled=False)
        b = tm.wasserstein_distance(p.old_mean, p.old_cov, p.mean, p.cov, scaled=False)
        np.testing.assert_allclose([a.mean, a.cov], [b.mean, b.cov], rtol=1e-9, atol=1e-12)

    @given(p=pairs())
    def test_frobenius_cov_part_symmetric(self, p: Pair):
        # The mean parts of Frobenius and scaled W2 use Σ_o's metric, so only they are not.
        a = tm.frobenius_distance(*p.args())
        b = tm.frobenius_distance(p.old_mean, p.old_cov, p.mean, p.cov)
        np.testing.assert_allclose(a.cov, b.cov, rtol=1e-12)

    @pytest.mark.parametrize("name", ["w2_scaled", "frobenius"])
    @given(d=dims, data=st.data())
    def test_symmetric_for_shared_covariance(self, name: str, d: int, data):
        # With Σ = Σ_o the metric is shared: both parts are symmetric (scaled W2 cov part is 0).
        m1, m2, cov = data.draw(vectors(d)), data.draw(vectors(d)), data.draw(spd(d))
        a = DIVERGENCES[name](m1, cov, m2, cov)
        b = DIVERGENCES[name](m2, cov, m1, cov)
        np.testing.assert_allclose([a.mean, a.cov], [b.mean, b.cov], rtol=1e-9, atol=1e-12)
