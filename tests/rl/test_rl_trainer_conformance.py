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
