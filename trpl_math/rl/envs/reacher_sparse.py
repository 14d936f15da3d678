"""The paper's 5-link ReacherSparse task (Otto et al., ICLR 2021, Sec. 5 and Table 4).

A planar arm of five hinge joints reaches for a goal in the plane. The reward is semi-sparse:
every step pays the action penalty ``-||a||^2``; only the last step of the episode also pays
``-200 ||fingertip - goal|| - ||qdot||_2`` (qdot: the 5 arm joint velocities). Both terms use
the state BEFORE that step's simulation. Episodes last 200 steps and never terminate.

The model (``trpl_math/rl/assets/reacher_sparse.xml``) and this environment are our own,
written from the task's facts; see docs/reacher_sparse.md for the facts, our choices and
how "the last step" is counted.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DISTANCE_WEIGHT",
    "EPISODE_LENGTH",
    "FINGERTIP_OFFSET",
    "GOAL_RADIUS",
    "LINK_LENGTH",
    "N_LINKS",
    "OBS_DIM",
    "ReacherSparseEnv",
    "RewardParts",
    "fingertip_position",
    "sample_goal",
    "sparse_reward",
]

N_LINKS: int = 5
"""Number of arm joints (and links, and motors)."""
LINK_LENGTH: float = 0.1
"""Length of each link in metres (distance between consecutive joints)."""
FINGERTIP_OFFSET: float = 0.11
"""Distance of the fingertip from the last joint, in metres."""
EPISODE_LENGTH: int = 200
"""Steps per episode; the distance/velocity bonus is paid on the last of them."""
GOAL_RADIUS: float = 0.5
"""Goals are uniform on [-0.5, 0.5]^2, rejected until their norm is below this."""
DISTANCE_WEIGHT: float = 200.0
"""Weight of the fingertip-goal distance in the last step's reward."""
OBS_DIM: int = 4 * N_LINKS + 1
"""cos (5) + sin (5) + goal (2) + joint velocities (5) + fingertip - goal (3) + step (1) = 21."""

_XML = Path(__file__).resolve().parent.parent / "assets" / "reacher_sparse.xml"
_QPOS_NOISE = 0.1
_QVEL_NOISE = 0.005
_FRAME_SKIP = 2
# Top-down view of the whole arena (walls at +-0.6 m).
_DEFAULT_CAMERA_CONFIG: dict[str, Any] = {
    "distance": 1.6,
    "elevation": -90.0,
    "azimuth": 90.0,
    "lookat": np.array([0.0, 0.0, 0.0]),
}


class RewardParts(NamedTuple):
    """The terms of one step's reward; ``total`` is their sum.

    Attributes:
        ctrl: ``-||a||^2`` (every step).
        dist: ``-200 ||fingertip - goal||`` on the last step, else 0.
        vel: ``-||qdot||_2`` (5 arm joints) on the last step, else 0.
    """

    ctrl: float
    dist: float
    vel: float

    @property
    def total(self) -> float:
        """``ctrl + dist + vel``."""
        return self.ctrl + self.dist + self.vel


def sparse_reward(
    action: ArrayLike,
    fingertip_minus_goal: ArrayLike,
    joint_velocities: ArrayLike,
    *,
    last_step: bool,
    distance_weight: float = DISTANCE_WEIGHT,
) -> RewardParts:
    """ReacherSparse reward of one step, from the state before the step.

    ``r = -||a||^2 + [last_step] * (-w ||x_tip - x_goal|| - ||qdot||_2)`` with ``w = 200``.

    Args:
        action: the action as given to ``step``, shape ``(5,)`` (not clipped; see the docs).
        fingertip_minus_goal: ``x_tip - x_goal``, shape ``(2,)`` or ``(3,)``.
        joint_velocities: the arm's joint velocities ``qdot``, shape ``(5,)``.
        last_step: whether this is the episode's last step (the bonus terms are paid only then).
        distance_weight: ``w``; 200 in the paper's task.

    Returns:
        :class:`RewardParts` ``(ctrl, dist, vel)``; ``dist`` and ``vel`` are 0.0 unless
        ``last_step``.

    Raises:
        ValueError: if an argument is not a finite 1-D vector.
    """
    a = _finite_vector(action, "action")
    diff = _finite_vector(fingertip_minus_goal, "fingertip_minus_goal")
    qdot = _finite_vector(joint_velocities, "joint_velocities")
    ctrl = -float(np.dot(a, a))
    if not last_step:
        return RewardParts(ctrl, 0.0, 0.0)
    return RewardParts(
        ctrl, -distance_weight * float(np.linalg.norm(diff)), -float(np.linalg.norm(qdot))
    )


