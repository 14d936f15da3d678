"""Hypothesis strategies and profiles for the property suite.

Positive-definite matrices are built as ``Q diag(exp(u)) Qᵀ`` with ``u`` in ``[-U, U]``, so their
condition number is at most ``exp(2U)``; ``Q`` is the orthogonal factor of a QR decomposition of a
drawn matrix. Profiles: ``ci`` (default, fast) and ``dev`` (longer, for local runs), chosen with
the environment variable ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "dev",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

LOG_SCALE = 1.5  # eigenvalues in [e^-1.5, e^1.5]: condition number ≤ e^3 ≈ 20
MAX_DIM = 8

dims = st.integers(min_value=1, max_value=MAX_DIM)
unit = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_subnormal=False)


@st.composite
def orthogonal(draw: st.DrawFn, d: int) -> np.ndarray:
    """A ``(d, d)`` orthogonal matrix: the Q factor of a drawn matrix (identity-like if it is 0)."""
    a = np.array(draw(st.lists(unit, min_size=d * d, max_size=d * d))).reshape(d, d)
    q, r = np.linalg.qr(a + 1e-3 * np.eye(d))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


@st.composite
def spd(draw: st.DrawFn, d: int, basis: np.ndarray | None = None) -> np.ndarray:
    """``Q diag(exp(u)) Qᵀ`` with ``u ∈ [-LOG_SCALE, LOG_SCALE]^d`` (``basis`` fixes Q)."""
    q = draw(orthogonal(d)) if basis is None else basis
    u = np.array(draw(st.lists(unit, min_size=d, max_size=d))) * LOG_SCALE
    cov = (q * np.exp(u)) @ q.T
    return 0.5 * (cov + cov.T)


@st.composite
def vectors(draw: st.DrawFn, d: int, scale: float = 2.0) -> np.ndarray:
    return scale * np.array(draw(st.lists(unit, min_size=d, max_size=d)))


@dataclass(frozen=True)
class Pair:
    """The network's prediction ``(mean, cov)`` and the old policy, float64, full covariances."""

    mean: np.ndarray
    cov: np.ndarray
    old_mean: np.ndarray
    old_cov: np.ndarray

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def args(self, diag: bool = False) -> tuple[np.ndarray, ...]:
        if diag:
            return self.mean, np.diag(self.cov).copy(), self.old_mean, np.diag(self.old_cov).copy()
        return self.mean, self.cov, self.old_mean, self.old_cov


@st.composite
def pairs(draw: st.DrawFn, structure: str = "general", d: int | None = None) -> Pair:
    """A random prediction/old-policy pair; ``structure`` in general, commuting, diagonal."""
    d = draw(dims) if d is None else d
    if structure == "general":
        cov, old_cov = draw(spd(d)), draw(spd(d))
    else:
        q = draw(orthogonal(d)) if structure == "commuting" else np.eye(d)
        cov, old_cov = draw(spd(d, q)), draw(spd(d, q))
    old_mean = draw(vectors(d))
    mean = old_mean + draw(vectors(d))
    return Pair(mean, cov, old_mean, old_cov)


etas = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_subnormal=False),
)
inside_ratios = st.floats(min_value=1.05, max_value=20.0)
outside_ratios = st.floats(min_value=0.01, max_value=0.95)
