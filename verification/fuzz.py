"""``python -m verification.fuzz``: random projection calls over the whole domain, re-measured.

Every call draws one state (seeded by ``[seed, index]``, so ``--replay INDEX`` rebuilds it):
a projection (KL, joint KL with and without an entropy bound, W2 by Eq. 9 scaled and plain, the
exact W2 scaled and plain, Frobenius, entropy), diagonal or full, ``d`` in 1-32, condition
numbers up to 1e8 (float64) or 1e4 (float32) for both covariances, near-coincident pairs among
them, ε log-uniform in [1e-8, 10] (in the old covariance's units for Frobenius and plain W2
covariance parts; a fifth of the parts strictly inside their bounds).

Each result is re-measured in float64 by :mod:`verification._measures` (no library code). A
bounded part is held to ``d(π̃, π_o) ≤ ε + tol`` with the representability tolerance

    tol = 4 (R + R_o) + 64 u ε,   R = u (Σ_ij |∂d/∂Σ̃_ij| |Σ̃_ij| + Σ_i |∂d/∂μ̃_i| |μ̃_i|)

(``u`` the unit roundoff of the dtype; R is how far rounding the result to its dtype can move
the part, to first order, and R_o the same for rounding the old policy, which carries the
condition number of Σ_o: see :func:`verification._measures.input_sensitivity`). A part over
``ε + tol/2`` in float64 is flagged and re-measured in 50-digit arithmetic
(:mod:`verification._mp`); a violation is *confirmed* only there. States strictly inside (by
1e-6 relative) must come back bit-for-bit unchanged; NaN/Inf, exceptions and refusals (a
ValueError) are failures, except the documented refusal of a bound below what the dtype can
resolve (:func:`below_documented_floor`, counted apart).
Exit status 1 on any confirmed violation or failure, 0 otherwise, 2 for bad arguments.

A long run is split into shards (``--start``, ``--calls``) run as separate processes;
``--merge SHARD.txt ...`` adds up their reports into one (:func:`merge`).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verification import _measures as M
from verification import _mp

PROJECTIONS = (
    "kl",
    "kl_joint",
    "kl_joint_entropy",
    "w2_eq9",
    "w2_eq9_plain",
    "w2_exact",
    "w2_exact_plain",
    "frobenius",
    "entropy",
)
MAX_COND = {"float64": 1e8, "float32": 1e4}
EPS_RANGE = (1e-8, 10.0)
DIMS = (1, 32)
INSIDE_MARGIN = 1e-6
# projection -> (bounded measure, extra measures that must stay within the bound)
MEASURE_OF = {
    "kl": ("kl", ()),
    "kl_joint": ("kl", ()),
    "kl_joint_entropy": ("kl", ()),
    "w2_eq9": ("eq9", ("w2",)),
    "w2_eq9_plain": ("eq9_plain", ("w2_plain",)),
    "w2_exact": ("w2", ()),
    "w2_exact_plain": ("w2_plain", ()),
    "frobenius": ("frobenius", ()),
}
MP_MEASURE = {
    "kl": lambda m, c, om, oc: _mp.kl_parts(m, c, om, oc),
    "w2": lambda m, c, om, oc: _mp.w2_parts(m, c, om, oc, scaled=True),
    "w2_plain": lambda m, c, om, oc: _mp.w2_parts(m, c, om, oc, scaled=False),
    "eq9": lambda m, c, om, oc: (
        _mp.w2_parts(m, c, om, oc, scaled=True)[0],
        _mp.w2_commuting_cov(c, oc, scaled=True),
    ),
    "eq9_plain": lambda m, c, om, oc: (
        _mp.w2_parts(m, c, om, oc, scaled=False)[0],
        _mp.w2_commuting_cov(c, oc, scaled=False),
    ),
    "frobenius": lambda m, c, om, oc: _mp.frobenius_parts(m, c, om, oc),
}


@dataclass
class Case:
    """One drawn state, its inputs rounded to ``dtype`` (kept as float64 arrays)."""

    index: int
    projection: str
    diag: bool
    dim: int
    dtype: str
    backend: str
    cond: float
    mean: np.ndarray
    cov: np.ndarray
    old_mean: np.ndarray
    old_cov: np.ndarray
    eps_mean: float
    eps_cov: float
    beta: float | None = None
    equality: bool = False


@dataclass
class Check:
    """One bounded quantity of one call: ``value ≤ bound + tol`` (``kind="bound"``), equality
    ``|value - bound| ≤ tol`` (``"equal"``), ``value ≥ bound - tol`` (``"floor"``)."""

    part: str
    value: float
    bound: float
    tol: float
    kind: str = "bound"
    measure: str = ""
    confirmed: bool | None = None

    def excess(self) -> float:
        """Signed excess over the allowance in units of ``tol`` (> 1: out of tolerance); a
        non-finite measurement counts as infinite (flagged, then re-measured in mpmath)."""
        if not (math.isfinite(self.value) and math.isfinite(self.tol) and self.tol > 0):
            return math.inf
        if self.kind == "bound":
            return (self.value - self.bound) / self.tol
        if self.kind == "floor":
            return (self.bound - self.value) / self.tol
        return abs(self.value - self.bound) / self.tol


@dataclass
class Outcome:
    case: Case
    checks: list[Check] = field(default_factory=list)
    status: str = "ok"  # ok | refused | error | nonfinite | changed
    message: str = ""
    active: int = 0
    inside: int = 0


# --- drawing ---------------------------------------------------------------------------------


def _spd(rng: np.random.Generator, d: int, cond: float, diag: bool) -> np.ndarray:
    u = rng.uniform(-0.5, 0.5, size=d) * math.log(cond)
    if d > 1:
        u[0], u[-1] = -0.5 * math.log(cond), 0.5 * math.log(cond)
    rng.shuffle(u)
    if diag:
        return np.diag(np.exp(u))
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return 0.5 * ((q * np.exp(u)) @ q.T + ((q * np.exp(u)) @ q.T).T)


def draw_case(seed: int, index: int, dtypes: Sequence[str], backends: Sequence[str]) -> Case:
    """The state of call ``index`` (deterministic in ``seed``, ``index`` and the option lists)."""
    rng = np.random.default_rng([seed, index])
    projection = PROJECTIONS[int(rng.integers(len(PROJECTIONS)))]
    diag = bool(rng.integers(2))
    d = int(rng.integers(DIMS[0], DIMS[1] + 1))
    dtype = dtypes[int(rng.integers(len(dtypes)))]
    backend = backends[int(rng.integers(len(backends)))]
    max_cond = MAX_COND[dtype]
    cond = 10.0 ** rng.uniform(0.0, math.log10(max_cond)) if d > 1 else 1.0
    scale = 10.0 ** rng.uniform(-2, 2)
    old = scale * _spd(rng, d, cond, diag)
    if rng.uniform() < 0.4:  # near the old covariance: where cancellation would show
        cov = old + 10.0 ** rng.uniform(-6, 0) * scale * _spd(rng, d, cond, diag)
    else:
        cov = 10.0 ** rng.uniform(-1, 1) * scale * _spd(rng, d, cond, diag)
    old_mean = rng.standard_normal(d) * math.sqrt(scale)
    mean = old_mean + rng.standard_normal(d) * math.sqrt(scale) * 10.0 ** rng.uniform(-4, 1)
    rnd = lambda x: np.asarray(np.asarray(x, dtype=dtype), dtype=np.float64)  # noqa: E731
    if diag:
        cov, old = np.diag(np.diag(cov)), np.diag(np.diag(old))
    mean, cov, old_mean, old = rnd(mean), rnd(cov), rnd(old_mean), rnd(old)
    eps = 10.0 ** rng.uniform(*np.log10(EPS_RANGE), size=2)
    # Measures with units get ε in the old covariance's units: ‖Σ - Σ_o‖_F² scales with
    # max Σ_o,ii², the plain W2 covariance part with max Σ_o,ii (the other parts are relative).
    top = float(np.max(np.diag(old)))
    if projection == "frobenius":
        eps[1] *= top * top
    elif projection.endswith("plain"):
        eps[1] *= top
    inside = rng.uniform(size=2) < 0.2
    case = Case(index, projection, diag, d, dtype, backend, cond, mean, cov, old_mean, old, *eps)
    measure = MEASURE_OF.get(projection, (None,))[0]
    if projection.startswith("kl_joint"):
        total = sum(_parts("kl", mean, cov, old_mean, old))
        case.eps_mean = total * 10.0 ** rng.uniform(0.05, 1) if inside[0] else eps[0]
        if projection == "kl_joint_entropy":
            case.beta = M.entropy(old) + rng.uniform(-2.0, 0.5)
    elif measure is not None:
        parts = _parts(measure, mean, cov, old_mean, old)
        if inside[0]:
            case.eps_mean = parts[0] * 10.0 ** rng.uniform(0.05, 1) or eps[0]
        if inside[1]:
            case.eps_cov = parts[1] * 10.0 ** rng.uniform(0.05, 1) or eps[1]
    else:  # entropy
        case.beta = M.entropy(cov) + rng.uniform(-1.0, 1.0)
        case.equality = bool(rng.integers(2))
    return case


def _parts(measure: str, mean, cov, old_mean, old) -> tuple[float, float]:
    fm, fc = M.MEASURES[measure]
    return fm(mean, old_mean, old), fc(cov, old)


# --- calling the library ---------------------------------------------------------------------


def _library_inputs(case: Case) -> list[Any]:
    arrays = [case.mean, np.diag(case.cov) if case.diag else case.cov, case.old_mean]
    arrays.append(np.diag(case.old_cov) if case.diag else case.old_cov)
    arrays = [np.asarray(a, dtype=case.dtype)[None] for a in arrays]  # a batch of one state
    if case.backend == "torch":
        import torch

        arrays = [torch.from_numpy(np.array(a)) for a in arrays]
    return arrays


def call_library(case: Case) -> Any:
    """The library's result for ``case`` (the same call :func:`snippet` prints)."""
    import trpl_math as tm

    mean, cov, old_mean, old_cov = _library_inputs(case)
    kw: dict[str, Any] = {"diag": case.diag}
    p = case.projection
    if p == "entropy":
        return tm.entropy_projection(cov, entropy_bound=case.beta, equality=case.equality, **kw)
    args = (mean, cov, old_mean, old_cov)
    if p.startswith("kl_joint"):
        return tm.kl_joint_projection(*args, eps=case.eps_mean, entropy_bound=case.beta, **kw)
    bounds = {"eps_mean": case.eps_mean, "eps_cov": case.eps_cov}
    if p == "kl":
        return tm.kl_projection(*args, **bounds, **kw)
    if p == "frobenius":
        return tm.frobenius_projection(*args, **bounds, **kw)
    scaled = not p.endswith("plain")
    exact = p.startswith("w2_exact")
    return tm.wasserstein_projection(*args, **bounds, scaled=scaled, exact=exact, **kw)


