"""Time every projection, forward and forward+backward, and report how exactly it meets its bound.

Prints a Markdown table: median wall time over repeated runs with ``torch.set_num_threads(1)``,
for every projection, diagonal and full covariances, at several batch sizes, dimensions and
dtypes, with **every state outside its bound** (the worst case: all states are projected). Beside
the times: the fraction of states that were active, the worst relative distance of the projected
divergence parts from their bounds (``max |part / ε - 1|`` over states and parts), and for full
covariances the time of one batched ``torch.linalg.eigh`` of the same matrices and each
projection's forward+backward time as a multiple of it (that ratio from 21 rounds interleaving
the projection's forward+backward with ``eigh``, so that load changes cancel; CPU time of this
thread throughout).

    python benchmarks/bench_projections.py            # batch 512, d = 17, float64 (the targets)
    python benchmarks/bench_projections.py --full     # batch 64/512/4096 x d 6/17/64 x f32/f64
    python benchmarks/bench_projections.py --batch 64 512 --dim 6 --dtype float32
    python benchmarks/bench_projections.py --jax      # + a row per projection: jit-compiled JAX
    python benchmarks/bench_projections.py --keep-freed-memory   # no page faults on reused memory

``--keep-freed-memory`` raises glibc malloc's trim and mmap thresholds first (process-wide;
``_cli.keep_freed_memory``): with the defaults, the megabyte-sized temporaries of a 512 × 17
batch are handed back to the kernel when a call frees them, and the next call page-faults on
every 4 KiB of them again, a cost that grows with the number of temporaries a projection
allocates, and which ``eigh`` alone (one output per call, reused by the next) does not pay
(0 faults a call measured against ~4,000 for the full KL projection's forward+backward).

The JAX rows (``<projection> (jax jit)``) time ``jax.jit`` of the projection and of
``jax.grad`` of ``sum(mean) + sum(cov)`` (the mean and covariance gradients), compiled once
before timing, with XLA's multi-threaded Eigen off, the input checks off (they need concrete
values), and timed in CPU time of the whole process (``time.process_time``): XLA executes the
program on threads of its own, whose work the calling thread's CPU time does not contain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from _cli import keep_freed_memory, positive

import trpl_math as tm

EPS_MEAN, EPS_COV, EPS_JOINT = 0.01, 1e-3, 0.01

PROJECTIONS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "frobenius": (tm.frobenius_projection, {"eps_mean": EPS_MEAN, "eps_cov": EPS_COV}),
    "wasserstein": (tm.wasserstein_projection, {"eps_mean": EPS_MEAN, "eps_cov": EPS_COV}),
    "wasserstein_exact": (
        tm.wasserstein_projection,
        {"eps_mean": EPS_MEAN, "eps_cov": EPS_COV, "exact": True},
    ),
    "kl": (tm.kl_projection, {"eps_mean": EPS_MEAN, "eps_cov": EPS_COV}),
    "kl_joint": (tm.kl_joint_projection, {"eps": EPS_JOINT}),
}


def make_inputs(batch: int, dim: int, dtype: torch.dtype, diag: bool, seed: int = 0) -> tuple:
    """Old and new Gaussians far apart (every state outside every bound)."""
    g = torch.Generator().manual_seed(seed)
    old_mean = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    mean = old_mean + torch.randn(batch, dim, generator=g, dtype=torch.float64)
    if diag:
        old_cov = torch.rand(batch, dim, generator=g, dtype=torch.float64) + 0.5
        cov = old_cov * torch.exp(torch.randn(batch, dim, generator=g, dtype=torch.float64))
    else:

        def spd() -> torch.Tensor:
            a = torch.randn(batch, dim, dim, generator=g, dtype=torch.float64) / dim**0.5
            return a @ a.mT + 0.5 * torch.eye(dim, dtype=torch.float64)

        old_cov, cov = spd(), spd()
    return tuple(x.to(dtype) for x in (mean, cov, old_mean, old_cov))


def median_ms(
    fn: Callable[[], Any], min_runs: int = 5, budget_s: float = 1.0, clock: Any = None
) -> float:
    """Median CPU time of ``fn`` in ms (wall time with ``--wall``; ``clock`` overrides).

    With one thread, this thread's CPU time is the work done, nearly unaffected by other
    processes competing for the cores (wall time on a loaded machine is not).
    """
    clock = clock or CLOCK
    fn()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return 1e3 * statistics.median(times)


CLOCK = time.thread_time


def interleaved_ms(fns: list[Callable[[], Any]], runs: int = 21) -> list[float]:
    """Median CPU times (ms) of ``fns`` over ``runs`` interleaved rounds (f, g, f, g, ...), so
    that a change of load in between affects them alike: a ratio of two is measured fairly."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times, strict=True):
            t0 = CLOCK()
            fn()
            ts.append(CLOCK() - t0)
    return [1e3 * statistics.median(ts) for ts in times]


