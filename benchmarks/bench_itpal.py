"""The KL projections beside ITPAL (the C++/OpenMP library), same inputs, same process.

For each KL variant (diagonal, full, joint, joint + entropy bound) and each point of the grid
batch x d x dtype, forward and forward+backward: the median CPU time of one thread over
interleaved repetitions (ours, ITPAL, ours, ITPAL, ...), every state outside its bound, input
checks off; the ratio ITPAL / ours; and how exactly each lands on its bound
(``max (KL part / eps - 1)`` over states in float64: > 0 is a violation).

ITPAL is timed only when its module ``cpp_projection`` is importable (build it with
``bash ../shared/anchors/itpal/build.sh DIR`` and put DIR on PYTHONPATH); nothing else in the
project uses it. How it is called: one op object per (batch, d), reused; float64 NumPy in and
out (its users' float32 tensors are converted, and that conversion is timed, as a training loop
pays it); backward takes the gradient with respect to the projected outputs.

The ITPAL counterparts:

* KL diagonal: ``BatchedSplitDiagMoreProjection`` (mean and variances, split bounds) against
  ``kl_projection(diag=True)``;
* KL full: ``BatchedCovOnlyProjection`` (the covariance alone; its users project the mean in
  closed form, not timed here) against the whole ``kl_projection`` (mean and covariance);
* joint KL: ``BatchedProjection(constrain_entropy=False)`` against ``kl_joint_projection``;
* joint KL + entropy: ``BatchedProjection(constrain_entropy=True)`` with ``beta`` against
  ``kl_joint_projection(entropy_bound=beta)``.

    OMP_NUM_THREADS=1 PYTHONPATH=DIR python benchmarks/bench_itpal.py          # quick grid
    OMP_NUM_THREADS=1 PYTHONPATH=DIR python benchmarks/bench_itpal.py --full   # 32..4096 x 3,6,17
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from _cli import positive

import trpl_math as tm
from trpl_math import no_validation

try:
    import cpp_projection as itpal  # type: ignore[import-not-found]
except ImportError:  # ITPAL is optional
    itpal = None

EPS_MEAN, EPS_COV, EPS_JOINT = 0.03, 1e-3, 0.03
VARIANTS = ("kl_diag", "kl_full", "kl_joint", "kl_joint_entropy")


def make_inputs(batch: int, dim: int, diag: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """float64 NumPy inputs with every state outside every bound."""
    rng = np.random.default_rng(seed)
    old_mean = rng.normal(size=(batch, dim))
    mean = old_mean + rng.normal(size=(batch, dim))
    if diag:
        old_cov = rng.uniform(0.5, 1.5, size=(batch, dim))
        cov = old_cov * np.exp(rng.normal(size=(batch, dim)))
    else:

        def spd() -> np.ndarray:
            a = rng.normal(size=(batch, dim, dim)) / math.sqrt(dim)
            return a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(dim)

        old_cov, cov = spd(), spd()
    return {"mean": mean, "cov": cov, "old_mean": old_mean, "old_cov": old_cov}


def _beta(x: dict[str, np.ndarray], diag: bool) -> np.ndarray:
    """Per-state entropy lower bounds ``H(pi_old) - 0.05``: always feasible (the old policy
    meets them), binding where the target's entropy is lower."""
    return np.asarray(tm.entropy(x["old_cov"], diag=diag)) - 0.05


