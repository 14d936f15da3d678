"""torch integration: the trust-region layer for training code (Algorithm 1, Eq. 12)."""

from trpl_math.torch.layer import MEASURES, EntropySchedule, TrustRegionLayer

__all__ = ["MEASURES", "EntropySchedule", "TrustRegionLayer"]
