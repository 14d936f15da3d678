"""GAE against hand-rolled returns, with terminations and time-limit truncations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trpl_math.rl.gae import gae


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Independent implementation: walk each environment's episodes forwards and sum
    ``A_t = sum_l (gamma lam)^l delta_{t+l}`` explicitly over the rest of the episode segment."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                boot = 0.0 if terminated[k, n] else next_values[k, n]
                delta = rewards[k, n] + gamma * boot - values[k, n]
                total += discount * delta
                if terminated[k, n] or truncated[k, n]:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    return adv


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("lam", [0.0, 0.7, 0.95, 1.0])
def test_matches_reference_with_truncation(gamma, lam):
    rng = np.random.default_rng(3)
    T, N = 17, 3
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    next_values = rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < 0.1
    truncated = (rng.random((T, N)) < 0.1) & ~terminated
    adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    expected = reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, expected + values, rtol=1e-12, atol=1e-12)


def test_hand_computed_episode_truncated_then_terminated():
    # One env, 4 steps: the episode is truncated after step 1 (bootstrap from the final
    # observation's value 10), the next one terminates at step 3 (worth 0 afterwards).
    r = np.array([[1.0], [2.0], [3.0], [4.0]])
    v = np.array([[0.5], [1.0], [1.5], [2.0]])
    nv = np.array([[1.0], [10.0], [2.0], [99.0]])  # nv[1] = V(final obs); nv[3] ignored
    term = np.array([[False], [False], [False], [True]])
    trunc = np.array([[False], [True], [False], [False]])
    g, lam = 0.9, 0.5
    d0 = 1 + g * 1.0 - 0.5
    d1 = 2 + g * 10.0 - 1.0
    d2 = 3 + g * 2.0 - 1.5
    d3 = 4 - 2.0
    a3 = d3
    a2 = d2 + g * lam * a3
    a1 = d1  # no flow across the truncation
    a0 = d0 + g * lam * a1
    adv, _ = gae(r, v, nv, term, trunc, g, lam)
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2, a3])


def test_lambda_one_gives_discounted_return_minus_value():
    r = np.array([[1.0], [1.0], [1.0]])
    v = np.array([[0.3], [0.2], [0.1]])
    nv = np.array([[0.2], [0.1], [5.0]])  # last step bootstraps from 5
    no = np.zeros((3, 1), bool)
    adv, ret = gae(r, v, nv, no, no, 0.5, 1.0)
    # return_0 = 1 + 0.5 + 0.25 + 0.125 * 5
    np.testing.assert_allclose(ret[0, 0], 1 + 0.5 + 0.25 + 0.125 * 5)
    np.testing.assert_allclose(adv[:, 0], ret[:, 0] - v[:, 0])


def test_rejects_bad_input():
    z = np.zeros((3, 2))
    with pytest.raises(ValueError, match="values"):
        gae(z, np.zeros((3, 1)), z, z.astype(bool), z.astype(bool), 0.9, 0.9)
    with pytest.raises(ValueError, match="gamma"):
        gae(z, z, z, z.astype(bool), z.astype(bool), 1.5, 0.9)


def test_truncation_modes() -> None:
    """``truncation``: ``terminal`` (the ReacherSparse configs) makes a time-limit cut worth 0;
    ``bootstrap`` (the default) adds gamma * V(final observation) to the cut step's TD target;
    ``zero_advantage`` (the authors' released code) gives the cut step advantage 0, its value as
    target, and the step before it ``delta`` alone (its GAE recursion stops at the cut)."""
    from toy_env import register

    from trpl_math.rl.config import load_config
    from trpl_math.rl.rollout import Batch
    from trpl_math.rl.trainer import Trainer

    assert load_config(method="kl", env_id="ReacherSparse-v0").truncation == "terminal"
    assert load_config(method="kl", env_id="Hopper-v5").truncation == "bootstrap"
    toy = register()
    rng = np.random.default_rng(0)
    T, N, obs_dim = 6, 1, 2
    trunc = np.zeros((T, N), bool)
    trunc[3, 0] = True
    batch = Batch(
        obs=rng.normal(size=(T, N, obs_dim)).astype(np.float32),
        actions=np.zeros((T, N, 1), np.float32),
        rewards=rng.normal(size=(T, N)),
        scaled_rewards=rng.normal(size=(T, N)),
        terminated=np.zeros((T, N), bool),
        truncated=trunc,
        final_obs=rng.normal(size=(T, N, obs_dim)).astype(np.float32),
        last_obs=rng.normal(size=(N, obs_dim)).astype(np.float32),
    )
    out = {}
    for mode in ("bootstrap", "terminal", "zero_advantage"):
        cfg = load_config(method="kl", env_id=toy, overrides={"truncation": mode})
        trainer = Trainer(cfg)
        torch.manual_seed(0)
        for p in trainer.vf.parameters():
            torch.nn.init.normal_(p)
        out[mode] = trainer.advantages(batch)
        with torch.no_grad():
            v_final = float(trainer.vf(torch.from_numpy(batch.final_obs[3])).numpy()[0])
        trainer.close()
    adv_boot, adv_cut = out["bootstrap"][0], out["terminal"][0]
    # Only the cut step's TD error differs, by gamma * V(final); earlier steps see it via GAE.
    np.testing.assert_allclose(adv_boot[3, 0] - adv_cut[3, 0], cfg.gamma * v_final, rtol=1e-6)
    np.testing.assert_allclose(adv_boot[4:], adv_cut[4:])
    assert abs(v_final) > 1e-3  # the comparison above is not vacuous
    adv_zero, ret_zero, values = out["zero_advantage"]
    assert adv_zero[3, 0] == 0.0
    assert ret_zero[3, 0] == values[3, 0]
    # step 2: r_2 + gamma V(s_3) - V(s_2), nothing from step 3 on
    r, g = batch.scaled_rewards[:, 0], cfg.gamma
    np.testing.assert_allclose(
        adv_zero[2, 0], r[2] + g * values[3, 0] - values[2, 0], rtol=1e-6, atol=1e-9
    )
    np.testing.assert_array_equal(adv_zero[4:], adv_boot[4:])  # after the cut: unchanged


def test_gae_zero_delta_by_hand() -> None:
    """Two steps, the second's TD error zeroed: A_1 = 0 and A_0 = delta_0 + gamma lam * 0."""
    r = np.array([[1.0], [2.0]])
    v = np.array([[0.5], [0.25]])
    nv = np.array([[0.25], [4.0]])
    no = np.zeros((2, 1), bool)
    zero = np.array([[False], [True]])
    adv, ret = gae(r, v, nv, no, no, 0.9, 0.8, zero_delta=zero)
    np.testing.assert_allclose(adv[:, 0], [1.0 + 0.9 * 0.25 - 0.5, 0.0])
    np.testing.assert_allclose(ret[:, 0], [1.0 + 0.9 * 0.25, 0.25])
    with pytest.raises(ValueError, match="zero_delta"):
        gae(r, v, nv, no, no, 0.9, 0.8, zero_delta=zero[:1])
