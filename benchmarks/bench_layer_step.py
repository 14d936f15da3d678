"""One training step of ``TrustRegionLayer`` at the shape a MuJoCo minibatch has, one thread.

The policy epochs of the paper's Table 2 call the layer 1280 times per 2048 samples on
minibatches of 32 states with a state-independent (diagonal) covariance, so what they pay is
the per-call cost of a small batch: projection, Eq. 12's penalty and the backward pass. This
prints the median CPU time of that step per measure:

    python benchmarks/bench_layer_step.py                  # batch 32, d = 3 (Hopper), float32
    python benchmarks/bench_layer_step.py --dim 6 --penalty full

``--penalty mean`` (default) regresses the mean alone, as the trainer does for a
non-contextual covariance (``layer.penalty(proj, mean, None)``); ``full`` computes the whole
divergence with the projected covariance on both sides (its covariance part is 0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from trpl_math.measures import MEASURES as MEASURE_REGISTRY
from trpl_math.torch import TrustRegionLayer
from trpl_math.types import Gaussian

MEASURES = tuple(MEASURE_REGISTRY)


def step_time(
    measure: str, batch: int, dim: int, dtype: torch.dtype, penalty: str, n: int
) -> float:
    """Median CPU seconds of projection + penalty + backward over ``n`` calls."""
    gen = torch.Generator().manual_seed(0)
    old_mean = torch.randn(batch, dim, generator=gen, dtype=dtype)
    old_var = torch.rand(1, dim, generator=gen, dtype=dtype) + 0.5
    mean0 = old_mean + 0.3 * torch.randn(batch, dim, generator=gen, dtype=dtype)
    var0 = old_var * (1.0 + 0.3 * torch.rand(1, dim, generator=gen, dtype=dtype))
    layer = TrustRegionLayer(measure, eps_mean=0.03, eps_cov=1e-3, diag=True, validate=False)
    times = []
    for _ in range(n):
        mean, var = mean0.clone().requires_grad_(), var0.clone().requires_grad_()
        start = time.process_time()
        proj = layer(mean, var, old_mean, old_var)
        if penalty == "mean":
            pen = layer.penalty(proj, mean, None)
        else:
            cov = proj.cov.detach()
            pen = layer.penalty(Gaussian(proj.mean, cov), mean, cov)
        (proj.mean.sum() + proj.cov.sum() + 8.0 * pen).backward()
        times.append(time.process_time() - start)
    return statistics.median(times[n // 5 :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--penalty", choices=["mean", "full"], default="mean")
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    print(
        f"# torch {torch.__version__}, 1 thread, batch {args.batch}, d = {args.dim}, {args.dtype}, "
        f"diagonal shared covariance, penalty: {args.penalty}, load avg {os.getloadavg()[0]:.2f}"
    )
    print("| measure | ms per step (CPU, median) | per 1280 steps (s) |")
    print("|---|---|---|")
    for m in args.measures:
        t = step_time(m, args.batch, args.dim, dtype, args.penalty, args.calls)
        print(f"| {m} | {1e3 * t:.3f} | {1280 * t:.2f} |", flush=True)


if __name__ == "__main__":
    main()
