"""One projection under two checkouts of trpl_math, A/B, in alternating processes.

Times ``--projection`` (forward, and forward+backward of ``sum(mean) + sum(cov)``) over a grid of
batch x d x dtype x {diagonal, full} (x {no entropy bound, one} for the joint KL), every state
active, input checks off, one thread, CPU time of the calling thread; each checkout runs in its
own process (``--worker``), the processes alternate A, B, A, B, ... for ``--rounds`` rounds, and
each case's time is the smallest of the rounds' medians (the round least disturbed by the
machine's other work). Prints a Markdown table with the ratio B / A.

``--count`` counts instructions instead of timing: each checkout runs once under
``valgrind --tool=callgrind`` with instrumentation off except around ``--calls`` calls of each
case (switched by ``callgrind_control`` from the worker itself, after two warm-up calls), and the
table gives instructions per call. Repeatable to ~0.2% whatever else the machine is doing (the
same checkout as A and B: ratios 1.00, counts within 0.11%), which a shared 2-core machine's
timings are not; but it counts work, not time: memory
traffic, page faults and the kernel are not in it. Needs valgrind (Debian's package).

    python benchmarks/bench_ab.py --a /path/to/old/checkout --b . --projection kl_joint
    python benchmarks/bench_ab.py --a OLD --b . --batch 512 --dim 17 --dtype float64 --rounds 3
    python benchmarks/bench_ab.py --a OLD --b . --count --batch 32 512 --dim 3 17
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _cli import positive

EPS = {
    "kl_joint": {"eps": 0.01},
    "kl": {"eps_mean": 0.01, "eps_cov": 1e-3},
    "wasserstein": {"eps_mean": 0.01, "eps_cov": 1e-3},  # the paper's Eq. 9, scaled
    "wasserstein_plain": {"eps_mean": 0.01, "eps_cov": 1e-3, "scaled": False},
    "frobenius": {"eps_mean": 0.01, "eps_cov": 1e-3},
}
#: The library function of each ``--projection``.
FUNCTION = {"wasserstein_plain": "wasserstein_projection"}


def worker(root: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Time every case with the trpl_math of ``root`` (run in a fresh process)."""
    sys.path[:0] = [root, str(Path(root) / "benchmarks")]
    import torch

    import trpl_math as tm

    if not tm.__file__.startswith(str(Path(root).resolve())):
        raise SystemExit(f"imported {tm.__file__}, not the checkout {root}")
    from bench_projections import make_inputs

    torch.set_num_threads(1)
    fn = getattr(tm, FUNCTION.get(args.projection, f"{args.projection}_projection"))
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
                        calls = _calls(fn, inp, kw, tm)
                        if args.count:
                            out[key] = [_instructions(f, args.calls) for f in calls]
                        else:
                            out[key] = [_median_ms(f, batch) for f in calls]
    return out


def _instructions(f: Any, calls: int) -> float:
    """Run ``f`` ``calls`` times with callgrind's instrumentation on, then dump (the driver reads
    the dumps in order); returns 0 (a placeholder for the count)."""
    f()
    f()
    pid = str(os.getpid())
    for flags in (["-z"], ["-i", "on"]):
        subprocess.run(["callgrind_control", *flags, pid], check=True, capture_output=True)
    for _ in range(calls):
        f()
    for flags in (["-i", "off"], ["-d"]):
        subprocess.run(["callgrind_control", *flags, pid], check=True, capture_output=True)
    return 0.0


def _totals(dump: Path) -> int:
    """The instruction total of one callgrind dump file."""
    line = next(ln for ln in dump.read_text().splitlines() if ln.startswith("totals:"))
    return int(line.split()[1])


def _counted(cmd: list[str], env: dict[str, str], calls: int) -> dict[str, list[float]]:
    """Run one checkout's worker under callgrind; instructions per call for every case."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--count needs valgrind and callgrind_control (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        grind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        grind.append(f"--callgrind-out-file={out}")
        res = subprocess.run(
            [*grind, os.path.realpath(sys.executable), *cmd], env=env, capture_output=True,
            text=True, check=True,
        )  # fmt: skip
        keys = list(json.loads(res.stdout.strip().splitlines()[-1]))
        # one dump per case and call kind (forward, forward+backward), in the worker's order
        totals = [_totals(Path(f"{out}.{k}")) / calls for k in range(1, 2 * len(keys) + 1)]
    return {key: totals[2 * i : 2 * i + 2] for i, key in enumerate(keys)}


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
    p.add_argument("--batch", type=positive, nargs="+", default=[32, 64, 512])
    p.add_argument("--dim", type=positive, nargs="+", default=[3, 6, 17])
    p.add_argument(
        "--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"]
    )
    p.add_argument("--rounds", type=positive, default=2)
    p.add_argument("--count", action="store_true", help="instructions under callgrind, not time")
    p.add_argument("--calls", type=positive, default=2, help="calls counted per case (--count)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    if not args.a:
        p.error("--a is required")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    passed = list(argv if argv is not None else sys.argv[1:])
    times: dict[str, list[dict[str, list[float]]]] = {"a": [], "b": []}
    for _ in range(1 if args.count else args.rounds):
        for side in ("a", "b"):
            root = str(Path(getattr(args, side)).resolve())
            if args.count:
                cmd = [__file__, *passed, "--worker", root]
                times[side].append(_counted(cmd, env, args.calls))
                continue
            cmd = [sys.executable, __file__, *passed, "--worker", root]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            times[side].append(json.loads(res.stdout))
    best = {
        s: {k: [min(r[k][m] for r in rs) for m in (0, 1)] for k in rs[0]} for s, rs in times.items()
    }
    if args.count:
        what, unit, scale, fmt = "instructions per call (callgrind)", "M instr", 1e-6, ".3f"
    else:
        what = f"CPU ms of one thread, the smallest of {args.rounds} rounds' medians"
        unit, scale, fmt = "ms", 1.0, ".2f"
    print(f"{args.projection}: A = {args.a}, B = {args.b}; {what}; every state active\n")
    print(f"| case | A fwd / fwd+bwd {unit} | B fwd / fwd+bwd {unit} | B ÷ A |")
    print("|---|---|---|---|")
    for key, (fa, ba) in best["a"].items():
        fb_, bb = best["b"][key]
        ratio = f"{fb_ / fa:.2f} / {bb / ba:.2f}"
        a_, b_ = (f"{scale * u:{fmt}} / {scale * v:{fmt}}" for u, v in ((fa, ba), (fb_, bb)))
        print(f"| {key} | {a_} | {b_} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