def fingertip_position(joint_angles: ArrayLike) -> NDArray[np.float64]:
    """Planar forward kinematics of the arm: the fingertip's world ``(x, y)``.

    ``x_tip = sum_{i<4} l (cos phi_i, sin phi_i) + l_tip (cos phi_4, sin phi_4)`` with
    ``phi_i = q_0 + ... + q_i``, ``l = 0.1``, ``l_tip = 0.11`` (the base joint sits at the origin).

    Args:
        joint_angles: the 5 joint angles ``q``, shape ``(..., 5)``.

    Returns:
        Fingertip position, shape ``(..., 2)``, float64.

    Raises:
        ValueError: if the last dimension is not 5.
    """
    q = np.asarray(joint_angles, dtype=np.float64)
    if q.ndim < 1 or q.shape[-1] != N_LINKS:
        raise ValueError(f"joint_angles must have shape (..., {N_LINKS}), got {q.shape}")
    phi = np.cumsum(q, axis=-1)
    lengths = np.array([LINK_LENGTH] * (N_LINKS - 1) + [FINGERTIP_OFFSET])
    return np.stack(
        [np.sum(lengths * np.cos(phi), axis=-1), np.sum(lengths * np.sin(phi), axis=-1)], axis=-1
    )


def sample_goal(rng: np.random.Generator, radius: float = GOAL_RADIUS) -> NDArray[np.float64]:
    """A goal uniform on the open disc of radius ``r``, by rejection from ``[-r, r]^2``.

    Draws ``g ~ U([-r, r]^2)`` until ``||g|| < r`` (as the task's facts say).

    Args:
        rng: NumPy generator (the environment's ``np_random``).
        radius: ``r > 0``.

    Returns:
        Goal ``(x, y)``, shape ``(2,)``.

    Raises:
        ValueError: if ``radius`` is not positive.
    """
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    while True:
        goal = rng.uniform(low=-radius, high=radius, size=2)
        if np.linalg.norm(goal) < radius:
            return goal


