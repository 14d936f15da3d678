"""A tiny, fast Gymnasium task for the RL tests: steer a point in the plane to the origin."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

TOY_ID = "TrplPointGoal-v0"


class PointGoalEnv(gym.Env):
    """``x_{t+1} = x_t + 0.2 a_t`` (a clipped to [-1, 1]^2), reward ``-||x_{t+1}||^2``,
    ``x_0 ~ U[-1, 1]^2``; episodes are truncated after 25 steps (TimeLimit) and never terminate,
    except that leaving the box ``[-3, 3]^2`` terminates with reward -10."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.x = np.zeros(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1.0, 1.0, 2)
        return self.x.copy(), {}

    def step(self, action):
        self.x = self.x + 0.2 * np.clip(action, -1.0, 1.0)
        if np.abs(self.x).max() > 3.0:
            return self.x.copy(), -10.0, True, False, {}
        return self.x.copy(), -float(self.x @ self.x), False, False, {}


def register() -> str:
    """Register the toy task (idempotent) and return its id."""
    if TOY_ID not in gym.registry:
        gym.register(TOY_ID, entry_point=PointGoalEnv, max_episode_steps=25)
    return TOY_ID
