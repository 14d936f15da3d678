"""``TrustRegionLayer``: the projections as a ``torch.nn.Module`` for training code."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import torch

import trpl_math as tm
from trpl_math._backend import no_validation
from trpl_math.measures import MEASURES as _MEASURES
from trpl_math.measures import get_measure
from trpl_math.types import DivergenceParts, Gaussian

MEASURES = tuple(_MEASURES)


def _bound(name: str, value: Any) -> float:
    """A bound as a Python float: any real number (``0.03``, ``np.float32(0.03)``, a 0-d array
    or tensor), finite and > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok and getattr(value, "ndim", None) == 0 and getattr(value, "dtype", None) is not None:
        ok = not str(value.dtype).endswith("bool") and "complex" not in str(value.dtype)
    v = float(value) if ok else math.nan
    if not (ok and math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _check_tensor(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


@dataclass
class EntropySchedule:
    """Entropy target ``β_i`` over training steps (Sec. 4.2; docs/math.md §5.2).

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

    ``cov`` always means *variances* (``diag=True``) or covariance matrices, never standard
    deviations: a policy that holds ``std`` passes ``std ** 2`` (``Gaussian.from_std``). This
    cannot be checked (standard deviations are valid variances of another Gaussian).

    The old policy is a constant of the trust region: ``old_mean`` and ``old_cov`` are detached
    (with a warning, once per layer, when they carry gradients, i.e. a forgotten ``.detach()``
    or ``torch.no_grad()``), so no gradient flows into the network through them. Use the
    functions of :mod:`trpl_math` to differentiate with respect to the old policy.

    Args:
        measure: ``"frob"``, ``"w2"`` (Eq. 9), ``"w2_exact"`` (geodesic), ``"kl"`` (Eq. 6, 10-11)
            or ``"kl_joint"`` (Appendix B.5).
        eps_mean: bound on the mean part (unused by ``kl_joint``); any real number type.
        eps_cov: bound on the covariance part (unused by ``kl_joint``).
        eps: joint KL bound for ``kl_joint`` (default ``eps_mean + eps_cov``).
        scaled: Wasserstein in the old covariance's metric (the paper's default).
        diag: covariances are variance vectors ``(..., d)``; ``False`` (the default, as for
            the functions): matrices ``(..., d, d)``.
        entropy_schedule: entropy control after the projection, or ``None``. With ``kl_joint``
            the entropy bound enters the projection itself.
        validate: check inputs (turn off in hot loops once the code is known to be right).

    Example:
        >>> import torch
        >>> layer = TrustRegionLayer("kl", eps_mean=0.03, eps_cov=1e-3, diag=True)
        >>> mean, var = torch.zeros(8, 2, requires_grad=True), torch.full((8, 2), 2.0)
        >>> proj = layer(mean, var, torch.ones(8, 2), torch.ones(8, 2))
        >>> loss = layer.penalty(proj, mean, var)
        >>> layer.distribution(proj).log_prob(torch.zeros(8, 2)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        measure: str,
        *,
        eps_mean: float,
        eps_cov: float,
        eps: float | None = None,
        scaled: bool = True,
        diag: bool = False,
        entropy_schedule: EntropySchedule | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self._measure = get_measure(measure)
        self.measure = measure
        self.eps_mean, self.eps_cov = _bound("eps_mean", eps_mean), _bound("eps_cov", eps_cov)
        self.eps = _bound("eps", eps) if eps is not None else self.eps_mean + self.eps_cov
        if not isinstance(diag, bool):
            raise TypeError(f"diag must be True or False, got {diag!r}")
        self.scaled, self.diag, self.validate = scaled, diag, validate
        self.entropy_schedule = entropy_schedule
        self._warned_old_grad = False

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
        arguments broadcast against them. ``step`` selects the entropy target. ``old_mean`` and
        ``old_cov`` are detached (see the class docstring).

        Returns:
            ``Gaussian(mean, cov)`` of the projection, shapes as broadcast; views:
            ``layer.distribution(proj)``, ``proj.std(diag=True)``, ``proj.scale_tril(...)``.

        Raises:
            ValueError: shapes that do not fit (naming the arguments), bad values (with
                ``validate``).
        """
        self._check_shapes(mean, cov, old_mean, old_cov)
        old_mean, old_cov = self._detached_old(old_mean, old_cov)
        beta = self.entropy_target(cov, step)
        kw: dict[str, Any] = {"diag": self.diag}
        with self._ctx():
            if self._measure.joint:
                return self._measure.project(
                    mean, cov, old_mean, old_cov, eps=self.eps, entropy_bound=beta, **kw
                )
            proj = self._measure.project(
                mean,
                cov,
                old_mean,
                old_cov,
                eps_mean=self.eps_mean,
                eps_cov=self.eps_cov,
                scaled=self.scaled,
                **kw,
            )
            if beta is not None:
                equality = self.entropy_schedule.equality  # type: ignore[union-attr]
                proj = Gaussian(
                    proj.mean,
                    tm.entropy_projection(
                        proj.cov, entropy_bound=beta, equality=equality, diag=self.diag
                    ),
                )
        return proj

    def divergence(
        self, mean: torch.Tensor, cov: torch.Tensor, old_mean: torch.Tensor, old_cov: torch.Tensor
    ) -> DivergenceParts:
        """The layer's own measure between ``N(mean, cov)`` and ``N(old_mean, old_cov)``."""
        with self._ctx():
            return self._measure.divergence(
                mean, cov, old_mean, old_cov, scaled=self.scaled, diag=self.diag
            )

    def penalty(
        self, proj: Gaussian, mean: torch.Tensor, cov: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Eq. 12's regression term without α: ``mean_s d(π̃(·|s) detached, π_θ(·|s))``.

        The projection is a fixed target; the gradient flows into the network's own output
        (``mean``, ``cov``), pulling it towards the trust region so that rollouts taken without
        the layer respect it.

        ``cov=None`` (the default) regresses the mean alone: ``d``'s mean part with the
        network's covariance taken to be the projected one (what ``d`` is when the two
        covariances are equal, its covariance part being 0). That is the case of a
        non-contextual covariance, which is set to its projection after each iteration
        (Sec. 4.4), and it skips the covariance part's cost. The mean parts:
        ``½ maha(μ̃, μ; Σ̃)`` (KL), ``maha(μ̃, μ; Σ̃)`` (Frobenius, scaled W2), ``‖μ̃ - μ‖²``
        (plain W2).

        Args:
            proj: the layer's output (a :class:`~trpl_math.Gaussian`).
            mean: the network's mean ``(..., d)``, batch broadcasting with ``proj.mean``'s.
            cov: the network's covariance (as for ``forward``), or ``None``.

        Raises:
            TypeError: ``proj`` is not a Gaussian, or an argument is not a tensor.
            ValueError: a shape that does not fit, naming the argument and ``proj``'s part.
        """
        self._check_penalty_args(proj, mean, cov)
        if cov is None:
            return self._mean_part(proj.mean.detach(), mean, proj.cov.detach()).mean()
        parts = self.divergence(proj.mean.detach(), proj.cov.detach(), mean, cov)
        return parts.total.mean()

    def _check_penalty_args(self, proj: Any, mean: Any, cov: Any) -> None:
        if not isinstance(proj, Gaussian):
            raise TypeError(
                "proj must be the Gaussian returned by the layer (trpl_math.Gaussian), got "
                f"{type(proj).__name__}; wrap a pair as Gaussian(mean, cov)"
            )
        _check_tensor(proj.mean, "proj.mean")
        _check_tensor(proj.cov, "proj.cov")
        _check_tensor(mean, "mean")
        event = 1 if self.diag else 2
        d = proj.mean.shape[-1] if proj.mean.ndim else None
        if mean.ndim < 1 or mean.shape[-1] != d:
            raise ValueError(
                f"mean has shape {_shape(mean)}, proj.mean {_shape(proj.mean)}: "
                "the last (event) dimensions d must agree"
            )
        pairs = [("mean", mean, 1, "proj.mean", proj.mean)]
        if cov is not None:
            _check_tensor(cov, "cov")
            if cov.ndim < event or _shape(cov)[-event:] != (d,) * event:
                want = "(..., d) variances" if self.diag else "(..., d, d) matrices"
                raise ValueError(
                    f"cov has shape {_shape(cov)}, expected {want} with d = {d} (diag="
                    f"{self.diag}, proj.cov has shape {_shape(proj.cov)})"
                )
            pairs.append(("cov", cov, event, "proj.cov", proj.cov))
        else:
            pairs.append(("mean", mean, 1, "proj.cov", proj.cov))
        for name, x, ex, other, y in pairs:
            ey = 1 if other == "proj.mean" else event
            try:
                torch.broadcast_shapes(_shape(x)[:-ex], _shape(y)[:-ey])
            except RuntimeError:
                raise ValueError(
                    f"batch shapes do not broadcast: {name} {_shape(x)}, {other} {_shape(y)} "
                    f"(diag={self.diag})"
                ) from None

    def _check_shapes(self, mean: Any, cov: Any, old_mean: Any, old_cov: Any) -> None:
        """Shapes only (cheap, also with ``validate=False``): tensors, one d, batch shapes
        that broadcast; each error names the arguments."""
        args = (("mean", mean), ("cov", cov), ("old_mean", old_mean), ("old_cov", old_cov))
        for name, x in args:
            _check_tensor(x, name)
        event = 1 if self.diag else 2
        d = mean.shape[-1] if mean.ndim else None
        for name, x in args:
            ex = 1 if name.endswith("mean") else event
            if x.ndim < ex or _shape(x)[-ex:] != (d,) * ex:
                want = "(..., d)" if ex == 1 else "(..., d, d)"
                raise ValueError(
                    f"{name} has shape {_shape(x)}, expected {want} with d = {d} from mean "
                    f"{_shape(mean)} (diag={self.diag})"
                )
        try:
            torch.broadcast_shapes(
                *(_shape(x)[: x.ndim - (1 if n.endswith("mean") else event)] for n, x in args)
            )
        except RuntimeError:
            raise ValueError(
                "batch shapes do not broadcast: "
                + ", ".join(f"{n} {_shape(x)}" for n, x in args)
                + f" (diag={self.diag})"
            ) from None

    def _detached_old(
        self, old_mean: torch.Tensor, old_cov: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``old_mean``, ``old_cov`` detached; warns once when they carried gradients."""
        carrying = [
            n
            for n, x in (("old_mean", old_mean), ("old_cov", old_cov))
            if isinstance(x, torch.Tensor) and x.requires_grad
        ]
        if not carrying:
            return old_mean, old_cov
        if not self._warned_old_grad:
            self._warned_old_grad = True
            warnings.warn(
                f"{' and '.join(carrying)} carry gradients; TrustRegionLayer detaches the old "
                "policy (compute it under torch.no_grad() or .detach() it to silence this)",
                UserWarning,
                stacklevel=5,  # the caller of layer(...), through Module.__call__
            )
        return old_mean.detach(), old_cov.detach()

    def distribution(self, proj: Gaussian) -> Any:
        """``proj`` as a ``torch.distributions`` object: ``Independent(Normal(mean, std), 1)``
        (``diag=True``) or ``MultivariateNormal`` (see :meth:`Gaussian.to_distribution`)."""
        if not isinstance(proj, Gaussian):
            raise TypeError(f"proj must be a trpl_math.Gaussian, got {type(proj).__name__}")
        return proj.to_distribution(diag=self.diag)

    def _mean_part(
        self, target: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor
    ) -> torch.Tensor:
        """The layer measure's mean part between ``N(target, cov)`` and ``N(mean, cov)``."""
        return self._measure.mean_part(target, mean, cov, scaled=self.scaled, diag=self.diag)

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

        Keys: ``proj_kl_mean``, ``proj_kl_max`` (KL(π̃ ‖ π_o) of the projection, the same
        meaning as the training log's columns of that name); ``div_mean_part_mean/_max`` and
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
            "proj_kl_mean": float(kl.mean()),
            "proj_kl_max": float(kl.max()),
            "div_mean_part_mean": float(div.mean.mean()),
            "div_mean_part_max": float(div.mean.max()),
            "div_cov_part_mean": float(div.cov.mean()),
            "div_cov_part_max": float(div.cov.max()),
            "entropy_mean": float(ent.mean()),
            "maha_unprojected_mean": float(maha.mean()),
            "maha_unprojected_max": float(maha.max()),
        }