def _has_display() -> bool:
    """Whether an X11 or Wayland display is available (always True off Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _select_headless_gl() -> None:
    """Set ``MUJOCO_GL`` to ``egl`` (else ``osmesa``) when it is unset and there is no display.

    Gymnasium's own fallback (try glfw, then egl, then osmesa) fails on a headless Linux machine
    once glfw has been tried; choosing the back end before the first off-screen render avoids it.
    An explicit ``MUJOCO_GL`` is never changed.
    """
    if os.environ.get("MUJOCO_GL") or _has_display():
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return


def _finite_vector(x: ArrayLike, name: str) -> NDArray[np.float64]:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


class ReacherSparseEnv(MujocoEnv, utils.EzPickle):
    """5-link planar reacher with the paper's semi-sparse reward (``ReacherSparse-v0``).

    Action: ``Box(-1, 1, (5,), float32)``, torques (times gear 200) on joints 0-4; MuJoCo clamps
    the control to [-1, 1], the penalty ``-||a||^2`` uses the action as given.

    Observation ``Box(-inf, inf, (21,), float64)``, in order: ``cos q`` (5), ``sin q`` (5),
    goal ``x, y`` (2), ``qdot`` (5), ``x_tip - x_goal`` as a 3-vector (3; its z is 0), and the
    step count ``t`` (1): 0 after ``reset``, ``k`` after ``k`` steps.

    Reward: see :func:`sparse_reward`; step ``k`` (1-based) is the last one iff
    ``k == episode_length``. The environment truncates itself at ``episode_length`` and never
    terminates; stepping after that without ``reset`` raises ``RuntimeError``.

    ``info`` of every step: ``reward_ctrl``, ``reward_dist``, ``reward_vel`` (the three
    :class:`RewardParts`), ``distance`` (``||x_tip - x_goal||`` before the step, the value the
    last step's reward uses) and ``is_last_step``.

    Args:
        episode_length: steps per episode (200 in the paper). ``gymnasium.make`` also wraps the
            env in a ``TimeLimit`` of ``max_episode_steps`` (200 as registered); change both
            together (``gymnasium.make(id, episode_length=n, max_episode_steps=n)``): a shorter
            ``TimeLimit`` would cut the episode before the step that pays the bonus, and the
            base env cannot see the wrapper to check this.
        **kwargs: passed to :class:`gymnasium.envs.mujoco.MujocoEnv` (``render_mode``, ``width``,
            ``height``, ``camera_id``, ``camera_name``, ``default_camera_config``, ...).
    """

    metadata: dict[str, Any] = {  # noqa: RUF012  (gymnasium's convention)
        "render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"],
        "render_fps": 50,
    }

    def __init__(self, episode_length: int = EPISODE_LENGTH, **kwargs: Any) -> None:
        if isinstance(episode_length, bool) or not isinstance(episode_length, int | np.integer):
            raise ValueError(f"episode_length must be an int, got {episode_length!r}")
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        utils.EzPickle.__init__(self, episode_length, **kwargs)
        self.episode_length = int(episode_length)
        self._steps = 0
        if kwargs.get("render_mode") == "human" and not _has_display():
            raise ValueError(
                "render_mode='human' needs a display (DISPLAY/WAYLAND_DISPLAY is unset); "
                "use render_mode='rgb_array' on a headless machine"
            )
        kwargs.setdefault("default_camera_config", _DEFAULT_CAMERA_CONFIG)
        observation_space = Box(low=-np.inf, high=np.inf, shape=(OBS_DIM,), dtype=np.float64)
        MujocoEnv.__init__(
            self, str(_XML), _FRAME_SKIP, observation_space=observation_space, **kwargs
        )

    # -- state accessors ------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Steps taken in the current episode (the observation's last entry)."""
        return self._steps

    @property
    def joint_angles(self) -> NDArray[np.float64]:
        """The 5 arm joint angles ``q`` (a copy), shape ``(5,)``."""
        return self.data.qpos[:N_LINKS].copy()

    @property
    def joint_velocities(self) -> NDArray[np.float64]:
        """The 5 arm joint velocities ``qdot`` (a copy), shape ``(5,)``."""
        return self.data.qvel[:N_LINKS].copy()

    @property
    def goal(self) -> NDArray[np.float64]:
        """The goal's world ``(x, y)`` (a copy), shape ``(2,)``."""
        return self.data.body("target").xpos[:2].copy()

    @property
    def fingertip(self) -> NDArray[np.float64]:
        """The fingertip's world ``(x, y)`` from MuJoCo (a copy), shape ``(2,)``."""
        return self.data.body("fingertip").xpos[:2].copy()

    def set_goal(self, goal: ArrayLike) -> None:
        """Place the goal at ``(x, y)`` (slide joints ``qpos[5:7]``, velocity 0).

        Raises:
            ValueError: if ``goal`` is not a finite ``(2,)`` vector inside the slides' range.
        """
        g = _finite_vector(goal, "goal")
        if g.shape != (2,):
            raise ValueError(f"goal must have shape (2,), got {g.shape}")
        lo, hi = self.model.jnt_range[N_LINKS]
        if np.any(g < lo) or np.any(g > hi):
            raise ValueError(f"goal must lie in [{lo}, {hi}]^2, got {g}")
        qpos, qvel = self.data.qpos.copy(), self.data.qvel.copy()
        qpos[N_LINKS:], qvel[N_LINKS:] = g, 0.0
        self.set_state(qpos, qvel)

    # -- gymnasium API ----------------------------------------------------------------------

    def step(
        self, action: ArrayLike
    ) -> tuple[NDArray[np.float64], float, bool, bool, dict[str, Any]]:
        """Reward from the current state, then simulate ``frame_skip`` = 2 MuJoCo steps."""
        if self._steps >= self.episode_length:
            raise RuntimeError(
                f"the episode ended after {self.episode_length} steps; call reset() first"
            )
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.model.nu,):
            raise ValueError(f"action must have shape ({self.model.nu},), got {a.shape}")
        is_last = self._steps == self.episode_length - 1
        diff = self._fingertip_minus_goal()
        parts = sparse_reward(a, diff, self.data.qvel[:N_LINKS], last_step=is_last)
        self.do_simulation(a, self.frame_skip)
        # mj_step leaves body positions at the last substep's start; recompute them from the new
        # qpos so the observation (and the next step's reward) sees one consistent state.
        mujoco.mj_kinematics(self.model, self.data)
        self._steps += 1
        obs = self._get_obs()
        info = {
            "reward_ctrl": parts.ctrl,
            "reward_dist": parts.dist,
            "reward_vel": parts.vel,
            "distance": float(np.linalg.norm(diff)),
            "is_last_step": is_last,
        }
        if self.render_mode == "human":
            self.render()
        return obs, parts.total, False, self._steps >= self.episode_length, info

    def render(self) -> Any:
        """Render as ``render_mode`` says; picks a headless OpenGL back end first if needed.

        Off-screen modes (``rgb_array`` etc.) on a Linux machine without a display and with
        ``MUJOCO_GL`` unset set ``MUJOCO_GL=egl`` (or ``osmesa`` if only that library exists)
        for this process, before the first frame; see :func:`_select_headless_gl`.
        """
        if self.render_mode is not None and self.render_mode != "human":
            _select_headless_gl()
        return super().render()

    def reset_model(self) -> NDArray[np.float64]:
        """Arm at ``q ~ U(-0.1, 0.1)``, ``qdot ~ U(-0.005, 0.005)``; goal by :func:`sample_goal`."""
        rng = self.np_random
        qpos = self.init_qpos.copy()
        qvel = self.init_qvel.copy()
        qpos[:N_LINKS] += rng.uniform(low=-_QPOS_NOISE, high=_QPOS_NOISE, size=N_LINKS)
        qpos[N_LINKS:] = sample_goal(rng)
        qvel[:N_LINKS] += rng.uniform(low=-_QVEL_NOISE, high=_QVEL_NOISE, size=N_LINKS)
        qvel[N_LINKS:] = 0.0
        self.set_state(qpos, qvel)
        self._steps = 0
        return self._get_obs()

    def _fingertip_minus_goal(self) -> NDArray[np.float64]:
        return self.data.body("fingertip").xpos - self.data.body("target").xpos

    def _get_obs(self) -> NDArray[np.float64]:
        q = self.data.qpos[:N_LINKS]
        return np.concatenate(
            [
                np.cos(q),
                np.sin(q),
                self.data.body("target").xpos[:2],
                self.data.qvel[:N_LINKS],
                self._fingertip_minus_goal(),
                [float(self._steps)],
            ]
        )
