"""Rollout collection: what the environment receives, what the batch stores, episode stats."""

from __future__ import annotations

import numpy as np
import pytest

from trpl_math.rl.normalization import ObsNormalizer, RewardScaler
from trpl_math.rl.rollout import EpisodeStats, collect


class RecordingVecEnv:
    """Two copies; records the actions it is sent; episode of copy 0 ends at step 2."""

    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []
        self.t = 0

    def step(self, actions):
        self.sent.append(np.array(actions))
        self.t += 1
        term = np.array([self.t == 2, False])
        trunc = np.zeros(2, bool)
        return np.full((2, 3), float(self.t)), np.array([1.0, 2.0]), term, trunc, {}


def _collect(bounds):
    env = RecordingVecEnv()

    def actor(obs):  # a mean far outside the bounds [-1, 1], tiny noise
        return np.full((2, 1), 5.0, np.float32), np.full((1, 1), 1e-3, np.float32)

    episodes = EpisodeStats(2)
    batch, last = collect(
        env,
        np.zeros((2, 3)),
        actor,
        3,
        obs_norm=ObsNormalizer((3,), enabled=False),
        rew_scaler=RewardScaler(2, 0.99, enabled=False),
        rng=np.random.default_rng(0),
        episodes=episodes,
        diag=True,
        action_bounds=bounds,
    )
    return env, batch, last, episodes


@pytest.mark.parametrize("clip", [True, False])
def test_clip_actions_decides_what_the_env_receives(clip):
    bounds = (np.array([-1.0]), np.array([1.0])) if clip else None
    env, batch, _, _ = _collect(bounds)
    sent = np.stack(env.sent)
    if clip:
        np.testing.assert_array_equal(sent, 1.0)
    else:  # the released code's setting: the raw sample reaches the environment
        assert np.all(np.abs(sent - 5.0) < 0.01)
    # the batch always keeps the sampled action (the log-density is evaluated there)
    assert np.all(np.abs(batch.actions - 5.0) < 0.01)


def test_batch_fields_and_episode_stats():
    _, batch, last, episodes = _collect(None)
    assert batch.obs.shape == (3, 2, 3) and batch.actions.shape == (3, 2, 1)
    assert batch.size == 6
    np.testing.assert_array_equal(batch.obs[1], 1.0)  # obs of step t is what step t-1 returned
    np.testing.assert_array_equal(batch.last_obs, 3.0)
    np.testing.assert_array_equal(last, 3.0)
    np.testing.assert_array_equal(batch.terminated[:, 0], [False, True, False])
    np.testing.assert_array_equal(batch.rewards[:, 1], 2.0)
    assert list(episodes.recent_returns) == [2.0] and list(episodes.recent_lengths) == [2]
    np.testing.assert_array_equal(episodes.ep_return, [1.0, 6.0])


@pytest.mark.parametrize("cov_type", ["diag", "full"])
def test_numpy_actor_is_the_network_policy(cov_type):
    """Rollouts act with the network's own, unprojected policy: the NumPy copy gives the same
    mean and noise scale (std, or the Cholesky factor) as the torch module."""
    import torch

    from trpl_math.rl.networks import GaussianPolicy
    from trpl_math.rl.rollout import numpy_actor

    torch.manual_seed(0)
    pi = GaussianPolicy(5, 3, [16, 16], cov_type=cov_type, init_std=0.7)
    with torch.no_grad():
        for p in pi.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    mean, scale = numpy_actor(pi, "tanh")(obs)
    with torch.no_grad():
        m, cov = pi(torch.from_numpy(obs))
    np.testing.assert_allclose(mean, m.numpy(), rtol=1e-5, atol=1e-6)
    ref = cov.sqrt() if cov_type == "diag" else torch.linalg.cholesky(cov)
    np.testing.assert_allclose(scale, ref[0].numpy(), rtol=1e-5, atol=1e-7)
    assert numpy_actor(GaussianPolicy(5, 3, [8], contextual=True), "tanh") is None
