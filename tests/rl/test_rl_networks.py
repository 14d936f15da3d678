"""Policy/value networks: log-densities against torch.distributions, initialisation, set_cov."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

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


def _linears(module: torch.nn.Module) -> list[tuple[int, int]]:
    return [
        (m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)
    ]


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# The paper's Hopper setting: obs 11, act 3, two hidden layers of 64 (Table 2). By hand:
# Linear(11, 64) = 11*64 + 64 = 768, Linear(64, 64) = 64*64 + 64 = 4160, mean head
# Linear(64, 3) = 64*3 + 3 = 195; value head Linear(64, 1) = 65.
@pytest.mark.parametrize(
    ("cov_type", "contextual", "cov_linears", "cov_params"),
    [
        ("diag", False, [], 3),  # one free parameter per action dimension
        ("diag", True, [(64, 3)], 64 * 3 + 3),  # a linear head on the last hidden layer
        ("full", False, [], 6),  # 3 diagonal + 3 strictly lower entries of the Cholesky factor
        ("full", True, [(64, 6)], 64 * 6 + 6),
    ],
)
def test_policy_architecture_is_the_papers(cov_type, contextual, cov_linears, cov_params):
    """Two hidden layers, each Linear + tanh, then the heads: a third hidden layer (the bug of
    every result before docs/results.md's re-run) adds a Linear(64, 64) and fails here."""
    pi = GaussianPolicy(11, 3, [64, 64], cov_type=cov_type, contextual=contextual)
    assert _linears(pi.body) == [(11, 64), (64, 64)]
    assert [type(m) for m in pi.body] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh]
    assert _linears(pi.mean_head) == [(64, 3)]
    assert _linears(pi) == [(11, 64), (64, 64), (64, 3), *cov_linears]
    assert _n_params(pi) == 768 + 4160 + 195 + cov_params
    # the mean is tanh(tanh(obs W1 + b1) W2 + b2) W3 + b3, computed here by hand
    obs = torch.randn(5, 11)
    lin = [m for m in pi.modules() if isinstance(m, nn.Linear)]
    h = torch.tanh(torch.tanh(obs @ lin[0].weight.T + lin[0].bias) @ lin[1].weight.T + lin[1].bias)
    torch.testing.assert_close(pi(obs)[0], h @ lin[2].weight.T + lin[2].bias)


def test_value_architecture_is_the_papers():
    vf = ValueNet(11, [64, 64])
    assert _linears(vf) == [(11, 64), (64, 64), (64, 1)]
    assert _n_params(vf) == 768 + 4160 + 65
    assert [type(m) for m in vf.net] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]


def test_trainer_builds_the_papers_hopper_networks():
    from trpl_math.rl.config import load_config
    from trpl_math.rl.trainer import Trainer

    for method in ("kl", "ppo"):
        tr = Trainer(load_config(method=method, env_id="Hopper-v5"))
        assert _n_params(tr.policy) == 768 + 4160 + 195 + 3
        assert _n_params(tr.vf) == 768 + 4160 + 65
        tr.close()
