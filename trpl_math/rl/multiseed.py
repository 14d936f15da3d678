"""Many seeds in one process: S independent runs whose networks are stacked along a seed axis.

Most of an iteration of a projection method is its ~1,300 tiny minibatch steps, and their cost
is per-operation overhead, not arithmetic. :class:`MultiSeedTrainer` trains S runs that differ
only in their seed with one operation where S single runs need S: every parameter of the policy
and of the value network is one leaf tensor ``(S, *shape)``, a linear layer is one batched
matmul (:func:`stacked_linear`), the trust-region layer projects ``(S, B, d)`` means at once
(a non-contextual covariance is ``(S, 1, d)`` and broadcasts), and one call of the fused Adam
kernel steps every seed's slice (:class:`StackedAdam`; Adam is elementwise, so this is S Adams).

What stays per seed is everything that is not a minibatch step: each seed keeps a whole
:class:`~trpl_math.rl.trainer.Trainer` (its environments, observation and reward normalisers,
NumPy generators for actions and minibatches, episode statistics, evaluation environments).
Its networks' parameters are *views* of the stacked tensors, so its own methods (rollouts with
the NumPy actor, GAE, setting the covariance to its projection, diagnostics, evaluation,
checkpoints) run unchanged on the current parameters. Seed k therefore draws exactly the random
numbers a single run of seed k draws, in the same order, and writes the same run folder.

Seeds are independent: the reductions (each loss's minibatch mean, advantage normalisation
within a minibatch, gradient-norm clipping) run over the seed's own rows, and the three kernels
whose rounding depended on where a seed's rows lie in the stack are kept from it (Adam on each
seed's slice, softplus padded per seed, broadcast gradients summed from a contiguous copy), so
:func:`train_seeds` of seeds ``[3]`` and of ``[0, 1, 2, 3]`` give seed 3 bitwise-equal logs and
parameters (tests/rl/test_rl_multiseed.py). Against the single-seed :class:`Trainer` of the same
seed the runs agree to float32 rounding, not bitwise: ``F.linear``'s backward sums a bias
gradient in the memory layout the gradient arrives in, which the projection's backward chooses
differently for different batch shapes, while the stacked path sums a contiguous copy.

Not supported (a clear error): PAPI (its fit after the epochs is per run), and configs that
differ in anything but the seed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trpl_math.rl.config import TrainConfig, config_from_dict, save_config
from trpl_math.rl.losses import ADV_EPS, normalize_advantages
from trpl_math.rl.networks import (
    GaussianPolicy,
    ValueNet,
    _fill_tril,
    gaussian_entropy,
    gaussian_log_prob,
)
from trpl_math.rl.trainer import Trainer
from trpl_math.types import Gaussian

__all__ = [
    "MultiSeedTrainer",
    "StackedAdam",
    "clip_grad_norm_per_seed",
    "seed_configs",
    "stacked_linear",
    "train_seeds",
]


# ---------------------------------------------------------------------------------- stacking
class _StackedLinear(torch.autograd.Function):
    """``y[k] = x[k] @ w[k].T + b[k]`` for every seed ``k``, with the products of ``F.linear``.

    ``x (S, B, i)``, ``w (S, o, i)``, ``b (S, o)``. Forward: one ``baddbmm`` (a per-seed
    ``addmv`` when ``o == 1``: MKL's batched GEMM with one output column rounds unlike the
    matrix-vector product that ``F.linear`` uses, and unlike itself for ``S = 1``). Backward:
    ``dx = g @ w`` and ``dw = g.T @ x``, the operand order of ``F.linear``'s backward
    (``x.T @ g`` transposed rounds differently for some shapes); ``db``, the sum of ``g`` over
    ``B``, from a contiguous copy of ``g``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        if w.shape[1] == 1:
            cols = [torch.addmv(b[k], x[k], w[k, 0]) for k in range(w.shape[0])]
            return torch.stack(cols).unsqueeze(-1)
        return torch.baddbmm(b.unsqueeze(1), x, w.mT)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(g.mT, x) if ctx.needs_input_grad[1] else None
        # ``db`` from a contiguous ``g``: its layout (which can depend on S where it comes
        # from the projection's backward) would decide the order of the sum over B
        gb = g.contiguous().sum(1) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