class Ours:
    """trpl_math on torch tensors of ``dtype``; ``run(backward)`` is one timed call."""

    def __init__(self, variant: str, x: dict[str, np.ndarray], dtype: torch.dtype) -> None:
        self.variant, self.diag = variant, variant == "kl_diag"
        self.t = {k: torch.from_numpy(v).to(dtype) for k, v in x.items()}
        beta = torch.from_numpy(_beta(x, self.diag)).to(dtype)
        self.beta = beta if variant == "kl_joint_entropy" else None
        g = torch.Generator().manual_seed(1)
        self.g_mean = torch.randn(self.t["mean"].shape, generator=g, dtype=dtype)
        self.g_cov = torch.randn(self.t["cov"].shape, generator=g, dtype=dtype)

    def project(self, mean: torch.Tensor, cov: torch.Tensor) -> tm.Gaussian:
        t = self.t
        if self.variant in ("kl_diag", "kl_full"):
            return tm.kl_projection(
                mean, cov, t["old_mean"], t["old_cov"],
                eps_mean=EPS_MEAN, eps_cov=EPS_COV, diag=self.diag,
            )  # fmt: skip
        return tm.kl_joint_projection(
            mean, cov, t["old_mean"], t["old_cov"], eps=EPS_JOINT, entropy_bound=self.beta
        )

    def run(self, backward: bool) -> tm.Gaussian:
        mean, cov = self.t["mean"], self.t["cov"]
        if backward:
            mean, cov = mean.clone().requires_grad_(), cov.clone().requires_grad_()
        with no_validation():
            out = self.project(mean, cov)
            if backward:
                ((out.mean * self.g_mean).sum() + (out.cov * self.g_cov).sum()).backward()
        return out


class Itpal:
    """ITPAL's op for the variant, built once; ``run(backward)`` converts the tensors of
    ``dtype`` to float64 NumPy, projects, and (with ``backward``) back-propagates."""

    def __init__(self, variant: str, x: dict[str, np.ndarray], dtype: torch.dtype) -> None:
        b, d = x["mean"].shape
        self.variant = variant
        self.t = {k: torch.from_numpy(v).to(dtype) for k, v in x.items()}
        self.old_chol = torch.linalg.cholesky(self.t["old_cov"]) if variant == "kl_full" else None
        self.eps = np.full(b, EPS_COV if variant != "kl_joint" else EPS_JOINT)
        if variant == "kl_joint_entropy":
            self.eps = np.full(b, EPS_JOINT)
        self.beta = _beta(x, variant == "kl_diag")
        if variant == "kl_diag":
            self.op = itpal.BatchedSplitDiagMoreProjection(b, d, max_eval=100)
        elif variant == "kl_full":
            self.op = itpal.BatchedCovOnlyProjection(b, d, max_eval=100)
        else:
            entropy = variant == "kl_joint_entropy"
            self.op = itpal.BatchedProjection(b, d, eec=False, constrain_entropy=entropy)
        rng = np.random.default_rng(1)
        self.g_mean = rng.normal(size=x["mean"].shape)
        self.g_cov = rng.normal(size=x["cov"].shape)

    def run(self, backward: bool) -> tm.Gaussian:
        np64 = {k: v.detach().numpy().astype(np.float64) for k, v in self.t.items()}
        if self.variant == "kl_diag":
            b = len(self.eps)
            mean, cov = self.op.forward(
                np.full(b, EPS_MEAN), self.eps, np64["old_mean"], np64["old_cov"],
                np64["mean"], np64["cov"],
            )  # fmt: skip
            if backward:
                self.op.backward(self.g_mean, self.g_cov)
        elif self.variant == "kl_full":
            chol = np.linalg.cholesky(np64["cov"])
            old_chol = self.old_chol.numpy().astype(np.float64)
            cov = self.op.forward(self.eps, old_chol, chol, np64["cov"])
            mean = np64["mean"]
            if backward:
                self.op.backward(self.g_cov)
        else:
            mean, cov = self.op.forward(
                self.eps, self.beta, np64["old_mean"], np64["old_cov"], np64["mean"], np64["cov"]
            )
            if backward:
                self.op.backward(self.g_mean, self.g_cov)
        return tm.Gaussian(mean, cov)


def violation(variant: str, out: tm.Gaussian, x: dict[str, np.ndarray]) -> float:
    """``max(part / eps - 1)`` in float64 over states and the bounded parts (>0: outside)."""
    diag = variant == "kl_diag"
    mean = np.asarray(out.mean.detach() if hasattr(out.mean, "detach") else out.mean, np.float64)
    cov = np.asarray(out.cov.detach() if hasattr(out.cov, "detach") else out.cov, np.float64)
    parts = tm.kl_divergence(mean, cov, x["old_mean"], x["old_cov"], diag=diag)
    if variant == "kl_full":  # ITPAL's full op projects the covariance alone: its part only
        return float(np.max(parts.cov / EPS_COV - 1))
    if variant == "kl_diag":
        return float(max(np.max(parts.mean / EPS_MEAN - 1), np.max(parts.cov / EPS_COV - 1)))
    return float(np.max(parts.total / EPS_JOINT - 1))