def _to64(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=np.float64)[0]


# --- measuring -------------------------------------------------------------------------------


def _unit_roundoff(dtype: str) -> float:
    return float(np.finfo(dtype).eps) / 2.0


def below_documented_floor(case: Case) -> bool:
    """Whether a bound of ``case`` lies below the floor that docs/divergences.md documents
    ("Working precision and the limits of a dtype"): ``(16u)²`` times the measure's scale, ``u``
    the unit roundoff of the case's dtype; scale 1 for KL and scaled W2 covariance parts,
    ``max Σ_o,ii`` for plain W2's, ``max Σ_o,ii²`` for Frobenius's, ``max μ_o,i²/Σ_o,ii`` for
    mean parts (``max μ_o,i²`` for plain W2's) and ``1 + max μ_o,i²/Σ_o,ii`` for the joint KL
    bound. Computed here from the documented rule, not by the library: a refusal where this is
    ``False`` is a failure."""
    if case.projection == "entropy":
        return False
    floor = (16.0 * _unit_roundoff(case.dtype)) ** 2
    var = np.diag(case.old_cov)
    metric = float(np.max(case.old_mean**2 / var))
    if case.projection.startswith("kl_joint"):
        return case.eps_mean < floor * (1.0 + metric)
    plain = case.projection.endswith("plain")
    top = float(np.max(var))
    cov_scale = top * top if case.projection == "frobenius" else (top if plain else 1.0)
    mean_scale = float(np.max(case.old_mean**2)) if plain else metric
    return case.eps_mean < floor * mean_scale or case.eps_cov < floor * cov_scale


