"""The cross-checks: each compares the library with an independent computation on random cases.

Every check is a function ``(config, impl, rng) -> list[CaseResult]``; :func:`aggregate` turns the
cases into one :class:`CheckResult` row of the report. The functions under test come in through
an :class:`Implementation` (dependency injection), so a planted wrong projection can be checked
without touching the library.

Conventions (also in docs/verification.md):

* relative error of a projection: ``max(‖μ̃ - μ*‖ / max(‖μ*‖, ‖μ_o‖), ‖Σ̃ - Σ*‖_F / ‖Σ*‖_F)``
  against the reference ``(μ*, Σ*)``;
* constraint violation: ``max(0, (d(π̃, π_o) - ε) / ε)`` per part, with the divergence evaluated
  independently in float64 (:mod:`verification._linalg`); the bound gap ``|d - ε| / ε`` of every
  active part must also be small (the library promises to land *on* the bound);
* bounds are drawn relative to the case's own divergence, ``ε = r · d(π, π_o)`` with
  ``r`` log-uniform in [0.05, 2], so about 80% of the parts are active and 20% inside.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from verification import _linalg as la
from verification import references as ref

__all__ = [
    "CHECKS",
    "CaseResult",
    "Check",
    "CheckResult",
    "Config",
    "Implementation",
    "Tolerances",
    "aggregate",
    "default_implementation",
]


@dataclass(frozen=True)
class Tolerances:
    """Pass thresholds; see docs/verification.md for where each number comes from."""

    solver_rtol: float = 1e-4  # projection vs reference solution (Clarabel's accuracy ~3e-5)
    bound_rtol: float = 1e-9  # violation / bound gap relative to ε (library: ~1e-10)
    closed_form_rtol: float = 1e-9  # divergences vs the independent NumPy evaluation
    fidelity_rtol: float = 1e-6  # W2 vs the fidelity SDP's value, relative to tr A + tr B
    fd_rtol: float = 1e-3  # Jacobian·v vs central differences of re-solved references
    mc_sigmas: float = 5.0  # closed form vs Monte Carlo, in standard errors
    gradcheck_atol: float = 1e-5  # torch.autograd.gradcheck
    gradcheck_rtol: float = 1e-3
    max_unsolved_fraction: float = 0.1  # a check fails above max(1, this × cases) unsolved

    @staticmethod
    def for_dtype(dtype: str) -> Tolerances:
        """float64 defaults; float32 loosened to its precision (eps ≈ 1.2e-7)."""
        if dtype == "float64":
            return Tolerances()
        return Tolerances(solver_rtol=1e-3, bound_rtol=1e-4, closed_form_rtol=1e-4)


@dataclass(frozen=True)
class Config:
    """What to run: cases per check, dimensions drawn from, seed, library dtype, solvers."""

    cases: int = 20
    dims: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    seed: int = 0
    dtype: str = "float64"
    solvers: tuple[str, ...] = ("CLARABEL", "SCS")
    fd_solvers: tuple[str, ...] = ("SCS",)
    mc_samples: int = 200_000
    fd_step: float = 1e-4
    fd_directions: int = 2
    gradcheck_dims: tuple[int, ...] = (1, 3)
    tolerances: Tolerances = field(default_factory=Tolerances)
    log_scale: float = 1.0  # eigenvalues exp(u), u ∈ [-log_scale, log_scale]: condition ≤ e^(2·)
    hard: bool = False  # add ill-conditioned and extreme-scale cases (see HARD)

    @property
    def max_condition(self) -> float:
        """Largest condition number a drawn covariance can have, ``exp(2 log_scale)``."""
        return math.exp(2.0 * self.log_scale)

    def domain(self) -> str:
        """One line stating what the cases cover (the report header prints it)."""
        scales = (
            ", variances scaled by 1e-3..1e3 (hard mode: reference-FD Jacobians left out)"
            if self.hard
            else ""
        )
        return (
            f"d ∈ {{{', '.join(map(str, self.dims))}}}; covariances Q diag(exp(u)) Qᵀ with "
            f"u ∈ [-{self.log_scale:g}, {self.log_scale:g}] (condition ≤ "
            f"{self.max_condition:.3g}){scales}; library dtype {self.dtype}; bounds ε = r·d(π, "
            f"π_o), r log-uniform in [0.05, 2] (about 80% active); entropy checks: β = H ± 2"
        )

    def __post_init__(self) -> None:
        if self.cases < 1:
            raise ValueError(f"cases must be >= 1, got {self.cases}")
        if not self.dims or min(self.dims) < 1:
            raise ValueError(f"dims must be positive integers, got {self.dims}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if not self.log_scale > 0:
            raise ValueError(f"log_scale must be > 0, got {self.log_scale}")


@dataclass(frozen=True)
class Implementation:
    """The functions under test (default: the library's). Replace one to plant a wrong one."""

    frobenius_projection: Callable[..., Any]
    wasserstein_projection: Callable[..., Any]
    kl_projection: Callable[..., Any]
    kl_joint_projection: Callable[..., Any]
    entropy_projection: Callable[..., Any]
    kl_divergence: Callable[..., Any]
    wasserstein_distance: Callable[..., Any]
    frobenius_distance: Callable[..., Any]
    entropy: Callable[..., Any]
    entropy_schedule: Callable[..., Any] | None = None  # None: the library's


def default_implementation() -> Implementation:
    """The library's public functions."""
    import trpl_math as tm

    return Implementation(
        frobenius_projection=tm.frobenius_projection,
        wasserstein_projection=tm.wasserstein_projection,
        kl_projection=tm.kl_projection,
        kl_joint_projection=tm.kl_joint_projection,
        entropy_projection=tm.entropy_projection,
        kl_divergence=tm.kl_divergence,
        wasserstein_distance=tm.wasserstein_distance,
        frobenius_distance=tm.frobenius_distance,
        entropy=tm.entropy,
        entropy_schedule=tm.entropy_schedule,
    )


BACKENDS = ("numpy", "jax")


def backend_implementation(backend: str = "numpy") -> Implementation:
    """The library's functions called with arrays of ``backend`` ("numpy" or "jax").

    With ``"jax"`` every NumPy argument becomes a ``jax.numpy`` array (float64 enabled) and
    every array of the result comes back as NumPy, so each check runs unchanged on the JAX back
    end. Arguments that are not NumPy (the torch tensors of the gradient checks) pass through.
    """
    impl = default_implementation()
    if backend == "numpy":
        return impl
    if backend != "jax":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def to_jax(x: Any) -> Any:
        return jnp.asarray(x) if isinstance(x, np.ndarray | np.generic) else x

    def back(x: Any) -> Any:
        return np.asarray(x) if isinstance(x, jax.Array) else x

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def on_jax(*args: Any, **kwargs: Any) -> Any:
            if any(hasattr(a, "detach") for a in (*args, *kwargs.values())):
                return fn(*args, **kwargs)  # torch tensors (the gradient checks): unchanged
            out = fn(*map(to_jax, args), **{k: to_jax(v) for k, v in kwargs.items()})
            return type(out)(*map(back, out)) if isinstance(out, tuple) else back(out)

        return on_jax

    fields = {f.name: getattr(impl, f.name) for f in dataclasses.fields(impl)}
    return Implementation(
        **{k: wrap(v) if k != "entropy_schedule" else v for k, v in fields.items()}
    )


@dataclass
class CaseResult:
    """One case of one check. ``solved=False``: the reference failed, nothing was compared."""

    solved: bool = True
    abs_err: float = 0.0
    rel_err: float = 0.0
    violation: float = 0.0
    bound_gap: float = 0.0
    lib_seconds: float = 0.0
    ref_seconds: float = 0.0
    extra: float = 0.0
    passed: bool | None = None
    solver: str | None = None
    note: str = ""


@dataclass(frozen=True)
class CheckResult:
    """One row of the report."""

    name: str
    description: str
    cases: int
    unsolved: int
    max_abs_err: float
    max_rel_err: float
    max_violation: float
    max_bound_gap: float
    tolerance: str
    lib_ms: float
    ref_ms: float
    passed: bool
    solvers: str = ""
    note: str = ""


@dataclass(frozen=True)
class Check:
    """A named check: ``run(config, impl, rng)`` gives its cases, ``limits`` its thresholds."""

    name: str
    description: str
    run: Callable[[Config, Implementation, np.random.Generator], list[CaseResult]]
    limits: Callable[[Tolerances], dict[str, float]]
    tolerance_text: Callable[[Tolerances], str]
    informational: bool = False


def aggregate(check: Check, results: list[CaseResult], tol: Tolerances) -> CheckResult:
    """Summarise a check's cases: worst errors, unsolved count, median times, pass/fail.

    A check fails when a solved case exceeds a limit (``rel``, ``violation``, ``bound_gap``),
    when a case says ``passed=False``, when no case was solved, or when more than
    ``max(1, max_unsolved_fraction · cases)`` of the references did not solve.
    """
    solved = [r for r in results if r.solved]
    unsolved = len(results) - len(solved)
    limits = check.limits(tol)

    def worst(attr: str) -> float:
        return max((getattr(r, attr) for r in solved), default=math.nan)

    allowed = max(1, math.floor(tol.max_unsolved_fraction * len(results)))
    ok = bool(solved) and unsolved <= allowed
    for attr, limit in limits.items():
        ok = ok and all(getattr(r, attr) <= limit for r in solved)
    ok = ok and all(r.passed is not False for r in solved)
    notes = sorted({r.note for r in results if r.note})
    solver_counts: dict[str, int] = {}
    for r in solved:
        if r.solver:
            solver_counts[r.solver] = solver_counts.get(r.solver, 0) + 1
    return CheckResult(
        name=check.name,
        description=check.description,
        cases=len(results),
        unsolved=unsolved,
        max_abs_err=worst("abs_err"),
        max_rel_err=worst("rel_err"),
        max_violation=worst("violation"),
        max_bound_gap=worst("bound_gap"),
        tolerance=check.tolerance_text(tol),
        lib_ms=1e3 * float(np.median([r.lib_seconds for r in results])),
        ref_ms=1e3 * float(np.median([r.ref_seconds for r in results])),
        passed=ok,
        solvers=", ".join(f"{k}×{v}" for k, v in sorted(solver_counts.items())),
        note="; ".join(notes)[:400],
    )


# ----------------------------------------------------------------------------- helpers


class _Gaussian(NamedTuple):
    mean: Any
    cov: Any


def _np_dtype(cfg: Config) -> type:
    return np.float64 if cfg.dtype == "float64" else np.float32


def _instance(cfg: Config, rng: np.random.Generator, d: int, **kw: Any) -> la.Instance:
    """A random instance at the configuration's conditioning; in hard mode also rescaled by a
    random 10^k, k ∈ [-3, 3] (every measure compared is scale-free or rescaled alike)."""
    inst = la.random_instance(rng, d, log_scale=cfg.log_scale, **kw)
    if not cfg.hard:
        return inst
    c = 10.0 ** rng.uniform(-3, 3)
    return la.Instance(inst.mean * c**0.5, inst.cov * c, inst.old_mean * c**0.5, inst.old_cov * c)


def _round_trip(inst: la.Instance, cfg: Config) -> la.Instance:
    """The instance as the library sees it (cast to the dtype), back in float64 for references."""
    dt = _np_dtype(cfg)

    def rt(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=dt).astype(np.float64)

    return la.Instance(rt(inst.mean), rt(inst.cov), rt(inst.old_mean), rt(inst.old_cov))


def _lib_inputs(inst: la.Instance, cfg: Config, diag: bool) -> tuple[np.ndarray, ...]:
    dt = _np_dtype(cfg)
    cov = np.diag(inst.cov) if diag else inst.cov
    old_cov = np.diag(inst.old_cov) if diag else inst.old_cov
    return tuple(np.asarray(x, dtype=dt) for x in (inst.mean, cov, inst.old_mean, old_cov))


def _full(cov: Any, diag: bool) -> np.ndarray:
    cov = np.asarray(cov, dtype=np.float64)
    return np.diag(cov) if diag else cov


def _ratio(rng: np.random.Generator) -> float:
    """``r`` log-uniform in [0.05, 2]: the bound as a fraction of the current divergence."""
    return float(np.exp(rng.uniform(np.log(0.05), np.log(2.0))))


def _rel(err: float, scale: float) -> float:
    return err / scale if scale > 0 else (0.0 if err == 0 else math.inf)


def _compare(
    mean: np.ndarray,
    cov: np.ndarray,
    ref_mean: np.ndarray,
    ref_cov: np.ndarray,
    old_mean: np.ndarray,
) -> tuple[float, float]:
    """(abs, rel) error of a projected Gaussian against a reference (see module docstring)."""
    e_m = float(np.linalg.norm(mean - ref_mean))
    e_c = float(np.linalg.norm(cov - ref_cov))
    scale_m = max(float(np.linalg.norm(ref_mean)), float(np.linalg.norm(old_mean)))
    return max(e_m, e_c), max(_rel(e_m, scale_m), _rel(e_c, float(np.linalg.norm(ref_cov))))


def _bound_errors(parts: tuple[float, ...], bounds: tuple[float, ...], active: tuple[bool, ...]):
    """(violation, bound gap) over the parts, each relative to its bound."""
    viol = max(max(0.0, (p - b) / b) for p, b in zip(parts, bounds, strict=True))
    gaps = [abs(p - b) / b for p, b, a in zip(parts, bounds, active, strict=True) if a]
    return viol, max(gaps, default=0.0)


def _structure(diag: bool, commuting: bool) -> str:
    return "diagonal" if diag else "commuting" if commuting else "general"


def _merge_infos(*infos: ref.SolveInfo) -> tuple[bool, float, str]:
    ok = all(i.ok for i in infos)
    solvers = sorted({i.solver or "none" for i in infos})
    return ok, sum(i.seconds for i in infos), "+".join(solvers)


def _unsolved(infos: tuple[ref.SolveInfo, ...], lib_seconds: float) -> CaseResult:
    bad = [i for i in infos if not i.ok]
    return CaseResult(
        solved=False,
        lib_seconds=lib_seconds,
        ref_seconds=sum(i.seconds for i in infos),
        note=f"reference not solved ({bad[0].status})",
    )


# ----------------------------------------------------------------------------- projections

_MEASURE_PARTS: dict[str, Callable[..., tuple[float, float]]] = {
    "frob": la.frobenius_parts,
    "kl": la.kl_parts,
    "w2": lambda *a: la.w2_parts(*a, scaled=True),
    "w2_plain": lambda *a: la.w2_parts(*a, scaled=False),
}


def _projection_check(
    measure: str,
    *,
    diag: bool = False,
    exact: bool = True,
    commuting: bool = False,
    informational: bool = False,
) -> Callable[[Config, Implementation, np.random.Generator], list[CaseResult]]:
    """Projection (mean + covariance) against the mean QP and the covariance reference."""
    parts_fn = _MEASURE_PARTS[measure]

    def run(cfg: Config, impl: Implementation, rng: np.random.Generator) -> list[CaseResult]:
        out: list[CaseResult] = []
        fill: list[float] = []  # informational: how far into the ball Eq. 9 lands
        for _ in range(cfg.cases):
            d = int(rng.choice(cfg.dims))
            inst = _instance(cfg, rng, d, structure=_structure(diag, commuting))
            inst = _round_trip(inst, cfg)
            p_mean, p_cov = parts_fn(inst.mean, inst.cov, inst.old_mean, inst.old_cov)
            eps_m, eps_c = _ratio(rng) * p_mean, _ratio(rng) * p_cov
            args = _lib_inputs(inst, cfg, diag)
            start = time.perf_counter()
            if measure == "frob":
                res = impl.frobenius_projection(*args, eps_mean=eps_m, eps_cov=eps_c, diag=diag)
            elif measure == "kl":
                res = impl.kl_projection(*args, eps_mean=eps_m, eps_cov=eps_c, diag=diag)
            else:
                res = impl.wasserstein_projection(
                    *args,
                    eps_mean=eps_m,
                    eps_cov=eps_c,
                    scaled=measure == "w2",
                    exact=exact,
                    diag=diag,
                )
            lib_seconds = time.perf_counter() - start
            mean, cov = np.asarray(res.mean, dtype=np.float64), _full(res.cov, diag)

            r_mean = ref.reference_mean(
                inst.mean,
                inst.old_mean,
                inst.old_cov,
                eps_mean=eps_m,
                measure=measure,
                solvers=cfg.solvers,
            )
            if measure == "frob":
                r_cov = ref.reference_frobenius_cov(
                    inst.cov, inst.old_cov, eps_cov=eps_c, solvers=cfg.solvers
                )
            elif measure == "kl":
                r_cov = ref.reference_kl_cov(
                    inst.cov, inst.old_cov, eps_cov=eps_c, solvers=cfg.solvers
                )
            else:
                r_cov = ref.reference_w2_cov(
                    inst.cov,
                    inst.old_cov,
                    eps_cov=eps_c,
                    scaled=measure == "w2",
                    solvers=cfg.solvers,
                )
            ok, ref_seconds, solver = _merge_infos(r_mean.info, r_cov.info)
            if not ok:
                out.append(_unsolved((r_mean.info, r_cov.info), lib_seconds))
                continue
            abs_err, rel_err = _compare(mean, cov, r_mean.value, r_cov.value, inst.old_mean)
            parts = parts_fn(mean, cov, inst.old_mean, inst.old_cov)
            active = (p_mean > eps_m, p_cov > eps_c)
            if informational:
                # Eq. 9 on non-commuting pairs is feasible but lands inside: no bound-gap test,
                # and its objective can only be worse than the true optimum.
                active = (active[0], False)
            viol, gap = _bound_errors(parts, (eps_m, eps_c), active)
            res_case = CaseResult(
                abs_err=abs_err,
                rel_err=rel_err,
                violation=viol,
                bound_gap=gap,
                lib_seconds=lib_seconds,
                ref_seconds=ref_seconds,
                solver=solver,
            )
            if informational and p_cov > eps_c:
                metric = inst.old_cov if measure == "w2" else None
                obj = la.w2_cov_between(cov, inst.cov, metric)
                obj_ref = la.w2_cov_between(r_cov.value, inst.cov, metric)
                res_case.extra = (obj - obj_ref) / obj_ref
                # Eq. 9 is feasible, so it cannot beat the optimum beyond the solver's accuracy.
                res_case.passed = obj - obj_ref >= -cfg.tolerances.solver_rtol * obj_ref
                fill.append(parts[1] / eps_c)
            out.append(res_case)
        if informational:
            excess = [c.extra for c in out if c.solved and c.passed is not None]
            if excess:
                out[0].note = (
                    f"objective excess over the SDP optimum: median {np.median(excess):.2%}, "
                    f"worst {max(excess):.2%}; true W2cov(π̃, π_o)/ε_Σ: median "
                    f"{np.median(fill):.3f}, min {min(fill):.3f} (Eq. 9 lands inside the ball)"
                )
        return out

    return run


def _kl_joint_check(
    *, diag: bool, with_entropy: bool
) -> Callable[[Config, Implementation, np.random.Generator], list[CaseResult]]:
    """Joint KL projection (optionally with the entropy floor) against its convex program."""

    def run(cfg: Config, impl: Implementation, rng: np.random.Generator) -> list[CaseResult]:
        out = []
        for _ in range(cfg.cases):
            d = int(rng.choice(cfg.dims))
            inst = _round_trip(_instance(cfg, rng, d, structure=_structure(diag, False)), cfg)
            kl0 = sum(la.kl_parts(inst.mean, inst.cov, inst.old_mean, inst.old_cov))
            eps = _ratio(rng) * kl0
            beta = None
            if with_entropy:
                # Feasible by construction: the old covariance scaled by 1 + δ stays in the ball
                # for an entropy gain of about sqrt(d ε); stay well below that.
                gain = rng.uniform(-0.3, 0.3 * math.sqrt(d * eps))
                beta = la.entropy(inst.old_cov) + gain
            args = _lib_inputs(inst, cfg, diag)
            start = time.perf_counter()
            res = impl.kl_joint_projection(*args, eps=eps, entropy_bound=beta, diag=diag)
            lib_seconds = time.perf_counter() - start
            mean, cov = np.asarray(res.mean, dtype=np.float64), _full(res.cov, diag)
            r = ref.reference_kl_joint(
                inst.mean,
                inst.cov,
                inst.old_mean,
                inst.old_cov,
                eps=eps,
                entropy_bound=beta,
                solvers=cfg.solvers,
            )
            if not r.ok:
                out.append(_unsolved((r.info,), lib_seconds))
                continue
            r_mean, r_cov = r.value
            abs_err, rel_err = _compare(mean, cov, r_mean, r_cov, inst.old_mean)
            kl = sum(la.kl_parts(mean, cov, inst.old_mean, inst.old_cov))
            # Which constraints bind is read off the reference (with an entropy floor the KL
            # bound need not bind even when the prediction is outside the ball).
            kl_ref = sum(la.kl_parts(r_mean, r_cov, inst.old_mean, inst.old_cov))
            parts, bounds, active = [kl], [eps], [kl0 > eps and kl_ref > eps * (1 - 1e-6)]
            if beta is not None:
                # The entropy floor as a "part": -H ≤ -β, relative to max(|β|, 1).
                h = la.entropy(cov)
                scale = max(abs(beta), 1.0)
                h_ref = la.entropy(r_cov)
                parts.append(1.0 + (beta - h) / scale)
                bounds.append(1.0)
                active.append(h_ref - beta < 1e-6 * scale)
            viol, gap = _bound_errors(tuple(parts), tuple(bounds), tuple(active))
            out.append(
                CaseResult(
                    extra=float(len(active) > 1 and active[1]),
                    abs_err=abs_err,
                    rel_err=rel_err,
                    violation=viol,
                    bound_gap=gap,
                    lib_seconds=lib_seconds,
                    ref_seconds=r.info.seconds,
                    solver=r.info.solver,
                )
            )
        if with_entropy and out:
            solved = [c for c in out if c.solved]
            n_active = sum(int(c.extra) for c in solved)
            out[0].note = f"entropy floor active in {n_active} of {len(solved)} solved cases"
        return out

    return run


# ----------------------------------------------------------------------------- divergences


def _divergence_closed_forms(
    cfg: Config, impl: Implementation, rng: np.random.Generator
) -> list[CaseResult]:
    """Every divergence and the entropy against the independent NumPy evaluation (no solver)."""
    out = []
    for k in range(cfg.cases):
        d = int(rng.choice(cfg.dims))
        diag = k % 2 == 1
        inst = _round_trip(_instance(cfg, rng, d, structure=_structure(diag, False)), cfg)
        args = _lib_inputs(inst, cfg, diag)
        start = time.perf_counter()
        got = [
            impl.kl_divergence(*args, diag=diag),
            impl.wasserstein_distance(*args, scaled=True, diag=diag),
            impl.wasserstein_distance(*args, scaled=False, diag=diag),
            impl.frobenius_distance(*args, diag=diag),
        ]
        h = float(impl.entropy(args[1], diag=diag))
        lib_seconds = time.perf_counter() - start
        a = (inst.mean, inst.cov, inst.old_mean, inst.old_cov)
        want = [la.kl_parts(*a), la.w2_parts(*a, scaled=True), la.w2_parts(*a, scaled=False)]
        want.append(la.frobenius_parts(*a))
        pairs = [
            (float(g), w)
            for parts, ws in zip(got, want, strict=True)
            for g, w in zip(parts, ws, strict=True)
        ]
        pairs.append((h, la.entropy(inst.cov)))
        abs_err = max(abs(g - w) for g, w in pairs)
        rel_err = max(_rel(abs(g - w), max(abs(w), 1e-12)) for g, w in pairs)
        out.append(CaseResult(abs_err=abs_err, rel_err=rel_err, lib_seconds=lib_seconds))
    return out


def _entropy_control(
    cfg: Config, impl: Implementation, rng: np.random.Generator
) -> list[CaseResult]:
    """``entropy_projection`` (Sec. 4.2): lands on β exactly, scales the standard deviation by
    ``exp((β - H)/d)`` (Σ by its square, one scalar for the whole matrix), and in the inequality
    form leaves ``H ≥ β`` bit-for-bit unchanged. Entropies measured independently (slogdet)."""
    out = []
    for k in range(cfg.cases):
        d = int(rng.choice(cfg.dims))
        diag = k % 2 == 1
        inst = _round_trip(_instance(cfg, rng, d, structure=_structure(diag, False)), cfg)
        cov = _lib_inputs(inst, cfg, diag)[1]
        h = la.entropy(inst.cov)
        beta = h + float(rng.uniform(-2.0, 2.0))
        start = time.perf_counter()
        eq = _full(impl.entropy_projection(cov, entropy_bound=beta, equality=True, diag=diag), diag)
        ineq = impl.entropy_projection(cov, entropy_bound=beta, diag=diag)
        lib_seconds = time.perf_counter() - start
        scale = max(1.0, abs(beta))
        gap = abs(la.entropy(eq) - beta) / scale
        # One scalar c for every entry, c = exp(2(β - H)/d): the std scaled by c^{1/2}.
        nz = inst.cov != 0
        ratio = eq[nz] / inst.cov[nz]
        want = math.exp(2.0 * (beta - h) / d)
        rel = max(float(np.max(np.abs(ratio / want - 1.0))), 0.0)
        if h >= beta:
            unchanged = bool(np.array_equal(np.asarray(ineq), cov))
            violation = 0.0
            note = "" if unchanged else "H ≥ β changed by the inequality form"
        else:
            unchanged = True
            violation = max(0.0, beta - la.entropy(_full(ineq, diag))) / scale
            note = ""
        out.append(
            CaseResult(
                abs_err=rel * want,
                rel_err=rel,
                violation=violation,
                bound_gap=gap,
                lib_seconds=lib_seconds,
                passed=unchanged,
                note=note,
            )
        )
    return out


def _entropy_schedules(
    cfg: Config, impl: Implementation, rng: np.random.Generator
) -> list[CaseResult]:
    """``entropy_schedule`` against docs/math.md §5.2: ``β_i = dκ + (H_0 - dκ) τ^{10 i/N}`` (exp)
    and
    ``β_i = H_0 + (i/N)(dκ - H_0)`` (linear), at random steps including both ends."""
    import trpl_math as tm

    schedule = impl.entropy_schedule or tm.entropy_schedule
    out = []
    for k in range(cfg.cases):
        total = int(rng.integers(1, 1000))
        step = int(rng.choice([0, total, int(rng.integers(0, total + 1))]))
        h0, kappa = float(rng.uniform(-5, 5)), float(rng.uniform(-2, 1))
        d, tau = int(rng.choice(cfg.dims)), float(rng.uniform(0.1, 0.9))
        kind = "exp" if k % 2 == 0 else "linear"
        target = d * kappa
        if kind == "exp":
            want = target + (h0 - target) * tau ** (10.0 * step / total)
        else:
            want = h0 + (step / total) * (target - h0)
        start = time.perf_counter()
        got = float(
            schedule(
                step=step,
                total_steps=total,
                initial_entropy=h0,
                target_per_dim=kappa,
                dim=d,
                kind=kind,
                temperature=tau,
            )
        )
        err = abs(got - want)
        out.append(
            CaseResult(
                abs_err=err,
                rel_err=_rel(err, max(1.0, abs(want))),
                lib_seconds=time.perf_counter() - start,
            )
        )
    return out


def _w2_fidelity(cfg: Config, impl: Implementation, rng: np.random.Generator) -> list[CaseResult]:
    """``wasserstein_distance`` (covariance part, scaled and plain) against the fidelity SDP."""
    out = []
    for _ in range(cfg.cases):
        d = int(rng.choice(cfg.dims))
        inst = _round_trip(_instance(cfg, rng, d), cfg)
        args = _lib_inputs(inst, cfg, False)
        start = time.perf_counter()
        plain = float(impl.wasserstein_distance(*args, scaled=False).cov)
        scaled = float(impl.wasserstein_distance(*args, scaled=True).cov)
        lib_seconds = time.perf_counter() - start
        chol = np.linalg.cholesky(inst.old_cov)
        inv = np.linalg.inv(chol)
        whitened = inv @ inst.cov @ inv.T
        r_plain = ref.reference_w2_fidelity(inst.cov, inst.old_cov, solvers=cfg.solvers)
        r_scaled = ref.reference_w2_fidelity(
            0.5 * (whitened + whitened.T), np.eye(d), solvers=cfg.solvers
        )
        ok, ref_seconds, solver = _merge_infos(r_plain.info, r_scaled.info)
        if not ok:
            out.append(_unsolved((r_plain.info, r_scaled.info), lib_seconds))
            continue
        errs = [
            (abs(plain - float(r_plain.value)), np.trace(inst.cov) + np.trace(inst.old_cov)),
            (abs(scaled - float(r_scaled.value)), np.trace(whitened) + d),
        ]
        out.append(
            CaseResult(
                abs_err=max(e for e, _ in errs),
                rel_err=max(e / s for e, s in errs),
                lib_seconds=lib_seconds,
                ref_seconds=ref_seconds,
                solver=solver,
            )
        )
    return out


def _monte_carlo(
    quantity: str,
) -> Callable[[Config, Implementation, np.random.Generator], list[CaseResult]]:
    """KL or entropy closed form against a Monte-Carlo estimate (SciPy log-densities)."""
    from scipy.stats import multivariate_normal

    def run(cfg: Config, impl: Implementation, rng: np.random.Generator) -> list[CaseResult]:
        out = []
        for _ in range(cfg.cases):
            d = int(rng.choice(cfg.dims))
            inst = _round_trip(la.random_instance(rng, d, log_scale=0.5), cfg)
            args = _lib_inputs(inst, cfg, False)
            start = time.perf_counter()
            if quantity == "kl":
                value = float(impl.kl_divergence(*args).total)
            else:
                value = float(impl.entropy(args[1]))
            lib_seconds = time.perf_counter() - start
            start = time.perf_counter()
            p = multivariate_normal(inst.mean, inst.cov)
            x = p.rvs(size=cfg.mc_samples, random_state=rng).reshape(cfg.mc_samples, d)
            if quantity == "kl":
                samples = p.logpdf(x) - multivariate_normal(inst.old_mean, inst.old_cov).logpdf(x)
            else:
                samples = -p.logpdf(x)
            estimate = float(np.mean(samples))
            stderr = float(np.std(samples) / math.sqrt(cfg.mc_samples))
            mc_seconds = time.perf_counter() - start
            err = abs(value - estimate)
            out.append(
                CaseResult(
                    abs_err=err,
                    rel_err=_rel(err, abs(estimate)),
                    extra=err / stderr if stderr > 0 else math.inf,
                    passed=err <= cfg.tolerances.mc_sigmas * stderr + 1e-12 * abs(estimate),
                    lib_seconds=lib_seconds,
                    ref_seconds=mc_seconds,
                    solver="monte-carlo",
                )
            )
        worst = max(c.extra for c in out)
        out[
            0
        ].note = f"worst |closed - MC| = {worst:.2f} standard errors ({cfg.mc_samples} samples)"
        return out

    return run


# ----------------------------------------------------------------------------- gradients


def _torch_projection(name: str, impl: Implementation) -> Callable[..., Any]:
    """``f(mean, cov, old_mean, old_cov, bounds, diag) -> (mean, cov)`` for a gradient variant."""
    table: dict[str, Callable[..., Any]] = {
        "frobenius": lambda a, b, diag: impl.frobenius_projection(*a, **b, diag=diag),
        "w2_exact_scaled": lambda a, b, diag: impl.wasserstein_projection(
            *a, **b, exact=True, diag=diag
        ),
        "w2_exact_plain": lambda a, b, diag: impl.wasserstein_projection(
            *a, **b, exact=True, scaled=False, diag=diag
        ),
        "w2_eq9_scaled": lambda a, b, diag: impl.wasserstein_projection(
            *a, **b, exact=False, diag=diag
        ),
        "w2_eq9_plain": lambda a, b, diag: impl.wasserstein_projection(
            *a, **b, exact=False, scaled=False, diag=diag
        ),
        "kl": lambda a, b, diag: impl.kl_projection(*a, **b, diag=diag),
        "kl_joint": lambda a, b, diag: impl.kl_joint_projection(*a, **b, diag=diag),
        "kl_joint_entropy": lambda a, b, diag: impl.kl_joint_projection(*a, **b, diag=diag),
        "entropy": lambda a, b, diag: _Gaussian(
            a[0], impl.entropy_projection(a[1], entropy_bound=b["entropy_bound"], diag=diag)
        ),
    }
    return table[name]


def _bounds_for(name: str, inst: la.Instance, ratio: float) -> dict[str, float]:
    """Bounds putting every constraint of ``name`` at ``ratio`` × its current value."""
    a = (inst.mean, inst.cov, inst.old_mean, inst.old_cov)
    if name == "entropy":
        return {"entropy_bound": la.entropy(inst.cov) + (0.5 if ratio < 1 else -0.5)}
    if name.startswith("kl_joint"):
        b: dict[str, float] = {"eps": ratio * sum(la.kl_parts(*a))}
        if name == "kl_joint_entropy":
            # Active: above both entropies, reachable inside the ball; inactive: far below.
            h = max(la.entropy(inst.cov), la.entropy(inst.old_cov))
            b["entropy_bound"] = h + 0.05 if ratio < 1 else h - 5.0
        return b
    parts = {
        "frobenius": la.frobenius_parts,
        "kl": la.kl_parts,
    }.get(name) or (lambda *x: la.w2_parts(*x, scaled=name.endswith("scaled")))
    m, c = parts(*a)
    return {"eps_mean": ratio * m, "eps_cov": ratio * c}


def _gradcheck(
    family: tuple[str, ...],
) -> Callable[[Config, Implementation, np.random.Generator], list[CaseResult]]:
    """``torch.autograd.gradcheck`` (float64) of the projections, active and inactive, full and
    diagonal; the errors reported are autograd's Jacobian against central differences."""

    def run(cfg: Config, impl: Implementation, rng: np.random.Generator) -> list[CaseResult]:
        import torch

        out = []
        tol = cfg.tolerances
        for name in family:
            for diag in (False, True):
                if diag and name.startswith("w2_exact"):
                    continue  # exact=True is Eq. 9 for diagonal covariances
                for ratio, state in ((0.3, "active"), (3.0, "inactive")):
                    for d in cfg.gradcheck_dims:
                        inst = la.random_instance(
                            rng, d, structure="diagonal" if diag else "general"
                        )
                        if name == "kl_joint_entropy" and ratio < 1:
                            # Keep the entropy floor reachable inside the KL ball.
                            inst = la.Instance(inst.mean, inst.cov, inst.old_mean, inst.cov * 1.5)
                        bounds = _bounds_for(name, inst, ratio)
                        fn = _torch_projection(name, impl)
                        tensors = [
                            torch.tensor(x, dtype=torch.float64, requires_grad=True)
                            for x in _lib_inputs(inst, Config(dtype="float64"), diag)
                        ]

                        def f(m, c, om, oc, fn=fn, bounds=bounds, diag=diag):
                            if not diag:
                                c, oc = 0.5 * (c + c.mT), 0.5 * (oc + oc.mT)
                            # A batch of one state, as the layer calls it.
                            res = fn(tuple(x[None] for x in (m, c, om, oc)), bounds, diag)
                            return torch.cat([res.mean.reshape(-1), res.cov.reshape(-1)])

                        start = time.perf_counter()
                        analytic = torch.autograd.functional.jacobian(f, tuple(tensors))
                        lib_seconds = time.perf_counter() - start
                        abs_err, rel_err = _jacobian_errors(f, tensors, analytic)
                        passed = torch.autograd.gradcheck(
                            f,
                            tuple(tensors),
                            eps=1e-6,
                            atol=tol.gradcheck_atol,
                            rtol=tol.gradcheck_rtol,
                            raise_exception=False,
                        )
                        out.append(
                            CaseResult(
                                abs_err=abs_err,
                                rel_err=rel_err,
                                passed=bool(passed),
                                lib_seconds=lib_seconds,
                                note=""
                                if passed
                                else f"gradcheck failed: {name} {state} d={d}"
                                + (" diag" if diag else ""),
                            )
                        )
        return out

    return run


def _jacobian_errors(
    f: Callable[..., Any], tensors: list[Any], analytic: tuple[Any, ...]
) -> tuple[float, float]:
    """Max |autograd - central difference| over all Jacobian entries, absolute and relative
    (to ``max(|J|_max, 1)``), with step 1e-6."""
    import torch

    h = 1e-6
    worst, scale = 0.0, 1.0
    with torch.no_grad():
        base = [t.detach().clone() for t in tensors]
        for i, t in enumerate(base):
            flat = t.reshape(-1)
            jac = analytic[i].reshape(-1, flat.numel())
            for j in range(flat.numel()):
                plus = [b.clone() for b in base]
                minus = [b.clone() for b in base]
                plus[i].view(-1)[j] += h
                minus[i].view(-1)[j] -= h
                numeric = (f(*plus) - f(*minus)) / (2 * h)
                worst = max(worst, float((numeric - jac[:, j]).abs().max()))
                scale = max(scale, float(jac[:, j].abs().max()))
    return worst, worst / scale


def _fd_reference(
    name: str,
) -> Callable[[Config, Implementation, np.random.Generator], list[CaseResult]]:
    """Directional derivatives of the *reference* solution (re-solved at θ ± h v) against the
    library's Jacobian-vector product (torch autograd, float64) for the numerical projections."""

    def solve_ref(inst: la.Instance, bounds: dict[str, float], cfg: Config):
        if name == "kl":
            rm = ref.reference_mean(
                inst.mean,
                inst.old_mean,
                inst.old_cov,
                eps_mean=bounds["eps_mean"],
                measure="kl",
                solvers=cfg.fd_solvers,
            )
            rc = ref.reference_kl_cov(
                inst.cov, inst.old_cov, eps_cov=bounds["eps_cov"], solvers=cfg.fd_solvers
            )
            infos = (rm.info, rc.info)
            value = (rm.value, rc.value) if rm.ok and rc.ok else None
        else:
            r = ref.reference_kl_joint(
                inst.mean,
                inst.cov,
                inst.old_mean,
                inst.old_cov,
                eps=bounds["eps"],
                entropy_bound=bounds.get("entropy_bound"),
                solvers=cfg.fd_solvers,
            )
            infos, value = (r.info,), r.value
        if value is None:
            return None, infos
        return np.concatenate([value[0], value[1].reshape(-1)]), infos

    def run(cfg: Config, impl: Implementation, rng: np.random.Generator) -> list[CaseResult]:
        import torch

        out = []
        fn = _torch_projection(name, impl)
        for _ in range(cfg.cases):
            d = int(rng.choice([k for k in cfg.dims if k <= 4] or [min(cfg.dims)]))
            inst = _instance(cfg, rng, d)
            if name == "kl_joint_entropy":
                inst = la.Instance(inst.mean, inst.cov, inst.old_mean, inst.cov * 1.5)
            bounds = _bounds_for(name, inst, 0.3)
            base = [inst.mean, inst.cov, inst.old_mean, inst.old_cov]
            tensors = tuple(torch.tensor(x, dtype=torch.float64) for x in base)

            def f(m, c, om, oc, fn=fn, bounds=bounds):
                res = fn(tuple(x[None] for x in (m, c, om, oc)), bounds, False)
                return torch.cat([res.mean.reshape(-1), res.cov.reshape(-1)])

            for _k in range(cfg.fd_directions):
                v = [rng.standard_normal(x.shape) for x in base]
                v[1], v[3] = 0.5 * (v[1] + v[1].T), 0.5 * (v[3] + v[3].T)
                norm = math.sqrt(sum(float(np.sum(x * x)) for x in v))
                v = [x / norm for x in v]
                start = time.perf_counter()
                jac = torch.autograd.functional.jacobian(f, tensors)
                jvp = sum(
                    j.reshape(j.shape[0], -1) @ torch.tensor(x.reshape(-1), dtype=torch.float64)
                    for j, x in zip(jac, v, strict=True)
                )
                lib_seconds = time.perf_counter() - start
                h = cfg.fd_step
                sols, infos = [], []
                for sign in (1.0, -1.0):
                    moved = [b + sign * h * x for b, x in zip(base, v, strict=True)]
                    sol, info = solve_ref(la.Instance(*moved), bounds, cfg)
                    sols.append(sol)
                    infos.extend(info)
                if any(s is None for s in sols):
                    out.append(_unsolved(tuple(infos), lib_seconds))
                    continue
                fd = (sols[0] - sols[1]) / (2 * h)
                j = jvp.numpy()
                err = float(np.linalg.norm(fd - j))
                out.append(
                    CaseResult(
                        abs_err=err,
                        rel_err=_rel(err, max(float(np.linalg.norm(j)), 1e-3)),
                        lib_seconds=lib_seconds,
                        ref_seconds=sum(i.seconds for i in infos),
                        solver="+".join(sorted({i.solver or "none" for i in infos})),
                    )
                )
        return out

    return run


# ----------------------------------------------------------------------------- registry


def _proj_limits(t: Tolerances) -> dict[str, float]:
    return {"rel_err": t.solver_rtol, "violation": t.bound_rtol, "bound_gap": t.bound_rtol}


def _proj_text(t: Tolerances) -> str:
    return f"rel {t.solver_rtol:.0e}; bound {t.bound_rtol:.0e}"


def _info_limits(t: Tolerances) -> dict[str, float]:
    return {"violation": t.bound_rtol}


def _proj(name: str, desc: str, run: Any, informational: bool = False) -> Check:
    if informational:
        return Check(
            name,
            desc,
            run,
            _info_limits,
            lambda t: f"reported; feasible to {t.bound_rtol:.0e}",
            informational=True,
        )
    return Check(name, desc, run, _proj_limits, _proj_text)


CHECKS: tuple[Check, ...] = (
    _proj("frobenius_projection", "Eq. 6-8 vs mean QP + Frobenius SOCP", _projection_check("frob")),
    _proj(
        "frobenius_projection[diag]",
        "diagonal path vs the same programs",
        _projection_check("frob", diag=True),
    ),
    _proj(
        "wasserstein_projection[exact,scaled]",
        "geodesic projection vs whitened fidelity SDP",
        _projection_check("w2", exact=True),
    ),
    _proj(
        "wasserstein_projection[exact,plain]",
        "geodesic projection vs fidelity SDP",
        _projection_check("w2_plain", exact=True),
    ),
    _proj(
        "wasserstein_projection[diag,scaled]",
        "diagonal Eq. 9 vs whitened fidelity SDP",
        _projection_check("w2", diag=True, exact=False),
    ),
    _proj(
        "wasserstein_projection[diag,plain]",
        "diagonal Eq. 9 vs fidelity SDP",
        _projection_check("w2_plain", diag=True, exact=False),
    ),
    _proj(
        "wasserstein_projection[eq9,scaled,commuting]",
        "paper's Eq. 9 on commuting pairs vs SDP",
        _projection_check("w2", exact=False, commuting=True),
    ),
    _proj(
        "wasserstein_projection[eq9,plain,commuting]",
        "paper's Eq. 9 on commuting pairs vs SDP",
        _projection_check("w2_plain", exact=False, commuting=True),
    ),
    _proj(
        "wasserstein_projection[eq9,scaled,general]",
        "Eq. 9 on non-commuting pairs: gap to the SDP optimum (reported)",
        _projection_check("w2", exact=False, informational=True),
        informational=True,
    ),
    _proj(
        "wasserstein_projection[eq9,plain,general]",
        "Eq. 9 on non-commuting pairs: gap to the SDP optimum (reported)",
        _projection_check("w2_plain", exact=False, informational=True),
        informational=True,
    ),
    _proj(
        "kl_projection", "Eq. 6 + Eq. 10-11 vs mean QP + log-det program", _projection_check("kl")
    ),
    _proj(
        "kl_projection[diag]",
        "diagonal path vs the same programs",
        _projection_check("kl", diag=True),
    ),
    _proj(
        "kl_joint_projection",
        "Eq. 18 (no entropy bound) vs joint log-det program",
        _kl_joint_check(diag=False, with_entropy=False),
    ),
    _proj(
        "kl_joint_projection[diag]",
        "diagonal path vs joint log-det program",
        _kl_joint_check(diag=True, with_entropy=False),
    ),
    _proj(
        "kl_joint_projection[entropy]",
        "Eq. 18 with entropy floor vs joint log-det program",
        _kl_joint_check(diag=False, with_entropy=True),
    ),
    _proj(
        "kl_joint_projection[entropy,diag]",
        "diagonal path with entropy floor",
        _kl_joint_check(diag=True, with_entropy=True),
    ),
    Check(
        "divergences[closed forms]",
        "KL, W2 (scaled, plain), Frobenius, entropy vs independent NumPy",
        _divergence_closed_forms,
        lambda t: {"rel_err": t.closed_form_rtol},
        lambda t: f"rel {t.closed_form_rtol:.0e}",
    ),
    Check(
        "entropy_projection[control]",
        "lands on β, scales the std by exp((β-H)/d), leaves H ≥ β unchanged (inequality)",
        _entropy_control,
        lambda t: {
            "rel_err": t.closed_form_rtol,
            "violation": t.bound_rtol,
            "bound_gap": t.bound_rtol,
        },
        lambda t: f"rel {t.closed_form_rtol:.0e}; bound {t.bound_rtol:.0e}",
    ),
    Check(
        "entropy_schedule",
        "exponential and linear β schedules vs docs/math.md §5.2",
        _entropy_schedules,
        lambda t: {"rel_err": t.closed_form_rtol},
        lambda t: f"rel {t.closed_form_rtol:.0e}",
    ),
    Check(
        "wasserstein_distance[fidelity SDP]",
        "W2 covariance part (scaled, plain) vs fidelity SDP",
        _w2_fidelity,
        lambda t: {"rel_err": t.fidelity_rtol},
        lambda t: f"rel {t.fidelity_rtol:.0e} of tr A + tr B",
    ),
    Check(
        "kl_divergence[monte carlo]",
        "closed-form KL vs Monte-Carlo estimate",
        _monte_carlo("kl"),
        lambda t: {},
        lambda t: f"{t.mc_sigmas:g} std. errors",
    ),
    Check(
        "entropy[monte carlo]",
        "closed-form entropy vs Monte-Carlo estimate",
        _monte_carlo("entropy"),
        lambda t: {},
        lambda t: f"{t.mc_sigmas:g} std. errors",
    ),
    *(
        Check(
            f"gradcheck[{label}]",
            "torch.autograd.gradcheck, float64, active+inactive, full+diag: " + ", ".join(fam),
            _gradcheck(fam),
            lambda t: {},
            lambda t: f"atol {t.gradcheck_atol:.0e}, rtol {t.gradcheck_rtol:.0e}",
        )
        for label, fam in (
            ("frobenius_projection", ("frobenius",)),
            (
                "wasserstein_projection",
                ("w2_exact_scaled", "w2_exact_plain", "w2_eq9_scaled", "w2_eq9_plain"),
            ),
            ("kl_projection", ("kl",)),
            ("kl_joint_projection", ("kl_joint", "kl_joint_entropy")),
            ("entropy_projection", ("entropy",)),
        )
    ),
    *(
        Check(
            f"jacobian[{name}] vs reference FD",
            "autograd Jacobian·v vs central differences of re-solved references (SCS)",
            _fd_reference(name),
            lambda t: {"rel_err": t.fd_rtol},
            lambda t: f"rel {t.fd_rtol:.0e}",
        )
        for name in ("kl", "kl_joint", "kl_joint_entropy")
    ),
)
