"""Tests of the ReacherSparse-v0 task (trpl_math.rl.envs), against hand-computed values.

Forward kinematics here is written out independently of the package: a chain of four 0.1 m links
and a 0.11 m fingertip segment, each at the cumulative joint angle (the chain of bodies in
trpl_math/rl/assets/reacher_sparse.xml, checked in TestModel).
"""

from __future__ import annotations

import ctypes.util
import math
import os
import pickle
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import trpl_math.rl.envs as envs_pkg
from trpl_math.rl.envs import REACHER_SPARSE_ID, ReacherSparseEnv
from trpl_math.rl.envs.reacher_sparse import fingertip_position, sample_goal, sparse_reward

XML = Path(envs_pkg.__file__).resolve().parent.parent / "assets" / "reacher_sparse.xml"


def hand_fk(q: np.ndarray) -> np.ndarray:
    """Fingertip (x, y) of joint angles q (5,), by walking the chain link by link."""
    x = y = phi = 0.0
    for angle, length in zip(q, [0.1, 0.1, 0.1, 0.1, 0.11], strict=True):
        phi += angle
        x += length * math.cos(phi)
        y += length * math.sin(phi)
    return np.array([x, y])


def make_base(**kwargs) -> tuple[gym.Env, ReacherSparseEnv]:
    env = gym.make(REACHER_SPARSE_ID, **kwargs)
    env.reset(seed=0)
    return env, env.unwrapped


def set_state(base: ReacherSparseEnv, q, goal, qdot=(0, 0, 0, 0, 0)) -> None:
    qpos = np.concatenate([np.asarray(q, float), np.asarray(goal, float)])
    qvel = np.concatenate([np.asarray(qdot, float), [0.0, 0.0]])
    base.set_state(qpos, qvel)


class TestModel:
    def test_body_chain_in_mjcf(self):
        """Links of 0.1 m, the fingertip 0.11 m past joint 4, all hinges about z."""
        root = ET.parse(XML).getroot()
        body = root.find("./worldbody/body[@name='body0']")
        for i in range(5):
            joint = body.find("joint")
            assert joint.get("name") == f"joint{i}"
            assert joint.get("type") == "hinge"
            assert [float(v) for v in joint.get("axis").split()] == [0, 0, 1]
            child = body.find("body")
            expected = "0.11 0 0" if i == 4 else "0.1 0 0"
            assert child.get("pos") == expected
            body = child
        assert body.get("name") == "fingertip"
        assert body.find("body") is None

    def test_simulation_facts(self):
        m = mujoco.MjModel.from_xml_path(str(XML))
        assert (m.nq, m.nv, m.nu) == (7, 7, 5)
        assert m.opt.timestep == 0.01
        assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
        np.testing.assert_array_equal(m.dof_armature[:5], 1.0)
        np.testing.assert_array_equal(m.dof_damping[:5], 1.0)
        np.testing.assert_array_equal(m.actuator_gear[:, 0], 200.0)
        np.testing.assert_array_equal(m.actuator_ctrlrange, [[-1.0, 1.0]] * 5)
        np.testing.assert_array_equal(m.actuator_trnid[:, 0], range(5))
        np.testing.assert_array_equal(m.jnt_limited[:4], 0)
        assert m.jnt_limited[4] == 1
        np.testing.assert_array_equal(m.jnt_range[4], [-3.0, 3.0])
        # the goal's slides hold every goal of norm < 0.5
        assert np.all(m.jnt_type[5:] == mujoco.mjtJoint.mjJNT_SLIDE)
        assert np.all(m.jnt_range[5:, 0] <= -0.5) and np.all(m.jnt_range[5:, 1] >= 0.5)

    def test_env_step_is_two_frames(self):
        _, base = make_base()
        assert base.frame_skip == 2
        assert base.dt == pytest.approx(0.02)
        assert base.metadata["render_fps"] == 50


class TestForwardKinematics:
    @pytest.mark.parametrize(
        ("q", "tip"),
        [
            ([0, 0, 0, 0, 0], [0.51, 0.0]),
            ([math.pi / 2, 0, 0, 0, 0], [0.0, 0.51]),
            # cumulative angles 0, pi/2, 0, pi/2, 0
            ([0, math.pi / 2, -math.pi / 2, math.pi / 2, -math.pi / 2], [0.31, 0.2]),
            # folded back: 0.1 - 0.1 + 0.1 - 0.1 + 0.11
            ([0, math.pi, math.pi, math.pi, math.pi], [0.11, 0.0]),
        ],
    )
    def test_closed_form_poses(self, q, tip):
        _, base = make_base()
        set_state(base, q, [0.0, 0.0])
        np.testing.assert_allclose(base.fingertip, tip, atol=1e-12)
        np.testing.assert_allclose(fingertip_position(q), tip, atol=1e-12)

    def test_random_poses_match_mujoco(self):
        _, base = make_base()
        rng = np.random.default_rng(1)
        qs = rng.uniform(-3, 3, size=(20, 5))
        for q in qs:
            set_state(base, q, [0.0, 0.0])
            np.testing.assert_allclose(base.fingertip, hand_fk(q), atol=1e-12)
        np.testing.assert_allclose(
            fingertip_position(qs), np.stack([hand_fk(q) for q in qs]), atol=1e-12
        )

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="joint_angles"):
            fingertip_position(np.zeros(4))


