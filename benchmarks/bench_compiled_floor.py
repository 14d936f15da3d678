"""What a compiled per-state kernel would buy the diagonal KL projection at small batches.

A measurement, not a part of trpl_math: the diagonal KL projection (the paper's Eq. 6 for the
mean, Eq. 11 with its Newton root for the variances; docs/math.md §3.2, §3.7) and its backward
(§4, Eq. 6; §4.2) written as numba kernels, one state per loop iteration as ITPAL's C++ does,
inside one torch autograd node. It first checks the prototype against ``kl_projection``
(values and both input gradients) and stops with exit code 1 if they disagree; then it times,
interleaved call by call (CPU time of this thread, medians), ``kl_projection``, the prototype,
ITPAL's op when its module is importable (``../shared/anchors/itpal/build.sh``), and the floor
of any torch node: an identity ``autograd.Function`` with the same loss and backward pass.

    OMP_NUM_THREADS=1 PYTHONPATH=/path/to/itpal_build python benchmarks/bench_compiled_floor.py

Needs numba (``pip install numba``), which trpl_math does not depend on.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_itpal as bi
from _cli import positive

import trpl_math as tm

try:
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

_SERIES = tuple((1.0 if k % 2 == 0 else -1.0) / k for k in range(9, 1, -1))


def _kernels() -> tuple[Any, Any]:
    """The forward and backward kernels, compiled on first use."""
    njit = numba.njit(cache=False)

    @njit
    def phi(x: float) -> float:  # x - log(1 + x), the series below |x| = 1e-2
        if abs(x) < 1e-2:
            s = x * 0.1
            for c in _SERIES:
                s = (s + c) * x
            return s * x
        return x - math.log1p(x)

    @njit
    def forward(m, v, om, ov, em, ec, out_m, out_v, t_m, dist_m, t_c, lam, nu):
        n, d = m.shape
        for i in range(n):
            dist = 0.0
            for j in range(d):
                df = m[i, j] - om[i, j]
                dist += df * df / ov[i, j]
            dist *= 0.5
            dist_m[i] = dist
            t = math.sqrt(em[i] / dist) if dist > em[i] else 1.0
            t_m[i] = t
            for j in range(d):
                out_m[i, j] = om[i, j] + t * (m[i, j] - om[i, j]) if t < 1.0 else m[i, j]
            kl1, a, b = 0.0, 0.0, 0.0
            for j in range(d):
                lam[i, j] = ov[i, j] / v[i, j]
                kl1 += phi(v[i, j] / ov[i, j] - 1.0)
                dl = lam[i, j] - 1.0
                a += dl * dl
                b += dl * dl * dl
            kl1 *= 0.5
            eps = ec[i]
            if kl1 <= eps:
                t_c[i] = 1.0
                for j in range(d):
                    nu[i, j] = lam[i, j]
                    out_v[i, j] = v[i, j]
                continue
            # the Padé start of the library (t² = q (1 + p t)), then Newton in log t
            p, q = 4.0 * b / (3.0 * a), 4.0 * eps / a
            sq = math.sqrt(p * q * p * q + 4.0 * q)
            t = 0.5 * (p * q + sq) if p * q >= 0 else 2.0 * q / (sq - p * q)
            t = min(t, 1.0) if t > 0.0 else math.sqrt(q)
            for _ in range(30):
                kl, dkl = 0.0, 0.0
                for j in range(d):
                    u = t * (lam[i, j] - 1.0)
                    nuj = 1.0 + u
                    x = -u / nuj
                    kl += x - (-math.log1p(u) if nuj >= 2.0 else math.log1p(x))
                    dkl += x * x
                kl *= 0.5
                dkl = 0.5 * dkl / t
                if abs(kl - eps) <= 1e-15 * eps:
                    break
                t = min(t * math.exp(-(kl - eps) / (t * dkl)), 1.0)
            t_c[i] = t
            for j in range(d):
                nu[i, j] = 1.0 + t * (lam[i, j] - 1.0)
                out_v[i, j] = ov[i, j] / nu[i, j]

    @njit
    def backward(gm, gv, m, om, ov, t_m, dist_m, t_c, lam, nu, g_m, g_v):
        n, d = gm.shape
        for i in range(n):
            t = t_m[i]
            if t < 1.0:
                s = 0.0
                for j in range(d):
                    s += gm[i, j] * (m[i, j] - om[i, j])
                c = -s * t / (2.0 * dist_m[i])
                for j in range(d):
                    g_m[i, j] = t * gm[i, j] + c * (m[i, j] - om[i, j]) / ov[i, j]
            else:
                for j in range(d):
                    g_m[i, j] = gm[i, j]
            t = t_c[i]
            if t >= 1.0:
                for j in range(d):
                    g_v[i, j] = gv[i, j]
                continue
            eta1 = 1.0 / t
            f_eta, cc = 0.0, 0.0
            for j in range(d):
                nuj = nu[i, j]
                f_eta += 0.5 * (1.0 / (nuj * nuj) - 1.0 / nuj) * (1.0 - nuj)
                cc += gv[i, j] * ov[i, j] * (1.0 - nuj) / (nuj * nuj)
            k = cc / f_eta  # (-cc/η₁) / (-f_eta/η₁)
            for j in range(d):
                nuj = nu[i, j]
                r = 0.5 * (1.0 / (nuj * nuj) - 1.0 / nuj)
                mh = (gv[i, j] * ov[i, j] / (nuj * nuj) - k * r) / eta1
                g_v[i, j] = lam[i, j] * lam[i, j] * mh / ov[i, j]

    return forward, backward


FORWARD = BACKWARD = None


class CompiledKLDiag(torch.autograd.Function):
    """``(μ, σ², μ_o, σ_o²) -> (μ̃, σ̃²)`` through the kernels (2-D CPU tensors, float bounds)."""

    @staticmethod
    def forward(ctx: Any, mean, var, old_mean, old_var, eps_m: float, eps_c: float):
        dt = mean.dtype
        m, v, om, ov = (
            x.detach().numpy().astype(np.float64, copy=False)
            for x in (mean, var, old_mean, old_var)
        )
        n = m.shape[0]
        em, ec = np.full(n, eps_m), np.full(n, eps_c)
        out_m, out_v, lam, nu = (np.empty_like(m) for _ in range(4))
        t_m, dist_m, t_c = (np.empty(n) for _ in range(3))
        FORWARD(m, v, om, ov, em, ec, out_m, out_v, t_m, dist_m, t_c, lam, nu)
        ctx.saved, ctx.dt = (m, om, ov, t_m, dist_m, t_c, lam, nu), dt
        return torch.from_numpy(out_m).to(dt), torch.from_numpy(out_v).to(dt)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_mean, g_var):
        gm, gv = (g.numpy().astype(np.float64, copy=False) for g in (g_mean, g_var))
        g_m, g_v = np.empty_like(gm), np.empty_like(gv)
        BACKWARD(gm, gv, *ctx.saved, g_m, g_v)
        dt = ctx.dt
        return torch.from_numpy(g_m).to(dt), torch.from_numpy(g_v).to(dt), None, None, None, None


class Identity(torch.autograd.Function):
    """The floor of any torch node: copies its two inputs, passes the gradients through."""

    @staticmethod
    def forward(ctx: Any, mean, var, old_mean, old_var, eps_m: float, eps_c: float):
        return mean.clone(), var.clone()

    @staticmethod
    def backward(ctx: Any, g_mean, g_var):
        return g_mean, g_var, None, None, None, None


class Node(bi.Ours):
    """``bench_itpal``'s call (same inputs, loss and backward: its ``run``) through one
    autograd node."""

    def __init__(self, fn: Any, x: dict[str, np.ndarray], dtype: torch.dtype) -> None:
        super().__init__("kl_diag", x, dtype)
        self.fn = fn

    def project(self, mean: torch.Tensor, cov: torch.Tensor) -> tm.Gaussian:
        t = self.t
        out = self.fn.apply(mean, cov, t["old_mean"], t["old_cov"], bi.EPS_MEAN, bi.EPS_COV)
        return tm.Gaussian(*out)


def check(batch: int, dim: int) -> float:
    """The prototype against ``kl_projection`` (float64): the largest of the relative
    differences (max abs difference / max abs value) of μ̃, σ̃² and the gradients of μ and σ²."""
    x = bi.make_inputs(batch, dim, True)
    ours, proto = bi.Ours("kl_diag", x, torch.float64), Node(CompiledKLDiag, x, torch.float64)
    worst = 0.0
    outs = []
    for impl in (ours, proto):
        mean, cov = (impl.t[k].clone().requires_grad_() for k in ("mean", "cov"))
        p = impl.project(mean, cov)
        loss = (p.mean * ours.g_mean).sum() + (p.cov * ours.g_cov).sum()
        outs.append((p.mean.detach(), p.cov.detach(), *torch.autograd.grad(loss, (mean, cov))))
    for a, b in zip(*outs, strict=True):
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


def median_ms(impls: dict[str, Any], backward: bool, reps: int) -> dict[str, float]:
    for impl in impls.values():
        for _ in range(3):
            impl.run(backward)
    times: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(reps):
        for k, impl in impls.items():
            times[k].append(bi.cpu_time(lambda impl=impl: impl.run(backward)))
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=positive, nargs="+", default=[32, 64, 512])
    p.add_argument("--dim", type=positive, nargs="+", default=[3, 6, 17])
    p.add_argument("--dtype", nargs="+", choices=["float32", "float64"], default=["float32"])
    p.add_argument("--reps", type=positive, default=41, help="interleaved repetitions per point")
    args = p.parse_args(argv)
    if numba is None:
        print("bench_compiled_floor.py needs numba (pip install numba)", file=sys.stderr)
        return 2
    global FORWARD, BACKWARD
    FORWARD, BACKWARD = _kernels()
    torch.set_num_threads(1)
    worst = max(check(b, d) for b in args.batch for d in args.dim)
    print(f"prototype vs kl_projection (float64): largest relative difference {worst:.1e}")
    if worst > 1e-12:
        print("the prototype does not compute kl_projection: no timing", file=sys.stderr)
        return 1
    la = os.getloadavg()
    print(f"torch {torch.__version__}, numba {numba.__version__}, load average {la[0]:.2f}")
    print("CPU ms of one thread, medians of interleaved calls; fwd / fwd+bwd; every state active")
    names = ["kl_projection", "compiled", "identity node"] + (["ITPAL"] if bi.itpal else [])
    head = " | ".join(names)
    ratio = " | ITPAL ÷ kl_projection | ITPAL ÷ compiled" if bi.itpal else ""
    print(f"\n| shape | dtype | {head}{ratio} |")
    print("|---|---|" + "---|" * (len(names) + (2 if bi.itpal else 0)))
    for batch in args.batch:
        for dim in args.dim:
            for dtype in args.dtype:
                x = bi.make_inputs(batch, dim, True)
                dt = getattr(torch, dtype)
                impls: dict[str, Any] = {
                    "kl_projection": bi.Ours("kl_diag", x, dt),
                    "compiled": Node(CompiledKLDiag, x, dt),
                    "identity node": Node(Identity, x, dt),
                }
                if bi.itpal:
                    impls["ITPAL"] = bi.Itpal("kl_diag", x, dt)
                with bi.no_validation():
                    fwd = median_ms(impls, False, args.reps)
                    both = median_ms(impls, True, args.reps)
                cells = [f"{fwd[k]:.3f} / {both[k]:.3f}" for k in names]
                if bi.itpal:
                    for k in ("kl_projection", "compiled"):
                        cells.append(f"{fwd['ITPAL'] / fwd[k]:.2f} / {both['ITPAL'] / both[k]:.2f}")
                print(f"| {batch} × {dim} | {dtype} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
