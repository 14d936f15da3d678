"""trpl_math: differentiable trust-region projections for Gaussian policies.

Implements Otto et al., "Differentiable Trust Region Layers for Deep Reinforcement Learning"
(ICLR 2021) as framework-agnostic array functions: every function takes NumPy arrays, torch
tensors or JAX arrays and returns the same kind, differentiable end to end with torch and JAX
(one back-end module each behind one dispatch, docs/backends.md).
"""

from trpl_math._backend import no_validation
from trpl_math.divergences import entropy, frobenius_distance, kl_divergence, wasserstein_distance
from trpl_math.projections import (
    entropy_projection,
    entropy_schedule,
    frobenius_projection,
    kl_joint_projection,
    kl_projection,
    wasserstein_commuting_cov_part,
    wasserstein_projection,
)
from trpl_math.types import DivergenceParts, Gaussian

__all__ = [
    "DivergenceParts",
    "Gaussian",
    "entropy",
    "entropy_projection",
    "entropy_schedule",
    "frobenius_distance",
    "frobenius_projection",
    "kl_divergence",
    "kl_joint_projection",
    "kl_projection",
    "no_validation",
    "wasserstein_commuting_cov_part",
    "wasserstein_distance",
    "wasserstein_projection",
]

__version__ = "0.1.0"
