"""Environment snapshots restore the simulator bitwise (what exact resume relies on)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from trpl_math.rl.env_utils import env_seeds, get_vec_state, make_vec_env, set_vec_state


def _registered(env_id: str) -> bool:
    import trpl_math.rl.env_utils as eu

    eu._register_custom()
    return env_id in gym.registry


@pytest.mark.parametrize("env_id", ["Hopper-v5", "ReacherSparse-v0", "Pendulum-v1"])
def test_snapshot_continues_bitwise(env_id):
    if not _registered(env_id):
        pytest.skip(f"{env_id} not registered")
    envs = make_vec_env(env_id, 2)
    envs.reset(seed=env_seeds(0, 0, 2))
    rng = np.random.default_rng(0)
    shape = (2, *envs.single_action_space.shape)
    for _ in range(150):
        envs.step(rng.uniform(-1, 1, shape))
    state = get_vec_state(envs)
    actions = rng.uniform(-1, 1, (400, *shape))  # crosses episode ends (autoreset + env RNG)

    def rollout(e):
        out = []
        for a in actions:
            obs, rew, term, trunc, _ = e.step(a)
            out.append(np.concatenate([obs.ravel(), rew, term, trunc]))
        return np.array(out)

    expected = rollout(envs)
    other = make_vec_env(env_id, 2)
    other.reset(seed=[123, 456])  # different state before restoring
    set_vec_state(other, state)
    np.testing.assert_array_equal(rollout(other), expected)


def test_wrong_number_of_states_raises():
    envs = make_vec_env("Pendulum-v1", 2)
    envs.reset(seed=[0, 1])
    with pytest.raises(ValueError, match="expected 2"):
        set_vec_state(envs, get_vec_state(envs)[:1])
