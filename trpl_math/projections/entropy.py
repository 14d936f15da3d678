"""Entropy control (Sec. 4.2, Algorithm 1 lines 10-13) and the entropy target schedules."""

from __future__ import annotations

import math
from typing import Any

from trpl_math import _backend as B
from trpl_math._backend import Array
from trpl_math._checks import prepare_cov, prepare_level
from trpl_math.divergences import entropy

__all__ = ["entropy_projection", "entropy_schedule"]


@B.working_precision("float64")
def entropy_projection(
    cov: Array, *, entropy_bound: Any, equality: bool = False, diag: bool = False
) -> Array:
    """Scale covariances so that their entropy is at least (or exactly) ``entropy_bound``.

    The standard deviation (any square root or Cholesky factor) is scaled by
    ``exp((β - H)/d)``, i.e. ``Σ ↦ exp(2(β - H)/d) Σ``, after which ``H = β`` exactly
    (Sec. 4.2; Algorithm 1 read literally scales Σ by the first factor, which would move H only
    halfway, see docs/math.md §5.1). Inequality version (default): only where ``H < β``; elsewhere
    the
    covariance is returned unchanged (identity gradient). ``equality=True``: everywhere.

    Args:
        cov: ``(..., d, d)`` covariances (``(..., d)`` variances if ``diag``).
        entropy_bound: β in nats, a float or an array broadcasting to ``(...)``.
        equality: enforce ``H = β`` instead of ``H ≥ β``.
        diag: covariances are variance vectors.

    Returns:
        Covariances shaped like ``cov``.

    Raises:
        ValueError: bad shapes or dtypes, non-finite values, covariance not positive definite.

    Example:
        >>> import numpy as np
        >>> from trpl_math import entropy
        >>> c = entropy_projection(np.full(3, 0.1), entropy_bound=1.0, diag=True)
        >>> round(float(entropy(c, diag=True)), 12)
        1.0
    """
    xp, d = prepare_cov(cov, diag=diag)
    h = entropy(cov, diag=diag)
    beta = prepare_level(entropy_bound, "entropy_bound", xp, cov, tuple(h.shape))
    log_scale = 2.0 * (beta - h) / d
    if not equality:
        log_scale = xp.clip(log_scale, 0.0, None)
    ex = (...,) + (None,) * (1 if diag else 2)
    return xp.exp(log_scale)[ex] * cov


def entropy_schedule(
    step: float,
    total_steps: float,
    initial_entropy: float,
    target_per_dim: float,
    dim: int,
    *,
    kind: str = "exp",
    temperature: float = 0.5,
) -> float:
    """Entropy target β at training step ``step`` of ``total_steps`` (Sec. 4.2, docs/math.md §5.2).

    * ``kind="exp"``: ``β_i = dκ + (H_0 - dκ) τ^{10 i / N}``;
    * ``kind="linear"``: ``β_i = H_0 + (i / N)(dκ - H_0)``.

    Both use the total target ``dκ`` (the authors' code used κ in the linear schedule).

    Args:
        step: i, from 0 to ``total_steps``.
        total_steps: N > 0.
        initial_entropy: H_0 in nats.
        target_per_dim: κ, the target entropy per action dimension.
        dim: d, the action dimension.
        kind: ``"exp"`` or ``"linear"``.
        temperature: τ ∈ (0, 1] of the exponential schedule.

    Returns:
        β as a Python float.

    Example:
        >>> entropy_schedule(0, 100, 2.0, 0.0, 3)
        2.0
        >>> round(entropy_schedule(100, 100, 2.0, 0.0, 3, kind="linear"), 12)
        0.0
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must lie in [0, total_steps={total_steps}], got {step!r}")
    for name, v in (("initial_entropy", initial_entropy), ("target_per_dim", target_per_dim)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    target = dim * target_per_dim
    frac = step / total_steps
    if kind == "exp":
        if not 0 < temperature <= 1:
            raise ValueError(f"temperature must lie in (0, 1], got {temperature!r}")
        return target + (initial_entropy - target) * temperature ** (10.0 * frac)
    if kind == "linear":
        return initial_entropy + frac * (target - initial_entropy)
    raise ValueError(f"kind must be 'exp' or 'linear', got {kind!r}")
