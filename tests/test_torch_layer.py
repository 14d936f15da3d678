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
    "proj_kl_mean",
    "proj_kl_max",
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
        with pytest.warns(UserWarning, match="old_mean and old_cov carry gradients"):
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
            "proj_kl_mean": kl.mean(),
            "proj_kl_max": kl.max(),
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
            assert diag_["proj_kl_max"] <= (EPS_MEAN + EPS_COV) * (1 + 1e-9)
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


def _full_problem(batch: int, d: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 10 + d)
    a = torch.randn(batch, d, d, generator=g, dtype=torch.float64)
    cov = a @ a.mT + 0.5 * torch.eye(d, dtype=torch.float64)
    old = torch.eye(d, dtype=torch.float64).expand(batch, d, d)
    mean = torch.randn(batch, d, generator=g, dtype=torch.float64)
    return [mean, cov, torch.zeros(batch, d, dtype=torch.float64), old]


class TestDiagDefault:
    """One ``diag`` default for the layer and the functions: ``False``."""

    def test_default_is_false_like_the_functions(self) -> None:
        layer = TrustRegionLayer("kl", eps_mean=EPS_MEAN, eps_cov=EPS_COV)
        assert layer.diag is False
        args = _full_problem(batch=2, d=2)  # a batch of d full matrices: (d, d, d)
        proj = layer(*args)
        ref = tm.kl_projection(*args, eps_mean=EPS_MEAN, eps_cov=EPS_COV)
        torch.testing.assert_close(proj.cov, ref.cov, rtol=0, atol=0)
        assert proj.cov.shape == (2, 2, 2)

    def test_regression_unbatched_full_cov_not_read_as_variances(self) -> None:
        mean, cov, old_mean, old_cov = (a[0] for a in _full_problem(batch=1, d=3))
        proj = TrustRegionLayer("frob", eps_mean=EPS_MEAN, eps_cov=EPS_COV)(
            mean, cov, old_mean, old_cov
        )
        ref = tm.frobenius_projection(
            mean, cov, old_mean, old_cov, eps_mean=EPS_MEAN, eps_cov=EPS_COV, diag=False
        )
        torch.testing.assert_close(proj.cov, ref.cov, rtol=0, atol=0)
        assert proj.mean.shape == (3,)  # read as variances it would be a batch of 3

    def test_diag_must_be_a_bool(self) -> None:
        with pytest.raises(TypeError, match="diag"):
            TrustRegionLayer("kl", eps_mean=0.1, eps_cov=0.1, diag="yes")


class TestBounds:
    @pytest.mark.parametrize(
        "value",
        [np.float32(0.03), np.float64(0.03), np.array(0.03), torch.tensor(0.03), 3, np.int64(3)],
    )
    def test_numpy_and_0d_bounds_accepted(self, value) -> None:
        layer = TrustRegionLayer("kl_joint", eps_mean=value, eps_cov=value, eps=value, diag=True)
        assert layer.eps_mean == pytest.approx(float(value)) and type(layer.eps) is float
        mean, cov, old_mean, old_cov = _inputs(True)
        proj = layer(mean, cov, old_mean, old_cov)
        kl = tm.kl_divergence(*proj, old_mean, old_cov, diag=True).total
        assert float(kl.max()) <= float(value) * (1 + 1e-9)

    @pytest.mark.parametrize("value", [True, "0.1", np.array([0.1]), None, np.float32("nan")])
    def test_other_values_rejected(self, value) -> None:
        with pytest.raises(ValueError, match="eps_mean must be a finite number > 0"):
            TrustRegionLayer("kl", eps_mean=value, eps_cov=0.1)


def _small(diag: bool) -> list[torch.Tensor]:
    f64 = torch.float64
    var = torch.tensor([[2.0, 0.5]], dtype=f64).expand(4, 2)
    cov = var if diag else torch.diag_embed(var)
    old_cov = torch.ones_like(var) if diag else torch.eye(2, dtype=f64).expand(4, 2, 2)
    return [torch.ones(4, 2, dtype=f64), cov, torch.zeros(4, 2, dtype=f64), old_cov]


