"""How far above its bounds a float32 projection of :class:`TrustRegionLayer` lands, measured in
float64 (the numbers of docs/torch_layer.md, "Accuracy"). ``python tests/test_layer_float32.py
[calls]`` prints the table; the test runs a small sample and checks the documented limit."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from trpl_math.torch import MEASURES, TrustRegionLayer

#: The documented limits on ``part / bound - 1`` for float32 inputs (docs/torch_layer.md).
FLOAT32_LIMIT = {"policy": 5e-4, "wide": 5e-3}
EPS_MEAN, EPS_COV = 0.03, 1e-3


#: The two domains of the table: policy-like (variances in [e^-2, 1], condition <= 10) and
#: wide (variances down to e^-3 / 1e3, condition <= 1e3).
DOMAINS = {"policy": (10.0, -2.0, 0.0), "wide": (1e3, -3.0, 1.0)}


def _problem(rng: np.random.Generator, d: int, diag: bool, domain: str, batch: int = 32):
    """A policy step well outside the trust region around old covariances of the domain."""
    cond, lo, hi = DOMAINS[domain]

    def spd() -> np.ndarray:
        q, _ = np.linalg.qr(rng.standard_normal((batch, d, d)))
        ev = np.exp(-rng.uniform(0, 1, (batch, 1)) * np.log(cond) * np.linspace(0, 1, d))
        ev *= np.exp(rng.uniform(lo, hi, (batch, 1)))
        if diag:
            return ev[:, rng.permutation(d)]
        m = q @ (ev[..., None] * q.swapaxes(1, 2))
        return 0.5 * (m + m.swapaxes(1, 2))

    old_cov = spd()
    scale = np.sqrt(old_cov if diag else np.diagonal(old_cov, axis1=1, axis2=2))
    old_mean = rng.standard_normal((batch, d))
    mean = old_mean + scale * rng.standard_normal((batch, d)) * rng.uniform(0.3, 3, (batch, 1))
    factor = np.exp(rng.uniform(-1, 1, (batch, d)) * 0.5)
    cov = old_cov * factor**2 if diag else old_cov * np.exp(rng.uniform(-0.5, 0.5, (batch, 1, 1)))
    return mean, cov, old_mean, old_cov


def _sym(x: torch.Tensor, diag: bool) -> torch.Tensor:
    return x if diag else 0.5 * (x + x.mT)


def measure(calls: int, domain: str, seed: int = 0) -> dict[tuple[str, bool], float]:
    """``{(measure, diag): max over all states of max(part / bound) - 1}`` for float32."""
    rng = np.random.default_rng(seed)
    worst: dict[tuple[str, bool], float] = {}
    for measure in MEASURES:
        for diag in (True, False):
            layer = TrustRegionLayer(measure, eps_mean=EPS_MEAN, eps_cov=EPS_COV, diag=diag)
            w = -np.inf
            for _ in range(calls):
                d = int(rng.integers(1, 17))
                args = _problem(rng, d, diag, domain)
                t32 = [torch.tensor(a, dtype=torch.float32) for a in args]
                with torch.no_grad():
                    proj = layer(*t32)
                    # measured in float64 (matrices symmetrised after the cast)
                    old_cov = _sym(t32[3].double(), diag)
                    cov = _sym(proj.cov.double(), diag)
                    parts = layer.divergence(proj.mean.double(), cov, t32[2].double(), old_cov)
                if measure == "kl_joint":
                    excess = parts.total / layer.eps - 1
                else:
                    excess = torch.maximum(parts.mean / EPS_MEAN, parts.cov / EPS_COV) - 1
                w = max(w, float(excess.max()))
            worst[(measure, diag)] = w
    return worst


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_float32_lands_within_the_documented_limit(domain: str) -> None:
    worst = measure(calls=3, domain=domain)
    assert all(np.isfinite(v) for v in worst.values())
    for key, value in worst.items():
        assert value <= FLOAT32_LIMIT[domain], (key, value)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    res = {dom: measure(n, dom) for dom in DOMAINS}
    print("| measure | cov | " + " | ".join(DOMAINS) + " |")
    print("|---|---|" + "---|" * len(DOMAINS))
    for m, diag in res["policy"]:
        cells = " | ".join(f"{res[dom][(m, diag)]:.1e}" for dom in DOMAINS)
        print(f"| {m} | {'diag' if diag else 'full'} | {cells} |")
