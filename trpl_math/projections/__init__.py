"""Trust-region projections, one module each (the paper's Eq. 3-11 and Appendix B.5)."""

from trpl_math.projections.entropy import entropy_projection, entropy_schedule
from trpl_math.projections.frobenius import frobenius_projection
from trpl_math.projections.kl import kl_projection
from trpl_math.projections.kl_joint import kl_joint_projection
from trpl_math.projections.wasserstein import (
    wasserstein_commuting_cov_part,
    wasserstein_projection,
)

__all__ = [
    "entropy_projection",
    "entropy_schedule",
    "frobenius_projection",
    "kl_joint_projection",
    "kl_projection",
    "wasserstein_commuting_cov_part",
    "wasserstein_projection",
]
