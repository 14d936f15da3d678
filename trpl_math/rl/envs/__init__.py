"""Gymnasium tasks of the paper that Gymnasium does not ship.

Importing this package registers ``ReacherSparse-v0`` (the 5-link reacher with a semi-sparse
reward, Sec. 5 and Table 4 of the paper) with Gymnasium, with ``max_episode_steps=200``::

    import gymnasium as gym
    import trpl_math.rl.envs  # noqa: F401  (registers the ids)

    env = gym.make("ReacherSparse-v0")
    envs = gym.make_vec("ReacherSparse-v0", num_envs=4)
"""

from __future__ import annotations

import gymnasium as gym

from trpl_math.rl.envs.reacher_sparse import EPISODE_LENGTH, ReacherSparseEnv

__all__ = ["REACHER_SPARSE_ID", "ReacherSparseEnv", "register_envs"]

REACHER_SPARSE_ID: str = "ReacherSparse-v0"
"""Gymnasium id of :class:`ReacherSparseEnv`."""


def register_envs() -> None:
    """Register this package's ids with Gymnasium; a no-op for ids already registered."""
    if REACHER_SPARSE_ID not in gym.registry:
        gym.register(
            id=REACHER_SPARSE_ID,
            entry_point="trpl_math.rl.envs.reacher_sparse:ReacherSparseEnv",
            max_episode_steps=EPISODE_LENGTH,
        )


register_envs()