def cpu_time(fn: Callable[[], Any]) -> float:
    """CPU seconds of this thread spent in ``fn()``."""
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


REPS: int | None = None  # --reps: one count for every point instead of reps_for's


def reps_for(batch: int, dim: int) -> int:
    if REPS is not None:
        return REPS
    work = batch * dim**2
    return 21 if work <= 64 * 36 else 11 if work <= 512 * 289 else 5


def measure(variant: str, batch: int, dim: int, dtype: torch.dtype) -> dict[str, Any]:
    x = make_inputs(batch, dim, diag=variant == "kl_diag")
    impls: dict[str, Any] = {"ours": Ours(variant, x, dtype)}
    if itpal is not None:
        impls["itpal"] = Itpal(variant, x, dtype)
    row: dict[str, Any] = {"variant": variant, "batch": batch, "dim": dim, "dtype": str(dtype)}
    for name, impl in impls.items():  # warm-up, and the accuracy of one call
        row[f"{name}_viol"] = violation(variant, impl.run(False), x)
    for backward in (False, True):
        times: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(reps_for(batch, dim)):
            for name, impl in impls.items():
                try:
                    times[name].append(cpu_time(lambda impl=impl, bw=backward: impl.run(bw)))
                except Exception:  # ITPAL's joint+entropy solve can fail for a whole batch
                    times[name].append(float("nan"))
        key = "fwdbwd" if backward else "fwd"
        for name, ts in times.items():
            row[f"{name}_{key}"] = 1e3 * statistics.median(ts)
    return row


def fmt_row(r: dict[str, Any]) -> str:
    dt = r["dtype"].replace("torch.", "")
    cells = [r["variant"], f"{r['batch']} x {r['dim']}", dt]
    ours = f"{r['ours_fwd']:.3f} / {r['ours_fwdbwd']:.3f}"
    if "itpal_fwd" in r:
        it = f"{r['itpal_fwd']:.3f} / {r['itpal_fwdbwd']:.3f}"
        ratio = f"{r['itpal_fwd'] / r['ours_fwd']:.2f} / {r['itpal_fwdbwd'] / r['ours_fwdbwd']:.2f}"
        acc = f"{r['ours_viol']:+.1e} / {r['itpal_viol']:+.1e}"
    else:
        it, ratio, acc = "n/a", "n/a", f"{r['ours_viol']:+.1e} / n/a"
    return "| " + " | ".join([*cells, it, ours, ratio, acc]) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="batch 32/64/512/4096 x d 3/6/17 x f32/f64")
    p.add_argument("--batch", type=positive, nargs="+", default=[64, 512])
    p.add_argument("--dim", type=positive, nargs="+", default=[6, 17])
    p.add_argument(
        "--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"]
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument(
        "--reps",
        type=positive,
        default=None,
        help="interleaved repetitions per point (default: 21/11/5 by size)",
    )
    args = p.parse_args()
    global REPS
    REPS = args.reps
    torch.set_num_threads(1)
    batches, dims = ([32, 64, 512, 4096], [3, 6, 17]) if args.full else (args.batch, args.dim)
    print(f"ITPAL: {'cpp_projection ' + itpal.__file__ if itpal else 'not importable'}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print("CPU ms of one thread, medians of interleaved repetitions; every state active.")
    print("violation: max(KL part / eps - 1) over states, float64 (> 0: outside the bound)\n")
    print("| variant | shape | dtype | ITPAL fwd / fwd+bwd ms | ours fwd / fwd+bwd ms "
          "| ITPAL ÷ ours | violation ours / ITPAL |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for variant in args.variants:
        for dtype in args.dtype:
            for b in batches:
                for d in dims:
                    print(fmt_row(measure(variant, b, d, getattr(torch, dtype))), flush=True)


if __name__ == "__main__":
    main()
