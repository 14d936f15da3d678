"""The training loop: rollouts, GAE, trust-region (or PPO) policy updates, value updates.

Reads top to bottom like Algorithm 2 of Otto et al. (ICLR 2021), see :meth:`Trainer.iterate`:

1. collect ``rollout_steps`` samples with the network's own (unprojected) policy;
2. advantages by GAE, bootstrapping truncated episodes from their final observation;
3. fix ``pi_old(.|s)`` as the network's outputs for the batch;
4. ``epochs`` of minibatch Adam on Eq. 12: the importance ratio uses the *projected* policy,
   and ``alpha * layer.penalty(proj, mean, cov)`` pulls the network towards its projection
   (PPO / PPO-M use the clipped ratio instead);
5. a non-contextual covariance is set to its projection; optional extra regression steps;
6. ``vf_epochs`` of value regression with its own optimizer;
7. diagnostics (KL between successive policies, constraint parts, entropy, ...) and a
   deterministic evaluation.

All randomness comes from generators owned by the trainer (a torch generator for actions, a
NumPy generator for minibatches, the environments' own generators), and :meth:`state_dict`
captures all of them plus the simulator states, so a run resumed from a checkpoint (taken at an
iteration boundary) continues bitwise as the uninterrupted run would have.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

import numpy as np
import torch

import trpl_math as tm
from trpl_math.rl.config import TrainConfig
from trpl_math.rl.env_utils import (
    env_seeds,
    get_vec_state,
    make_env,
    make_vec_env,
    set_vec_state,
)
from trpl_math.rl.gae import gae
from trpl_math.rl.networks import (
    GaussianPolicy,
    ValueNet,
    gaussian_entropy,
    gaussian_log_prob,
)
from trpl_math.rl.normalization import ObsNormalizer, RewardScaler
from trpl_math.types import Gaussian


def build_layer(cfg: TrainConfig, initial_entropy: float, num_iterations: int) -> Any:
    """The TrustRegionLayer for ``cfg`` (None for PPO methods)."""
    if not cfg.is_projection:
        return None
    from trpl_math.torch import EntropySchedule, TrustRegionLayer

    schedule = None
    if cfg.entropy_control:
        schedule = EntropySchedule(
            kind=cfg.entropy_schedule,
            target_per_dim=cfg.target_entropy,
            temperature=cfg.temperature,
            total_steps=num_iterations,
            equality=cfg.entropy_equality,
            initial_entropy=initial_entropy,
        )
    return TrustRegionLayer(
        cfg.method,
        eps_mean=cfg.eps_mean,
        eps_cov=cfg.eps_cov,
        eps=cfg.eps_joint,
        scaled=cfg.scaled,
        diag=cfg.cov_type == "diag",
        entropy_schedule=schedule,
        validate=False,
    )


def explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    """``1 - Var[target - pred] / Var[target]`` (nan if the target is constant)."""
    var = float(np.var(target))
    return float("nan") if var == 0 else 1.0 - float(np.var(target - pred)) / var


class Trainer:
    """One training run (networks, optimizers, environments, normalisers, RNG states).

    Args:
        cfg: the run's configuration (validated here).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg.validate()
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.envs = make_vec_env(cfg.env_id, cfg.num_envs)
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        self.obs_dim = int(np.prod(obs_space.shape))
        self.act_dim = int(np.prod(act_space.shape))
        self.act_low = np.asarray(act_space.low, np.float64)
        self.act_high = np.asarray(act_space.high, np.float64)
        self.diag = cfg.cov_type == "diag"

        self.policy = GaussianPolicy(
            self.obs_dim,
            self.act_dim,
            cfg.hidden_sizes,
            cfg.activation,
            cfg.cov_type,
            cfg.contextual_cov,
            cfg.init_std,
            cfg.min_std,
        )
        self.vf = ValueNet(self.obs_dim, cfg.vf_hidden_sizes, cfg.activation)
        adam = {"eps": cfg.adam_eps, "fused": True}
        self.pi_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, **adam)
        self.vf_opt = torch.optim.Adam(self.vf.parameters(), lr=cfg.vf_lr, **adam)
        self.reg_opt = torch.optim.Adam(
            self.policy.parameters(), lr=cfg.regression_lr or cfg.lr, **adam
        )
        init_entropy = 0.5 * self.act_dim * (math.log(2 * math.pi) + 1) + self.act_dim * math.log(
            cfg.init_std
        )
        self.layer = build_layer(cfg, init_entropy, cfg.num_iterations)

        self.act_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
        self.np_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
        self.obs_norm = ObsNormalizer(obs_space.shape, cfg.norm_obs, cfg.obs_clip)
        self.rew_scaler = RewardScaler(cfg.num_envs, cfg.gamma, cfg.norm_rewards, cfg.reward_clip)

        obs, _ = self.envs.reset(seed=env_seeds(cfg.seed, 0, cfg.num_envs))
        self.obs = np.asarray(obs, np.float64)
        if cfg.norm_obs:
            self.obs_norm.rms.update(self.obs)
        self.ep_return = np.zeros(cfg.num_envs)
        self.ep_length = np.zeros(cfg.num_envs, np.int64)
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=10)
        self.recent_lengths: collections.deque[int] = collections.deque(maxlen=10)
        self.iteration = 0
        self.global_step = 0
        self._eval_envs: list[Any] = []

    # ------------------------------------------------------------------ rollout
    def _policy_dist(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(torch.from_numpy(obs))

    def _numpy_actor(self) -> Any:
        """A NumPy copy of the current policy, ``obs (N, o) -> (mean (N, d), noise scale)``,
        for fast rollouts; None where the covariance depends on the state."""
        if self.cfg.contextual_cov:
            return None
        act = np.tanh if self.cfg.activation == "tanh" else (lambda x: np.maximum(x, 0.0))
        lins = [m for m in self.policy.body if isinstance(m, torch.nn.Linear)]
        lins.append(self.policy.mean_head)
        params = [
            (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in lins
        ]
        with torch.no_grad():
            cov = self.policy(torch.zeros(1, self.obs_dim))[1][0]
        scale = (cov.sqrt() if self.diag else torch.linalg.cholesky(cov)).numpy()

        def actor(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            h = obs
            for w, b in params[:-1]:
                h = act(h @ w + b)
            return h @ params[-1][0] + params[-1][1], scale

        return actor

    @torch.no_grad()
    def collect(self) -> dict[str, np.ndarray]:
        """Run ``steps_per_env`` steps in every environment copy (Algorithm 2, line 3).

        Returns time-major arrays: normalised ``obs (T, N, o)``, ``actions (T, N, d)`` (as sampled,
        before clipping to the action bounds), raw and scaled ``rewards (T, N)``, ``terminated``
        and ``truncated (T, N)``, normalised ``final_obs (T, N, o)`` (valid where truncated) and
        the normalised observation after the last step ``last_obs (N, o)``.
        """
        cfg = self.cfg
        T, N = cfg.steps_per_env, cfg.num_envs
        obs_buf = np.zeros((T, N, self.obs_dim), np.float32)
        act_buf = np.zeros((T, N, self.act_dim), np.float32)
        rew_buf = np.zeros((T, N))
        scaled_buf = np.zeros((T, N))
        term_buf = np.zeros((T, N), bool)
        trunc_buf = np.zeros((T, N), bool)
        final_buf = np.zeros((T, N, self.obs_dim), np.float32)
        actor = self._numpy_actor()
        for t in range(T):
            o = self.obs_norm(self.obs)
            obs_buf[t] = o
            if actor is not None:
                mean, scale = actor(o)
            else:
                mean_t, cov_t = self._policy_dist(o)
                mean = mean_t.numpy()
                scale = (cov_t.sqrt() if self.diag else torch.linalg.cholesky(cov_t)).numpy()
            noise = self.act_rng.standard_normal((N, self.act_dim)).astype(np.float32)
            if self.diag:
                action = mean + scale * noise
            else:
                action = mean + np.einsum("...ij,...j->...i", scale, noise)
            act_buf[t] = action
            sent = np.clip(action, self.act_low, self.act_high) if cfg.clip_actions else action
            obs, reward, term, trunc, info = self.envs.step(sent)
            obs = np.array(obs, np.float64)  # copy: the vector env reuses its buffer
            done = term | trunc
            if cfg.norm_obs:
                self.obs_norm.rms.update(obs)
            if trunc.any():
                for i in np.flatnonzero(trunc):
                    final_buf[t, i] = self.obs_norm(np.asarray(info["final_obs"][i])[None])[0]
            rew_buf[t], term_buf[t], trunc_buf[t] = reward, term, trunc
            scaled_buf[t] = self.rew_scaler(reward, done)
            self.ep_return += reward
            self.ep_length += 1
            for i in np.flatnonzero(done):
                self.recent_returns.append(float(self.ep_return[i]))
                self.recent_lengths.append(int(self.ep_length[i]))
                self.ep_return[i], self.ep_length[i] = 0.0, 0
            self.obs = obs
        self.global_step += T * N
        return {
            "obs": obs_buf,
            "actions": act_buf,
            "rewards": rew_buf,
            "scaled_rewards": scaled_buf,
            "terminated": term_buf,
            "truncated": trunc_buf,
            "final_obs": final_buf,
            "last_obs": self.obs_norm(self.obs),
        }

    @torch.no_grad()
    def advantages(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(advantages, returns, values)``, each ``(T, N)``, by :func:`gae` (line 4)."""
        T, N = batch["rewards"].shape
        values = self.vf(torch.from_numpy(batch["obs"].reshape(T * N, -1))).numpy().reshape(T, N)
        last = self.vf(torch.from_numpy(batch["last_obs"])).numpy()
        next_values = np.concatenate([values[1:], last[None]], axis=0).astype(np.float64)
        terminated = batch["terminated"]
        if self.cfg.bootstrap_truncation:
            idx = np.nonzero(batch["truncated"])
            if len(idx[0]):
                next_values[idx] = self.vf(torch.from_numpy(batch["final_obs"][idx])).numpy()
        else:  # the time limit is the task's end: the final state is worth 0
            terminated = terminated | batch["truncated"]
        adv, ret = gae(
            batch["scaled_rewards"],
            values,
            next_values,
            terminated,
            batch["truncated"],
            self.cfg.gamma,
            self.cfg.gae_lambda,
        )
        return adv, ret, values

    # ------------------------------------------------------------------ policy update
    def _shuffled_batches(
        self, tensors: tuple[torch.Tensor, ...], size: int
    ) -> list[tuple[torch.Tensor, ...]]:
        """One epoch of minibatches of ``tensors`` (all ``(n, ...)``): the rows of one random
        permutation, gathered once, then cut in slices of ``size`` (a remainder is dropped)."""
        n = len(tensors[0])
        perm = self.np_rng.permutation(n)
        size = min(size, n)  # fewer rows than a minibatch: one minibatch of all of them
        starts = range(0, n - size + 1, size)
        shuffled = [t[torch.from_numpy(perm[: starts[-1] + size])] for t in tensors]
        return [tuple(t[i : i + size] for t in shuffled) for i in starts]

    def _clip_grad(self, module: torch.nn.Module) -> None:
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.max_grad_norm)

    def policy_loss(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        adv: torch.Tensor,
        old_mean: torch.Tensor,
        old_cov: torch.Tensor,
        old_logp: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one minibatch: Eq. 12 for the projections, the clipped ratio for PPO."""
        cfg = self.cfg
        if cfg.advantage_norm == "minibatch":
            adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)
        mean, cov = self.policy(obs)
        if self.layer is not None:
            proj = self.layer(mean, cov, old_mean, old_cov, step=self.iteration)
            logp = gaussian_log_prob(actions, proj.mean, proj.cov, self.diag)
            ratio = torch.exp(logp - old_logp)
            surrogate = (ratio * adv).mean()
            if cfg.contextual_cov:
                penalty = self.layer.penalty(proj, mean, cov)
            else:  # the covariance is set to its projection after the epochs: mean part only
                penalty = self.layer.penalty(proj, mean, None)
            loss = -surrogate + cfg.alpha * penalty
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * gaussian_entropy(proj.cov, self.diag).mean()
            return loss, {"penalty": float(penalty.detach())}
        logp = gaussian_log_prob(actions, mean, cov, self.diag)
        ratio = torch.exp(logp - old_logp)
        clipped = torch.clamp(ratio, 1 - cfg.clip_ratio, 1 + cfg.clip_ratio)
        surrogate = torch.minimum(ratio * adv, clipped * adv).mean()
        loss = -surrogate
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * gaussian_entropy(cov, self.diag).mean()
        clip_frac = float(((ratio - 1).abs() > cfg.clip_ratio).float().mean())
        return loss, {"clip_frac": clip_frac}

    def update_policy(
        self, obs: torch.Tensor, actions: torch.Tensor, adv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Policy epochs (lines 5-9). Returns the old distribution and mean minibatch stats."""
        cfg = self.cfg
        with torch.no_grad():
            old_mean, old_cov = self.policy(obs)
            old_logp = gaussian_log_prob(actions, old_mean, old_cov, self.diag)
        stats: dict[str, list[float]] = collections.defaultdict(list)
        contextual_old = old_cov.shape[0] != 1
        data = (obs, actions, adv, old_mean, old_logp) + ((old_cov,) if contextual_old else ())
        for _ in range(cfg.epochs):
            for mb in self._shuffled_batches(data, cfg.minibatch_size):
                loss, info = self.policy_loss(*mb[:4], mb[5] if contextual_old else old_cov, mb[4])
                self.pi_opt.zero_grad(set_to_none=True)
                loss.backward()
                self._clip_grad(self.policy)
                self.pi_opt.step()
                for k, v in info.items():
                    stats[k].append(v)
        if self.layer is not None:
            self._finish_projection_update(obs, old_mean, old_cov)
        return old_mean, old_cov, {k: float(np.mean(v)) for k, v in stats.items()}

    def _finish_projection_update(
        self, obs: torch.Tensor, old_mean: torch.Tensor, old_cov: torch.Tensor
    ) -> None:
        """Optional regression steps towards the projection, then set a non-contextual
        covariance to its projection (Sec. 4.4)."""
        cfg = self.cfg
        if cfg.regression_steps > 0:
            with torch.no_grad():
                mean, cov = self.policy(obs)
                target = self.layer(mean, cov, old_mean, old_cov, step=self.iteration)
            per_state = target.cov.shape[0] != 1
            data = (obs, target.mean) + ((target.cov,) if per_state else ())
            for _ in range(cfg.regression_steps):
                for mb in self._shuffled_batches(data, cfg.minibatch_size):
                    mean, cov = self.policy(mb[0])
                    goal = Gaussian(mb[1], mb[2] if per_state else target.cov)
                    # a non-contextual covariance is set to its projection below: mean part only
                    loss = self.layer.penalty(goal, mean, cov if cfg.contextual_cov else None)
                    self.reg_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self._clip_grad(self.policy)
                    self.reg_opt.step()
        if not cfg.contextual_cov:
            with torch.no_grad():
                mean, cov = self.policy(obs)
                proj = self.layer(mean, cov, old_mean, old_cov, step=self.iteration)
                event = 1 if self.diag else 2
                pc = proj.cov.reshape(-1, *proj.cov.shape[-event:]).mean(0)
                self.policy.set_cov(pc)

    # ------------------------------------------------------------------ value update
    def update_value(
        self, obs: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor
    ) -> float:
        """Value epochs with the value network's own optimizer; returns the mean loss."""
        cfg = self.cfg
        losses = []
        size = cfg.vf_minibatch_size or cfg.minibatch_size
        for _ in range(cfg.vf_epochs):
            for mb_obs, mb_ret, mb_old in self._shuffled_batches((obs, returns, old_values), size):
                v = self.vf(mb_obs)
                err = (v - mb_ret) ** 2
                if cfg.vf_clip is not None:
                    v_clip = mb_old + torch.clamp(v - mb_old, -cfg.vf_clip, cfg.vf_clip)
                    err = torch.maximum(err, (v_clip - mb_ret) ** 2)
                loss = err.mean()
                self.vf_opt.zero_grad(set_to_none=True)
                loss.backward()
                self._clip_grad(self.vf)
                self.vf_opt.step()
                losses.append(float(loss.detach()))
        return float(np.mean(losses))

    # ------------------------------------------------------------------ diagnostics / eval
    @torch.no_grad()
    def diagnostics(
        self, obs: torch.Tensor, old_mean: torch.Tensor, old_cov: torch.Tensor
    ) -> dict[str, float]:
        """KL between the policy that will act next and the old one, constraint parts, entropy,
        and the Mahalanobis distance of the unprojected mean (all per state; mean and max)."""
        mean, cov = self.policy(obs)
        kl = tm.kl_divergence(mean, cov, old_mean, old_cov, diag=self.diag).total
        out = {
            "kl_mean": float(kl.mean()),
            "kl_max": float(kl.max()),
            "entropy": float(gaussian_entropy(cov, self.diag).mean()),
        }
        if self.layer is not None:
            proj = self.layer(mean, cov, old_mean, old_cov, step=self.iteration)
            d = self.layer.diagnostics(mean, cov, old_mean, old_cov, proj)
            out.update(
                {
                    "proj_kl_mean": d["kl_mean"],
                    "proj_kl_max": d["kl_max"],
                    "mean_part_mean": d["div_mean_part_mean"],
                    "mean_part_max": d["div_mean_part_max"],
                    "cov_part_mean": d["div_cov_part_mean"],
                    "cov_part_max": d["div_cov_part_max"],
                    "maha_mean": d["maha_unprojected_mean"],
                    "maha_max": d["maha_unprojected_max"],
                }
            )
        else:
            parts = tm.kl_divergence(mean, cov, old_mean, old_cov, diag=self.diag)
            maha = 2.0 * parts.mean
            out.update(
                {
                    "proj_kl_mean": out["kl_mean"],
                    "proj_kl_max": out["kl_max"],
                    "mean_part_mean": float(parts.mean.mean()),
                    "mean_part_max": float(parts.mean.max()),
                    "cov_part_mean": float(parts.cov.mean()),
                    "cov_part_max": float(parts.cov.max()),
                    "maha_mean": float(maha.mean()),
                    "maha_max": float(maha.max()),
                }
            )
        return out

    @torch.no_grad()
    def evaluate(self, episodes: int, seed_stream: int) -> list[float]:
        """Returns of ``episodes`` deterministic episodes (action = mean), run side by side.

        Seeds come from ``(cfg.seed, seed_stream)``, so evaluation needs no saved state. The
        environments are built once and reseeded by ``reset(seed=...)`` every time (building a
        MuJoCo model costs ~10 ms, as much as a few hundred steps).
        """
        if len(self._eval_envs) != episodes:
            self._close_eval_envs()
            self._eval_envs = [make_env(self.cfg.env_id) for _ in range(episodes)]
        envs = self._eval_envs
        seeds = env_seeds(self.cfg.seed, seed_stream, episodes)
        obs = np.stack(
            [np.asarray(e.reset(seed=s)[0], np.float64) for e, s in zip(envs, seeds, strict=True)]
        )
        returns = np.zeros(episodes)
        active = np.ones(episodes, bool)
        while active.any():
            ids = np.flatnonzero(active)
            mean, _ = self._policy_dist(self.obs_norm(obs[ids]))
            acts = np.clip(mean.numpy(), self.act_low, self.act_high)
            for j, i in enumerate(ids):
                o, r, te, tr, _ = envs[i].step(acts[j])
                returns[i] += r
                obs[i] = o
                if te or tr:
                    active[i] = False
        return returns.tolist()

    def _close_eval_envs(self) -> None:
        for e in self._eval_envs:
            e.close()
        self._eval_envs = []

    # ------------------------------------------------------------------ one iteration
    def iterate(self) -> dict[str, float]:
        """One iteration of Algorithm 2; returns the log row."""
        cfg = self.cfg
        if cfg.lr_decay:
            frac = 1.0 - self.iteration / cfg.num_iterations
            for opt, lr in ((self.pi_opt, cfg.lr), (self.vf_opt, cfg.vf_lr)):
                for g in opt.param_groups:
                    g["lr"] = lr * frac
        t0 = time.perf_counter()
        batch = self.collect()
        t1 = time.perf_counter()
        adv, ret, values = self.advantages(batch)
        T, N = adv.shape
        flat_adv = adv.reshape(-1)
        if cfg.advantage_norm == "batch":
            flat_adv = (flat_adv - flat_adv.mean()) / (flat_adv.std() + 1e-8)
        obs = torch.from_numpy(batch["obs"].reshape(T * N, -1))
        actions = torch.from_numpy(batch["actions"].reshape(T * N, -1))
        adv_t = torch.from_numpy(flat_adv.astype(np.float32))
        t2 = time.perf_counter()
        old_mean, old_cov, pstats = self.update_policy(obs, actions, adv_t)
        t3 = time.perf_counter()
        ret_t = torch.from_numpy(ret.reshape(-1).astype(np.float32))
        vloss = self.update_value(obs, ret_t, torch.from_numpy(values.reshape(-1)))
        t4 = time.perf_counter()
        diag = self.diagnostics(obs, old_mean, old_cov)
        with torch.no_grad():
            v_new = self.vf(obs).numpy()
        t5 = time.perf_counter()
        self.iteration += 1
        eval_ret = float("nan")
        if cfg.eval_episodes > 0 and self.iteration % cfg.eval_every == 0:
            eval_ret = float(np.mean(self.evaluate(cfg.eval_episodes, 1000 + self.iteration)))
        t6 = time.perf_counter()
        row = {
            "iteration": self.iteration,
            "global_step": self.global_step,
            "train_return": float(np.mean(self.recent_returns))
            if self.recent_returns
            else float("nan"),
            "train_ep_length": float(np.mean(self.recent_lengths))
            if self.recent_lengths
            else float("nan"),
            "eval_return": eval_ret,
            **diag,
            "value_loss": vloss,
            "explained_variance": explained_variance(v_new, ret.reshape(-1)),
            "penalty": pstats.get("penalty", float("nan")),
            "clip_frac": pstats.get("clip_frac", float("nan")),
            "lr": self.pi_opt.param_groups[0]["lr"],
            "time_rollout": t1 - t0,
            "time_gae": t2 - t1,
            "time_policy": t3 - t2,
            "time_value": t4 - t3,
            "time_diagnostics": t5 - t4,
            "time_eval": t6 - t5,
        }
        return row

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bitwise: networks, optimizers, normalisers, RNG states,
        simulator states, the current observations and episode statistics."""
        return {
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "global_step": self.global_step,
            "policy": self.policy.state_dict(),
            "vf": self.vf.state_dict(),
            "pi_opt": self.pi_opt.state_dict(),
            "vf_opt": self.vf_opt.state_dict(),
            "reg_opt": self.reg_opt.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "rew_scaler": self.rew_scaler.state_dict(),
            "act_rng": self.act_rng.bit_generator.state,
            "torch_global": torch.get_rng_state(),
            "np_rng": self.np_rng.bit_generator.state,
            "envs": get_vec_state(self.envs),
            "obs": self.obs.copy(),
            "ep_return": self.ep_return.copy(),
            "ep_length": self.ep_length.copy(),
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the trainer must be built from the same config)."""
        self.iteration = int(state["iteration"])
        self.global_step = int(state["global_step"])
        self.policy.load_state_dict(state["policy"])
        self.vf.load_state_dict(state["vf"])
        self.pi_opt.load_state_dict(state["pi_opt"])
        self.vf_opt.load_state_dict(state["vf_opt"])
        self.reg_opt.load_state_dict(state["reg_opt"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.rew_scaler.load_state_dict(state["rew_scaler"])
        self.act_rng.bit_generator.state = state["act_rng"]
        torch.set_rng_state(state["torch_global"])
        self.np_rng.bit_generator.state = state["np_rng"]
        set_vec_state(self.envs, state["envs"])
        self.obs = np.array(state["obs"], np.float64)
        self.ep_return = np.array(state["ep_return"], np.float64)
        self.ep_length = np.array(state["ep_length"], np.int64)
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])
        self.recent_lengths.clear()
        self.recent_lengths.extend(state["recent_lengths"])

    def close(self) -> None:
        """Close the environments."""
        self.envs.close()
        self._close_eval_envs()