def run_case(case: Case) -> Outcome:
    """Call the library on ``case`` and measure everything it promises (float64 only)."""
    out = Outcome(case)
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            result = call_library(case)
    except ValueError as err:
        documented = below_documented_floor(case)
        out.status, out.message = ("limit" if documented else "refused"), str(err)
        return out
    except Exception as err:  # every other exception is a failure to report
        out.status, out.message = "error", f"{type(err).__name__}: {err}"
        return out
    arrays = [result] if case.projection == "entropy" else list(result)
    values = [_to64(a) for a in arrays]
    if not all(np.all(np.isfinite(v)) for v in values):
        out.status, out.message = "nonfinite", "NaN or Inf in the result"
        return out
    expect = str(case.dtype)
    got = [str(a.dtype).removeprefix("torch.") for a in arrays]
    if any(g != expect for g in got):
        out.status, out.message = "error", f"dtype changed: {got} for {expect}"
        return out
    full = lambda v: np.diag(v) if case.diag else v  # noqa: E731
    if case.projection == "entropy":
        _measure_entropy(case, full(values[0]), arrays[0], out)
    elif case.projection.startswith("kl_joint"):
        _measure_kl_joint(case, values[0], full(values[1]), arrays, out)
    else:
        _measure_parts(case, values[0], full(values[1]), arrays, out)
    return out


