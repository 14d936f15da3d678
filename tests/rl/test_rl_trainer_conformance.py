"""Trainer settings that select the authors' released behaviour (docs/conformance.md)."""

from __future__ import annotations

import pytest
import torch
from toy_env import register

from trpl_math.rl.config import load_config
from trpl_math.rl.trainer import Trainer

SMALL = {"rollout_steps": 64, "minibatch_size": 16, "epochs": 2, "vf_epochs": 1, "eval_episodes": 0}


def _trainer(**overrides):
    return Trainer(load_config(method="kl", env_id=register(), overrides={**SMALL, **overrides}))


@pytest.mark.parametrize("source", ["batch", "last_minibatch"])
def test_cov_source(source):
    """``batch``: the covariance is the projection of the updated policy; ``last_minibatch``:
    the projection computed for the last minibatch, before its optimiser step."""
    tr = _trainer(cov_source=source, eps_cov=1e-4, lr=1e-2)
    seen = []
    inner = tr.policy_loss

    def spy(*args):
        loss, info, proj = inner(*args)
        seen.append(proj.cov.detach().clone())
        return loss, info, proj

    tr.policy_loss = spy
    batch = tr.collect()
    adv, _, _ = tr.advantages(batch)
    obs = torch.from_numpy(batch.obs.reshape(batch.size, -1))
    actions = torch.from_numpy(batch.actions.reshape(batch.size, -1))
    tr.update_policy(obs, actions, torch.from_numpy(adv.reshape(-1)).float())
    new_cov = tr.policy(obs[:1])[1]
    if source == "last_minibatch":
        torch.testing.assert_close(new_cov, seen[-1].mean(0, keepdim=True), rtol=1e-5, atol=1e-7)
    else:  # the projection of the policy after the last step, not the one before it
        assert not torch.allclose(new_cov, seen[-1].mean(0, keepdim=True), rtol=1e-7, atol=0)
    tr.close()


def test_float64_networks():
    tr = _trainer(net_dtype="float64")
    assert all(p.dtype == torch.float64 for p in tr.policy.parameters())
    assert all(p.dtype == torch.float64 for p in tr.vf.parameters())
    row = tr.iterate()
    assert row["proj_kl_max"] <= 0.03 + 1e-3 + 1e-9
    tr.close()


def test_old_policy_is_the_network_at_the_start_of_the_iteration():
    tr = _trainer()
    batch = tr.collect()
    adv, _, _ = tr.advantages(batch)
    obs = torch.from_numpy(batch.obs.reshape(batch.size, -1))
    actions = torch.from_numpy(batch.actions.reshape(batch.size, -1))
    with torch.no_grad():
        before_mean, before_cov = tr.policy(obs)
    old_mean, old_cov, _ = tr.update_policy(obs, actions, torch.from_numpy(adv.reshape(-1)).float())
    torch.testing.assert_close(old_mean, before_mean, rtol=0, atol=0)
    torch.testing.assert_close(old_cov, before_cov, rtol=0, atol=0)
    with torch.no_grad():
        assert not torch.equal(tr.policy(obs)[0], before_mean)  # the epochs did move it
    tr.close()


def test_optimizer_and_std_parametrisation():
    """Adam with eps 1e-5 for both networks; std = softplus(parameter) + 1e-5."""
    tr = _trainer()
    for opt in (tr.pi_opt, tr.vf_opt):
        assert opt.defaults["eps"] == 1e-5
    raw = tr.policy.cov_param.detach()
    std = torch.nn.functional.softplus(raw) + 1e-5
    torch.testing.assert_close(tr.policy(torch.zeros(1, tr.obs_dim))[1][0], std * std)
    tr.close()


def test_evaluation_protocol():
    """Table 1's protocol: 5 deterministic episodes (action = mean) after every iteration."""
    cfg = load_config(method="kl", env_id="Hopper-v5")
    assert (cfg.eval_episodes, cfg.eval_every) == (5, 1)
    tr = _trainer(eval_episodes=5)
    a = tr.evaluate(5, seed_stream=7)
    b = tr.evaluate(5, seed_stream=7)
    assert len(a) == 5 and a == b  # deterministic: no action noise
    tr.close()