class TestObservation:
    def test_hand_set_state(self):
        _, base = make_base()
        q = np.array([0.3, -0.5, 1.2, 0.7, -2.0])
        qdot = np.array([1.0, -2.0, 3.0, -4.0, 5.0])
        goal = np.array([0.2, -0.1])
        set_state(base, q, goal, qdot)
        obs = base._get_obs()
        assert obs.shape == (21,) and obs.dtype == np.float64
        np.testing.assert_allclose(obs[0:5], np.cos(q), atol=1e-15)
        np.testing.assert_allclose(obs[5:10], np.sin(q), atol=1e-15)
        np.testing.assert_allclose(obs[10:12], goal, atol=1e-15)
        np.testing.assert_allclose(obs[12:17], qdot, atol=1e-15)
        np.testing.assert_allclose(obs[17:19], hand_fk(q) - goal, atol=1e-12)
        assert obs[19] == 0.0  # arm and goal at the same height
        assert obs[20] == 0.0  # no step taken since reset

    def test_time_step_counts_steps(self):
        env, _ = make_base()
        obs, _ = env.reset(seed=3)
        assert obs[20] == 0.0
        for k in range(1, 6):
            obs, *_ = env.step(np.zeros(5, np.float32))
            assert obs[20] == float(k)

    def test_after_steps_positions_match_angles(self):
        """Regression: mj_step leaves body positions one substep stale unless refreshed."""
        env, _ = make_base()
        env.reset(seed=4)
        rng = np.random.default_rng(0)
        for _ in range(10):
            obs, *_ = env.step(rng.uniform(-1, 1, 5).astype(np.float32))
            q = np.arctan2(obs[5:10], obs[0:5])
            np.testing.assert_allclose(obs[17:19], hand_fk(q) - obs[10:12], atol=1e-12)

    def test_spaces(self):
        env, _ = make_base()
        assert env.observation_space.shape == (21,)
        assert env.observation_space.dtype == np.float64
        assert env.action_space.shape == (5,)
        np.testing.assert_array_equal(env.action_space.low, -1.0)
        np.testing.assert_array_equal(env.action_space.high, 1.0)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)


def run_to_last_step(env: gym.Env) -> None:
    """Take 199 zero-action steps, so that the next step is the episode's last (200th)."""
    env.reset(seed=5)
    for _ in range(199):
        _, _, terminated, truncated, _ = env.step(np.zeros(5, np.float32))
        assert not (terminated or truncated)


