"""The losses against values worked out by hand (docs/conformance.md, Eq. 12 and PPO).

The trust-region case: one action dimension, old policy N(0, 1), the network's N(1, 1) and
eps_mean = 0.125. The KL mean part 0.5 * 1^2 = 0.5 exceeds the bound, so the projected mean
lies on it: 0.5 * mu~^2 = 0.125, mu~ = 0.5; the covariances are equal, so the covariance part
is 0 and the projected variance is 1. In one dimension mu~ = sqrt(2 eps) for every m > 0, so
d mu~ / dm = 0: the surrogate has no gradient, and the penalty's gradient is alpha (m - mu~) / 1
if the projection is the detached side, 0 if the network's output were detached instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trpl_math.rl.losses import (
    normalize_advantages,
    ppo_clip_loss,
    trust_region_loss,
    value_loss,
)
from trpl_math.torch import TrustRegionLayer
from trpl_math.types import Gaussian

LOG_2PI = math.log(2 * math.pi)


def _logn(a: float, m: float, var: float) -> float:
    return -0.5 * ((a - m) ** 2 / var + math.log(var) + LOG_2PI)


class TestNormalizeAdvantages:
    def test_population_std_by_hand(self):
        # mean 3, population std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5); ddof=1 would give
        # sqrt(14 / 3) and fail here
        expected = np.array([-2.0, -1.0, 0.0, 3.0]) / (math.sqrt(3.5) + 1e-8)
        np.testing.assert_allclose(normalize_advantages(np.array([1.0, 2, 3, 6])), expected)
        out = normalize_advantages(torch.tensor([1.0, 2, 3, 6], dtype=torch.float64))
        np.testing.assert_allclose(out.numpy(), expected)


class TestTrustRegionLoss:
    def _setup(self, alpha: float = 8.0):
        layer = TrustRegionLayer("kl", eps_mean=0.125, eps_cov=1e-3, diag=True)
        m = torch.tensor([[1.0]], dtype=torch.float64, requires_grad=True)
        var = torch.ones(1, 1, dtype=torch.float64)
        old_mean, old_var = torch.zeros(1, 1, dtype=torch.float64), var.clone()
        proj = layer(m, var, old_mean, old_var)
        actions = torch.tensor([[0.3]], dtype=torch.float64)
        old_logp = torch.tensor([_logn(0.3, 0.0, 1.0)], dtype=torch.float64)
        adv = torch.tensor([2.0], dtype=torch.float64)
        return layer, m, var, proj, actions, old_logp, adv

    def test_value_and_gradient_by_hand(self):
        layer, m, var, proj, actions, old_logp, adv = self._setup()
        torch.testing.assert_close(proj.mean, torch.tensor([[0.5]], dtype=torch.float64))
        loss, info = trust_region_loss(
            proj,
            Gaussian(m, var),
            actions,
            old_logp,
            adv,
            penalty_fn=layer.penalty,
            alpha=8.0,
            diag=True,
            contextual_cov=False,
        )
        # ratio = N(0.3; 0.5, 1) / N(0.3; 0, 1) = exp(-0.02 + 0.045); penalty 0.5 (0.5 - 1)^2
        ratio = math.exp(0.025)
        assert info.surrogate == pytest.approx(2.0 * ratio, rel=1e-12)
        assert info.penalty == pytest.approx(0.125, rel=1e-12)
        assert float(loss) == pytest.approx(-2.0 * ratio + 8.0 * 0.125, rel=1e-12)
        loss.backward()
        # d/dm: surrogate 0 (mu~ is constant in m), penalty alpha * (m - mu~) = 8 * 0.5
        assert float(m.grad) == pytest.approx(4.0, rel=1e-9)

    def test_ratio_from_the_unprojected_policy_would_differ(self):
        """The planted bug: with the network's own policy the ratio is exp(-0.2), not exp(0.025);
        the function evaluated at (net, net) gives that, so the two are told apart."""
        layer, m, var, proj, actions, old_logp, adv = self._setup()
        net = Gaussian(m, var)
        kw = {"penalty_fn": layer.penalty, "alpha": 8.0, "diag": True, "contextual_cov": False}
        _, right = trust_region_loss(proj, net, actions, old_logp, adv, **kw)
        _, wrong = trust_region_loss(net, net, actions, old_logp, adv, **kw)
        assert wrong.surrogate == pytest.approx(2.0 * math.exp(-0.2), rel=1e-12)
        assert abs(right.surrogate - wrong.surrogate) > 0.4

    def test_penalty_gets_none_for_a_non_contextual_cov(self):
        layer, m, var, proj, actions, old_logp, adv = self._setup()
        seen = []

        def record(target, mean, cov):
            seen.append(cov)
            return layer.penalty(target, mean, cov)

        for contextual in (False, True):
            trust_region_loss(
                proj,
                Gaussian(m, var),
                actions,
                old_logp,
                adv,
                penalty_fn=record,
                alpha=1.0,
                diag=True,
                contextual_cov=contextual,
            )
        assert seen[0] is None and seen[1] is var

    def test_penalty_detached_on_the_network_side_fails_the_gradient(self):
        """A penalty that detached the network's output instead of the projection gives the
        mean no gradient at all here (mu~ does not move with m): 0 instead of 4."""
        layer, m, var, proj, actions, old_logp, adv = self._setup()

        def wrong_side(target, mean, cov):
            return layer.penalty(Gaussian(target.mean, target.cov), mean.detach(), cov)

        loss, _ = trust_region_loss(
            proj,
            Gaussian(m, var),
            actions,
            old_logp,
            adv,
            penalty_fn=wrong_side,
            alpha=8.0,
            diag=True,
            contextual_cov=False,
        )
        loss.backward()
        assert float(m.grad) == pytest.approx(0.0, abs=1e-12)

    def test_shape_errors_name_the_argument(self):
        layer, m, var, proj, actions, old_logp, adv = self._setup()
        kw = {"penalty_fn": layer.penalty, "alpha": 1.0, "diag": True, "contextual_cov": False}
        with pytest.raises(ValueError, match="adv"):
            trust_region_loss(proj, Gaussian(m, var), actions, old_logp, adv.repeat(2), **kw)
        with pytest.raises(ValueError, match="old_logp"):
            trust_region_loss(proj, Gaussian(m, var), actions, old_logp[None], adv, **kw)


class TestPPOClipLoss:
    def test_by_hand(self):
        # ratios [1.5, 0.5, 1.1], advantages [1, 1, -1], clip 0.2:
        # min(rA, clip(r)A) = [1.2, 0.5, -1.1], mean 0.2; |r - 1| > 0.2 for two of three
        r = torch.tensor([1.5, 0.5, 1.1], dtype=torch.float64)
        mean = torch.zeros(3, 1, dtype=torch.float64)
        var = torch.ones(1, 1, dtype=torch.float64)
        actions = torch.zeros(3, 1, dtype=torch.float64)
        logp = torch.full((3,), -0.5 * LOG_2PI, dtype=torch.float64)
        adv = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
        loss, info = ppo_clip_loss(
            Gaussian(mean, var), actions, logp - torch.log(r), adv, clip_ratio=0.2, diag=True
        )
        assert float(loss) == pytest.approx(-0.2, rel=1e-12)
        assert info.clip_frac == pytest.approx(2 / 3)


class TestValueLoss:
    def test_by_hand(self):
        v = torch.tensor([1.0, 2.0])
        ret = torch.zeros(2)
        old = torch.tensor([0.5, 2.5])
        assert float(value_loss(v, ret, old, clip=None)) == pytest.approx(2.5)
        # V_c = [0.5 + 0.2, 2.5 - 0.2]: max([1, 4], [0.49, 5.29]) = [1, 5.29]
        assert float(value_loss(v, ret, old, clip=0.2)) == pytest.approx(3.145, rel=1e-6)
        with pytest.raises(ValueError, match="returns"):
            value_loss(v, ret[:1], old, clip=None)


class TestTrainerUsesTheLosses:
    """The trainer's minibatch loss is Eq. 12 of the *projected* policy, recomputed here from
    the projection functions themselves, for a batch whose states lie outside the region."""

    @pytest.fixture
    def trainer(self):
        from toy_env import register

        from trpl_math.rl.config import load_config
        from trpl_math.rl.trainer import Trainer

        tr = Trainer(load_config(method="kl", env_id=register(), overrides={"alpha": 3.0}))
        yield tr
        tr.close()

    def _batch(self, trainer):
        g = torch.Generator().manual_seed(0)
        obs = torch.randn(16, trainer.obs_dim, generator=g)
        actions = torch.randn(16, trainer.act_dim, generator=g)
        adv = torch.randn(16, generator=g)
        with torch.no_grad():
            mean, cov = trainer.policy(obs)
        old_mean = mean + 0.5  # far outside eps_mean = 0.03
        old_cov = cov * 1.5
        from trpl_math.rl.networks import gaussian_log_prob

        old_logp = gaussian_log_prob(actions, old_mean, old_cov, True)
        return obs, actions, adv, old_mean, old_cov, old_logp

    @pytest.mark.parametrize("norm", ["none", "minibatch"])
    def test_policy_loss_is_eq12_of_the_projection(self, trainer, norm):
        import trpl_math as tm
        from trpl_math.rl.networks import gaussian_log_prob

        trainer.cfg.advantage_norm = norm
        obs, actions, adv, old_mean, old_cov, old_logp = self._batch(trainer)
        loss, info, _ = trainer.policy_loss(obs, actions, adv, old_mean, old_cov, old_logp)
        with torch.no_grad():
            mean, cov = trainer.policy(obs)
            proj = tm.kl_projection(
                mean, cov, old_mean, old_cov, eps_mean=0.03, eps_cov=1e-3, diag=True
            )
            ratio = torch.exp(gaussian_log_prob(actions, proj.mean, proj.cov, True) - old_logp)
            if norm == "minibatch":
                adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)
            diff = proj.mean - mean
            penalty = (0.5 * (diff * diff / proj.cov).sum(-1)).mean()  # KL's mean part
            expected = -(ratio * adv).mean() + 3.0 * penalty
        assert float(penalty) > 1e-3  # the states are outside: the penalty is not vacuous
        torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-7)
        assert info.penalty == pytest.approx(float(penalty), rel=1e-5)
