"""Running mean/std statistics for observation and reward normalisation (NumPy, float64)."""

from __future__ import annotations

from typing import Any

import numpy as np


class RunningMeanStd:
    """Running mean and variance with Chan et al.'s parallel update.

    Args:
        shape: shape of one sample (``()`` for scalars).
    """

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        """Fold in ``batch`` of shape ``(n, *shape)``."""
        batch = np.asarray(batch, np.float64)
        n = batch.shape[0]
        if n == 1:  # one environment: the same values without mean/var's reduction machinery
            b_mean, b_var = batch[0], 0.0
        else:
            b_mean, b_var = batch.mean(axis=0), batch.var(axis=0)
        delta = b_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + b_var * n + delta * delta * self.count * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        """Copy of the statistics."""
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by :meth:`state_dict`."""
        self.mean = np.array(state["mean"], np.float64)
        self.var = np.array(state["var"], np.float64)
        self.count = float(state["count"])


class ObsNormalizer:
    """``clip((obs - mean) / sqrt(var + 1e-8), -clip, clip)`` with running statistics.

    Args:
        shape: observation shape. enabled: if False, observations pass through as float32.
        clip: clip bound, or None for no clipping.
    """

    def __init__(self, shape: tuple[int, ...], enabled: bool = True, clip: float | None = None):
        self.rms = RunningMeanStd(shape)
        self.enabled = enabled
        self.clip = clip

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        """Normalise ``obs (n, *shape)``; with ``update`` first fold it into the statistics."""
        if not self.enabled:
            return np.asarray(obs, np.float32)
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + 1e-8)
        if self.clip is not None:
            out = np.clip(out, -self.clip, self.clip)
        return out.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Statistics and settings."""
        return {"rms": self.rms.state_dict(), "enabled": self.enabled, "clip": self.clip}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.rms.load_state_dict(state["rms"])
        self.enabled = bool(state["enabled"])
        self.clip = state["clip"]


class RewardScaler:
    """PPO's reward scaling: divide by the running std of the discounted return, then clip.

    Keeps one discounted return per environment, reset where an episode ended.

    Args:
        num_envs: environments. gamma: discount. enabled: if False, rewards pass through.
        clip: clip bound for scaled rewards, or None.
    """

    def __init__(self, num_envs: int, gamma: float, enabled: bool, clip: float | None = None):
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(num_envs, np.float64)
        self.gamma = gamma
        self.enabled = enabled
        self.clip = clip

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Scale ``rewards (num_envs,)``; ``dones`` marks episodes that ended on this step."""
        if not self.enabled:
            return np.asarray(rewards, np.float64)
        self.ret = self.ret * self.gamma + rewards
        self.rms.update(self.ret)
        out = rewards / np.sqrt(self.rms.var + 1e-8)
        self.ret = np.where(dones, 0.0, self.ret)
        if self.clip is not None:
            out = np.clip(out, -self.clip, self.clip)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Statistics and per-environment returns."""
        return {"rms": self.rms.state_dict(), "ret": self.ret.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.rms.load_state_dict(state["rms"])
        self.ret = np.array(state["ret"], np.float64)