class _Broadcast(torch.autograd.Function):
    """``(S, 1, ...) -> (S, B, ...)`` (an expanded view) whose backward sums a contiguous copy
    of the gradient over ``B``: the layout of the incoming gradient (which can depend on
    ``S``) then does not change the order of the summation."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.expand(x.shape[0], n, *x.shape[2:])

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return g.contiguous().sum(1, keepdim=True), None


def stacked_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """S linear layers at once: ``x (S, B, i)``, ``w (S, o, i)``, ``b (S, o)`` -> ``(S, B, o)``.

    Example:
        >>> x, w, b = torch.ones(2, 3, 4), torch.ones(2, 5, 4), torch.zeros(2, 5)
        >>> stacked_linear(x, w, b).shape
        torch.Size([2, 3, 5])
    """
    return _StackedLinear.apply(x, w, b)


def stack_parameters(modules: Sequence[nn.Module]) -> dict[str, nn.Parameter]:
    """One leaf ``(S, *shape)`` per parameter name of the identically built ``modules``.

    Each module's parameter is re-pointed at its row of the stacked tensor (``p.data`` becomes
    a view), so in-place updates of the stack (optimiser steps, ``load_state_dict``,
    ``set_cov``) are seen by the module and the other way round.
    """
    named = [dict(m.named_parameters()) for m in modules]
    out: dict[str, nn.Parameter] = {}
    for name in named[0]:
        stack = nn.Parameter(torch.stack([n[name].detach() for n in named]))
        for k, n in enumerate(named):
            n[name].data = stack.data[k]
        out[name] = stack
    return out


class StackedAdam:
    """Adam (``torch.optim.Adam(fused=True)``'s kernel) over stacked parameters, per seed.

    Adam is elementwise, so one Adam over ``(S, *shape)`` tensors is S Adams in exact
    arithmetic; in floating point the fused CPU kernel treats a tensor's vectorised body and
    its remainder differently, so a seed's slice would round according to where it lies in
    the stack. This optimizer therefore calls the same kernel once per step on the list of all
    seeds' slices (``param[k]``, one tensor each): every slice is stepped as the single run's
    tensor of that seed is. The step count is shared (all seeds take the same steps).

    ``state[param]`` holds ``step`` (a scalar tensor), ``exp_avg`` and ``exp_avg_sq``
    (``(S, *shape)``) like ``torch.optim.Adam``'s state; ``param_groups[0]["lr"]`` is the
    learning rate.
    """

    def __init__(self, params: Sequence[torch.Tensor], lr: float, eps: float) -> None:
        self.params = list(params)
        self.param_groups: list[dict[str, Any]] = [{"lr": lr}]
        self.eps, self.betas = eps, (0.9, 0.999)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self._views: tuple[list[torch.Tensor], ...] | None = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients."""
        for p in self.params:
            p.grad = None

    def _slices(self) -> tuple[list[torch.Tensor], ...]:
        if self._views is None:
            if not self.state:
                for p in self.params:
                    self.state[p] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            st = [self.state[p] for p in self.params]
            self._views = (
                [v for p in self.params for v in p.detach().unbind(0)],
                [v for s in st for v in s["exp_avg"].unbind(0)],
                [v for s in st for v in s["exp_avg_sq"].unbind(0)],
                [s["step"] for s in st],
                [s["step"] for s in st for _ in range(s["exp_avg"].shape[0])],
            )
        return self._views

    def load_state(self, state: dict[torch.Tensor, dict[str, torch.Tensor]]) -> None:
        """Replace the state (as :attr:`state` holds it)."""
        self.state = state
        self._views = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every seed's slice (``torch._fused_adam_``)."""
        params, avgs, sqs, steps, seed_steps = self._slices()
        grads = [g for p in self.params for g in p.grad.unbind(0)]  # type: ignore[union-attr]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params,
            grads,
            avgs,
            sqs,
            [],
            seed_steps,
            amsgrad=False,
            lr=self.param_groups[0]["lr"],
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


def _mlp(seq: nn.Sequential, prefix: str, params: dict[str, torch.Tensor], x: torch.Tensor):
    for i, m in enumerate(seq):
        if isinstance(m, nn.Linear):
            x = stacked_linear(x, params[f"{prefix}{i}.weight"], params[f"{prefix}{i}.bias"])
        else:
            x = m(x)  # the activation, elementwise
    return x


#: Elements of float32 that torch's vectorised CPU loops process per iteration (2 AVX-512
#: vectors); a remainder goes through the scalar code, which rounds softplus differently.
_CHUNK = 32


def _softplus_per_seed(x: torch.Tensor) -> torch.Tensor:
    """``softplus`` of ``x (S, ...)`` with each seed's entries padded to a whole number of
    vectorised chunks, so that seed k's values do not depend on where its row lies in the
    stack (the vectorised body and the scalar remainder of torch's softplus round differently,
    so unpadded, seed k's rounding would depend on S)."""
    S = x.shape[0]
    flat = x.reshape(S, -1)
    n = flat.shape[1]
    pad = (-n) % _CHUNK
    if pad:
        flat = nn.functional.pad(flat, (0, pad))
    return nn.functional.softplus(flat)[:, :n].reshape(x.shape)


def _cov_from_raw(template: GaussianPolicy, raw: torch.Tensor) -> torch.Tensor:
    """``GaussianPolicy._cov_from_raw`` for ``raw (S, ...)``, its softplus per seed."""
    d = template.act_dim
    std = _softplus_per_seed(raw[..., :d]) + template.min_std
    if template.diag:
        return std * std
    rows, cols = template._tril_rows, template._tril_cols
    chol = _fill_tril(torch.diag_embed(std), raw[..., d:], rows, cols)
    return chol @ chol.transpose(-1, -2)


def stacked_policy(
    template: GaussianPolicy,
    params: dict[str, torch.Tensor],
    obs: torch.Tensor,
    expand: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``GaussianPolicy.forward`` of S stacked policies: ``obs (S, B, o)`` -> ``mean (S, B, d)``
    and ``cov (S, B, d)`` (or ``(S, B, d, d)``).

    A non-contextual covariance is ``(S, 1, d)`` expanded to ``(S, B, d)`` by a view whose
    backward sums a contiguous copy of the gradient (see :class:`_Broadcast`); with
    ``expand=False`` (no gradient needed) it is returned as ``(S, 1, d)``."""
    h = _mlp(template.body, "body.", params, obs)
    mean = stacked_linear(h, params["mean_head.weight"], params["mean_head.bias"])
    if template.contextual:
        raw = stacked_linear(h, params["cov_head.weight"], params["cov_head.bias"])
    else:
        raw = params["cov_param"].unsqueeze(1)
    cov = _cov_from_raw(template, raw)
    if not template.contextual and expand:
        cov = _Broadcast.apply(cov, mean.shape[1])
    return mean, cov


def stacked_value(
    template: ValueNet, params: dict[str, torch.Tensor], obs: torch.Tensor
) -> torch.Tensor:
    """``ValueNet.forward`` of S stacked networks: ``obs (S, B, o)`` -> ``(S, B)``."""
    return _mlp(template.net, "net.", params, obs).squeeze(-1)


def _per_seed_mean(x: torch.Tensor) -> torch.Tensor:
    """``(S, ...)`` -> ``(S,)``: the mean over each seed's own entries."""
    return x.reshape(x.shape[0], -1).mean(-1)


def clip_grad_norm_per_seed(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for each seed's slice of the stacked ``params``.

    Seed k's total norm is the 2-norm of the per-tensor norms of its gradients, computed with
    the same kernels as ``clip_grad_norm_`` (``_foreach_norm``, then ``vector_norm``); the
    gradients are scaled by ``min(1, max_norm / (norm + 1e-6))``.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    S = grads[0].shape[0]
    totals = []
    for k in range(S):
        norms = torch._foreach_norm([g[k] for g in grads], 2.0)
        totals.append(torch.linalg.vector_norm(torch.stack(norms), 2.0))
    coef = torch.clamp(max_norm / (torch.stack(totals) + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.reshape(S, *([1] * (g.ndim - 1))))


# ---------------------------------------------------------------------------------- losses
def _normalize(adv: torch.Tensor) -> torch.Tensor:
    """:func:`~trpl_math.rl.losses.normalize_advantages` over each seed's row ``(S, B)``."""
    mean = adv.mean(-1, keepdim=True)
    return (adv - mean) / (adv.std(-1, correction=0, keepdim=True) + ADV_EPS)


def _value_loss(values, returns, old_values, clip):
    """:func:`~trpl_math.rl.losses.value_loss` per seed: ``(S, B)`` -> ``(S,)``."""
    err = (values - returns) ** 2
    if clip is not None:
        v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (v_clip - returns) ** 2)
    return err.mean(-1)


# ---------------------------------------------------------------------------------- trainer
def _check_configs(cfgs: Sequence[TrainConfig]) -> None:
    if not cfgs:
        raise ValueError("need at least one seed")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    base = {**cfgs[0].to_dict(), "seed": None}
    for c in cfgs[1:]:
        other = {**c.to_dict(), "seed": None}
        if other != base:
            diff = sorted(k for k in base if base[k] != other[k])
            raise ValueError(f"seeds in one process must share the config except the seed: {diff}")
    if cfgs[0].method == "papi":
        raise ValueError(
            "method papi is not supported with several seeds in one process (its fit after the "
            "epochs is per run): train its seeds one by one or with trpl grid"
        )


class MultiSeedTrainer:
    """S training runs in one process, identical to S :class:`Trainer` runs of those seeds.

    Args:
        cfgs: one config per seed, equal except for ``seed`` (see :func:`seed_configs`).

    Attributes:
        trainers: the per-seed :class:`Trainer` objects (environments, normalisers, RNGs; their
            networks' parameters are views of the stacked ones).
    """

    def __init__(self, cfgs: Sequence[TrainConfig]) -> None:
        cfgs = [c.validate() for c in cfgs]
        _check_configs(cfgs)
        self.cfg = cfgs[0]
        self.trainers: list[Trainer] = []
        self._torch_rng: list[torch.Tensor] = []
        for c in cfgs:
            self.trainers.append(Trainer(c))
            # a single run's global torch generator state after building it (it is not drawn
            # from afterwards); its checkpoints store it, so ours do too
            self._torch_rng.append(torch.get_rng_state())
        t0 = self.trainers[0]
        self.S = len(cfgs)
        self.diag, self.dtype, self.layer = t0.diag, t0.dtype, t0.layer
        self.pi = stack_parameters([t.policy for t in self.trainers])
        self.v = stack_parameters([t.vf for t in self.trainers])
        cfg = self.cfg
        eps = cfg.adam_eps
        self.pi_opt = StackedAdam(list(self.pi.values()), cfg.lr, eps)
        self.vf_opt = StackedAdam(list(self.v.values()), cfg.vf_lr, eps)
        self.reg_opt = StackedAdam(list(self.pi.values()), cfg.regression_lr or cfg.lr, eps)
        self._opt_pairs = (
            (self.pi_opt, self.pi, [t.pi_opt for t in self.trainers]),
            (self.vf_opt, self.v, [t.vf_opt for t in self.trainers]),
            (self.reg_opt, self.pi, [t.reg_opt for t in self.trainers]),
        )

    @property
    def iteration(self) -> int:
        """Iterations done (equal for all seeds)."""
        return self.trainers[0].iteration

    @property
    def seeds(self) -> list[int]:
        """The seeds, in stack order."""
        return [t.cfg.seed for t in self.trainers]

    # ------------------------------------------------------------------ minibatches
    def _shuffled_batches(
        self, tensors: tuple[torch.Tensor, ...], size: int
    ) -> list[tuple[torch.Tensor, ...]]:
        """:meth:`Trainer._shuffled_batches` of every seed at once: tensors ``(S, n, ...)``,
        one permutation per seed from its own generator; minibatches ``(S, size, ...)``."""
        n = tensors[0].shape[1]
        size = min(size, n)
        starts = range(0, n - size + 1, size)
        m = starts[-1] + size
        perms = np.stack([t.np_rng.permutation(n)[:m] for t in self.trainers])
        rows = torch.arange(self.S).unsqueeze(1)
        idx = torch.from_numpy(perms)
        count = len(starts)
        shuffled = [
            t[rows, idx].reshape(self.S, count, size, *t.shape[2:]).transpose(0, 1).contiguous()
            for t in tensors
        ]
        return [tuple(t[j] for t in shuffled) for j in range(count)]

    def _clip(self, params: dict[str, nn.Parameter]) -> None:
        if self.cfg.max_grad_norm is not None:
            clip_grad_norm_per_seed(list(params.values()), self.cfg.max_grad_norm)

    # ------------------------------------------------------------------ policy update
    def policy_loss(
        self, obs, actions, adv, old_mean, old_cov, old_logp
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Gaussian | None]:
        """:meth:`Trainer.policy_loss` per seed: the ``(S,)`` losses, ``(S,)`` statistics and
        the projection (or None); ``trust_region_loss`` / ``ppo_clip_loss`` with each mean
        taken over the seed's own minibatch."""
        cfg, diag = self.cfg, self.diag
        if cfg.advantage_norm == "minibatch":
            adv = _normalize(adv)
        mean, cov = stacked_policy(self.trainers[0].policy, self.pi, obs)
        if self.layer is None:
            logp = gaussian_log_prob(actions, mean, cov, diag)
            ratio = torch.exp(logp - old_logp)
            clipped = torch.clamp(ratio, 1 - cfg.clip_ratio, 1 + cfg.clip_ratio)
            surrogate = torch.minimum(ratio * adv, clipped * adv).mean(-1)
            loss = -surrogate
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * _per_seed_mean(gaussian_entropy(cov, diag))
            clip_frac = ((ratio - 1).abs() > cfg.clip_ratio).float().mean(-1)
            return loss, {"surrogate": surrogate.detach(), "clip_frac": clip_frac}, None
        proj = self.layer(mean, cov, old_mean, old_cov, step=self.iteration)
        logp = gaussian_log_prob(actions, proj.mean, proj.cov, diag)
        ratio = torch.exp(logp - old_logp)
        surrogate = (ratio * adv).mean(-1)
        target_mean, target_cov = proj.mean.detach(), proj.cov.detach()
        if cfg.contextual_cov:
            per_state = self.layer.divergence(target_mean, target_cov, mean, cov).total
        else:  # TrustRegionLayer.penalty(proj, mean, None): the mean part alone
            per_state = self.layer._mean_part(target_mean, mean, target_cov)
        penalty = per_state.mean(-1)
        loss = -surrogate + cfg.alpha * penalty
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * _per_seed_mean(gaussian_entropy(proj.cov, diag))
        return loss, {"surrogate": surrogate.detach(), "penalty": penalty.detach()}, proj

    def update_policy(self, obs, actions, adv):
        """:meth:`Trainer.update_policy` of all seeds: ``obs (S, n, o)``, ``actions (S, n, d)``,
        ``adv (S, n)``. Returns the old distribution and per-seed ``(S,)`` mean statistics."""
        cfg = self.cfg
        with torch.no_grad():
            old_mean, old_cov = stacked_policy(self.trainers[0].policy, self.pi, obs, False)
            old_logp = gaussian_log_prob(actions, old_mean, old_cov, self.diag)
        contextual_old = old_cov.shape[1] != 1
        data = (obs, actions, adv, old_mean, old_logp) + ((old_cov,) if contextual_old else ())
        stats: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
        last_proj: Gaussian | None = None
        for _ in range(cfg.epochs):
            for mb in self._shuffled_batches(data, cfg.minibatch_size):
                loss, info, last_proj = self.policy_loss(
                    *mb[:4], mb[5] if contextual_old else old_cov, mb[4]
                )
                self.pi_opt.zero_grad(set_to_none=True)
                loss.sum().backward()  # seed k's parameters get seed k's gradient alone
                self._clip(self.pi)
                self.pi_opt.step()
                for k, v in info.items():
                    stats[k].append(v)
        if self.layer is not None:
            self._finish_projection_update(obs, old_mean, old_cov, last_proj)
        # one float per (minibatch, seed), averaged per seed like Trainer's np.mean of floats
        means = {
            k: np.ascontiguousarray(torch.stack(v).double().numpy().T).mean(1)
            for k, v in stats.items()
        }
        return old_mean, old_cov, means

    def _finish_projection_update(self, obs, old_mean, old_cov, last_proj) -> None:
        """:meth:`Trainer._finish_projection_update`: regression steps on the stack, then each
        seed's non-contextual covariance set to its projection by the seed's own trainer."""
        cfg, layer = self.cfg, self.layer
        if cfg.regression_steps > 0:
            template = self.trainers[0].policy
            with torch.no_grad():
                mean, cov = stacked_policy(template, self.pi, obs, False)
                target = layer(mean, cov, old_mean, old_cov, step=self.iteration)
            per_state = target.cov.shape[1] != 1
            data = (obs, target.mean) + ((target.cov,) if per_state else ())
            for _ in range(cfg.regression_steps):
                for mb in self._shuffled_batches(data, cfg.minibatch_size):
                    mean, cov = stacked_policy(template, self.pi, mb[0])
                    goal_cov = (mb[2] if per_state else target.cov).detach()
                    if cfg.contextual_cov:
                        loss = layer.divergence(mb[1].detach(), goal_cov, mean, cov).total
                    else:
                        loss = layer._mean_part(mb[1].detach(), mean, goal_cov)
                    self.reg_opt.zero_grad(set_to_none=True)
                    loss.mean(-1).sum().backward()
                    self._clip(self.pi)
                    self.reg_opt.step()
        if cfg.contextual_cov:
            return
        event = 1 if self.diag else 2
        with torch.no_grad():
            for k, tr in enumerate(self.trainers):
                if cfg.cov_source == "last_minibatch" and last_proj is not None:
                    proj_cov = last_proj.cov[k].detach()
                else:
                    mean, cov = tr.policy(obs[k])
                    proj_cov = layer(mean, cov, old_mean[k], old_cov[k], step=tr.iteration).cov
                tr.policy.set_cov(proj_cov.reshape(-1, *proj_cov.shape[-event:]).mean(0))

    # ------------------------------------------------------------------ value update
    def update_value(self, obs, returns, old_values) -> np.ndarray:
        """:meth:`Trainer.update_value` of all seeds (``(S, n)`` inputs); ``(S,)`` mean losses."""
        cfg = self.cfg
        losses = []
        size = cfg.vf_minibatch_size or cfg.minibatch_size
        template = self.trainers[0].vf
        for _ in range(cfg.vf_epochs):
            for mb_obs, mb_ret, mb_old in self._shuffled_batches((obs, returns, old_values), size):
                loss = _value_loss(
                    stacked_value(template, self.v, mb_obs), mb_ret, mb_old, cfg.vf_clip
                )
                self.vf_opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                self._clip(self.v)
                self.vf_opt.step()
                losses.append(loss.detach())
        return np.ascontiguousarray(torch.stack(losses).double().numpy().T).mean(1)

    # ------------------------------------------------------------------ one iteration
    def iterate(self) -> list[dict[str, float]]:
        """One iteration of Algorithm 2 for every seed; returns one log row per seed, each
        what :meth:`Trainer.iterate` of that seed returns. The ``time_*`` columns are the whole
        stack's time of each phase (rollout and evaluation: the sum over seeds)."""
        cfg, trs = self.cfg, self.trainers
        if cfg.lr_decay:
            frac = trs[0]._lr_frac()
            for opt, lr in ((self.pi_opt, cfg.lr), (self.vf_opt, cfg.vf_lr)):
                for g in opt.param_groups:
                    g["lr"] = lr * frac
        t0 = time.perf_counter()
        batches = [tr.collect() for tr in trs]
        t1 = time.perf_counter()
        obs, actions, advs, rets, vals = [], [], [], [], []
        for tr, batch in zip(trs, batches, strict=True):
            adv, ret, values = tr.advantages(batch)
            flat_adv = adv.reshape(-1)
            if cfg.advantage_norm == "batch":
                flat_adv = normalize_advantages(flat_adv)
            n = batch.size
            obs.append(torch.from_numpy(batch.obs.reshape(n, -1)))
            actions.append(torch.from_numpy(batch.actions.reshape(n, -1)))
            advs.append(torch.from_numpy(flat_adv).to(self.dtype))
            rets.append(ret)
            vals.append(values)
        obs_s, act_s, adv_s = torch.stack(obs), torch.stack(actions), torch.stack(advs)
        t2 = time.perf_counter()
        old_mean, old_cov, pstats = self.update_policy(obs_s, act_s, adv_s)
        t3 = time.perf_counter()
        ret_s = torch.stack([torch.from_numpy(r.reshape(-1)).to(self.dtype) for r in rets])
        old_v = torch.stack([torch.from_numpy(v.reshape(-1)) for v in vals])
        vloss = self.update_value(obs_s, ret_s, old_v)
        t4 = time.perf_counter()
        diags, v_new = [], []
        for k, tr in enumerate(trs):
            diags.append(tr.diagnostics(obs[k], old_mean[k], old_cov[k]))
            with torch.no_grad():
                v_new.append(tr.vf(obs[k]).numpy())
        t5 = time.perf_counter()
        evals = [tr.end_iteration() for tr in trs]
        t6 = time.perf_counter()
        lr = self.pi_opt.param_groups[0]["lr"]
        rows = []
        for k, tr in enumerate(trs):
            seed_stats = {name: float(pstats[name][k]) for name in ("penalty", "clip_frac")
                          if name in pstats}  # fmt: skip
            rows.append(
                tr.log_row(
                    eval_return=evals[k],
                    diag=diags[k],
                    value_loss=float(vloss[k]),
                    v_new=v_new[k],
                    returns=rets[k],
                    pstats=seed_stats,
                    lr=lr,
                    times=(t0, t1, t2, t3, t4, t5, t6),
                )
            )
        return rows

    # ------------------------------------------------------------------ checkpointing
    def _sync_optimizers_to_seeds(self) -> None:
        """Write each seed's slice of the stacked Adam states (and the learning rates) into the
        seed's own optimizers, which then hold what a single run's optimizers hold."""
        for stacked, params, per_seed in self._opt_pairs:
            for k, opt in enumerate(per_seed):
                for g in opt.param_groups:
                    g["lr"] = stacked.param_groups[0]["lr"]
                seed_params = opt.param_groups[0]["params"]
                for sp, p in zip(params.values(), seed_params, strict=True):
                    st = stacked.state.get(sp)
                    if not st:
                        opt.state.pop(p, None)
                        continue
                    opt.state[p] = {
                        "step": st["step"].clone(),
                        "exp_avg": st["exp_avg"][k].clone(),
                        "exp_avg_sq": st["exp_avg_sq"][k].clone(),
                    }

    def _sync_optimizers_from_seeds(self) -> None:
        """Stack the seeds' own optimizer states (after loading checkpoints) into ours."""
        for stacked, params, per_seed in self._opt_pairs:
            stacked.param_groups[0]["lr"] = per_seed[0].param_groups[0]["lr"]
            lists = [opt.param_groups[0]["params"] for opt in per_seed]
            new: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
            for j, sp in enumerate(params.values()):
                states = [opt.state.get(ps[j]) for opt, ps in zip(per_seed, lists, strict=True)]
                if not all(states):
                    if any(states) or new:
                        raise ValueError("seeds' optimizer states differ in which are empty")
                    continue
                steps = {float(s["step"]) for s in states}
                if len(steps) != 1:
                    raise ValueError(f"seeds' Adam step counts differ: {sorted(steps)}")
                new[sp] = {
                    "step": states[0]["step"].clone(),
                    "exp_avg": torch.stack([s["exp_avg"] for s in states]),
                    "exp_avg_sq": torch.stack([s["exp_avg_sq"] for s in states]),
                }
            if new and len(new) != len(params):
                raise ValueError("seeds' optimizer states cover only some parameters")
            stacked.load_state(new)

    def state_dicts(self) -> list[dict[str, Any]]:
        """One :meth:`Trainer.state_dict` per seed, as a single run of that seed saves it."""
        self._sync_optimizers_to_seeds()
        out = []
        for k, tr in enumerate(self.trainers):
            state = tr.state_dict()
            for key in ("policy", "vf"):  # views of the stack: save their own storage
                state[key] = {n: v.clone() for n, v in state[key].items()}
            state["torch_global"] = self._torch_rng[k].clone()
            out.append(state)
        return out

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        """Restore from :meth:`state_dicts` (or single runs' checkpoints of the same seeds and
        iteration)."""
        if len(states) != self.S:
            raise ValueError(f"expected {self.S} states, got {len(states)}")
        its = {int(s["iteration"]) for s in states}
        if len(its) != 1:
            raise ValueError(f"the seeds' checkpoints are at different iterations: {sorted(its)}")
        for k, (tr, state) in enumerate(zip(self.trainers, states, strict=True)):
            tr.load_state_dict(state)  # parameters copied in place, into the stack
            self._torch_rng[k] = state["torch_global"].clone()
        self._sync_optimizers_from_seeds()

    def agent(self, k: int) -> dict[str, Any]:
        """What :func:`~trpl_math.rl.run.save_agent` writes for seed ``k``."""
        tr = self.trainers[k]
        return {
            "config": tr.cfg.to_dict(),
            "policy": {n: v.clone() for n, v in tr.policy.state_dict().items()},
            "obs_norm": tr.obs_norm.state_dict(),
            "iteration": tr.iteration,
            "global_step": tr.global_step,
        }

    def close(self) -> None:
        """Close every seed's environments."""
        for tr in self.trainers:
            tr.close()


# ---------------------------------------------------------------------------------- on disk
def seed_configs(cfg: TrainConfig, seeds: Sequence[int]) -> list[TrainConfig]:
    """``cfg`` with each of ``seeds``."""
    return [dataclasses.replace(cfg, seed=int(s)) for s in seeds]


def seed_folder(out_dir: str | Path, seed: int) -> Path:
    """``out_dir/seed_<seed>``: the run folder of one seed."""
    return Path(out_dir) / f"seed_{seed}"


def _check_same_settings(
    cfg: TrainConfig,
    folders: Sequence[Path],
    states: Sequence[dict[str, Any] | None],
    compare: list[str] | None,
) -> None:
    """Refuse to resume seeds whose saved settings differ from the requested ones (the fields
    of ``compare``, default all; the seed is each folder's own)."""
    from trpl_math.rl.run import RunError, config_differences

    requested = cfg.to_dict()
    keys = [k for k in (compare if compare is not None else list(requested)) if k != "seed"]
    for f, state in zip(folders, states, strict=True):
        if state is None:
            continue
        saved = config_from_dict(state["config"]).to_dict()  # today's names, defaults filled
        diffs = config_differences(saved, requested, keys)
        if diffs:
            raise RunError(
                f"cannot resume {f}: the requested settings differ from the saved run's:\n  "
                + "\n  ".join(diffs)
            )


def train_seeds(
    cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    compare: list[str] | None = None,
    progress: bool = True,
    max_iterations: int | None = None,
    deadline: float | None = None,
    tensorboard: bool = True,
    keep_checkpoints: bool = False,
) -> list[Path]:
    """Train ``cfg`` for every seed in one process into ``out_dir/seed_<k>``; returns the folders.

    A seed folder that already holds a run is refused unless ``resume`` or ``overwrite`` (which
    deletes its run files first), as for a single run.

    Each folder is what :func:`trpl_math.rl.run.train` writes for that seed (config.yaml,
    progress.csv, tb/, checkpoints/latest.pt, agent.pt at the end), so ``trpl table``,
    ``plot``, ``diagnostics`` and ``evaluate`` read them unchanged, and a single-seed
    ``trpl train --resume`` can continue one of them. The arguments are those of
    :func:`~trpl_math.rl.run.train`; as there, every stop (the end, ``max_iterations``,
    ``deadline``, Ctrl-C, SIGTERM) leaves each folder a checkpoint of its last completed
    iteration and that iteration's ``agent.pt``. With ``resume`` every seed continues from its own
    checkpoint; the fields of ``compare`` (default: all but ``seed``) must equal every saved
    run's, else :class:`~trpl_math.rl.run.RunError` lists the differences; seeds whose
    checkpoints lag behind the others (a run killed between writing two seeds' checkpoints)
    are first brought level, stacked among themselves, which changes nothing since a seed's
    run does not depend on its neighbours.

    Example:
        >>> train_seeds(cfg, [0, 1, 2, 3], "runs/Hopper-v5/kl")  # doctest: +SKIP
    """
    from trpl_math.rl.run import folder_lock

    seeds = list(seeds)
    with contextlib.ExitStack() as stack:
        for s in seeds:  # another process training one of these folders is refused
            stack.enter_context(folder_lock(seed_folder(out_dir, s)))
        return _train_seeds_unlocked(
            cfg,
            seeds,
            out_dir,
            resume=resume,
            overwrite=overwrite,
            compare=compare,
            progress=progress,
            max_iterations=max_iterations,
            deadline=deadline,
            tensorboard=tensorboard,
            keep_checkpoints=keep_checkpoints,
        )


def _train_seeds_unlocked(
    cfg: TrainConfig,
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    compare: list[str] | None = None,
    progress: bool = True,
    max_iterations: int | None = None,
    deadline: float | None = None,
    tensorboard: bool = True,
    keep_checkpoints: bool = False,
) -> list[Path]:
    """:func:`train_seeds` without the folder locks."""
    from trpl_math.rl.run import (
        CKPT_NAME,
        CsvLogger,
        RunError,
        _atomic_save,
        _clear_run,
        _existing_run_files,
        _stop_signals,
        _tb_scalars,
        read_state,
    )

    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    if resume and overwrite:
        raise RunError("resume and overwrite exclude each other")
    folders = [seed_folder(out_dir, s) for s in seeds]
    for f in folders:  # the single run's folder rules, for every seed's folder
        existing = _existing_run_files(f) if f.is_dir() else []
        if existing and not (resume or overwrite):
            raise RunError(
                f"{f} already holds a run ({', '.join(existing)}); pass --resume to continue it "
                "or --overwrite to delete it and start over"
            )
        if overwrite and existing:
            _clear_run(f)
    ckpts = [f / "checkpoints" / CKPT_NAME for f in folders]
    states: list[dict[str, Any] | None] = [None] * len(seeds)
    if resume:
        states = [read_state(c) if c.exists() else None for c in ckpts]
        _check_same_settings(cfg, folders, states, compare)
        its = [int(s["iteration"]) if s is not None else 0 for s in states]
        if len(set(its)) > 1:  # bring the lagging seeds level first
            lag = [i for i, it in enumerate(its) if it == min(its)]
            level = min(it for it in its if it > min(its))
            lag_cfg = config_from_dict(states[lag[0]]["config"]) if states[lag[0]] else cfg
            train_seeds(
                lag_cfg,
                [seeds[i] for i in lag],
                out_dir,
                resume=True,
                progress=progress,
                max_iterations=level,
                deadline=deadline,
                tensorboard=tensorboard,
                keep_checkpoints=keep_checkpoints,
            )
            if deadline is not None and time.time() >= deadline:
                return folders  # the deadline came while the lagging seeds were catching up
            return train_seeds(
                cfg,
                seeds,
                out_dir,
                resume=True,
                compare=compare,
                progress=progress,
                max_iterations=max_iterations,
                deadline=deadline,
                tensorboard=tensorboard,
                keep_checkpoints=keep_checkpoints,
            )
        if any(s is None for s in states) and not all(s is None for s in states):
            raise AssertionError("unreachable: mixed checkpoints have different iterations")
        if states[0] is None:
            print(f"no checkpoints in {out_dir}/seed_*/checkpoints, starting from scratch")
        else:
            cfgs = [config_from_dict(s["config"]) for s in states]  # the saved configs win
            cfg = dataclasses.replace(cfgs[0], seed=cfg.seed)
    cfgs = seed_configs(cfg, seeds)
    trainer = MultiSeedTrainer(cfgs)
    if states[0] is not None:
        trainer.load_state_dicts(states)  # type: ignore[arg-type]
    cfg = trainer.cfg
    start = trainer.iteration
    loggers, writers = [], []
    for c, f in zip(cfgs, folders, strict=True):
        (f / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(c, f / "config.yaml")
        logger = CsvLogger(f / "progress.csv", keep_until=start if resume else None)
        loggers.append(logger)
        # Rewrite the events from the kept CSV rows, as a single run does: every iteration up
        # to and including the checkpointed one exactly once.
        shutil.rmtree(f / "tb", ignore_errors=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(f / "tb"))
            for row in logger.kept:
                _tb_scalars(writer, row, int(float(row["global_step"])))
            writers.append(writer)
    total_iters = cfg.num_iterations
    stop = total_iters if max_iterations is None else min(total_iters, max_iterations)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total_iters * cfg.rollout_steps * len(seeds),
            initial=start * cfg.rollout_steps * len(seeds),
            unit="step",
            dynamic_ncols=True,
            desc=f"{cfg.method} {cfg.env_id} seeds {','.join(map(str, seeds))}",
        )
    saved_iteration = start

    def checkpoint() -> None:
        nonlocal saved_iteration
        for f, state in zip(folders, trainer.state_dicts(), strict=True):
            _atomic_save(state, f / "checkpoints" / CKPT_NAME)
            if keep_checkpoints:
                _atomic_save(state, f / "checkpoints" / f"iter_{trainer.iteration:06d}.pt")
        saved_iteration = trainer.iteration

    with _stop_signals() as signals:
        agents = [trainer.agent(k) for k in range(len(seeds))]
        try:
            while trainer.iteration < stop:
                if deadline is not None and time.time() >= deadline:
                    break
                t0 = time.perf_counter()
                with signals.interruptible():
                    rows = trainer.iterate()
                elapsed = time.perf_counter() - t0
                agents = [trainer.agent(k) for k in range(len(seeds))]
                for k, row in enumerate(rows):
                    row["time_iteration"] = elapsed
                    row["steps_per_s"] = cfg.rollout_steps / elapsed
                    loggers[k].write(row)
                    if writers:
                        _tb_scalars(writers[k], row, trainer.trainers[k].global_step)
                if bar is not None:
                    bar.update(cfg.rollout_steps * len(seeds))
                    bar.set_postfix(
                        sps=f"{len(seeds) * cfg.rollout_steps / elapsed:.0f}",
                        ret=f"{np.nanmean([r['train_return'] for r in rows]):.0f}",
                        kl=f"{np.mean([r['kl_mean'] for r in rows]):.4f}",
                        refresh=False,
                    )
                if trainer.iteration >= stop or trainer.iteration % cfg.checkpoint_every == 0:
                    checkpoint()
            if trainer.iteration != saved_iteration:  # stopped by the deadline
                checkpoint()
        finally:
            # the last completed iteration's agents, at every stop (also Ctrl-C / SIGTERM)
            for f, agent in zip(folders, agents, strict=True):
                _atomic_save(agent, f / "agent.pt")
            for lg in loggers:
                lg.close()
            for w in writers:
                w.close()
            if bar is not None:
                bar.close()
            trainer.close()
    return folders