def _unchanged(case: Case, result: Any, which: int) -> bool:
    """Whether ``result`` equals input ``which`` (0: mean, 1: cov) bit for bit."""
    a, b = result, _library_inputs(case)[which]
    if hasattr(a, "detach"):
        import torch

        return bool(torch.equal(a.detach().cpu(), b))
    return bool(np.array_equal(a, b))


def _measure_parts(case: Case, mean: np.ndarray, cov: np.ndarray, arrays, out: Outcome) -> None:
    measure, extra = MEASURE_OF[case.projection]
    u = _unit_roundoff(case.dtype)
    before = _parts(measure, case.mean, case.cov, case.old_mean, case.old_cov)
    after = _parts(measure, mean, cov, case.old_mean, case.old_cov)
    sens = _both(measure, u, cov, case.old_cov, mean, case.old_mean)
    for k, (name, eps) in enumerate((("mean", case.eps_mean), ("cov", case.eps_cov))):
        if before[k] < eps * (1.0 - INSIDE_MARGIN):
            out.inside += 1
            if not _unchanged(case, arrays[k], k):
                out.status = "changed"
                out.message = f"{name} part inside its bound ({before[k]:.3g} < {eps:.3g}) changed"
            continue
        out.active += 1
        tol = 4.0 * sens[k] + 64.0 * u * eps
        out.checks.append(Check(f"{measure}.{name}", after[k], eps, tol, "bound", measure))
    for m in extra:  # Eq. 9: the true W2 must be within the bound as well (it is ≤ Eq. 9's)
        value = _parts(m, mean, cov, case.old_mean, case.old_cov)[1]
        tol = 4.0 * _both(m, u, cov, case.old_cov)[1] + 64.0 * u * case.eps_cov
        if before[1] >= case.eps_cov * (1.0 - INSIDE_MARGIN):
            out.checks.append(Check(f"{m}.cov", value, case.eps_cov, tol, "bound", m))


def _both(measure: str, u: float, cov, old, mean=None, old_mean=None) -> tuple[float, float]:
    """``R + R_o`` per part: rounding sensitivity to the result and to the old policy."""
    a = M.sensitivity(measure, u, cov, old, mean, old_mean)
    b = M.input_sensitivity(measure, u, cov, old, mean, old_mean)
    return a[0] + b[0], a[1] + b[1]


def _measure_kl_joint(case: Case, mean, cov, arrays, out: Outcome) -> None:
    u = _unit_roundoff(case.dtype)
    eps, beta, d = case.eps_mean, case.beta, case.dim
    before = sum(_parts("kl", case.mean, case.cov, case.old_mean, case.old_cov))
    h_in = M.entropy(case.cov)
    ent_ok = beta is None or h_in > beta + INSIDE_MARGIN * max(1.0, abs(beta))
    if before < eps * (1.0 - INSIDE_MARGIN) and ent_ok:
        out.inside += 1
        if not (_unchanged(case, arrays[0], 0) and _unchanged(case, arrays[1], 1)):
            out.status, out.message = "changed", "state inside both constraints changed"
        return
    out.active += 1
    sens = _both("kl", u, cov, case.old_cov, mean, case.old_mean)
    infeasible = False
    if beta is not None:
        log_b0 = max(0.0, 2.0 * (beta - M.entropy(case.old_cov)) / d)
        infeasible = 0.5 * d * float(M._phi(np.array(math.expm1(log_b0)))) >= eps
        h_tol = 4.0 * M.sensitivity("entropy", u, cov, case.old_cov)[1] + 64 * u * max(1, abs(beta))
        kind = "equal" if infeasible else "floor"
        out.checks.append(Check("entropy", M.entropy(cov), beta, h_tol, kind, "entropy"))
    if not infeasible:  # else the entropy bound wins (documented): KL(π̃ ‖ π_o) > ε by design
        after = sum(_parts("kl", mean, cov, case.old_mean, case.old_cov))
        tol = 4.0 * (sens[0] + sens[1]) + 64.0 * u * eps
        out.checks.append(Check("kl.total", after, eps, tol, "bound", "kl"))


