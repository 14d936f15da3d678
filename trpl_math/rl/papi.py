"""PAPI: the projection of Akrour et al. (ICML 2019) run after PPO's policy epochs.

"Projections for Approximate Policy Iteration Algorithms" (Akrour, Pajarinen, Peters,
Neumann, ICML 2019), Alg. 2, as the deep-RL baseline of Otto et al. (ICLR 2021) ran it: PPO's
clipped objective trains the network for its epochs, then :meth:`Papi.after_epochs` moves the
policy back inside the joint bound ``E_s[KL(pi(.|s) || pi_old(.|s))] <= eps`` (the expectation
over the batch's states). The covariance must be non-contextual (diagonal or full).

One call, with ``H_old`` the old policy's entropy and ``d`` the action dimension:

1. **History.** The current policy joins the history (newest first, so it is candidate 0).
   The candidates are the history followed by the old policy itself; the first candidate whose
   expected KL to the old policy is at most ``eps`` is the *intermediate* policy
   (:func:`select_intermediate`). ``skipped`` is its index. If no policy of the history fits,
   the policy *reverts* to the last candidate, the old policy (every parameter, the body
   included, restored bitwise; KL 0), the current policy leaves the history and the call ends.
2. **Learning rate.** ``lr_scale *= lr_decay_factor`` whenever ``skipped >= skip_threshold`` or
   nothing fitted; the trainer multiplies its learning rates by :attr:`Papi.lr_scale`.
3. **Entropy bound.** Only once ``H_old <= H_init / 2`` (:func:`entropy_bound`):
   ``beta = H_old - eps``; a covariance whose entropy ``H`` is below ``beta`` gets its standard
   deviation multiplied by ``exp((beta - H) / d)`` (:func:`entropy_scale`), so that ``H = beta``.
4. **Rounds** (``rounds`` times, on the policy as the previous round left it): the entropy
   bound, then, if the expected KL is above ``eps``,

   - covariance projection ``Sigma = (1 - eta) Sigma_old + eta Sigma`` (:func:`interpolate_cov`)
     with ``eta = (eps - min(m, m_int)) / KL`` clipped to ``[0, 1]`` (:func:`cov_weight`), where
     ``m`` and ``m_int`` are the expected mean parts of the policy and of the intermediate and
     ``KL = m + c`` is the policy's whole expected KL (mean part plus covariance part, as in the
     authors' release);
   - mean projection: the mean head's weights and bias become
     ``(1 - eta_mean) head_int + eta_mean head``, with ``eta_mean`` the larger root, clipped to
     ``[0, 1]``, of ``a eta^2 + 2 b eta + m_int = max(eps - c', 0)`` (:func:`mean_quadratic`,
     :func:`mean_weight`), ``c'`` the covariance part after the covariance projection (aimed a
     hair, :data:`TARGET_MARGIN`, inside the bound against float32 rounding).

Choices where the published facts leave one open (each has a test in tests/rl/test_papi.py):

- **Shared body.** The history stores the mean head (weight, bias) and the covariance
  parameter of each policy that joined it; every candidate is evaluated with the *current*
  network's body, and only the mean head is interpolated. The mean is then linear in the
  head's parameters, ``mu(eta) = (1 - eta) mu_int(s) + eta mu(s)`` exactly, so the quadratic is
  exact and one round already lands on the bound (up to rounding): rounds 2..20 only absorb the
  float error of writing the parameters back. This is the paper's Alg. 2 for linear-Gaussian
  policies with the current body as the features.
- **The old policy ends the candidate list**, which makes the bound a guarantee: either an
  intermediate within ``eps`` is found, and then the covariance projection leaves a covariance
  part of at most ``eps - min(m, m_int)`` (the covariance part is convex in ``Sigma``) and the
  mean's quadratic has a root in ``[0, 1]``, or the policy reverts to the old one. The
  authors' release pops the policy it has just pushed and keeps it unprojected, which can break
  the bound; we do not copy that.
- ``eta`` and ``eta_mean`` are clipped to ``[0, 1]``; the release does not clip. With an
  intermediate within the bound ``eta`` lies in ``[0, 1)`` anyway; the quadratic's larger root
  exceeds 1 where the current mean part is already below the target, and the release would then
  extrapolate beyond the current mean.
- **History length** ``history`` (default 10, the current policy included); the release keeps
  every policy (in the toy run of the tests the intermediate was never more than one back).
- The entropy bound is applied at the start of every round, so also when the current policy
  fits (as in the release, whose rounds run whenever an intermediate was found).
- The entropy test is ``H_old <= 0.5 * H_init`` (the release's ``H_old / H_init > 0.5``, which
  agrees for a positive initial entropy); ``H_old`` is the old policy's entropy.
- The covariance part of a non-contextual covariance is the same in every state; the mean parts
  are means over the batch.

The trainer calls :meth:`Papi.before_epochs` before PPO's epochs of an iteration (it keeps a
copy of the old policy to revert to) and :meth:`Papi.after_epochs` after them, and multiplies
the learning rates of the policy and value optimizers by :attr:`Papi.lr_scale`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

import trpl_math as tm
from trpl_math.rl.networks import GaussianPolicy, gaussian_entropy

TARGET_MARGIN = 1e-5
"""The mean projection aims at ``eps (1 - TARGET_MARGIN) - c'``: parameters written back in
float32 could otherwise leave the bound by rounding, and the next round, which then projects
again from a policy on the boundary, would pull the covariance much further towards the old."""

__all__ = [
    "TARGET_MARGIN",
    "Papi",
    "PapiSettings",
    "cov_weight",
    "entropy_bound",
    "entropy_scale",
    "interpolate_cov",
    "mean_quadratic",
    "mean_weight",
    "select_intermediate",
]


@dataclass
class PapiSettings:
    """Settings of :class:`Papi`.

    Attributes:
        eps: the joint bound on the expected KL to the old policy (0.015 in Otto et al.).
        rounds: covariance + mean projection rounds per call.
        history: policies kept in the history, the current one included (at least 1).
        lr_decay_factor: learning-rate factor when the intermediate lies far back or nothing fits.
        skip_threshold: skipped policies (the intermediate's index) that trigger the decay.
        entropy_bound: apply the entropy lower bound ``H_old - eps`` once
            ``H_old <= H_init / 2``.
    """

    eps: float = 0.015
    rounds: int = 20
    history: int = 10
    lr_decay_factor: float = 0.8
    skip_threshold: int = 4
    entropy_bound: bool = True

    def validate(self) -> PapiSettings:
        """Return ``self``; raise ValueError on a setting out of range."""
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.history < 1:
            raise ValueError(f"history must be at least 1, got {self.history}")
        if not 0 < self.lr_decay_factor <= 1:
            raise ValueError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
        if self.skip_threshold < 1:
            raise ValueError(f"skip_threshold must be at least 1, got {self.skip_threshold}")
        return self


# --- pure helpers ---------------------------------------------------------------------------


def select_intermediate(expected_kls: Sequence[float], eps: float) -> int | None:
    """Index of the first candidate (newest first) with expected KL ``<= eps``, else None.

    Example:
        >>> select_intermediate([0.05, 0.02, 0.01], 0.015)
        2
        >>> select_intermediate([0.05, 0.02], 0.015) is None
        True
    """
    for i, kl in enumerate(expected_kls):
        if kl <= eps:
            return i
    return None


def cov_weight(eps: float, mean_part: float, inter_mean_part: float, expected_kl: float) -> float:
    """``eta = (eps - min(m, m_int)) / KL`` clipped to ``[0, 1]`` (1 for ``KL <= 0``).

    Args:
        eps: the joint bound.
        mean_part: ``m``, expected mean part of the policy being projected.
        inter_mean_part: ``m_int``, expected mean part of the intermediate policy.
        expected_kl: ``KL = m + c``, the policy's whole expected KL to the old one.

    Example:
        >>> round(cov_weight(0.015, 0.02, 0.005, 0.05), 12)  # (0.015 - 0.005) / 0.05
        0.2
    """
    if expected_kl <= 0:
        return 1.0
    return min(max((eps - min(mean_part, inter_mean_part)) / expected_kl, 0.0), 1.0)


def interpolate_cov(cov: torch.Tensor, old_cov: torch.Tensor, eta: float) -> torch.Tensor:
    """``(1 - eta) old_cov + eta cov`` (variances ``(..., d)`` or matrices ``(..., d, d)``).

    Example:
        >>> interpolate_cov(torch.tensor([1.0, 4.0]), torch.tensor([2.0, 2.0]), 0.25)
        tensor([1.7500, 2.5000])
    """
    return (1.0 - eta) * old_cov + eta * cov


def _maha_old(x: torch.Tensor, y: torch.Tensor, old_cov: torch.Tensor, diag: bool) -> torch.Tensor:
    """``x^T Sigma_old^{-1} y`` per state, ``(B, d)`` -> ``(B,)`` by triangular solves."""
    if diag:
        return (x * y / old_cov).sum(-1)
    chol = torch.linalg.cholesky(old_cov).expand(*x.shape[:-1], *old_cov.shape[-2:])
    xs = torch.linalg.solve_triangular(chol, x.unsqueeze(-1), upper=False).squeeze(-1)
    ys = torch.linalg.solve_triangular(chol, y.unsqueeze(-1), upper=False).squeeze(-1)
    return (xs * ys).sum(-1)


def mean_quadratic(
    mean: torch.Tensor,
    inter_mean: torch.Tensor,
    old_mean: torch.Tensor,
    old_cov: torch.Tensor,
    *,
    diag: bool,
) -> tuple[float, float, float]:
    """Coefficients of the expected mean part along ``mu(eta) = mu_int + eta (mu - mu_int)``.

    ``E_s[1/2 (mu(eta) - mu_old)^T Sigma_old^{-1} (mu(eta) - mu_old)] = m_int + 2 b eta + a eta^2``
    with ``a = 1/2 E[(mu - mu_int)^T P (mu - mu_int)]``,
    ``b = 1/2 E[(mu - mu_int)^T P (mu_int - mu_old)]``, ``m_int`` the intermediate's expected mean
    part and ``P = Sigma_old^{-1}``.

    Args:
        mean, inter_mean, old_mean: ``(B, d)``.
        old_cov: ``(1, d)`` variances or ``(1, d, d)`` (broadcasts against the means).
        diag: the covariance is a vector of variances.

    Returns:
        ``(a, b, m_int)`` as Python floats.
    """
    step = mean - inter_mean
    off = inter_mean - old_mean
    a = 0.5 * _maha_old(step, step, old_cov, diag).mean()
    b = 0.5 * _maha_old(step, off, old_cov, diag).mean()
    m_int = 0.5 * _maha_old(off, off, old_cov, diag).mean()
    return float(a), float(b), float(m_int)


def mean_weight(a: float, b: float, m_int: float, target: float) -> float:
    """``eta_mean``: the larger root of ``a eta^2 + 2 b eta + m_int = target``, clipped to [0, 1].

    ``eta = (-b + sqrt(b^2 - a (m_int - target))) / a``. For ``a = 0`` the two means coincide
    and any weight gives the same policy: 1. A negative discriminant (the target lies below the
    quadratic's minimum, which an intermediate within the bound rules out) is read as 0.

    Example:
        >>> mean_weight(2.0, 1.0, 0.0, 1.5)  # 2 * 0.25 + 2 * 0.5 = 1.5
        0.5
    """
    if a <= 0.0:
        return 1.0
    disc = max(b * b - a * (m_int - target), 0.0)
    return min(max((-b + math.sqrt(disc)) / a, 0.0), 1.0)


def entropy_bound(entropy: float, initial_entropy: float, eps: float) -> float:
    """The entropy lower bound ``H - eps`` once ``H <= H_init / 2``, else ``-inf``.

    Example:
        >>> entropy_bound(1.0, 4.0, 0.015), entropy_bound(3.0, 4.0, 0.015)
        (0.985, -inf)
    """
    return entropy - eps if entropy <= 0.5 * initial_entropy else -math.inf


def entropy_scale(entropy: float, bound: float, dim: int) -> float:
    """Factor on the standard deviation, ``exp((beta - H) / d)`` if ``H < beta``, else 1.

    Scaling the standard deviation (the Cholesky factor) by ``f`` adds ``d log f`` to the
    entropy, so the scaled covariance has entropy ``beta`` exactly.

    Example:
        >>> round(entropy_scale(1.0, 2.5, 3), 12) == round(math.exp(0.5), 12)
        True
    """
    return math.exp((bound - entropy) / dim) if entropy < bound else 1.0


# --- the stateful part ----------------------------------------------------------------------


class Papi:
    """PAPI after PPO's epochs, with its history, learning-rate scale and entropy bound.

    Args:
        settings: :class:`PapiSettings`.
        initial_entropy: the policy's entropy at initialisation (for the entropy bound's test).

    Attributes:
        lr_scale: product of the learning-rate decays so far; multiply the learning rates by it.

    Example (the trainer's hook, one iteration)::

        papi.before_epochs(policy)            # before PPO's epochs
        ...                                   # PPO's epochs on the batch
        stats = papi.after_epochs(policy, obs, old_mean, old_cov)
        for g in pi_opt.param_groups:         # next iteration's learning rate
            g["lr"] = cfg.lr * papi.lr_scale
    """

    def __init__(self, settings: PapiSettings, initial_entropy: float) -> None:
        self.settings = settings.validate()
        self.initial_entropy = float(initial_entropy)
        self.lr_scale = 1.0
        self.history: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._old: GaussianPolicy | None = None

    def before_epochs(self, policy: GaussianPolicy) -> None:
        """Keep a copy of the old policy (the one that collected the batch) to revert to."""
        if policy.contextual:
            raise ValueError("PAPI needs a non-contextual covariance")
        self._old = copy.deepcopy(policy)

    @torch.no_grad()
    def after_epochs(
        self,
        policy: GaussianPolicy,
        obs: torch.Tensor,
        old_mean: torch.Tensor,
        old_cov: torch.Tensor,
    ) -> dict[str, float]:
        """Project ``policy`` (in place) after PPO's epochs of one iteration.

        Args:
            policy: the network after the epochs (non-contextual covariance); its mean head and
                covariance parameter are overwritten, or every parameter on a revert.
            obs: ``(B, o)`` the batch's observations.
            old_mean: ``(B, d)`` the old policy's means on ``obs``.
            old_cov: ``(1, d)`` variances or ``(1, d, d)``, the old policy's covariance.

        Returns:
            ``skipped`` (the intermediate's index in the history, or the history's length if
            nothing fitted), ``fitted`` (1/0), ``reverted`` (1/0), ``kl_before`` (the current
            policy's expected KL), ``eta``/``eta_mean`` (the first round's weights; 1 where
            nothing moved), ``rounds_used`` (rounds that projected), ``kl_after``,
            ``mean_part_after``, ``cov_part_after``, ``entropy`` (after), ``entropy_bound``
            (``-inf`` when inactive), ``lr_scale``.

        Raises:
            RuntimeError: :meth:`before_epochs` was not called for this iteration.
            ValueError: a contextual covariance, or ``old_mean`` not the saved old policy's.
        """
        s = self.settings
        if policy.contextual:
            raise ValueError("PAPI needs a non-contextual covariance")
        if self._old is None:
            raise RuntimeError("call before_epochs(policy) before PPO's epochs")
        old = self._old
        self._old = None
        if not torch.allclose(old(obs)[0], old_mean, rtol=1e-4, atol=1e-5):
            raise ValueError("old_mean is not the output of the policy given to before_epochs")
        diag = policy.diag
        head = policy.mean_head
        self.history.insert(
            0,
            (head.weight.detach().clone(), head.bias.detach().clone(), policy.cov_param.clone()),
        )
        del self.history[s.history :]

        feats = policy.body(obs)
        kls = [self._expected_kl(policy, feats, h, old_mean, old_cov, diag) for h in self.history]
        index = select_intermediate([kl.total for kl in kls], s.eps)
        skipped = len(self.history) if index is None else index
        if index is None or skipped >= s.skip_threshold:
            self.lr_scale *= s.lr_decay_factor
        stats: dict[str, float] = {
            "skipped": float(skipped),
            "fitted": float(index is not None),
            "reverted": float(index is None),
            "kl_before": kls[0].total,
            "eta": 1.0,
            "eta_mean": 1.0,
            "rounds_used": 0.0,
        }
        old_entropy = float(gaussian_entropy(old_cov, diag).reshape(-1)[0])
        beta = entropy_bound(old_entropy, self.initial_entropy, s.eps)
        if not s.entropy_bound:
            beta = -math.inf
        if index is None:
            policy.load_state_dict(old.state_dict())
            del self.history[0]  # the policy that failed does not stay a candidate
        else:
            w_int, b_int, _ = self.history[index]
            inter_mean = feats @ w_int.T + b_int
            first = True
            for _ in range(s.rounds):
                eta, eta_mean = self._round(
                    policy, feats, inter_mean, w_int, b_int, old_mean, old_cov, beta
                )
                if eta is not None:
                    stats["rounds_used"] += 1.0
                    if first:
                        stats["eta"], stats["eta_mean"], first = eta, eta_mean, False
        mean, cov = policy(obs)
        parts = tm.kl_divergence(mean, cov, old_mean, old_cov, diag=diag)
        stats.update(
            {
                "kl_after": float(parts.total.mean()),
                "mean_part_after": float(parts.mean.mean()),
                "cov_part_after": float(parts.cov.mean()),
                "entropy": float(gaussian_entropy(cov, diag).reshape(-1)[0]),
                "entropy_bound": beta,
                "lr_scale": self.lr_scale,
            }
        )
        return stats

    @staticmethod
    def _expected_kl(
        policy: GaussianPolicy,
        feats: torch.Tensor,
        entry: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        old_mean: torch.Tensor,
        old_cov: torch.Tensor,
        diag: bool,
    ) -> _Parts:
        weight, bias, raw = entry
        mean = feats @ weight.T + bias
        cov = policy._cov_from_raw(raw.unsqueeze(0))
        parts = tm.kl_divergence(mean, cov, old_mean, old_cov, diag=diag)
        return _Parts(float(parts.mean.mean()), float(parts.cov.mean()))

    def _round(
        self,
        policy: GaussianPolicy,
        feats: torch.Tensor,
        inter_mean: torch.Tensor,
        w_int: torch.Tensor,
        b_int: torch.Tensor,
        old_mean: torch.Tensor,
        old_cov: torch.Tensor,
        beta: float,
    ) -> tuple[float | None, float | None]:
        """One round on ``policy`` in place; ``(eta, eta_mean)``, or Nones if within the bound."""
        eps, diag, d = self.settings.eps, policy.diag, policy.act_dim
        head = policy.mean_head
        cov = policy._cov_from_raw(policy.cov_param.unsqueeze(0))
        f = entropy_scale(float(gaussian_entropy(cov, diag).reshape(-1)[0]), beta, d)
        if f != 1.0:
            cov = cov * (f * f)
            policy.set_cov(cov[0])
            cov = policy._cov_from_raw(policy.cov_param.unsqueeze(0))
        mean = head(feats)
        parts = tm.kl_divergence(mean, cov, old_mean, old_cov, diag=diag)
        m, c = float(parts.mean.mean()), float(parts.cov.mean())
        if m + c <= eps:
            return None, None
        a, b, m_int = mean_quadratic(mean, inter_mean, old_mean, old_cov, diag=diag)
        eta = cov_weight(eps, m, m_int, m + c)
        policy.set_cov(interpolate_cov(cov, old_cov, eta)[0])
        cov = policy._cov_from_raw(policy.cov_param.unsqueeze(0))
        c_new = float(tm.kl_divergence(old_mean[:1], cov, old_mean[:1], old_cov, diag=diag).cov[0])
        eta_mean = mean_weight(a, b, m_int, max(eps * (1.0 - TARGET_MARGIN) - c_new, 0.0))
        head.weight.copy_((1.0 - eta_mean) * w_int + eta_mean * head.weight)
        head.bias.copy_((1.0 - eta_mean) * b_int + eta_mean * head.bias)
        return eta, eta_mean

    def state_dict(self) -> dict[str, Any]:
        """The history and the learning-rate scale (the old policy is taken every iteration)."""
        return {
            "initial_entropy": self.initial_entropy,
            "lr_scale": self.lr_scale,
            "history": [tuple(t.clone() for t in entry) for entry in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.initial_entropy = float(state["initial_entropy"])
        self.lr_scale = float(state["lr_scale"])
        self.history = [tuple(t.clone() for t in entry) for entry in state["history"]]
        self._old = None


@dataclass(frozen=True)
class _Parts:
    mean: float
    cov: float

    @property
    def total(self) -> float:
        return self.mean + self.cov