class TestReward:
    def test_action_penalty_on_a_non_last_step(self):
        env, base = make_base()
        set_state(base, [0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.3], [1, 1, 1, 1, 1])
        action = np.array([0.5, -1.0, 0.2, 0.0, 0.3], np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        expected = -(0.25 + 1.0 + 0.04 + 0.0 + 0.09)
        assert reward == pytest.approx(expected, abs=1e-6)  # float32 action
        assert info["reward_dist"] == 0.0 and info["reward_vel"] == 0.0
        assert not info["is_last_step"] and not terminated and not truncated

    def test_penalty_uses_the_action_as_given(self):
        """Out-of-range actions are penalised unclipped (the simulator clamps the control)."""
        env, _ = make_base()
        _, reward, *_ = env.step(np.array([2.0, 0, 0, -3.0, 0], np.float32))
        assert reward == pytest.approx(-13.0)

    def test_last_step_reward(self):
        env, base = make_base()
        run_to_last_step(env)
        # fingertip at (0.31, 0.2); goal 0.3 left of it and 0.4 below: distance 0.5
        q = [0, math.pi / 2, -math.pi / 2, math.pi / 2, -math.pi / 2]
        set_state(base, q, [0.01, -0.2], qdot=[3.0, 4.0, 0, 0, 0])
        action = np.array([1.0, 0, 0, 0, 0], np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["distance"] == pytest.approx(0.5, abs=1e-12)
        assert info["reward_dist"] == pytest.approx(-100.0, abs=1e-9)
        assert info["reward_vel"] == pytest.approx(-5.0, abs=1e-12)
        assert info["reward_ctrl"] == pytest.approx(-1.0)
        assert reward == pytest.approx(-106.0, abs=1e-9)
        assert info["is_last_step"] and truncated and not terminated
        assert obs[20] == 200.0
        # the reward used the state before the step: the arm has moved since
        assert abs(np.linalg.norm(obs[17:19]) - 0.5) > 1e-3

    def test_bonus_paid_once_per_episode(self):
        env, _ = make_base()
        rng = np.random.default_rng(2)
        for seed in (0, 1):
            env.reset(seed=seed)
            dist_steps, total, ctrl_sum, bonus = [], 0.0, 0.0, 0.0
            for k in range(1, 201):
                action = rng.uniform(-1, 1, 5).astype(np.float32)
                _, reward, terminated, truncated, info = env.step(action)
                total += reward
                ctrl_sum -= float(np.sum(np.square(action.astype(np.float64))))
                if info["reward_dist"] != 0.0:
                    dist_steps.append(k)
                    bonus = info["reward_dist"] + info["reward_vel"]
                    assert bonus == pytest.approx(
                        -200 * info["distance"] + info["reward_vel"], abs=1e-9
                    )
                assert not terminated
                assert truncated == (k == 200)
            assert dist_steps == [200]
            assert total == pytest.approx(ctrl_sum + bonus, abs=1e-9)

    def test_pure_reward_function(self):
        parts = sparse_reward([1.0, 2.0], [0.3, 0.4, 0.0], [0.0, 6.0, 8.0], last_step=True)
        assert parts == pytest.approx((-5.0, -100.0, -10.0))
        assert parts.total == pytest.approx(-115.0)
        parts = sparse_reward([1.0, 2.0], [0.3, 0.4], [6.0, 8.0], last_step=False)
        assert tuple(parts) == (-5.0, 0.0, 0.0)

    @pytest.mark.parametrize(
        ("args", "name"),
        [
            (([np.nan, 0.0], [0.0, 0.0], [0.0]), "action"),
            (([0.0], [[0.0, 0.0]], [0.0]), "fingertip_minus_goal"),
            (([0.0], [0.0, 0.0], [np.inf]), "joint_velocities"),
        ],
    )
    def test_pure_reward_bad_input(self, args, name):
        with pytest.raises(ValueError, match=name):
            sparse_reward(*args, last_step=False)


class TestEpisode:
    def test_truncates_at_200_never_terminates(self):
        env, _ = make_base()
        env.reset(seed=7)
        for k in range(1, 201):
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            assert not terminated
            assert truncated == (k == 200)
        assert obs[20] == 200.0
        assert env.spec.max_episode_steps == 200

    def test_raw_env_refuses_steps_past_the_end(self):
        base = ReacherSparseEnv(episode_length=3)
        base.reset(seed=0)
        truncs = [base.step(np.zeros(5))[3] for _ in range(3)]
        assert truncs == [False, False, True]
        with pytest.raises(RuntimeError, match="reset"):
            base.step(np.zeros(5))
        base.reset()
        assert base.steps == 0

    def test_shorter_episode_pays_bonus_at_its_end(self):
        env = gym.make(REACHER_SPARSE_ID, episode_length=10, max_episode_steps=10)
        env.reset(seed=0)
        for k in range(1, 11):
            _, _, _, truncated, info = env.step(np.zeros(5, np.float32))
            assert info["is_last_step"] == truncated == (k == 10)

    def test_make_vec(self):
        envs = gym.make_vec(REACHER_SPARSE_ID, num_envs=2, vectorization_mode="sync")
        obs, _ = envs.reset(seed=[0, 1])
        assert obs.shape == (2, 21)
        assert not np.allclose(obs[0, 10:12], obs[1, 10:12])
        for k in range(1, 201):
            obs, _, terminated, truncated, _ = envs.step(np.zeros((2, 5), np.float32))
            assert not terminated.any()
            assert truncated.all() == (k == 200) and truncated.any() == (k == 200)
        envs.close()


class TestReset:
    def test_goal_sampling_fills_the_disc(self):
        _, base = make_base()
        goals, obs_goals = [], []
        for seed in range(1500):
            obs, _ = base.reset(seed=seed)
            goals.append(base.data.qpos[5:7].copy())
            obs_goals.append(obs[10:12])
        goals = np.array(goals)
        np.testing.assert_array_equal(goals, np.array(obs_goals))
        radii = np.linalg.norm(goals, axis=1)
        assert radii.max() < 0.5
        assert radii.max() > 0.48  # the whole disc, not the old +-0.27 box or a 0.2 disc
        assert np.abs(goals).max() > 0.4
        # uniform on the disc: P(r < 0.25) = 1/4; 1500 draws, sd ~ 0.011
        assert abs(np.mean(radii < 0.25) - 0.25) < 0.05
        assert np.all(np.abs(goals.mean(axis=0)) < 0.03)

    def test_goal_stays_where_sampled(self):
        env, base = make_base()
        env.reset(seed=11)
        set_state(base, np.zeros(5), [0.0, -0.499])
        for _ in range(50):
            env.step(np.ones(5, np.float32))
        np.testing.assert_allclose(base.goal, [0.0, -0.499], atol=1e-12)

    def test_arm_noise(self):
        _, base = make_base()
        for seed in range(200):
            base.reset(seed=seed)
            assert np.all(np.abs(base.joint_angles) <= 0.1)
            assert np.all(np.abs(base.joint_velocities) <= 0.005)
            np.testing.assert_array_equal(base.data.qvel[5:], 0.0)
        # the noise is not zero
        assert np.abs(base.joint_angles).max() > 0.0

    def test_sample_goal_function(self):
        rng = np.random.default_rng(0)
        g = np.array([sample_goal(rng, radius=0.1) for _ in range(200)])
        assert np.linalg.norm(g, axis=1).max() < 0.1
        with pytest.raises(ValueError, match="radius"):
            sample_goal(rng, radius=0.0)


class TestDeterminism:
    def rollout(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = gym.make(REACHER_SPARSE_ID)
        obs0, _ = env.reset(seed=seed)
        rng = np.random.default_rng(123)
        observations, rewards = [obs0], []
        for _ in range(30):
            obs, reward, *_ = env.step(rng.uniform(-1, 1, 5).astype(np.float32))
            observations.append(obs)
            rewards.append(reward)
        return np.array(observations), np.array(rewards)

    def test_same_seed_same_rollout(self):
        obs_a, rew_a = self.rollout(42)
        obs_b, rew_b = self.rollout(42)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(rew_a, rew_b)
        obs_c, _ = self.rollout(43)
        assert not np.allclose(obs_a[0], obs_c[0])

    def test_pickle_keeps_episode_length(self):
        base = ReacherSparseEnv(episode_length=7)
        clone = pickle.loads(pickle.dumps(base))
        assert clone.episode_length == 7


class TestErrors:
    @pytest.mark.parametrize("n", [0, -1, 2.5, True])
    def test_bad_episode_length(self, n):
        with pytest.raises(ValueError, match="episode_length"):
            ReacherSparseEnv(episode_length=n)

    def test_bad_action_shape(self):
        env, _ = make_base()
        with pytest.raises(ValueError, match="action"):
            env.unwrapped.step(np.zeros(4))

    def test_set_goal(self):
        _, base = make_base()
        base.set_goal([0.25, -0.4])
        np.testing.assert_allclose(base.goal, [0.25, -0.4], atol=1e-15)
        with pytest.raises(ValueError, match="goal"):
            base.set_goal([0.7, 0.0])
        with pytest.raises(ValueError, match="goal"):
            base.set_goal([0.1, 0.1, 0.1])

    def test_human_mode_without_display(self, monkeypatch):
        if not sys.platform.startswith("linux"):
            pytest.skip("the display check applies on Linux only")
        monkeypatch.delenv("DISPLAY", raising=False)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        with pytest.raises(ValueError, match="rgb_array"):
            ReacherSparseEnv(render_mode="human")


_RENDER_SCRIPT = """
import numpy as np, gymnasium as gym, trpl_math.rl.envs
env = gym.make("ReacherSparse-v0", render_mode="rgb_array", width=96, height=64)
env.reset(seed=0)
img = env.render()
assert img.shape == (64, 96, 3) and img.dtype == np.uint8, (img.shape, img.dtype)
assert img.std() > 1.0
env.close()
print("rendered", img.shape)
"""


class TestRender:
    def test_rgb_array_headless(self):
        """rgb_array rendering works with neither a display nor MUJOCO_GL (fresh process)."""
        if not sys.platform.startswith("linux"):
            pytest.skip("headless back-end selection is Linux-only")
        if not (ctypes.util.find_library("EGL") or ctypes.util.find_library("OSMesa")):
            pytest.skip("neither EGL nor OSMesa is installed")
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")
        }
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", _RENDER_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "rendered (64, 96, 3)" in out.stdout


DOC = Path(__file__).resolve().parents[2] / "docs" / "reacher_sparse.md"


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


class TestDocs:
    def test_page_has_examples(self):
        assert len(_doc_blocks()) >= 2

    @pytest.mark.parametrize("index", range(2))
    def test_example_runs(self, index):
        code = _doc_blocks()[index]
        exec(compile(code, f"docs/reacher_sparse.md#{index}", "exec"), {"__name__": "__docs__"})

    def test_public_names_documented(self):
        import trpl_math.rl.envs.reacher_sparse as mod

        text = DOC.read_text(encoding="utf-8")
        missing = [name for name in [*mod.__all__, *envs_pkg.__all__] if name not in text]
        assert missing == []
