"""One projection under two checkouts of trpl_math, A/B, in alternating processes.

Times ``--projection`` (forward, and forward+backward of ``sum(mean) + sum(cov)``) over a grid of
batch x d x dtype x {diagonal, full} (x {no entropy bound, one} for the joint KL), every state
active, input checks off, one thread, CPU time of the calling thread; each checkout runs in its
own process (``--worker``), the processes alternate A, B, A, B, ... for ``--rounds`` rounds, and
each case's time is the smallest of the rounds' medians (the round least disturbed by the
machine's other work). Prints a Markdown table with the ratio B / A.

    python benchmarks/bench_ab.py --a /path/to/old/checkout --b . --projection kl_joint
    python benchmarks/bench_ab.py --a OLD --b . --batch 512 --dim 17 --dtype float64 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EPS = {"kl_joint": {"eps": 0.01}, "kl": {"eps_mean": 0.01, "eps_cov": 1e-3}}


def worker(root: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Time every case with the trpl_math of ``root`` (run in a fresh process)."""
    sys.path[:0] = [root, str(Path(root) / "benchmarks")]
    import torch

    import trpl_math as tm

    if not tm.__file__.startswith(str(Path(root).resolve())):
        raise SystemExit(f"imported {tm.__file__}, not the checkout {root}")
    from bench_projections import make_inputs

    torch.set_num_threads(1)
    fn = getattr(tm, f"{args.projection}_projection")
    out: dict[str, list[float]] = {}
    for diag in (True, False):
        for batch in args.batch:
            for dim in args.dim:
                for dtype in args.dtype:
                    for ent in (False, True) if args.projection == "kl_joint" else (False,):
                        inp = make_inputs(batch, dim, getattr(torch, dtype), diag)
                        kw: dict[str, Any] = dict(EPS[args.projection], diag=diag)
                        if ent:  # half a nat above the old policies' mean entropy: it binds
                            h = tm.entropy(inp[3].double(), diag=diag)
                            kw["entropy_bound"] = float(h.mean()) + 0.5
                        key = f"{'diag' if diag else 'full'} {batch}x{dim} {dtype}" + (
                            " +H" if ent else ""
                        )
                        out[key] = [_median_ms(f, batch) for f in _calls(fn, inp, kw, tm)]
    return out


def _calls(fn: Any, inp: tuple, kw: dict[str, Any], tm: Any) -> tuple[Any, Any]:
    def fwd() -> None:
        with tm.no_validation():
            fn(*inp, **kw)

    def fwd_bwd() -> None:
        x = [t.clone().requires_grad_() for t in inp[:2]]
        with tm.no_validation():
            p = fn(x[0], x[1], *inp[2:], **kw)
        (p.mean.sum() + p.cov.sum()).backward()

    return fwd, fwd_bwd


def _median_ms(f: Any, batch: int) -> float:
    f()
    n = 21 if batch < 512 else 9
    ts = []
    for _ in range(n):
        t0 = time.thread_time()
        f()
        ts.append(time.thread_time() - t0)
    return 1e3 * sorted(ts)[n // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", help="checkout A (the baseline)")
    p.add_argument("--b", default=".", help="checkout B (default: this one)")
    p.add_argument("--projection", default="kl_joint", choices=sorted(EPS))
    p.add_argument("--batch", type=int, nargs="+", default=[32, 64, 512])
    p.add_argument("--dim", type=int, nargs="+", default=[3, 6, 17])
    p.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    if not args.a:
        p.error("--a is required")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    times: dict[str, list[dict[str, list[float]]]] = {"a": [], "b": []}
    for _ in range(args.rounds):
        for side in ("a", "b"):
            root = str(Path(getattr(args, side)).resolve())
            cmd = [sys.executable, __file__, *passed, "--worker", root]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            times[side].append(json.loads(res.stdout))
    best = {
        s: {k: [min(r[k][m] for r in rs) for m in (0, 1)] for k in rs[0]} for s, rs in times.items()
    }
    print(
        f"{args.projection}: A = {args.a}, B = {args.b}; CPU ms of one thread, the smallest of "
        f"{args.rounds} rounds' medians; every state active\n"
    )
    print("| case | A fwd / fwd+bwd ms | B fwd / fwd+bwd ms | B ÷ A |")
    print("|---|---|---|---|")
    for key, (fa, ba) in best["a"].items():
        fb_, bb = best["b"][key]
        ratio = f"{fb_ / fa:.2f} / {bb / ba:.2f}"
        print(f"| {key} | {fa:.2f} / {ba:.2f} | {fb_:.2f} / {bb:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