def _measure_entropy(case: Case, cov: np.ndarray, array, out: Outcome) -> None:
    u = _unit_roundoff(case.dtype)
    h_in, beta = M.entropy(case.cov), case.beta
    if not case.equality and h_in > beta + INSIDE_MARGIN * max(1.0, abs(beta)):
        out.inside += 1
        if not _unchanged(case, array, 1):
            out.status, out.message = "changed", f"H = {h_in:.6g} ≥ β = {beta:.6g} changed"
        return
    out.active += 1
    tol = 4.0 * M.sensitivity("entropy", u, cov, case.cov)[1] + 64 * u * max(1.0, abs(beta))
    out.checks.append(Check("entropy", M.entropy(cov), beta, tol, "equal", "entropy"))
    # Σ scaled by one scalar c (the std by c^{1/2}), nothing else: Σ̃ / Σ is constant.
    nz = np.abs(case.cov) > 0
    ratio = cov[nz] / case.cov[nz]
    spread = float((ratio.max() - ratio.min()) / ratio.mean())
    out.checks.append(Check("entropy.scalar", spread, 0.0, 16.0 * u, "equal", "scalar"))


def recheck(case: Case, check: Check, values: Sequence[np.ndarray]) -> float:
    """The part of ``check`` re-measured in 50-digit arithmetic from the exact binary values."""
    mean, cov = values
    if check.measure == "entropy":
        return _mp.entropy(cov)
    if check.measure == "scalar":
        return check.value
    parts = MP_MEASURE[check.measure](mean, cov, case.old_mean, case.old_cov)
    if check.part.endswith("total"):
        return parts[0] + parts[1]
    return parts[0] if check.part.endswith(".mean") else parts[1]


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Tally:
    calls: int = 0
    active: int = 0
    inside: int = 0
    limit: int = 0  # refused at a documented limit of the dtype (below_documented_floor)
    refused: int = 0  # refused elsewhere: failures
    failures: int = 0  # error, nonfinite, changed, refused
    flagged: int = 0
    rechecked: int = 0
    confirmed: int = 0
    worst: float = -math.inf


def run(
    calls: int,
    seed: int,
    dtypes: Sequence[str],
    backends: Sequence[str],
    *,
    start: int = 0,
    max_rechecks: int = 1000,
    worst_shown: int = 5,
    progress: Any = None,
    only: Sequence[str] | None = None,
) -> tuple[dict[str, Tally], list[tuple[float, Outcome, Check | None]], int, float]:
    """Run ``calls`` cases (with ``only``: the cases of those projections among ``calls`` call
    indices, each drawn as in a full run); returns tallies, the worst cases, unverified flags
    and seconds."""
    tallies = {p: Tally() for p in PROJECTIONS}
    worst: list[tuple[float, Outcome, Check | None]] = []
    t0 = time.perf_counter()
    try:
        _loop(
            seed,
            dtypes,
            backends,
            start,
            calls,
            max_rechecks,
            worst_shown,
            progress,
            t0,
            tallies,
            worst,
            counters := {"unverified": 0, "rechecks": 0},
            only,
        )
    except KeyboardInterrupt:  # report what ran: an interrupted run states its real count
        if progress is not None:
            progress("interrupted: reporting the calls run so far")
    else:
        _progress(progress, calls, calls, only, t0)
    worst = sorted(worst, key=lambda w: -w[0])[:worst_shown]
    return tallies, worst, counters["unverified"], time.perf_counter() - t0


