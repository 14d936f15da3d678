"""Policy/value networks: log-densities against torch.distributions, initialisation, set_cov."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trpl_math.rl.networks import GaussianPolicy, ValueNet, gaussian_entropy, gaussian_log_prob
from trpl_math.rl.normalization import ObsNormalizer, RewardScaler, RunningMeanStd


@pytest.mark.parametrize("cov_type", ["diag", "full"])
@pytest.mark.parametrize("contextual", [False, True])
def test_shapes_and_log_prob_match_torch(cov_type, contextual):
    torch.manual_seed(0)
    pi = GaussianPolicy(5, 3, [16, 16], cov_type=cov_type, contextual=contextual, init_std=0.7)
    obs = torch.randn(8, 5)
    mean, cov = pi(obs)
    assert mean.shape == (8, 3)
    lead = 8 if contextual else 1
    assert cov.shape == ((lead, 3) if cov_type == "diag" else (lead, 3, 3))
    full = torch.diag_embed(cov) if cov_type == "diag" else cov
    dist = torch.distributions.MultivariateNormal(mean, full.expand(8, 3, 3))
    a = torch.randn(8, 3)
    diag = cov_type == "diag"
    torch.testing.assert_close(gaussian_log_prob(a, mean, cov, diag), dist.log_prob(a))
    torch.testing.assert_close(gaussian_entropy(cov, diag).expand(8), dist.entropy())


def test_initialisation():
    torch.manual_seed(0)
    pi = GaussianPolicy(11, 3, [64, 64], init_std=1.0)
    _, cov = pi(torch.zeros(1, 11))
    torch.testing.assert_close(cov, torch.ones(1, 3))
    w = pi.body[0].weight  # (64, 11): orthonormal columns scaled by sqrt(2)
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(11), atol=1e-5, rtol=0)
    w2 = pi.body[2].weight  # (64, 64): orthogonal times sqrt(2)
    torch.testing.assert_close(w2 @ w2.T, 2.0 * torch.eye(64), atol=1e-5, rtol=0)
    w_out = pi.mean_head.weight  # (3, 64): orthonormal rows times 0.01
    torch.testing.assert_close(w_out @ w_out.T, 1e-4 * torch.eye(3), atol=1e-8, rtol=0)
    assert all(float(m.bias.abs().max()) == 0.0 for m in (pi.body[0], pi.mean_head))
    assert ValueNet(11, [64, 64])(torch.zeros(4, 11)).shape == (4,)


@pytest.mark.parametrize("cov_type", ["diag", "full"])
def test_set_cov_round_trip(cov_type):
    pi = GaussianPolicy(4, 3, [8], cov_type=cov_type)
    if cov_type == "diag":
        target = torch.tensor([0.3, 1.7, 0.05])
    else:
        m = torch.tensor([[1.0, 0.0, 0.0], [0.4, 0.8, 0.0], [-0.3, 0.2, 0.5]])
        target = m @ m.T
    pi.set_cov(target)
    torch.testing.assert_close(pi(torch.zeros(1, 4))[1][0], target, rtol=1e-5, atol=1e-6)


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(300, 4))
    rms = RunningMeanStd((4,))
    for chunk in np.array_split(data, 7):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-5)


def test_running_mean_std_single_samples():
    rng = np.random.default_rng(1)
    data = rng.normal(-1.0, 5.0, size=(500, 3))
    rms = RunningMeanStd((3,))
    for row in data:
        rms.update(row[None])
    # the prior (mean 0, var 1, count 1e-4) shifts both by ~1e-4 / 500 relative
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-5)
    # bitwise the general batch formula with a batch of one (mean = the sample, var = 0)
    ref = RunningMeanStd((3,))
    for row in data:
        b = row[None]
        delta, total = b.mean(0) - ref.mean, ref.count + 1
        ref.mean = ref.mean + delta * 1 / total
        m2 = ref.var * ref.count + b.var(0) * 1 + delta * delta * ref.count * 1 / total
        ref.var, ref.count = m2 / total, total
    assert np.array_equal(rms.mean, ref.mean) and np.array_equal(rms.var, ref.var)


def test_obs_normalizer_clips_and_reward_scaler_uses_return_std():
    norm = ObsNormalizer((1,), clip=2.0)
    norm.rms.mean, norm.rms.var = np.array([1.0]), np.array([4.0])
    np.testing.assert_allclose(norm(np.array([[2.0], [100.0]])), [[0.5], [2.0]], rtol=1e-6)
    sc = RewardScaler(1, gamma=0.5, enabled=True, clip=None)
    out = sc(np.array([2.0]), np.array([False]))
    # after one update the return statistics are (mean 2, var ~0): reward / sqrt(var + 1e-8)
    expected = 2.0 / math.sqrt(sc.rms.var + 1e-8)
    np.testing.assert_allclose(out, [expected])
    sc(np.array([1.0]), np.array([True]))
    assert sc.ret[0] == 0.0  # reset at the episode end
