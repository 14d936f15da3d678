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
from trpl_math.rl.losses import (
    LossInfo,
    normalize_advantages,
    ppo_clip_loss,
    trust_region_loss,
    value_loss,
)
from trpl_math.rl.networks import (
    GaussianPolicy,
    ValueNet,
    gaussian_entropy,
    gaussian_log_prob,
)
from trpl_math.rl.normalization import ObsNormalizer, RewardScaler
from trpl_math.rl.rollout import Batch, EpisodeStats, collect, numpy_actor, torch_actor
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
            target_per_dim=cfg.target_per_dim,
            temperature=cfg.temperature,
            total_steps=num_iterations,
            equality=cfg.entropy_equality,
            initial_entropy=initial_entropy,
        )
    return TrustRegionLayer(
        cfg.method,
        eps_mean=cfg.eps_mean,
        eps_cov=cfg.eps_cov,
        eps=cfg.eps,
        scaled=cfg.scaled,
        diag=cfg.diag,
        entropy_schedule=schedule,
        validate=False,
    )


def build_papi(cfg: TrainConfig, initial_entropy: float) -> Any:
    """The PAPI projection for ``method: papi`` (None otherwise)."""
    if cfg.method != "papi":
        return None
    from trpl_math.rl.papi import Papi, PapiSettings

    assert cfg.eps is not None  # validated
    return Papi(PapiSettings(eps=cfg.eps), initial_entropy)


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
        self.diag = cfg.diag

        self.policy = GaussianPolicy(
            self.obs_dim,
            self.act_dim,
            cfg.hidden_sizes,
            cfg.activation,
            "diag" if cfg.diag else "full",
            cfg.contextual_cov,
            cfg.init_std,
            cfg.min_std,
        )
        self.vf = ValueNet(self.obs_dim, cfg.vf_hidden_sizes, cfg.activation)
        self.dtype = torch.float64 if cfg.net_dtype == "float64" else torch.float32
        self.policy.to(self.dtype)
        self.vf.to(self.dtype)
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
        self.papi = build_papi(cfg, init_entropy)

        self.act_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
        self.np_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
        self.obs_norm = ObsNormalizer(obs_space.shape, cfg.norm_obs, cfg.obs_clip)
        self.rew_scaler = RewardScaler(cfg.num_envs, cfg.gamma, cfg.norm_rewards, cfg.reward_clip)

        obs, _ = self.envs.reset(seed=env_seeds(cfg.seed, 0, cfg.num_envs))
        self.obs = np.asarray(obs, np.float64)
        if cfg.norm_obs:
            self.obs_norm.rms.update(self.obs)
        self.episodes = EpisodeStats(cfg.num_envs)
        self.iteration = 0
        self.global_step = 0
        self._eval_envs: list[Any] = []

    # ------------------------------------------------------------------ rollout
    def _policy_dist(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(torch.from_numpy(obs).to(self.dtype))

    @torch.no_grad()
    def collect(self) -> Batch:
        """Run ``steps_per_env`` steps in every environment copy with the network's own policy
        (Algorithm 2, line 3); see :func:`trpl_math.rl.rollout.collect`."""
        cfg = self.cfg
        actor = numpy_actor(self.policy, cfg.activation) or torch_actor(self.policy)
        batch, self.obs = collect(
            self.envs,
            self.obs,
            actor,
            cfg.steps_per_env,
            obs_norm=self.obs_norm,
            rew_scaler=self.rew_scaler,
            rng=self.act_rng,
            episodes=self.episodes,
            diag=self.diag,
            action_bounds=(self.act_low, self.act_high) if cfg.clip_actions else None,
            dtype=np.float64 if cfg.net_dtype == "float64" else np.float32,
        )
        self.global_step += batch.size
        return batch

    @torch.no_grad()
    def advantages(self, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(advantages, returns, values)``, each ``(T, N)``, by :func:`gae` (line 4).

        A time-limit cut is handled by ``cfg.truncation`` (bootstrap from the final
        observation, worth 0, or advantage 0 without bootstrap)."""
        T, N = batch.rewards.shape
        vf = self.vf
        values = vf(torch.from_numpy(batch.obs.reshape(T * N, -1))).numpy().reshape(T, N)
        last = vf(torch.from_numpy(batch.last_obs)).numpy()
        next_values = np.concatenate([values[1:], last[None]], axis=0).astype(np.float64)
        terminated, zero_delta = batch.terminated, None
        mode = self.cfg.truncation
        if mode == "bootstrap":
            idx = np.nonzero(batch.truncated)
            if len(idx[0]):
                next_values[idx] = vf(torch.from_numpy(batch.final_obs[idx])).numpy()
        elif mode == "terminal":  # the time limit is the task's end: the final state is worth 0
            terminated = terminated | batch.truncated
        else:  # zero_advantage: the cut step's TD error is 0, so its advantage is 0
            zero_delta = batch.truncated
        adv, ret = gae(
            batch.scaled_rewards,
            values,
            next_values,
            terminated,
            batch.truncated,
            self.cfg.gamma,
            self.cfg.gae_lambda,
            zero_delta,
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
    ) -> tuple[torch.Tensor, LossInfo, Gaussian | None]:
        """Loss of one minibatch: Eq. 12 for the projections (:func:`trust_region_loss`), the
        clipped ratio for PPO (:func:`ppo_clip_loss`); also returns the projection (or None)."""
        cfg = self.cfg
        if cfg.advantage_norm == "minibatch":
            adv = normalize_advantages(adv)
        net = Gaussian(*self.policy(obs))
        if self.layer is None:
            loss, info = ppo_clip_loss(
                net,
                actions,
                old_logp,
                adv,
                clip_ratio=cfg.clip_ratio,
                diag=self.diag,
                entropy_coef=cfg.entropy_coef,
            )
            return loss, info, None
        proj = self.layer(net.mean, net.cov, old_mean, old_cov, step=self.iteration)
        loss, info = trust_region_loss(
            proj,
            net,
            actions,
            old_logp,
            adv,
            penalty_fn=self.layer.penalty,
            alpha=cfg.alpha,
            diag=self.diag,
            contextual_cov=cfg.contextual_cov,
            entropy_coef=cfg.entropy_coef,
        )
        return loss, info, proj

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
        last_proj: Gaussian | None = None
        if self.papi is not None:
            self.papi.before_epochs(self.policy)  # keeps the old policy to revert to
        for _ in range(cfg.epochs):
            for mb in self._shuffled_batches(data, cfg.minibatch_size):
                loss, info, last_proj = self.policy_loss(
                    *mb[:4], mb[5] if contextual_old else old_cov, mb[4]
                )
                self.pi_opt.zero_grad(set_to_none=True)
                loss.backward()
                self._clip_grad(self.policy)
                self.pi_opt.step()
                for k, v in info._asdict().items():
                    stats[k].append(v)
        if self.layer is not None:
            self._finish_projection_update(obs, old_mean, old_cov, last_proj)
        if self.papi is not None:
            pstats = self.papi.after_epochs(self.policy, obs, old_mean, old_cov)
            stats.update({f"papi_{k}": [v] for k, v in pstats.items()})
            for opt, lr in ((self.pi_opt, cfg.lr), (self.vf_opt, cfg.vf_lr)):
                for g in opt.param_groups:
                    g["lr"] = lr * self.papi.lr_scale * self._lr_frac()
        return old_mean, old_cov, {k: float(np.mean(v)) for k, v in stats.items()}

    def _finish_projection_update(
        self,
        obs: torch.Tensor,
        old_mean: torch.Tensor,
        old_cov: torch.Tensor,
        last_proj: Gaussian | None,
    ) -> None:
        """Optional regression steps towards the projection, then set a non-contextual
        covariance to its projection (Sec. 4.4): of the updated policy on the whole batch
        (``cov_source=batch``) or the last minibatch's (``last_minibatch``)."""
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
                if cfg.cov_source == "last_minibatch" and last_proj is not None:
                    proj_cov = last_proj.cov.detach()
                else:
                    mean, cov = self.policy(obs)
                    proj_cov = self.layer(mean, cov, old_mean, old_cov, step=self.iteration).cov
                event = 1 if self.diag else 2
                self.policy.set_cov(proj_cov.reshape(-1, *proj_cov.shape[-event:]).mean(0))

    # ------------------------------------------------------------------ value update
    def update_value(
        self, obs: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor
    ) -> float:
        """Value epochs with the value network's own optimizer (:func:`value_loss`); returns
        the mean loss."""
        cfg = self.cfg
        losses = []
        size = cfg.vf_minibatch_size or cfg.minibatch_size
        for _ in range(cfg.vf_epochs):
            for mb_obs, mb_ret, mb_old in self._shuffled_batches((obs, returns, old_values), size):
                loss = value_loss(self.vf(mb_obs), mb_ret, mb_old, clip=cfg.vf_clip)
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
                    "proj_kl_mean": d["proj_kl_mean"],
                    "proj_kl_max": d["proj_kl_max"],
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
    def _lr_frac(self) -> float:
        """Linear learning-rate decay factor of this iteration (1 without ``lr_decay``)."""
        return 1.0 - self.iteration / self.cfg.num_iterations if self.cfg.lr_decay else 1.0

    def iterate(self) -> dict[str, float]:
        """One iteration of Algorithm 2; returns the log row."""
        cfg = self.cfg
        if cfg.lr_decay:
            scale = self._lr_frac() * (self.papi.lr_scale if self.papi is not None else 1.0)
            for opt, lr in ((self.pi_opt, cfg.lr), (self.vf_opt, cfg.vf_lr)):
                for g in opt.param_groups:
                    g["lr"] = lr * scale
        t0 = time.perf_counter()
        batch = self.collect()  # line 3: rollouts with the unprojected policy
        t1 = time.perf_counter()
        adv, ret, values = self.advantages(batch)  # line 4: GAE
        flat_adv = adv.reshape(-1)
        if cfg.advantage_norm == "batch":
            flat_adv = normalize_advantages(flat_adv)
        n, dt = batch.size, self.dtype
        obs = torch.from_numpy(batch.obs.reshape(n, -1))
        actions = torch.from_numpy(batch.actions.reshape(n, -1))
        adv_t = torch.from_numpy(flat_adv).to(dt)
        t2 = time.perf_counter()
        old_mean, old_cov, pstats = self.update_policy(obs, actions, adv_t)  # lines 5-9
        t3 = time.perf_counter()
        ret_t = torch.from_numpy(ret.reshape(-1)).to(dt)
        vloss = self.update_value(obs, ret_t, torch.from_numpy(values.reshape(-1)))  # line 10
        t4 = time.perf_counter()
        diag = self.diagnostics(obs, old_mean, old_cov)
        with torch.no_grad():
            v_new = self.vf(obs).numpy()
        t5 = time.perf_counter()
        eval_ret = self.end_iteration()
        t6 = time.perf_counter()
        return self.log_row(
            eval_return=eval_ret,
            diag=diag,
            value_loss=vloss,
            v_new=v_new,
            returns=ret,
            pstats=pstats,
            lr=self.pi_opt.param_groups[0]["lr"],
            times=(t0, t1, t2, t3, t4, t5, t6),
        )

    def end_iteration(self) -> float:
        """Count the iteration as done and run the deterministic evaluation if it is due
        (``eval_every``); returns its mean return (NaN when none ran)."""
        cfg = self.cfg
        self.iteration += 1
        if cfg.eval_episodes > 0 and self.iteration % cfg.eval_every == 0:
            return float(np.mean(self.evaluate(cfg.eval_episodes, 1000 + self.iteration)))
        return float("nan")

    def log_row(
        self,
        *,
        eval_return: float,
        diag: dict[str, float],
        value_loss: float,
        v_new: np.ndarray,
        returns: np.ndarray,
        pstats: dict[str, float],
        lr: float,
        times: tuple[float, ...],
    ) -> dict[str, float]:
        """The progress.csv row of the iteration just ended (one column order for every
        trainer); ``times`` are the 7 clock readings around its phases."""
        t0, t1, t2, t3, t4, t5, t6 = times
        return {
            "iteration": self.iteration,
            "global_step": self.global_step,
            "train_return": self.episodes.mean_return(),
            "train_ep_length": self.episodes.mean_length(),
            "eval_return": eval_return,
            **diag,
            "value_loss": value_loss,
            "explained_variance": explained_variance(v_new, returns.reshape(-1)),
            "penalty": pstats.get("penalty", float("nan")),
            "clip_frac": pstats.get("clip_frac", float("nan")),
            "lr": lr,
            **{k: v for k, v in pstats.items() if k.startswith("papi_")},
            "time_rollout": t1 - t0,
            "time_gae": t2 - t1,
            "time_policy": t3 - t2,
            "time_value": t4 - t3,
            "time_diagnostics": t5 - t4,
            "time_eval": t6 - t5,
        }

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
            **self.episodes.state_dict(),
            **({"papi": self.papi.state_dict()} if self.papi is not None else {}),
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
        self.episodes.load_state_dict(state)
        if self.papi is not None:
            self.papi.load_state_dict(state["papi"])

    def close(self) -> None:
        """Close the environments."""
        self.envs.close()
        self._close_eval_envs()