def bound_error(name: str, proj: Any, inputs: tuple, diag: bool) -> tuple[float, float]:
    """(fraction of active states, worst relative distance of the parts from their bounds)."""
    mean, cov, old_mean, old_cov = (x.detach().double() for x in inputs)
    pm, pc = proj.mean.detach().double(), proj.cov.detach().double()
    kw = {"diag": diag}
    if name == "kl_joint":
        before = tm.kl_divergence(mean, cov, old_mean, old_cov, **kw).total
        after = tm.kl_divergence(pm, pc, old_mean, old_cov, **kw).total
        active = before > EPS_JOINT
        return float(active.double().mean()), float((after[active] / EPS_JOINT - 1).abs().max())
    if name == "kl":
        measure = tm.kl_divergence
    elif name == "frobenius":
        measure = tm.frobenius_distance
    elif name == "wasserstein_exact":
        measure = tm.wasserstein_distance
    else:  # Eq. 9 bounds the paper's own covariance measure

        def measure(m: Any, c: Any, om: Any, oc: Any, diag: bool) -> tm.DivergenceParts:
            return tm.DivergenceParts(
                tm.wasserstein_distance(m, c, om, oc, diag=diag).mean,
                tm.wasserstein_commuting_cov_part(c, oc, diag=diag),
            )

    before = measure(mean, cov, old_mean, old_cov, diag=diag)
    after = measure(pm, pc, old_mean, old_cov, diag=diag)
    act_m, act_c = before.mean > EPS_MEAN, before.cov > EPS_COV
    err = max(
        float((after.mean[act_m] / EPS_MEAN - 1).abs().max()) if act_m.any() else 0.0,
        float((after.cov[act_c] / EPS_COV - 1).abs().max()) if act_c.any() else 0.0,
    )
    return float((act_m & act_c).double().mean()), err


def run(
    batches: list[int], dims: list[int], dtypes: list[str], validate: bool, with_jax: bool = False
) -> None:
    torch.set_num_threads(1)
    header = (
        "| projection | cov | batch | d | dtype | fwd ms | fwd+bwd ms | × eigh | active "
        "| max \\|part/ε − 1\\| | page faults / fwd+bwd |"
    )
    print(header)
    print("|" + "---|" * 11)
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for batch in batches:
            for dim in dims:
                for diag in (True, False):
                    inputs = make_inputs(batch, dim, dtype, diag)
                    eigh_ms = None
                    if not diag:

                        def eigh(c: torch.Tensor = inputs[1]) -> Any:
                            return torch.linalg.eigh(c)

                        eigh_ms = median_ms(eigh)
                        print(
                            f"| *eigh (reference)* | full | {batch} | {dim} | {dtype_name} "
                            f"| {eigh_ms:.3f} | | 1.0 | | | {faults_per_call(eigh)} |"
                        )
                    for name, (fn, kw) in PROJECTIONS.items():
                        row = _row(name, fn, kw, inputs, diag, validate)
                        ratio = f"{row[1] / row[4]:.2f}" if row[4] else ""
                        print(
                            f"| {name} | {'diag' if diag else 'full'} | {batch} | {dim} "
                            f"| {dtype_name} | {row[0]:.3f} | {row[1]:.3f} | {ratio} "
                            f"| {row[2]:.2f} | {row[3]:.1e} | {row[5]} |",
                            flush=True,
                        )
                        if with_jax:
                            row = _jax_row(name, fn, kw, inputs, diag)
                            ratio = f"{row[1] / eigh_ms:.2f}" if eigh_ms else ""
                            print(
                                f"| {name} (jax jit) | {'diag' if diag else 'full'} | {batch} "
                                f"| {dim} | {dtype_name} | {row[0]:.3f} | {row[1]:.3f} "
                                f"| {ratio} | {row[2]:.2f} | {row[3]:.1e} | |",
                                flush=True,
                            )


