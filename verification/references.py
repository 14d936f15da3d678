"""Reference solutions of every projection problem with a convex solver (cvxpy).

The formulations are those of docs/math.md §8, "Reference formulations for a convex solver"; each is
solved with Clarabel at tight tolerances (gap and feasibility 1e-10), with SCS (eps 1e-9) as a
fallback. A reference is trusted only when a solver reports ``optimal``: anything else comes back
with ``ok=False`` and ``value=None``, and the checks count it as *unsolved*, never as truth.

All inputs are float64 NumPy arrays for a single state: ``mean (d,)``, ``cov (d, d)``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import scipy.linalg as sla

__all__ = [
    "CLARABEL_OPTIONS",
    "SCS_OPTIONS",
    "Reference",
    "SolveInfo",
    "reference_frobenius_cov",
    "reference_kl_cov",
    "reference_kl_joint",
    "reference_mean",
    "reference_w2_cov",
    "reference_w2_fidelity",
    "solve",
]

CLARABEL_OPTIONS: dict[str, float | int] = {
    "tol_gap_abs": 1e-10,
    "tol_gap_rel": 1e-10,
    "tol_feas": 1e-10,
    "tol_ktratio": 1e-8,
    "max_iter": 500,
}
SCS_OPTIONS: dict[str, float | int] = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000}

MEAN_METRICS = ("kl", "frob", "w2", "w2_plain")


@dataclass(frozen=True)
class SolveInfo:
    """How a reference problem was solved.

    ``ok`` is True only for status ``optimal``; ``seconds`` is the wall time of ``Problem.solve``
    (cvxpy's compilation included) summed over the solvers tried.
    """

    status: str
    solver: str | None
    seconds: float
    ok: bool
    attempts: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Reference:
    """A reference solution: ``value`` (mean ``(d,)`` or covariance ``(d, d)``, or a tuple of both
    for the joint problem; None when unsolved) and how it was obtained."""

    value: np.ndarray | tuple[np.ndarray, np.ndarray] | None
    info: SolveInfo

    @property
    def ok(self) -> bool:
        return self.info.ok


def solve(problem: cp.Problem, *, solvers: tuple[str, ...] = ("CLARABEL", "SCS")) -> SolveInfo:
    """Solve ``problem`` with the first solver that reports ``optimal``.

    Clarabel with :data:`CLARABEL_OPTIONS`, then SCS with :data:`SCS_OPTIONS`. A solver error or a
    status other than ``optimal`` (``optimal_inaccurate`` included) moves on to the next solver.
    """
    seconds, status, attempts = 0.0, "not solved", []
    for name in solvers:
        options = CLARABEL_OPTIONS if name == "CLARABEL" else SCS_OPTIONS if name == "SCS" else {}
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                problem.solve(solver=name, **options)
            status = str(problem.status)
        except cp.error.SolverError as err:
            status = f"solver error: {err}"[:120]
        seconds += time.perf_counter() - start
        attempts.append(f"{name}:{status}")
        if status == cp.OPTIMAL:
            return SolveInfo(status, name, seconds, True, tuple(attempts))
    return SolveInfo(status, None, seconds, False, tuple(attempts))


def _finish(
    problem: cp.Problem,
    extract: Callable[[], np.ndarray | tuple[np.ndarray, np.ndarray]],
    solvers: tuple[str, ...],
) -> Reference:
    info = solve(problem, solvers=solvers)
    return Reference(extract() if info.ok else None, info)


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def _inv_chol_t(cov: np.ndarray) -> np.ndarray:
    """``W`` with ``Wᵀ W = cov⁻¹`` (``W = L⁻¹`` for ``cov = L Lᵀ``): ``‖W x‖² = maha(x; cov)``."""
    chol = np.linalg.cholesky(cov)
    return sla.solve_triangular(chol, np.eye(cov.shape[-1]), lower=True)


def reference_mean(
    mean: np.ndarray,
    old_mean: np.ndarray,
    old_cov: np.ndarray,
    *,
    eps_mean: float,
    measure: str,
    solvers: tuple[str, ...] = ("CLARABEL", "SCS"),
) -> Reference:
    """``min ‖μ̃ - μ‖²_M  s.t.  ‖μ̃ - μ_o‖²_M ≤ ε'`` (docs/math.md §3.2, §8; Eq. 6's problem).

    ``M = Σ_o⁻¹`` for ``measure`` in ``kl``, ``frob``, ``w2`` (scaled) and the identity for
    ``w2_plain``; ``ε' = 2 ε_μ`` for ``kl`` (its mean part is ½ maha), ``ε_μ`` otherwise.
    """
    if measure not in MEAN_METRICS:
        raise ValueError(f"measure must be one of {MEAN_METRICS}, got {measure!r}")
    d = mean.shape[-1]
    w = np.eye(d) if measure == "w2_plain" else _inv_chol_t(old_cov)
    bound = 2.0 * eps_mean if measure == "kl" else eps_mean
    x = cp.Variable(d)
    problem = cp.Problem(
        cp.Minimize(cp.sum_squares(w @ (x - mean))),
        [cp.sum_squares(w @ (x - old_mean)) <= bound],
    )
    return _finish(problem, lambda: np.asarray(x.value), solvers)


def reference_frobenius_cov(
    cov: np.ndarray,
    old_cov: np.ndarray,
    *,
    eps_cov: float,
    solvers: tuple[str, ...] = ("CLARABEL", "SCS"),
) -> Reference:
    """``min ‖Σ̃ - Σ‖_F²  s.t.  ‖Σ̃ - Σ_o‖_F² ≤ ε_Σ,  Σ̃ ⪰ 0`` (Eq. 7-8's problem)."""
    d = cov.shape[-1]
    s = cp.Variable((d, d), PSD=True)
    # Norms instead of squared norms: the same minimiser, a better-conditioned cone program.
    problem = cp.Problem(
        cp.Minimize(cp.norm(s - cov, "fro")), [cp.norm(s - old_cov, "fro") <= np.sqrt(eps_cov)]
    )
    return _finish(problem, lambda: _sym(np.asarray(s.value)), solvers)


def reference_kl_cov(
    cov: np.ndarray,
    old_cov: np.ndarray,
    *,
    eps_cov: float,
    solvers: tuple[str, ...] = ("CLARABEL", "SCS"),
) -> Reference:
    """``min tr(ΛΣ̃) - log|Σ̃|  s.t.  ½(tr(Λ_oΣ̃) - d + log|Σ_o| - log|Σ̃|) ≤ ε_Σ`` (Eq. 10-11)."""
    d = cov.shape[-1]
    prec, old_prec = _sym(np.linalg.inv(cov)), _sym(np.linalg.inv(old_cov))
    old_logdet = np.linalg.slogdet(old_cov)[1]
    s = cp.Variable((d, d), PSD=True)
    kl_old = 0.5 * (cp.trace(old_prec @ s) - d + old_logdet - cp.log_det(s))
    problem = cp.Problem(cp.Minimize(cp.trace(prec @ s) - cp.log_det(s)), [kl_old <= eps_cov])
    return _finish(problem, lambda: _sym(np.asarray(s.value)), solvers)


def reference_kl_joint(
    mean: np.ndarray,
    cov: np.ndarray,
    old_mean: np.ndarray,
    old_cov: np.ndarray,
    *,
    eps: float,
    entropy_bound: float | None = None,
    solvers: tuple[str, ...] = ("CLARABEL", "SCS"),
) -> Reference:
    """``min KL(π̃ ‖ π)  s.t.  KL(π̃ ‖ π_o) ≤ ε,  H(π̃) ≥ β`` (App. B.5, Eq. 18's problem).

    Variables ``μ̃`` and ``Σ̃``; the entropy constraint ``½ d log(2πe) + ½ log|Σ̃| ≥ β`` is
    dropped when ``entropy_bound`` is None. Returns ``value = (mean, cov)``.
    """
    d = mean.shape[-1]
    prec, old_prec = _sym(np.linalg.inv(cov)), _sym(np.linalg.inv(old_cov))
    w, w_old = _inv_chol_t(cov), _inv_chol_t(old_cov)
    logdet, old_logdet = np.linalg.slogdet(cov)[1], np.linalg.slogdet(old_cov)[1]
    m = cp.Variable(d)
    s = cp.Variable((d, d), PSD=True)
    kl_new = 0.5 * (
        cp.sum_squares(w @ (m - mean)) + cp.trace(prec @ s) - d + logdet - cp.log_det(s)
    )
    kl_old = 0.5 * (
        cp.sum_squares(w_old @ (m - old_mean))
        + cp.trace(old_prec @ s)
        - d
        + old_logdet
        - cp.log_det(s)
    )
    constraints = [kl_old <= eps]
    if entropy_bound is not None:
        constraints.append(
            0.5 * d * np.log(2.0 * np.pi * np.e) + 0.5 * cp.log_det(s) >= entropy_bound
        )
    problem = cp.Problem(cp.Minimize(kl_new), constraints)
    return _finish(problem, lambda: (np.asarray(m.value), _sym(np.asarray(s.value))), solvers)


def _fidelity_block(d: int, upper: cp.Expression, lower: cp.Expression | np.ndarray):
    """A PSD ``(2d, 2d)`` variable ``[[upper, C], [Cᵀ, lower]]``; returns (constraints, tr C).

    By the fidelity identity, ``max tr C`` over such blocks equals ``tr((L^{1/2} U L^{1/2})^{1/2})``
    for ``U = upper``, ``L = lower``.
    """
    z = cp.Variable((2 * d, 2 * d), PSD=True)
    return [z[:d, :d] == upper, z[d:, d:] == lower], cp.trace(z[:d, d:])


def reference_w2_cov(
    cov: np.ndarray,
    old_cov: np.ndarray,
    *,
    eps_cov: float,
    scaled: bool,
    solvers: tuple[str, ...] = ("CLARABEL", "SCS"),
) -> Reference:
    """``min W2cov(Σ̃, Σ)  s.t.  W2cov(Σ̃, Σ_o) ≤ ε_Σ`` through the fidelity SDP.

    ``W2cov(X, Y) = tr X + tr Y - 2 max{tr C : [[X, C], [Cᵀ, Y]] ⪰ 0}``. With ``scaled`` both the
    objective and the constraint are taken in coordinates whitened by the Cholesky factor of
    ``Σ_o`` (``Σ_o = L Lᵀ``; W2 is invariant under the orthogonal factor that separates ``L⁻¹``
    from ``Σ_o^{-1/2}``) and the solution is mapped back, ``Σ̃ = L X Lᵀ``.
    """
    d = cov.shape[-1]
    if scaled:
        chol = np.linalg.cholesky(old_cov)
        inv = sla.solve_triangular(chol, np.eye(d), lower=True)
        target, centre = _sym(inv @ cov @ inv.T), np.eye(d)
    else:
        target, centre = cov, old_cov
    x = cp.Variable((d, d), PSD=True)
    cons_obj, tr_obj = _fidelity_block(d, x, target)
    cons_con, tr_con = _fidelity_block(d, x, centre)
    objective = cp.trace(x) + np.trace(target) - 2.0 * tr_obj
    constraint = cp.trace(x) + np.trace(centre) - 2.0 * tr_con <= eps_cov
    problem = cp.Problem(cp.Minimize(objective), [*cons_obj, *cons_con, constraint])

    def extract() -> np.ndarray:
        value = _sym(np.asarray(x.value))
        return _sym(chol @ value @ chol.T) if scaled else value

    return _finish(problem, extract, solvers)


def reference_w2_fidelity(
    cov: np.ndarray, other: np.ndarray, *, solvers: tuple[str, ...] = ("CLARABEL", "SCS")
) -> Reference:
    """The W2 covariance part ``tr A + tr B - 2 max{tr C : [[A, C], [Cᵀ, B]] ⪰ 0}`` as a scalar.

    An SDP evaluation of the closed form ``tr(A + B - 2 (B^{1/2} A B^{1/2})^{1/2})``.
    """
    d = cov.shape[-1]
    cons, tr_c = _fidelity_block(d, cov, other)
    problem = cp.Problem(cp.Maximize(tr_c), cons)
    return _finish(
        problem,
        lambda: np.asarray(np.trace(cov) + np.trace(other) - 2.0 * problem.value),
        solvers,
    )
