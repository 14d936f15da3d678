"""One training step of ``TrustRegionLayer`` at the shape a MuJoCo minibatch has, one thread.

The policy epochs of the paper's Table 2 call the layer 1280 times per 2048 samples on
minibatches of 32 states with a state-independent (diagonal) covariance, so what they pay is
the per-call cost of a small batch: projection, Eq. 12's penalty and the backward pass. This
prints the median CPU time of this thread for that step per measure, the measures
interleaved call by call (so load affects them alike), and each as a multiple of frob's:

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
from _cli import positive

from trpl_math.measures import MEASURES as MEASURE_REGISTRY
from trpl_math.torch import TrustRegionLayer
from trpl_math.types import Gaussian

MEASURES = tuple(MEASURE_REGISTRY)


def make_step(measure: str, batch: int, dim: int, dtype: torch.dtype, penalty: str):
    """One training step (projection + penalty + backward) of ``measure``, as a callable."""
    gen = torch.Generator().manual_seed(0)
    old_mean = torch.randn(batch, dim, generator=gen, dtype=dtype)
    old_var = torch.rand(1, dim, generator=gen, dtype=dtype) + 0.5
    mean0 = old_mean + 0.3 * torch.randn(batch, dim, generator=gen, dtype=dtype)
    var0 = old_var * (1.0 + 0.3 * torch.rand(1, dim, generator=gen, dtype=dtype))
    layer = TrustRegionLayer(measure, eps_mean=0.03, eps_cov=1e-3, diag=True, validate=False)

    def step() -> float:
        """CPU seconds of this thread for one step."""
        mean, var = mean0.clone().requires_grad_(), var0.clone().requires_grad_()
        start = time.thread_time()
        proj = layer(mean, var, old_mean, old_var)
        if penalty == "mean":
            pen = layer.penalty(proj, mean, None)
        else:
            cov = proj.cov.detach()
            pen = layer.penalty(Gaussian(proj.mean, cov), mean, cov)
        (proj.mean.sum() + proj.cov.sum() + 8.0 * pen).backward()
        return time.thread_time() - start

    return step


def step_times(
    measures: list[str], batch: int, dim: int, dtype: torch.dtype, penalty: str, n: int
) -> dict[str, float]:
    """Median CPU seconds (this thread) per step of each measure over ``n`` interleaved calls
    (frob, w2, kl, ..., frob, w2, kl, ...), the first fifth dropped as warm-up."""
    steps = {m: make_step(m, batch, dim, dtype, penalty) for m in measures}
    times: dict[str, list[float]] = {m: [] for m in measures}
    for _ in range(n):
        for m, step in steps.items():
            times[m].append(step())
    return {m: statistics.median(ts[n // 5 :]) for m, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive, default=32)
    parser.add_argument("--dim", type=positive, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--penalty", choices=["mean", "full"], default="mean")
    parser.add_argument("--calls", type=positive, default=600)
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    print(
        f"# torch {torch.__version__}, 1 thread, batch {args.batch}, d = {args.dim}, {args.dtype}, "
        f"diagonal shared covariance, penalty: {args.penalty}, load avg {os.getloadavg()[0]:.2f}"
    )
    print("| measure | ms per step (CPU of one thread, median) | per 1280 steps (s) | ÷ frob |")
    print("|---|---|---|---|")
    ts = step_times(args.measures, args.batch, args.dim, dtype, args.penalty, args.calls)
    for m, t in ts.items():
        ratio = f"{t / ts['frob']:.2f}" if "frob" in ts else ""
        print(f"| {m} | {1e3 * t:.3f} | {1280 * t:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
