"""The training losses as pure functions of named tensors (docs/conformance.md).

Each function takes one minibatch and returns ``(loss, info)``; the trainer only wires them
to the networks. Shapes: ``B`` states, ``d`` action dimensions; log-densities and advantages
``(B,)``.

* :func:`trust_region_loss`: Eq. 12 of Otto et al. (ICLR 2021), the objective of the
  projection methods: the importance ratio of the *projected* policy over the old one, minus
  ``alpha`` times the regression penalty of the network's output against the *detached*
  projection.
* :func:`ppo_clip_loss`: PPO's clipped surrogate (Schulman et al., 2017, Eq. 7).
* :func:`value_loss`: the squared error of the value network, optionally clipped around the
  old values (the PPO code-level setting).
* :func:`normalize_advantages`: ``(A - mean A) / (std A + 1e-8)``, over a batch or a minibatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from trpl_math.rl.networks import gaussian_entropy, gaussian_log_prob
from trpl_math.types import Gaussian

#: Added to the standard deviation when normalising advantages.
ADV_EPS = 1e-8

PenaltyFn = Callable[[Gaussian, torch.Tensor, torch.Tensor | None], torch.Tensor]


class LossInfo(NamedTuple):
    """Scalars of one minibatch's loss, for the log (NaN where a method has none)."""

    surrogate: float
    penalty: float = float("nan")
    clip_frac: float = float("nan")


def normalize_advantages(adv: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``(adv - mean(adv)) / (std(adv) + 1e-8)`` with the population std (``ddof = 0``).

    Args:
        adv: ``(n,)`` advantages, a NumPy array (the whole batch, in float64) or a tensor (one
            minibatch).

    Returns:
        Standardised advantages, same type, shape and dtype.
    """
    if isinstance(adv, torch.Tensor):
        return (adv - adv.mean()) / (adv.std(correction=0) + ADV_EPS)
    return (adv - adv.mean()) / (adv.std() + ADV_EPS)


def _check_minibatch(actions: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor) -> None:
    if actions.ndim != 2:
        raise ValueError(f"actions must be (B, d), got shape {tuple(actions.shape)}")
    for name, arr in (("old_logp", old_logp), ("adv", adv)):
        if tuple(arr.shape) != (actions.shape[0],):
            raise ValueError(
                f"{name} must be ({actions.shape[0]},) like actions' batch, got {tuple(arr.shape)}"
            )


def trust_region_loss(
    proj: Gaussian,
    net: Gaussian,
    actions: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    *,
    penalty_fn: PenaltyFn,
    alpha: float,
    diag: bool,
    contextual_cov: bool,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, LossInfo]:
    """Negative Eq. 12 of one minibatch (to be minimised)::

        - mean_s[ pi~(a|s) / pi_old(a|s) A(s, a) ] + alpha mean_s d(sg[pi~(.|s)], pi_theta(.|s))

    The ratio is taken from the projected policy ``proj``, which is differentiable in the
    network's output; ``penalty_fn`` (the layer's :meth:`TrustRegionLayer.penalty`) stops the
    gradient at the projection, so the penalty pulls the network's own output ``net`` towards
    it. With a non-contextual covariance (``contextual_cov=False``) the covariance is set to its
    projection after the epochs, so the penalty is its mean part alone: ``penalty_fn`` gets
    ``None`` for the covariance.

    Args:
        proj: the projected Gaussian, ``mean (B, d)``, ``cov (B|1, d)`` or ``(B|1, d, d)``.
        net: the network's unprojected output, same shapes.
        actions: ``(B, d)`` the sampled actions; old_logp: ``(B,)`` ``log pi_old(a|s)``;
            adv: ``(B,)`` advantages (already normalised if the config says so).
        penalty_fn: ``(target, mean, cov or None) -> scalar``, detaching ``target``.
        alpha: the penalty weight. diag: covariances are variances.
        entropy_coef: weight of an entropy bonus on the projected policy (0 in the paper).

    Returns:
        ``(loss, LossInfo(surrogate, penalty))``.
    """
    _check_minibatch(actions, old_logp, adv)
    logp = gaussian_log_prob(actions, proj.mean, proj.cov, diag)
    ratio = torch.exp(logp - old_logp)
    surrogate = (ratio * adv).mean()
    penalty = penalty_fn(proj, net.mean, net.cov if contextual_cov else None)
    loss = -surrogate + alpha * penalty
    if entropy_coef:
        loss = loss - entropy_coef * gaussian_entropy(proj.cov, diag).mean()
    return loss, LossInfo(float(surrogate.detach()), penalty=float(penalty.detach()))


def ppo_clip_loss(
    net: Gaussian,
    actions: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    *,
    clip_ratio: float,
    diag: bool,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, LossInfo]:
    """Negative clipped surrogate of one minibatch (PPO, Eq. 7 of Schulman et al.)::

        - mean_s min( r A, clip(r, 1 - c, 1 + c) A ),   r = pi_theta(a|s) / pi_old(a|s)

    Args:
        net: the network's Gaussian, ``mean (B, d)``, ``cov (B|1, d[, d])``.
        actions, old_logp, adv: as in :func:`trust_region_loss`.
        clip_ratio: ``c``. diag: covariances are variances. entropy_coef: entropy bonus weight.

    Returns:
        ``(loss, LossInfo(surrogate, clip_frac))``, ``clip_frac`` the share of states with
        ``|r - 1| > c``.
    """
    _check_minibatch(actions, old_logp, adv)
    logp = gaussian_log_prob(actions, net.mean, net.cov, diag)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - clip_ratio, 1 + clip_ratio)
    surrogate = torch.minimum(ratio * adv, clipped * adv).mean()
    loss = -surrogate
    if entropy_coef:
        loss = loss - entropy_coef * gaussian_entropy(net.cov, diag).mean()
    clip_frac = float(((ratio - 1).abs() > clip_ratio).float().mean())
    return loss, LossInfo(float(surrogate.detach()), clip_frac=clip_frac)


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    *,
    clip: float | None,
) -> torch.Tensor:
    """``mean (V - R)^2``; with ``clip``, ``mean max((V - R)^2, (V_c - R)^2)`` where
    ``V_c = V_old + clip(V - V_old, -clip, clip)``. All arguments ``(B,)``."""
    if values.shape != returns.shape or values.shape != old_values.shape:
        raise ValueError(
            f"values {tuple(values.shape)}, returns {tuple(returns.shape)} and old_values "
            f"{tuple(old_values.shape)} must have one shape"
        )
    err = (values - returns) ** 2
    if clip is not None:
        v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (v_clip - returns) ** 2)
    return err.mean()
