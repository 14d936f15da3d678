"""Rollout collection (Algorithm 2, line 3): the batch as named fields and a NumPy actor.

Rollouts are taken with the network's own, unprojected policy (Sec. 4.4): the penalty of Eq. 12
keeps it close to the trust region. A non-contextual policy is copied once per iteration into a
:class:`NumpyActor` (a few small matmuls per step, no autograd); a contextual one is evaluated
by torch.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from trpl_math.rl.networks import GaussianPolicy
from trpl_math.rl.normalization import ObsNormalizer, RewardScaler

#: ``obs (N, o) -> (mean (N, d), scale)``: the noise scale is the std ``(1|N, d)`` (diagonal)
#: or the Cholesky factor ``(1|N, d, d)`` of the covariance.
Actor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class Batch:
    """One iteration's samples, time-major: ``T`` steps of ``N`` environment copies.

    Attributes:
        obs: ``(T, N, o)`` normalised observations the actions were taken in (float32).
        actions: ``(T, N, d)`` actions as sampled, before any clipping to the bounds (float32).
        rewards: ``(T, N)`` raw rewards. scaled_rewards: ``(T, N)`` after reward scaling.
        terminated, truncated: ``(T, N)`` booleans of each step.
        final_obs: ``(T, N, o)`` normalised final observation where ``truncated`` (else 0).
        last_obs: ``(N, o)`` normalised observation after the last step (for bootstrapping).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    scaled_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    last_obs: np.ndarray

    @property
    def size(self) -> int:
        """``T * N``."""
        return int(self.rewards.size)


class EpisodeStats:
    """Running return and length of each environment copy and the last ``window`` episodes."""

    def __init__(self, num_envs: int, window: int = 10) -> None:
        self.ep_return = np.zeros(num_envs)
        self.ep_length = np.zeros(num_envs, np.int64)
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=window)
        self.recent_lengths: collections.deque[int] = collections.deque(maxlen=window)

    def step(self, reward: np.ndarray, done: np.ndarray) -> None:
        """Add one step's ``reward (N,)``; close the episodes where ``done (N,)``."""
        self.ep_return += reward
        self.ep_length += 1
        for i in np.flatnonzero(done):
            self.recent_returns.append(float(self.ep_return[i]))
            self.recent_lengths.append(int(self.ep_length[i]))
            self.ep_return[i], self.ep_length[i] = 0.0, 0

    def mean_return(self) -> float:
        """Mean return of the recent episodes (NaN before the first one ends)."""
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")

    def mean_length(self) -> float:
        """Mean length of the recent episodes (NaN before the first one ends)."""
        return float(np.mean(self.recent_lengths)) if self.recent_lengths else float("nan")

    def state_dict(self) -> dict[str, Any]:
        """Copies of every field."""
        return {
            "ep_return": self.ep_return.copy(),
            "ep_length": self.ep_length.copy(),
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.ep_return = np.array(state["ep_return"], np.float64)
        self.ep_length = np.array(state["ep_length"], np.int64)
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])
        self.recent_lengths.clear()
        self.recent_lengths.extend(state["recent_lengths"])


def numpy_actor(policy: GaussianPolicy, activation: str) -> Actor | None:
    """A NumPy copy of a non-contextual ``policy``: ``obs -> (mean, scale)``, or None where the
    covariance depends on the state. The copy is taken now; later updates do not reach it."""
    if policy.contextual:
        return None
    act = np.tanh if activation == "tanh" else (lambda x: np.maximum(x, 0.0))
    lins = [m for m in policy.body if isinstance(m, torch.nn.Linear)]
    lins.append(policy.mean_head)
    params = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in lins]
    with torch.no_grad():
        p = next(policy.parameters())
        cov = policy(torch.zeros(1, lins[0].in_features, dtype=p.dtype))[1][0]
    scale = (cov.sqrt() if policy.diag else torch.linalg.cholesky(cov)).numpy()

    def actor(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = obs
        for w, b in params[:-1]:
            h = act(h @ w + b)
        return h @ params[-1][0] + params[-1][1], scale

    return actor


def torch_actor(policy: GaussianPolicy) -> Actor:
    """``obs -> (mean, scale)`` evaluated by the torch policy (contextual covariances)."""

    def actor(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            mean, cov = policy(torch.from_numpy(obs))
            scale = cov.sqrt() if policy.diag else torch.linalg.cholesky(cov)
        return mean.numpy(), scale.numpy()

    return actor


def collect(
    envs: Any,
    obs: np.ndarray,
    actor: Actor,
    steps: int,
    *,
    obs_norm: ObsNormalizer,
    rew_scaler: RewardScaler,
    rng: np.random.Generator,
    episodes: EpisodeStats,
    diag: bool,
    action_bounds: tuple[np.ndarray, np.ndarray] | None,
    dtype: type = np.float32,
) -> tuple[Batch, np.ndarray]:
    """Run ``steps`` steps in every copy of the vector env ``envs`` from raw observations
    ``obs (N, o)``; returns the :class:`Batch` and the raw observations after the last step.

    Actions are ``mean + scale @ noise`` with standard-normal noise from ``rng``. With
    ``action_bounds = (low, high)`` the action sent to the environment is clipped to them;
    ``None`` sends it unclipped (the authors' released code). ``obs_norm`` is updated with every
    new observation (when enabled), ``rew_scaler`` scales the rewards, ``episodes`` records
    finished episodes. ``dtype`` is the dtype of the stored observations and actions.
    """
    N = obs.shape[0]
    o_dim = obs.shape[-1]
    obs_buf = np.zeros((steps, N, o_dim), dtype)
    rew_buf = np.zeros((steps, N))
    scaled_buf = np.zeros((steps, N))
    term_buf = np.zeros((steps, N), bool)
    trunc_buf = np.zeros((steps, N), bool)
    final_buf = np.zeros((steps, N, o_dim), dtype)
    act_buf: np.ndarray | None = None
    for t in range(steps):
        o = obs_norm(obs).astype(dtype, copy=False)
        obs_buf[t] = o
        mean, scale = actor(o)
        if act_buf is None:
            act_buf = np.zeros((steps, N, mean.shape[-1]), dtype)
        noise = rng.standard_normal(mean.shape).astype(dtype)
        if diag:
            action = mean + scale * noise
        else:
            action = mean + np.einsum("...ij,...j->...i", scale, noise)
        act_buf[t] = action
        sent = action if action_bounds is None else np.clip(action, *action_bounds)
        next_obs, reward, term, trunc, info = envs.step(sent)
        next_obs = np.array(next_obs, np.float64)  # copy: the vector env reuses its buffer
        done = term | trunc
        if obs_norm.enabled:
            obs_norm.rms.update(next_obs)
        for i in np.flatnonzero(trunc):
            final_buf[t, i] = obs_norm(np.asarray(info["final_obs"][i])[None])[0]
        rew_buf[t], term_buf[t], trunc_buf[t] = reward, term, trunc
        scaled_buf[t] = rew_scaler(reward, done)
        episodes.step(reward, done)
        obs = next_obs
    assert act_buf is not None
    batch = Batch(
        obs=obs_buf,
        actions=act_buf,
        rewards=rew_buf,
        scaled_rewards=scaled_buf,
        terminated=term_buf,
        truncated=trunc_buf,
        final_obs=final_buf,
        last_obs=obs_norm(obs).astype(dtype, copy=False),
    )
    return batch, obs