def _loop(
    seed,
    dtypes,
    backends,
    start,
    calls,
    max_rechecks,
    worst_shown,
    progress,
    t0,
    tallies,
    worst,
    counters,
    only=None,
) -> None:
    """The body of :func:`run` (interruptible: the tallies fill in place)."""
    for index in range(start, start + calls):
        if index > start and (index - start) % max(1, calls // 20) == 0:
            _progress(progress, index - start, calls, only, t0)
        case = draw_case(seed, index, dtypes, backends)
        if only is not None and case.projection not in only:
            continue
        out = run_case(case)
        tally = tallies[case.projection]
        tally.calls += 1
        tally.active += out.active
        tally.inside += out.inside
        if out.status == "limit":  # the documented refusal of a bound the dtype cannot resolve
            tally.limit += 1
            continue
        if out.status == "refused":  # a refusal inside every documented limit is a failure
            tally.refused += 1
        if out.status != "ok":
            tally.failures += 1
            worst.append((math.inf, out, None))
            continue
        for check in out.checks:
            excess = check.excess()
            if excess > 0.5:
                tally.flagged += 1
                if counters["rechecks"] < max_rechecks:
                    counters["rechecks"] += 1
                    tally.rechecked += 1
                    try:
                        check.value = recheck(case, check, _result_values(case))
                    except Exception as err:  # a failed re-measurement is reported, not hidden
                        check.value = math.inf
                        out.message = f"mpmath re-measurement failed: {type(err).__name__}: {err}"
                    excess = check.excess()
                    check.confirmed = excess > 1.0
                    tally.confirmed += int(check.confirmed)
                else:
                    counters["unverified"] += 1
            tally.worst = max(tally.worst, excess)
            worst.append((excess, out, check))
        if len(worst) > 4 * worst_shown:
            worst[:] = sorted(worst, key=lambda w: -w[0])[: 2 * worst_shown]


def _progress(progress: Any, done: int, calls: int, only: Any, t0: float) -> None:
    """One progress line: ``done`` of ``calls`` call indices (each a call without ``--only``)."""
    if progress is not None:
        unit = "calls" if only is None else "indices"
        progress(f"{done}/{calls} {unit}, {time.perf_counter() - t0:.0f} s")


def _result_values(case: Case) -> tuple[np.ndarray, np.ndarray]:
    result = call_library(case)
    if case.projection == "entropy":
        cov = _to64(result)
        return case.mean, np.diag(cov) if case.diag else cov
    mean, cov = (_to64(a) for a in result)
    return mean, np.diag(cov) if case.diag else cov


def snippet(case: Case) -> str:
    """A self-contained Python snippet that rebuilds ``case`` and calls the library."""
    r = lambda x: np.array2string(  # noqa: E731
        np.diag(x) if case.diag and x.ndim == 2 else x,
        separator=", ",
        precision=17,
        floatmode="unique",
        max_line_width=10**6,
        threshold=10**6,
    )
    lines = [
        "import numpy as np, trpl_math as tm",
        f"dt = np.{case.dtype}",
        f"mean = np.array({r(case.mean)}, dt)",
        f"cov = np.array({r(case.cov)}, dt)",
        f"old_mean = np.array({r(case.old_mean)}, dt)",
        f"old_cov = np.array({r(case.old_cov)}, dt)",
    ]
    p, kw = case.projection, f"diag={case.diag}"
    if p == "entropy":
        lines.append(
            f"out = tm.entropy_projection(cov, entropy_bound={case.beta!r}, "
            f"equality={case.equality}, {kw})"
        )
    elif p.startswith("kl_joint"):
        lines.append(
            f"out = tm.kl_joint_projection(mean, cov, old_mean, old_cov, eps={case.eps_mean!r}, "
            f"entropy_bound={case.beta!r}, {kw})"
        )
    else:
        fn = {"kl": "kl_projection", "frobenius": "frobenius_projection"}.get(
            p, "wasserstein_projection"
        )
        extra = ""
        if fn == "wasserstein_projection":
            extra = f", scaled={not p.endswith('plain')}, exact={p.startswith('w2_exact')}"
        lines.append(
            f"out = tm.{fn}(mean, cov, old_mean, old_cov, eps_mean={case.eps_mean!r}, "
            f"eps_cov={case.eps_cov!r}{extra}, {kw})"
        )
    if case.backend == "torch":
        lines.insert(1, "import torch  # the fuzz called torch: wrap each array in torch.tensor")
    return "\n".join(lines)


def render(
    tallies: dict[str, Tally],
    worst: list[tuple[float, Outcome, Check | None]],
    unverified: int,
    seconds: float,
    args: argparse.Namespace,
    dtypes: Sequence[str],
    backends: Sequence[str],
) -> tuple[str, int]:
    """The report (Markdown table and the worst cases) and the exit status."""
    total = sum(t.calls for t in tallies.values())
    at = "" if args.only is None else f" at {args.calls} indices, only {'/'.join(args.only)}"
    lines = [
        f"trpl_math fuzz: {total} calls{at}, seed {args.seed}, start {args.start}, "
        f"dtypes {'/'.join(dtypes)}, back ends {'/'.join(backends)} ({seconds:.0f} s)",
        f"domain: d {DIMS[0]}-{DIMS[1]}, diagonal and full; condition numbers up to "
        + ", ".join(f"{MAX_COND[d]:.0e} ({d})" for d in dtypes)
        + f"; eps log-uniform in [{EPS_RANGE[0]:g}, {EPS_RANGE[1]:g}] (times max Σ_o,ii² for "
        "Frobenius, max Σ_o,ii for plain W2 covariance parts), 20% of parts strictly inside; "
        "40% of covariances within 1e-6..1 (relative) of the old one; variances 1e-2..1e2 "
        "times the condition spread",
        "tolerance: d(result, old) <= eps + 4 (R + R_o) + 64 u eps, R (R_o) = first-order change "
        "of d when every entry of the result (of the old policy) is rounded (unit roundoff u: "
        + ", ".join(f"{_unit_roundoff(d):.3g} for {d}" for d in dtypes)
        + "); flagged above half of it in float64, confirmed in 50-digit mpmath",
        "",
        *_table(tallies),
    ]
    bad = sum(t.confirmed + t.failures for t in tallies.values())
    lines += ["", f"unverified flags (mp recheck budget spent): {unverified}", ""]
    lines.append(f"worst {len(worst)} cases (excess over the allowance in units of tol):")
    for excess, out, check in worst:
        c = out.case
        head = (
            f"- index {c.index}: {c.projection} diag={c.diag} d={c.dim} {c.dtype} {c.backend} "
            f"cond {c.cond:.2g}: "
        )
        if check is None:
            head += f"{out.status}: {out.message[:200]}"
        else:
            head += (
                f"{check.part} = {check.value:.6g} vs {check.bound:.6g} (tol {check.tol:.3g}, "
                f"excess {excess:.3g}{', CONFIRMED' if check.confirmed else ''})"
            )
        lines.append(head)
        lines.append(
            f"  reproduce: python -m verification.fuzz --seed {args.seed} --dtype {args.dtype} "
            f"--backend {args.backend} --replay {c.index}"
        )
    code = 1 if bad else 0
    lines += ["", f"RESULT: {'FAIL' if code else 'PASS'} ({bad} confirmed violations or failures)"]
    return "\n".join(lines), code


_HEAD = re.compile(
    r"^trpl_math fuzz: (\d+) calls(?: at (\d+) indices, only (\S+))?, seed (\d+), start (\d+), "
    r"dtypes (\S+), back ends (\S+) \((\d+) s( in \d+ shards)?\)$"
)
_CELLS = ("calls", "active", "inside", "limit", "refused", "failures", "flagged", "rechecked")


@dataclass
class Shard:
    """One parsed report of :func:`render` (a shard of a split run)."""

    calls: int
    seed: int
    start: int
    dtypes: str
    backends: str
    seconds: int
    setting: tuple[str, str]  # the domain and tolerance lines
    tallies: dict[str, Tally]
    unverified: int
    worst: list[tuple[float, str, str]]  # (excess, case line, reproduce line)
    indices: int  # call indices covered (``calls`` unless the run had ``--only``)
    only: str | None  # the ``--only`` projections, ``/``-joined


def parse_report(text: str, name: str = "report") -> Shard:
    """Read back a report printed by the fuzz command (progress lines before it are skipped).

    Raises:
        ValueError: naming ``name`` where the text is not a complete report.
    """
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if _HEAD.match(line)), None)
    if head is None or not any(line.startswith("RESULT: ") for line in lines[head:]):
        raise ValueError(f"{name}: not a complete fuzz report (no header or no RESULT line)")
    m = _HEAD.match(lines[head])
    assert m is not None
    tallies: dict[str, Tally] = {}
    unverified, worst = 0, []
    for i, line in enumerate(lines[head:], start=head):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if cells and cells[0] in PROJECTIONS:
            t = Tally(*(int(c) for c in cells[1:10]))
            t.worst = -math.inf if cells[10] == "-" else float(cells[10])
            tallies[cells[0]] = t
        elif line.startswith("unverified flags"):
            unverified = int(line.rsplit(":", 1)[1])
        elif line.startswith("- index "):
            e = re.search(r" vs \S+ \(tol [^,]+, excess ([^,)]+)", line)  # else a failure
            excess = float(e.group(1)) if e else math.inf
            worst.append((excess, line, lines[i + 1]))
    if set(tallies) != set(PROJECTIONS):
        raise ValueError(f"{name}: the table lacks {sorted(set(PROJECTIONS) - set(tallies))}")
    return Shard(
        int(m[1]), int(m[4]), int(m[5]), m[6], m[7], int(m[8]),
        (lines[head + 1], lines[head + 2]), tallies, unverified, worst,
        int(m[2] or m[1]), m[3],
    )  # fmt: skip