class TestPenaltyArguments:
    def _setup(self, diag: bool = True):
        """4 states, d = 2."""
        layer = _layer("kl", diag)
        mean, cov, old_mean, old_cov = _small(diag)
        return layer, layer(mean, cov, old_mean, old_cov), mean, cov

    def test_cov_defaults_to_none(self) -> None:
        layer, proj, mean, _ = self._setup()
        torch.testing.assert_close(layer.penalty(proj, mean), layer.penalty(proj, mean, None))

    @pytest.mark.parametrize("validate", [True, False])
    def test_wrong_size_cov_is_named_cov(self, validate: bool) -> None:
        layer, proj, mean, _ = self._setup()
        layer.validate = validate
        with pytest.raises(ValueError, match=r"^cov has shape \(4, 3\)") as exc:
            layer.penalty(proj, mean, torch.ones(4, 3, dtype=torch.float64))
        assert "old_cov" not in str(exc.value)

    def test_wrong_size_full_cov(self) -> None:
        layer, proj, mean, cov = self._setup(diag=False)
        with pytest.raises(ValueError, match=r"^cov has shape \(4, 2\), expected \(\.\.\., d, d\)"):
            layer.penalty(proj, mean, cov[..., 0])

    def test_a_tuple_is_not_a_projection(self) -> None:
        layer, proj, mean, cov = self._setup()
        with pytest.raises(TypeError, match="proj must be the Gaussian returned by the layer"):
            layer.penalty(tuple(proj), mean, cov)
        with pytest.raises(TypeError, match=r"mean must be a torch\.Tensor"):
            layer.penalty(proj, mean.numpy(), cov)

    @pytest.mark.parametrize("validate", [True, False])
    def test_batch_mismatch_names_both(self, validate: bool) -> None:
        layer, proj, mean, cov = self._setup()
        layer.validate = validate
        other = torch.zeros(5, mean.shape[-1], dtype=torch.float64)
        with pytest.raises(ValueError, match=r"mean \(5, 2\), proj.mean \(4, 2\)"):
            layer.penalty(proj, other, cov)
        with pytest.raises(ValueError, match=r"mean \(5, 2\), proj.mean \(4, 2\)"):
            layer.penalty(proj, other)  # cov=None
        with pytest.raises(ValueError, match=r"cov \(5, 2\), proj.cov \(4, 2\)"):
            layer.penalty(proj, mean, torch.ones(5, 2, dtype=torch.float64))
        with pytest.raises(ValueError, match=r"mean has shape \(4, 3\), proj\.mean"):
            layer.penalty(proj, torch.zeros(4, 3, dtype=torch.float64), cov)

    @pytest.mark.parametrize("validate", [True, False])
    def test_forward_shape_errors_name_the_arguments(self, validate: bool) -> None:
        layer = _layer("kl", True, validate=validate)
        mean, cov, old_mean, old_cov = _small(True)
        with pytest.raises(ValueError, match=r"mean \(5, 2\), cov \(4, 2\), old_mean"):
            layer(torch.zeros(5, 2, dtype=torch.float64), cov, old_mean, old_cov)
        with pytest.raises(ValueError, match=r"^old_cov has shape \(4, 3\)"):
            layer(mean, cov, old_mean, torch.ones(4, 3, dtype=torch.float64))
        with pytest.raises(TypeError, match=r"old_mean must be a torch\.Tensor"):
            layer(mean, cov, old_mean.numpy(), old_cov)


class TestOldPolicyWithGradients:
    """A forgotten ``.detach()``: the layer detaches the old policy and warns once."""

    @pytest.mark.parametrize("diag", [True, False])
    def test_gradients_as_with_detach_and_one_warning(self, diag: bool) -> None:
        torch.manual_seed(0)
        d = 2
        net = torch.nn.Linear(3, d).double()
        obs = torch.randn(16, 3, dtype=torch.float64)
        var = torch.full((d,), 0.5, dtype=torch.float64)
        cov = var if diag else torch.diag(var)
        actions = torch.randn(16, d, dtype=torch.float64)

        def grads(forget: bool, layer: TrustRegionLayer) -> list[torch.Tensor]:
            net.zero_grad()
            with torch.no_grad():
                net.weight.add_(0.0)  # same parameters for both calls
            old_mean = net(obs) if forget else net(obs).detach()
            mean = net(obs) + 0.3  # the new policy, moved away from the old one
            proj = layer(mean, cov, old_mean, cov)
            logp = layer.distribution(proj).log_prob(actions)
            loss = -logp.mean() + layer.penalty(proj, mean)
            loss.backward()
            return [p.grad.clone() for p in net.parameters()]

        layer = _layer("kl", diag)
        ref = grads(False, layer)
        with pytest.warns(UserWarning, match="old_mean carry gradients") as rec:
            got = grads(True, layer)
            grads(True, layer)  # a second call does not warn again
        assert len(rec) == 1
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


class TestDistributionView:
    @pytest.mark.parametrize("diag", [True, False])
    def test_distribution_log_prob_and_entropy(self, diag: bool) -> None:
        layer = _layer("kl", diag)
        mean, cov, old_mean, old_cov = _inputs(diag)
        proj = layer(mean, cov, old_mean, old_cov)
        dist = layer.distribution(proj)
        x = torch.zeros_like(proj.mean)
        if diag:
            ref = torch.distributions.Normal(proj.mean, proj.cov.sqrt())
            torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x).sum(-1))
            torch.testing.assert_close(proj.std(diag=True), proj.cov.sqrt())
        else:
            ref = torch.distributions.MultivariateNormal(proj.mean, covariance_matrix=proj.cov)
            torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x))
            with pytest.raises(ValueError, match="scale_tril"):
                proj.std(diag=False)
        torch.testing.assert_close(dist.entropy(), tm.entropy(proj.cov, diag=diag))
        assert dist.batch_shape == proj.mean.shape[:-1] and dist.event_shape == proj.mean.shape[-1:]