def _row(name: str, fn: Callable, kw: dict, inputs: tuple, diag: bool, validate: bool) -> tuple:
    ctx = tm.no_validation if not validate else _null

    def forward() -> Any:
        with torch.no_grad(), ctx():
            return fn(*inputs, diag=diag, **kw)

    leaves = [x.clone().requires_grad_() for x in inputs[:2]]

    def forward_backward() -> None:
        with ctx():
            out = fn(*leaves, *inputs[2:], diag=diag, **kw)
        (out.mean.sum() + out.cov.sum()).backward()

    fwd = median_ms(forward)
    if diag:
        fb, eigh_ms = median_ms(forward_backward), None
    else:  # the ratio to eigh from interleaved runs of the two
        fb, eigh_ms = interleaved_ms([forward_backward, lambda: torch.linalg.eigh(inputs[1])])
    active, err = bound_error(name, forward(), inputs, diag)
    return fwd, fb, active, err, eigh_ms, faults_per_call(forward_backward)


def faults_per_call(fn: Callable[[], Any], calls: int = 10) -> str:
    """Minor page faults of this process per call of ``fn`` (after one warm-up call), as text:
    memory freed to the kernel by one call and touched again by the next costs one each."""
    try:
        import resource
    except ImportError:  # not a Unix
        return "n/a"
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return f"{(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls:.0f}"


def _jax_row(name: str, fn: Callable, kw: dict, inputs: tuple, diag: bool) -> tuple:
    """:func:`_row` for jit-compiled JAX (forward, and ``jax.grad`` w.r.t. mean and cov)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    args = [jnp.asarray(x.numpy()) for x in inputs]

    def loss(m: Any, c: Any, om: Any, oc: Any) -> Any:
        out = fn(m, c, om, oc, diag=diag, **kw)
        return jnp.sum(out.mean) + jnp.sum(out.cov)

    with tm.no_validation():  # traced at the first (warm-up) call, inside the block
        forward = jax.jit(lambda *a: fn(*a, diag=diag, **kw))
        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
        # XLA runs the compiled program on its own threads, which the calling thread's CPU
        # time does not see (it undercounted these rows 6-17x): the process's CPU time
        clock = time.perf_counter if CLOCK is time.perf_counter else time.process_time
        fwd = median_ms(lambda: jax.block_until_ready(forward(*args)), clock=clock)
        fb = median_ms(lambda: jax.block_until_ready(grad(*args)), clock=clock)
        out = forward(*args)
    proj = tm.Gaussian(*(torch.from_numpy(np.array(x)) for x in out))
    active, err = bound_error(name, proj, inputs, diag)
    return fwd, fb, active, err


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--full", action="store_true", help="the whole target grid of docs/performance.md"
    )
    parser.add_argument("--batch", type=positive, nargs="+", default=[512])
    parser.add_argument("--dim", type=positive, nargs="+", default=[17])
    parser.add_argument("--dtype", nargs="+", default=["float64"], choices=["float32", "float64"])
    parser.add_argument(
        "--validate", action="store_true", help="keep input checks on (default: off)"
    )
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    parser.add_argument("--jax", action="store_true", help="add a jit-compiled JAX row each")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="raise glibc malloc's trim and mmap thresholds (no page faults on reused memory)",
    )
    args = parser.parse_args()
    if args.jax:  # XLA's Eigen on one thread, like torch's; float64 enabled
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        )
        import jax

        jax.config.update("jax_enable_x64", True)
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.thread_time
    if args.full:
        args.batch, args.dim, args.dtype = [64, 512, 4096], [6, 17, 64], ["float32", "float64"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, 1 thread, {'wall' if args.wall else 'CPU'} time (median), "
        f"validation {'on' if args.validate else 'off'}, "
        f"{os.cpu_count()} CPUs, load average {load} (other processes skew the times)"
    )
    if args.keep_freed_memory:
        print(keep_freed_memory())
    run(args.batch, args.dim, args.dtype, args.validate, args.jax)


if __name__ == "__main__":
    main()