def merge(shards: Sequence[Shard], worst_shown: int) -> tuple[str, int]:
    """One report from the shards of one run: tallies summed (worst: the maximum), the worst
    cases merged, the indices covered listed as ranges (a gap is shown, not hidden).

    Raises:
        ValueError: where shards differ in seed, dtypes, back ends, domain or tolerance, or
            overlap in their call indices.
    """
    if not shards:
        raise ValueError("--merge: no reports given")
    first = shards[0]
    for s in shards[1:]:
        if (s.seed, s.dtypes, s.backends, s.setting, s.only) != (
            first.seed, first.dtypes, first.backends, first.setting, first.only,
        ):  # fmt: skip
            raise ValueError(
                "--merge: the reports differ in seed, dtypes, back ends, setting or --only"
            )
    spans = sorted((s.start, s.start + s.indices) for s in shards)
    ranges: list[list[int]] = []
    for lo, hi in spans:
        if ranges and lo < ranges[-1][1]:
            raise ValueError(f"--merge: call indices overlap at {lo}")
        if ranges and lo == ranges[-1][1]:
            ranges[-1][1] = hi
        else:
            ranges.append([lo, hi])
    tallies = {p: Tally() for p in PROJECTIONS}
    for s in shards:
        for p, t in s.tallies.items():
            m = tallies[p]
            for c in (*_CELLS, "confirmed"):
                setattr(m, c, getattr(m, c) + getattr(t, c))
            m.worst = max(m.worst, t.worst)
    worst = sorted((w for s in shards for w in s.worst), key=lambda w: -w[0])[:worst_shown]
    total = sum(s.calls for s in shards)
    covered = ", ".join(f"{lo}-{hi - 1}" for lo, hi in ranges)
    at = (
        ""
        if first.only is None
        else (f" at {sum(s.indices for s in shards)} indices, only {first.only}")
    )
    lines = [
        f"trpl_math fuzz: {total} calls{at}, seed {first.seed}, start {spans[0][0]}, dtypes "
        f"{first.dtypes}, back ends {first.backends} ({sum(s.seconds for s in shards)} s in "
        f"{len(shards)} shards)",
        *first.setting,
        f"call indices: {covered}",
        "",
        *_table(tallies),
        "",
        f"unverified flags (mp recheck budget spent): {sum(s.unverified for s in shards)}",
        "",
        f"worst {len(worst)} cases (excess over the allowance in units of tol):",
        *(line for _, case, repro in worst for line in (case, repro)),
    ]
    bad = sum(t.confirmed + t.failures for t in tallies.values())
    code = 1 if bad else 0
    lines += ["", f"RESULT: {'FAIL' if code else 'PASS'} ({bad} confirmed violations or failures)"]
    return "\n".join(lines), code


