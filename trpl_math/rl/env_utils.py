"""Environment construction and exact save/restore of environment state.

Training uses a ``SyncVectorEnv`` in gymnasium's ``SAME_STEP`` autoreset mode: when a copy's
episode ends, ``step`` already returns the first observation of the next episode and puts the
last one in ``infos["final_obs"]`` (mask ``infos["_final_obs"]``), which GAE needs to bootstrap
truncated episodes.

Gymnasium's MuJoCo environments pickle by re-running their constructor (``EzPickle``), which
loses the simulator state. :func:`get_env_state` therefore records, for each copy, every simple
attribute of every wrapper and of the base environment (e.g. ``TimeLimit._elapsed_steps``), the
state of the environment's NumPy generator and the whole ``MjData``; :func:`set_env_state`
writes them back, after which the copy continues bitwise as the original would have.
"""

from __future__ import annotations

import functools
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

_SIMPLE = (bool, int, float, str, type(None), np.ndarray, np.generic)


def _register_custom() -> None:
    """Import ``trpl_math.rl.envs`` (registers ReacherSparse-v0) if it exists."""
    try:
        import trpl_math.rl.envs  # noqa: F401
    except ImportError:
        pass


def make_env(env_id: str) -> gym.Env:
    """``gym.make(env_id)``, registering the library's own tasks first."""
    _register_custom()
    return gym.make(env_id)


def make_vec_env(env_id: str, num_envs: int) -> SyncVectorEnv:
    """``num_envs`` copies of ``env_id`` in a SyncVectorEnv with SAME_STEP autoreset."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    _register_custom()
    fns = [functools.partial(gym.make, env_id) for _ in range(num_envs)]
    return SyncVectorEnv(fns, copy=False, autoreset_mode=AutoresetMode.SAME_STEP)


def env_seeds(seed: int, stream: int, n: int) -> list[int]:
    """``n`` independent 31-bit seeds derived from ``(seed, stream)``."""
    return [int(s) for s in np.random.SeedSequence([seed, stream]).generate_state(n) >> 1]


def _layers(env: gym.Env) -> list[Any]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out


def get_env_state(env: gym.Env) -> dict[str, Any]:
    """Snapshot of one (wrapped) environment's state; see the module docstring."""
    layers = []
    for layer in _layers(env):
        simple = {
            k: pickle.loads(pickle.dumps(v))
            for k, v in vars(layer).items()
            if isinstance(v, _SIMPLE) and k != "spec"
        }
        layers.append(simple)
    base = env.unwrapped
    state: dict[str, Any] = {"layers": layers, "rng": None, "mjdata": None}
    if getattr(base, "_np_random", None) is not None:
        state["rng"] = base._np_random.bit_generator.state
    data = getattr(base, "data", None)
    if data is not None and type(data).__name__ == "MjData":
        state["mjdata"] = pickle.dumps(data)
    return state


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`get_env_state` into an identically built env."""
    layers = _layers(env)
    if len(layers) != len(state["layers"]):
        raise ValueError("environment wrapper stack differs from the saved one")
    for layer, simple in zip(layers, state["layers"], strict=True):
        for k, v in simple.items():
            setattr(layer, k, v)
    base = env.unwrapped
    if state["rng"] is not None:
        if getattr(base, "_np_random", None) is None:
            base._np_random = np.random.default_rng()
        base._np_random.bit_generator.state = state["rng"]
    if state["mjdata"] is not None:
        import mujoco

        saved = pickle.loads(state["mjdata"])
        mujoco.mj_copyData(base.data, base.model, saved)


def get_vec_state(envs: SyncVectorEnv) -> list[dict[str, Any]]:
    """Snapshots of every copy in ``envs``."""
    return [get_env_state(e) for e in envs.envs]


def set_vec_state(envs: SyncVectorEnv, states: list[dict[str, Any]]) -> None:
    """Restore every copy in ``envs`` from :func:`get_vec_state`."""
    if len(states) != len(envs.envs):
        raise ValueError(f"expected {len(envs.envs)} env states, got {len(states)}")
    for e, s in zip(envs.envs, states, strict=True):
        set_env_state(e, s)
