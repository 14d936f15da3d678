"""``TrustRegionLayer``: the projections as a ``torch.nn.Module`` for training code."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

import trpl_math as tm
from trpl_math import _backend as B
from trpl_math._backend import no_validation
from trpl_math.divergences import maha_chol
from trpl_math.types import DivergenceParts, Gaussian

MEASURES = ("frob", "w2", "w2_exact", "kl", "kl_joint")


@dataclass
class EntropySchedule:
    """Entropy target ``β_i`` over training steps (Sec. 4.2; MATH.md "Entropy control").

    Attributes:
        kind: ``"exp"`` (``β = dκ + (H_0 - dκ) τ^{10 i/N}``) or ``"linear"``.
        target_per_dim: κ, the final entropy per action dimension.
        temperature: τ of the exponential schedule.
        total_steps: N, the number of steps (e.g. iterations) of training.
        equality: enforce ``H = β`` instead of ``H ≥ β``.
        initial_entropy: H_0; ``None`` sets it from the first call's mean entropy.

    Example:
        >>> sched = EntropySchedule(kind="linear", target_per_dim=-1.0, total_steps=100,
        ...                         initial_entropy=2.0)
        >>> sched.target(50, dim=2)  # halfway from H_0 = 2 to d·κ = -2
        0.0
    """

    kind: str = "exp"
    target_per_dim: float = 0.0
    temperature: float = 0.5
    total_steps: int = 1
    equality: bool = False
    initial_entropy: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("exp", "linear"):
            raise ValueError(f"kind must be 'exp' or 'linear', got {self.kind!r}")
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {self.total_steps!r}")

    def target(self, step: int, dim: int) -> float:
        """β at ``step`` (clamped to ``[0, total_steps]``); needs ``initial_entropy`` set."""
        if self.initial_entropy is None:
            raise ValueError("initial_entropy is not set yet (call the layer once first)")
        step = min(max(step, 0), self.total_steps)
        return tm.entropy_schedule(
            step,
            self.total_steps,
            self.initial_entropy,
            self.target_per_dim,
            dim,
            kind=self.kind,
            temperature=self.temperature,
        )


class TrustRegionLayer(torch.nn.Module):
    """Project a Gaussian policy's output onto a per-state trust region (Algorithm 1).

    Holds the measure, the bounds and the entropy schedule; ``forward`` projects, optionally
    followed by entropy control, ``penalty`` is the regression term of Eq. 12 (without α), and
    ``diagnostics`` reports the constraint parts, the KL between successive policies and the
    entropy. Works with diagonal (variance vectors, ``diag=True``) and full covariances (build
    them from a Cholesky parametrisation, e.g. ``L @ L.mT``), state-dependent or not (the old
    and new arguments broadcast).

    Args:
        measure: ``"frob"``, ``"w2"`` (Eq. 9), ``"w2_exact"`` (geodesic), ``"kl"`` (Eq. 6, 10-11)
            or ``"kl_joint"`` (Appendix B.5).
        eps_mean: bound on the mean part (unused by ``kl_joint``).
        eps_cov: bound on the covariance part (unused by ``kl_joint``).
        eps: joint KL bound for ``kl_joint`` (default ``eps_mean + eps_cov``).
        scaled: Wasserstein in the old covariance's metric (the paper's default).
        diag: covariances are variance vectors.
        entropy_schedule: entropy control after the projection, or ``None``. With ``kl_joint``
            the entropy bound enters the projection itself.
        validate: check inputs (turn off in hot loops once the code is known to be right).

    Example:
        >>> import torch
        >>> layer = TrustRegionLayer("kl", eps_mean=0.03, eps_cov=1e-3)
        >>> mean, var = torch.zeros(8, 2, requires_grad=True), torch.full((8, 2), 2.0)
        >>> proj = layer(mean, var, torch.ones(8, 2), torch.ones(8, 2))
        >>> loss = layer.penalty(proj, mean, var)
    """

    def __init__(
        self,
        measure: str,
        *,
        eps_mean: float,
        eps_cov: float,
        eps: float | None = None,
        scaled: bool = True,
        diag: bool = True,
        entropy_schedule: EntropySchedule | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
        for name, v in (("eps_mean", eps_mean), ("eps_cov", eps_cov)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        self.measure = measure
        self.eps_mean, self.eps_cov = float(eps_mean), float(eps_cov)
        self.eps = float(eps) if eps is not None else self.eps_mean + self.eps_cov
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.scaled, self.diag, self.validate = scaled, diag, validate
        self.entropy_schedule = entropy_schedule

    def extra_repr(self) -> str:
        bounds = (
            f"eps={self.eps}"
            if self.measure == "kl_joint"
            else f"eps_mean={self.eps_mean}, eps_cov={self.eps_cov}"
        )
        return f"{self.measure}, {bounds}, diag={self.diag}"

    def _ctx(self) -> Any:
        import contextlib

        return contextlib.nullcontext() if self.validate else no_validation()

    def entropy_target(self, cov: torch.Tensor, step: int | None) -> float | None:
        """β for this call (sets the schedule's H_0 on first use), or ``None``."""
        sched = self.entropy_schedule
        if sched is None:
            return None
        if sched.initial_entropy is None:
            with torch.no_grad():
                sched.initial_entropy = float(tm.entropy(cov.detach(), diag=self.diag).mean())
        return sched.target(0 if step is None else step, int(cov.shape[-1]))

    def forward(
        self,
        mean: torch.Tensor,
        cov: torch.Tensor,
        old_mean: torch.Tensor,
        old_cov: torch.Tensor,
        step: int | None = None,
    ) -> Gaussian:
        """Project ``N(mean, cov)`` onto the trust region around ``N(old_mean, old_cov)``.

        Shapes: ``mean (..., d)``, ``cov (..., d, d)`` or ``(..., d)`` if ``diag``; old
        arguments broadcast against them. ``step`` selects the entropy target.
        """
        beta = self.entropy_target(cov, step)
        kw: dict[str, Any] = {"diag": self.diag}
        with self._ctx():
            if self.measure == "kl_joint":
                return tm.kl_joint_projection(
                    mean, cov, old_mean, old_cov, eps=self.eps, entropy_bound=beta, **kw
                )
            kw.update(eps_mean=self.eps_mean, eps_cov=self.eps_cov)
            if self.measure == "frob":
                proj = tm.frobenius_projection(mean, cov, old_mean, old_cov, **kw)
            elif self.measure == "kl":
                proj = tm.kl_projection(mean, cov, old_mean, old_cov, **kw)
            else:
                proj = tm.wasserstein_projection(
                    mean,
                    cov,
                    old_mean,
                    old_cov,
                    scaled=self.scaled,
                    exact=self.measure == "w2_exact",
                    **kw,
                )
            if beta is not None:
                equality = self.entropy_schedule.equality  # type: ignore[union-attr]
                proj = Gaussian(
                    proj.mean,
                    tm.entropy_projection(proj.cov, beta, equality=equality, diag=self.diag),
                )
        return proj

    def divergence(
        self, mean: torch.Tensor, cov: torch.Tensor, old_mean: torch.Tensor, old_cov: torch.Tensor
    ) -> DivergenceParts:
        """The layer's own measure between ``N(mean, cov)`` and ``N(old_mean, old_cov)``."""
        kw = {"diag": self.diag}
        with self._ctx():
            if self.measure in ("kl", "kl_joint"):
                return tm.kl_divergence(mean, cov, old_mean, old_cov, **kw)
            if self.measure == "frob":
                return tm.frobenius_distance(mean, cov, old_mean, old_cov, **kw)
            if self.measure == "w2":
                # Eq. 9's own measure, so that the penalty matches what the projection bounds.
                mean_part = tm.wasserstein_distance(
                    mean, cov, old_mean, old_cov, scaled=self.scaled, **kw
                ).mean
                cov_part = tm.wasserstein_commuting_cov_part(cov, old_cov, scaled=self.scaled, **kw)
                return DivergenceParts(mean_part, cov_part)
            return tm.wasserstein_distance(mean, cov, old_mean, old_cov, scaled=self.scaled, **kw)

    def penalty(
        self, proj: Gaussian, mean: torch.Tensor, cov: torch.Tensor | None
    ) -> torch.Tensor:
        """Eq. 12's regression term without α: ``mean_s d(π̃(·|s) detached, π_θ(·|s))``.

        The projection is a fixed target; the gradient flows into the network's own output
        (``mean``, ``cov``), pulling it towards the trust region so that rollouts taken without
        the layer respect it.

        ``cov=None`` regresses the mean alone: ``d``'s mean part with the network's covariance
        taken to be the projected one (what ``d`` is when the two covariances are equal, its
        covariance part being 0). That is the case of a non-contextual covariance, which is set
        to its projection after each iteration (Sec. 4.4), and it skips the covariance part's
        cost. The mean parts: ``½ maha(μ̃, μ; Σ̃)`` (KL), ``maha(μ̃, μ; Σ̃)`` (Frobenius, scaled
        W2), ``‖μ̃ - μ‖²`` (plain W2).
        """
        if cov is None:
            return self._mean_part(proj.mean.detach(), mean, proj.cov.detach()).mean()
        parts = self.divergence(proj.mean.detach(), proj.cov.detach(), mean, cov)
        return parts.total.mean()

    def _mean_part(
        self, target: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor
    ) -> torch.Tensor:
        """The layer measure's mean part between ``N(target, cov)`` and ``N(mean, cov)``."""
        diff = target - mean
        if self.measure.startswith("w2") and not self.scaled:
            return (diff * diff).sum(-1)
        if self.diag:
            maha = (diff * diff / cov).sum(-1)
        else:
            chol = torch.linalg.cholesky(cov).expand(*diff.shape[:-1], *cov.shape[-2:])
            maha = maha_chol(diff, chol, B.namespace(diff))
        return 0.5 * maha if self.measure in ("kl", "kl_joint") else maha

    @torch.no_grad()
    def diagnostics(
        self,
        mean: torch.Tensor,
        cov: torch.Tensor,
        old_mean: torch.Tensor,
        old_cov: torch.Tensor,
        proj: Gaussian,
    ) -> dict[str, float]:
        """Per-state constraint diagnostics, reduced to floats (mean and max over states).

        Keys: ``kl_mean``, ``kl_max`` (KL(π̃ ‖ π_o)); ``div_mean_part_mean/_max`` and
        ``div_cov_part_mean/_max`` (the layer's measure, π̃ vs π_o); ``entropy_mean``;
        ``maha_unprojected_mean/_max`` (``maha(μ, μ_o; Σ_o)`` of the network's own mean, Fig. 2
        centre).
        """
        kw = {"diag": self.diag}
        kl = tm.kl_divergence(proj.mean, proj.cov, old_mean, old_cov, **kw).total
        div = self.divergence(proj.mean, proj.cov, old_mean, old_cov)
        ent = tm.entropy(proj.cov, **kw)
        maha = 2.0 * tm.kl_divergence(mean, old_cov, old_mean, old_cov, **kw).mean
        return {
            "kl_mean": float(kl.mean()),
            "kl_max": float(kl.max()),
            "div_mean_part_mean": float(div.mean.mean()),
            "div_mean_part_max": float(div.mean.max()),
            "div_cov_part_mean": float(div.cov.mean()),
            "div_cov_part_max": float(div.cov.max()),
            "entropy_mean": float(ent.mean()),
            "maha_unprojected_mean": float(maha.mean()),
            "maha_unprojected_max": float(maha.max()),
        }