def _table(tallies: dict[str, Tally]) -> list[str]:
    """The report's table of the tallies, one row per projection."""
    lines = [
        "| projection | calls | active | inside (unchanged) | at a documented limit | refused | "
        "failures | flagged | mp-rechecked | confirmed | worst excess / tol |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in tallies.items():
        w = "-" if t.worst == -math.inf else f"{t.worst:.3g}"
        lines.append(
            f"| {name} | {t.calls} | {t.active} | {t.inside} | {t.limit} | {t.refused} | "
            f"{t.failures} | {t.flagged} | {t.rechecked} | {t.confirmed} | {w} |"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verification.fuzz",
        description="Random projection calls over the whole domain, each re-measured in float64 "
        "and, where flagged, in 50-digit arithmetic; exit 1 on a confirmed violation.",
    )
    p.add_argument("--calls", type=int, default=1000, help="number of calls (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first call index (to split a run)")
    p.add_argument(
        "--only",
        nargs="+",
        choices=PROJECTIONS,
        metavar="PROJECTION",
        help="run only the calls of these projections among the --calls indices (each drawn as "
        "in a full run, so a re-run of one projection after a change covers the same cases); "
        f"choices: {', '.join(PROJECTIONS)}",
    )
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--backend", choices=("numpy", "torch", "both"), default="both")
    p.add_argument("--max-rechecks", type=int, default=1000, help="mpmath re-measurements")
    p.add_argument("--worst", type=int, default=5, help="worst cases printed")
    p.add_argument("--replay", type=int, default=None, help="print and rerun one call index")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--merge", nargs="+", metavar="REPORT", help="add up the saved reports of a run's shards"
    )
    return p


def _option_list(option: str, both: tuple[str, str]) -> list[str]:
    return list(both) if option == "both" else [option]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.calls < 0 or args.start < 0:
        print("--calls and --start must be >= 0", file=sys.stderr)
        return 2
    dtypes = _option_list(args.dtype, ("float64", "float32"))
    backends = _option_list(args.backend, ("numpy", "torch"))
    if args.merge:
        try:
            shards = [parse_report(Path(f).read_text(), f) for f in args.merge]
            text, code = merge(shards, args.worst)
        except (OSError, ValueError) as err:
            print(f"python -m verification.fuzz: {err}", file=sys.stderr)
            return 2
        print(text)
        return code
    if args.replay is not None:
        case = draw_case(args.seed, args.replay, dtypes, backends)
        out = run_case(case)
        print(snippet(case))
        print(f"# status: {out.status} {out.message}")
        for check in out.checks:
            print(f"# {check.part}: {check.value!r} vs {check.bound!r} (tol {check.tol:.3g})")
        return 0
    progress = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    tallies, worst, unverified, seconds = run(
        args.calls,
        args.seed,
        dtypes,
        backends,
        start=args.start,
        max_rechecks=args.max_rechecks,
        worst_shown=args.worst,
        progress=progress,
        only=args.only,
    )
    text, code = render(tallies, worst, unverified, seconds, args, dtypes, backends)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
