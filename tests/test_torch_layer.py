"""Unit tests of :class:`trpl_math.torch.TrustRegionLayer` and :class:`EntropySchedule`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers import diag_problem, problem

import trpl_math as tm
from trpl_math.torch import MEASURES, EntropySchedule, TrustRegionLayer

EPS_MEAN, EPS_COV = 0.05, 0.02
KEYS = {
    "kl_mean",
    "kl_max",
    "div_mean_part_mean",
    "div_mean_part_max",
    "div_cov_part_mean",
    "div_cov_part_max",
    "entropy_mean",
    "maha_unprojected_mean",
    "maha_unprojected_max",
}


def _inputs(diag: bool, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    return [
        torch.tensor(a, dtype=dtype) for a in (diag_problem(batch=4) if diag else problem(batch=4))
    ]


def _layer(measure: str, diag: bool, **kw) -> TrustRegionLayer:
    return TrustRegionLayer(measure, eps_mean=EPS_MEAN, eps_cov=EPS_COV, diag=diag, **kw)


def _within(layer: TrustRegionLayer, proj: tm.Gaussian, old_mean, old_cov, rtol: float) -> None:
    with torch.no_grad():
        parts = layer.divergence(proj.mean, proj.cov, old_mean, old_cov)
    if layer.measure == "kl_joint":
        assert float(parts.total.max()) <= layer.eps * (1 + rtol)
    else:
        assert float(parts.mean.max()) <= EPS_MEAN * (1 + rtol)
        assert float(parts.cov.max()) <= EPS_COV * (1 + rtol)


@pytest.mark.parametrize("diag", [True, False])
@pytest.mark.parametrize("measure", MEASURES)
class TestTrustRegionLayer:
    def test_forward_lands_within_bounds(self, measure: str, diag: bool) -> None:
        mean, cov, old_mean, old_cov = _inputs(diag)
        layer = _layer(measure, diag)
        proj = layer(mean, cov, old_mean, old_cov)
        assert proj.mean.shape == mean.shape and proj.cov.shape == cov.shape
        _within(layer, proj, old_mean, old_cov, 1e-9)
        # the inputs are far outside: at least one part is on its bound for every state
        parts = layer.divergence(proj.mean, proj.cov, old_mean, old_cov)
        if measure == "kl_joint":
            np.testing.assert_allclose(parts.total.numpy(), layer.eps, rtol=1e-9)
        else:
            np.testing.assert_allclose(parts.mean.numpy(), EPS_MEAN, rtol=1e-9)

    def test_forward_matches_functional_api(self, measure: str, diag: bool) -> None:
        args = _inputs(diag)
        proj = _layer(measure, diag)(*args)
        kw = {"diag": diag}
        if measure == "kl_joint":
            ref = tm.kl_joint_projection(*args, eps=EPS_MEAN + EPS_COV, **kw)
        elif measure == "kl":
            ref = tm.kl_projection(*args, eps_mean=EPS_MEAN, eps_cov=EPS_COV, **kw)
        elif measure == "frob":
            ref = tm.frobenius_projection(*args, eps_mean=EPS_MEAN, eps_cov=EPS_COV, **kw)
        else:
            ref = tm.wasserstein_projection(
                *args, eps_mean=EPS_MEAN, eps_cov=EPS_COV, exact=measure == "w2_exact", **kw
            )
        torch.testing.assert_close(proj.mean, ref.mean, rtol=0, atol=0)
        torch.testing.assert_close(proj.cov, ref.cov, rtol=0, atol=0)

    def test_penalty_zero_inside(self, measure: str, diag: bool) -> None:
        mean, cov, old_mean, old_cov = _inputs(diag)
        layer = TrustRegionLayer(measure, eps_mean=1e3, eps_cov=1e3, eps=1e3, diag=diag)
        mean.requires_grad_()
        proj = layer(mean, cov, old_mean, old_cov)
        assert torch.equal(proj.mean, mean) and torch.equal(proj.cov, cov)
        pen = layer.penalty(proj, mean, cov)
        assert pen.shape == () and abs(float(pen.detach())) < 1e-12

    def test_penalty_positive_outside_gradient_only_to_prediction(
        self, measure: str, diag: bool
    ) -> None:
        raw = _inputs(diag)
        mean, cov, old_mean, old_cov = (a.clone().requires_grad_() for a in raw)
        layer = _layer(measure, diag)
        proj = layer(mean, cov, old_mean, old_cov)
        pen = layer.penalty(proj, mean, cov)
        assert float(pen.detach()) > 0
        g = torch.autograd.grad(pen, (mean, cov, old_mean, old_cov), allow_unused=True)
        # the same term with the projection built as a constant: no path through the layer
        m2, c2 = (a.detach().clone().requires_grad_() for a in raw[:2])
        ref = layer.divergence(proj.mean.detach(), proj.cov.detach(), m2, c2).total.mean()
        g_ref = torch.autograd.grad(ref, (m2, c2))
        torch.testing.assert_close(g[0], g_ref[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(g[1], g_ref[1], rtol=1e-12, atol=0)
        assert float(g[0].abs().max()) > 0
        assert g[2] is None and g[3] is None  # nothing reaches the old policy

    @pytest.mark.parametrize("scaled", [True, False])
    def test_mean_only_penalty_is_the_divergence_with_equal_covariances(
        self, measure: str, diag: bool, scaled: bool
    ) -> None:
        raw = _inputs(diag)
        mean = raw[0].clone().requires_grad_()
        layer = _layer(measure, diag, scaled=scaled)
        proj = layer(mean, *raw[1:])
        pen = layer.penalty(proj, mean, None)
        m2 = raw[0].clone().requires_grad_()
        c = proj.cov.detach()
        parts = layer.divergence(proj.mean.detach(), c, m2, c)
        torch.testing.assert_close(parts.cov, torch.zeros_like(parts.cov), rtol=0, atol=1e-12)
        ref = parts.total.mean()
        torch.testing.assert_close(pen, ref, rtol=1e-12, atol=0)
        (g,) = torch.autograd.grad(pen, mean)
        (g_ref,) = torch.autograd.grad(ref, m2)
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-15)
        assert float(pen.detach()) > 0

    def test_diagnostics(self, measure: str, diag: bool) -> None:
        mean, cov, old_mean, old_cov = _inputs(diag)
        layer = _layer(measure, diag)
        proj = layer(mean, cov, old_mean, old_cov)
        diag_ = layer.diagnostics(mean, cov, old_mean, old_cov, proj)
        assert set(diag_) == KEYS
        assert all(isinstance(v, float) and math.isfinite(v) for v in diag_.values())
        kl = tm.kl_divergence(proj.mean, proj.cov, old_mean, old_cov, diag=diag).total
        parts = layer.divergence(proj.mean, proj.cov, old_mean, old_cov)
        maha = 2 * tm.kl_divergence(mean, old_cov, old_mean, old_cov, diag=diag).mean
        want = {
            "kl_mean": kl.mean(),
            "kl_max": kl.max(),
            "div_mean_part_mean": parts.mean.mean(),
            "div_mean_part_max": parts.mean.max(),
            "div_cov_part_mean": parts.cov.mean(),
            "div_cov_part_max": parts.cov.max(),
            "entropy_mean": tm.entropy(proj.cov, diag=diag).mean(),
            "maha_unprojected_mean": maha.mean(),
            "maha_unprojected_max": maha.max(),
        }
        for k, v in want.items():
            assert diag_[k] == pytest.approx(float(v), rel=1e-12, abs=1e-15), k
        if measure in ("kl", "kl_joint"):
            assert diag_["kl_max"] <= (EPS_MEAN + EPS_COV) * (1 + 1e-9)
        # the unprojected mean is outside: its Mahalanobis distance exceeds the mean bound
        assert diag_["maha_unprojected_max"] > 2 * EPS_MEAN

    def test_entropy_schedule_equality_applied(self, measure: str, diag: bool) -> None:
        mean, cov, old_mean, old_cov = _inputs(diag)
        h0 = float(tm.entropy(cov, diag=diag).mean())
        sched = EntropySchedule(kind="linear", target_per_dim=-1.0, total_steps=10, equality=True)
        layer = _layer(measure, diag, entropy_schedule=sched)
        proj = layer(mean, cov, old_mean, old_cov, step=4)
        assert sched.initial_entropy == pytest.approx(h0, rel=1e-12)  # set on the first call
        beta = h0 + 0.4 * (3 * -1.0 - h0)
        h = tm.entropy(proj.cov, diag=diag)
        if measure == "kl_joint":  # the entropy bound enters the projection: H ≥ β
            assert float(h.min()) >= beta - 1e-9
            _within(layer, proj, old_mean, old_cov, 1e-9)
        else:
            np.testing.assert_allclose(h.numpy(), beta, rtol=1e-12)

    def test_float32(self, measure: str, diag: bool) -> None:
        args = _inputs(diag, torch.float32)
        layer = _layer(measure, diag)
        args[0].requires_grad_()
        proj = layer(*args)
        assert proj.mean.dtype == torch.float32 and proj.cov.dtype == torch.float32
        _within(layer, proj, args[2], args[3], 1e-3)
        pen = layer.penalty(proj, args[0], args[1])
        (g,) = torch.autograd.grad(pen, args[0])
        assert g.dtype == torch.float32 and bool(torch.isfinite(g).all())

    def test_noncontextual_old_broadcasts(self, measure: str, diag: bool) -> None:
        mean, cov, old_mean, old_cov = _inputs(diag)
        layer = _layer(measure, diag)
        proj = layer(mean, cov, old_mean[0], old_cov[0])
        ref = layer(mean, cov, old_mean[:1].expand_as(old_mean), old_cov[:1].expand_as(old_cov))
        torch.testing.assert_close(proj.mean, ref.mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(proj.cov, ref.cov, rtol=1e-12, atol=1e-14)


class TestEntropySchedule:
    def test_target_matches_functional_schedule(self) -> None:
        sched = EntropySchedule(
            kind="exp", target_per_dim=-0.5, temperature=0.3, total_steps=20, initial_entropy=1.5
        )
        for step in (0, 7, 20):
            assert sched.target(step, 4) == tm.entropy_schedule(
                step, 20, 1.5, -0.5, 4, temperature=0.3
            )

    def test_step_clamped(self) -> None:
        sched = EntropySchedule(kind="linear", total_steps=10, initial_entropy=1.0)
        assert sched.target(25, 2) == sched.target(10, 2)
        assert sched.target(-3, 2) == sched.target(0, 2)

    def test_target_needs_initial_entropy(self) -> None:
        with pytest.raises(ValueError, match="initial_entropy"):
            EntropySchedule().target(0, 2)

    def test_inequality_mode_leaves_high_entropy(self) -> None:
        mean, cov, old_mean, old_cov = _inputs(True)
        sched = EntropySchedule(kind="linear", total_steps=10, initial_entropy=-50.0)
        layer = _layer("frob", True, entropy_schedule=sched)
        proj = layer(mean, cov, old_mean, old_cov, step=0)
        ref = _layer("frob", True)(mean, cov, old_mean, old_cov)
        assert torch.equal(proj.cov, ref.cov)
