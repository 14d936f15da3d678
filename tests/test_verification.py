"""Tests of the verification package: the reference solvers on hand-solvable problems, the
report machinery, and that planted wrong implementations are caught."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import lambertw

pytest.importorskip("cvxpy")

from verification import _linalg as la
from verification import references as ref
from verification.__main__ import main
from verification.checks import (
    CHECKS,
    CaseResult,
    Config,
    Implementation,
    Tolerances,
    aggregate,
    default_implementation,
)
from verification.report import render_markdown, run_checks, write_report

# Reference solutions are accurate to about 1e-5 relative (Clarabel) or better (SCS).
RTOL = 1e-4


def _checks(*names: str):
    found = [c for c in CHECKS if c.name in names]
    assert len(found) == len(names), names
    return found


def _kl_1d_ratio(eps: float, above: bool) -> float:
    """Root r of ½(r - 1 - log r) = ε (r = σ̃²/σ_o²), on the side ``above`` 1: Lambert W."""
    branch = -1 if above else 0
    return float(np.real(-lambertw(-math.exp(-(1.0 + 2.0 * eps)), branch)))


class TestReferenceMean:
    @pytest.mark.parametrize(
        ("measure", "bound_scale"), [("kl", 2.0), ("frob", 1.0), ("w2", 1.0), ("w2_plain", None)]
    )
    def test_1d_lands_on_bound_towards_prediction(self, measure, bound_scale):
        # min (x - μ)²/s s.t. (x - μ_o)²/s ≤ ε': x = μ_o + sqrt(ε' s) towards μ.
        var_o, eps = 4.0, 0.09
        r = ref.reference_mean(
            np.array([3.0]), np.array([1.0]), np.array([[var_o]]), eps_mean=eps, measure=measure
        )
        assert r.ok
        metric = 1.0 if bound_scale is None else var_o
        factor = 1.0 if bound_scale is None else bound_scale
        expected = 1.0 + math.sqrt(factor * eps * metric)
        np.testing.assert_allclose(r.value, [expected], rtol=RTOL)

    def test_inside_unchanged(self):
        r = ref.reference_mean(
            np.array([1.1, 0.9]), np.zeros(2), np.eye(2), eps_mean=10.0, measure="frob"
        )
        np.testing.assert_allclose(r.value, [1.1, 0.9], rtol=RTOL)

    def test_bad_measure(self):
        with pytest.raises(ValueError, match="measure"):
            ref.reference_mean(np.zeros(1), np.zeros(1), np.eye(1), eps_mean=1.0, measure="tv")


class TestReferenceCovariances:
    def test_frobenius_1d(self):
        # min (s - 5)² s.t. (s - 1)² ≤ 0.25: s = 1.5.
        r = ref.reference_frobenius_cov(np.array([[5.0]]), np.array([[1.0]]), eps_cov=0.25)
        np.testing.assert_allclose(r.value, [[1.5]], rtol=RTOL)

    def test_frobenius_matches_eq7_interpolation(self):
        # Eq. 7-8 written out here: Σ̃ = (Σ + ηΣ_o)/(1+η), η = sqrt(‖Σ-Σ_o‖²/ε) - 1.
        rng = np.random.default_rng(3)
        cov, old = la.random_spd(rng, 3), la.random_spd(rng, 3)
        eps = 0.1 * np.sum((cov - old) ** 2)
        eta = math.sqrt(np.sum((cov - old) ** 2) / eps) - 1.0
        r = ref.reference_frobenius_cov(cov, old, eps_cov=eps)
        np.testing.assert_allclose(r.value, (cov + eta * old) / (1 + eta), rtol=RTOL, atol=RTOL)

    @pytest.mark.parametrize(("var", "above"), [(5.0, True), (0.2, False)])
    def test_kl_1d_lambert(self, var, above):
        # In 1-D the bound alone fixes the answer: ½(r - 1 - log r) = ε on the side of σ²/σ_o².
        eps, var_o = 0.05, 2.0
        r = ref.reference_kl_cov(np.array([[var]]), np.array([[var_o]]), eps_cov=eps)
        expected = var_o * _kl_1d_ratio(eps, above)
        np.testing.assert_allclose(r.value, [[expected]], rtol=RTOL)

    def test_kl_matches_precision_interpolation(self):
        # Eq. 10-11 from the KKT conditions: Λ̃ = (ηΛ_o + Λ)/(η+1), η the root of KL = ε.
        rng = np.random.default_rng(4)
        cov, old = la.random_spd(rng, 3), la.random_spd(rng, 3)
        prec, old_prec = np.linalg.inv(cov), np.linalg.inv(old)
        eps = 0.2 * la.kl_parts(np.zeros(3), cov, np.zeros(3), old)[1]

        def cov_at(eta):
            return np.linalg.inv((eta * old_prec + prec) / (eta + 1))

        eta = brentq(
            lambda e: la.kl_parts(np.zeros(3), cov_at(e), np.zeros(3), old)[1] - eps,
            0.0,
            1e6,
            xtol=1e-14,
        )
        r = ref.reference_kl_cov(cov, old, eps_cov=eps)
        np.testing.assert_allclose(r.value, cov_at(eta), rtol=RTOL, atol=RTOL)

    @pytest.mark.parametrize("scaled", [True, False])
    def test_w2_1d(self, scaled):
        # std σ = 3, σ_o = 2: plain σ̃ = 2 + sqrt(ε); scaled σ̃ = 2 (1 + sqrt(ε)).
        eps = 0.04
        r = ref.reference_w2_cov(np.array([[9.0]]), np.array([[4.0]]), eps_cov=eps, scaled=scaled)
        std = 2.0 * (1 + math.sqrt(eps)) if scaled else 2.0 + math.sqrt(eps)
        np.testing.assert_allclose(r.value, [[std**2]], rtol=RTOL)

    @pytest.mark.parametrize("scaled", [True, False])
    def test_w2_inactive_returns_input(self, scaled):
        rng = np.random.default_rng(5)
        cov, old = la.random_spd(rng, 2), la.random_spd(rng, 2)
        r = ref.reference_w2_cov(cov, old, eps_cov=100.0, scaled=scaled)
        np.testing.assert_allclose(r.value, cov, rtol=RTOL, atol=RTOL)

    def test_w2_geodesic_general_pair(self):
        # docs/math.md §3.5: the exact projection is Σ(t) on the geodesic, t = sqrt(ε / W2cov)
        # (plain).
        rng = np.random.default_rng(6)
        cov, old = la.random_spd(rng, 3), la.random_spd(rng, 3)
        w2 = la.w2_cov_between(cov, old)
        eps = 0.25 * w2
        t = math.sqrt(eps / w2)
        old_root = la.sqrtm_psd(old)
        inv_root = np.linalg.inv(old_root)
        transport = inv_root @ la.sqrtm_psd(old_root @ cov @ old_root) @ inv_root
        step = (1 - t) * np.eye(3) + t * transport
        r = ref.reference_w2_cov(cov, old, eps_cov=eps, scaled=False)
        np.testing.assert_allclose(r.value, step @ old @ step, rtol=RTOL, atol=RTOL)

    def test_w2_fidelity_commuting(self):
        # Diagonal: W2cov = Σ (sqrt a_i - sqrt b_i)².
        a, b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
        r = ref.reference_w2_fidelity(np.diag(a), np.diag(b))
        assert r.ok
        np.testing.assert_allclose(r.value, np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rtol=1e-7)


class TestReferenceKLJoint:
    def test_entropy_only_scales_covariance(self):
        # KL ball slack: argmin KL(π̃‖π) s.t. H ≥ β is μ̃ = μ, Σ̃ = Σ exp(2(β - H)/d).
        rng = np.random.default_rng(7)
        mean, cov = rng.standard_normal(2), la.random_spd(rng, 2)
        beta = la.entropy(cov) + 0.3
        r = ref.reference_kl_joint(mean, cov, mean, cov, eps=1e3, entropy_bound=beta)
        assert r.ok
        np.testing.assert_allclose(r.value[0], mean, rtol=RTOL, atol=RTOL)
        np.testing.assert_allclose(r.value[1], cov * math.exp(2 * 0.3 / 2), rtol=RTOL)

    def test_1d_equal_covariances_moves_mean_only(self):
        # Σ = Σ_o ⇒ Λ̃ = Λ, and the mean lands at ½(μ̃-μ_o)²/σ² = ε.
        eps, var = 0.02, 3.0
        r = ref.reference_kl_joint(
            np.array([2.0]), np.array([[var]]), np.array([0.0]), np.array([[var]]), eps=eps
        )
        np.testing.assert_allclose(r.value[0], [math.sqrt(2 * eps * var)], rtol=RTOL)
        np.testing.assert_allclose(r.value[1], [[var]], rtol=RTOL)

    def test_1d_equal_means_is_the_covariance_problem(self):
        eps = 0.05
        r = ref.reference_kl_joint(
            np.array([1.0]), np.array([[5.0]]), np.array([1.0]), np.array([[1.0]]), eps=eps
        )
        np.testing.assert_allclose(r.value[0], [1.0], rtol=RTOL)
        np.testing.assert_allclose(r.value[1], [[_kl_1d_ratio(eps, True)]], rtol=RTOL)


class TestSolveStatus:
    def test_missing_solver_is_reported_not_used(self):
        r = ref.reference_frobenius_cov(np.eye(2) * 3, np.eye(2), eps_cov=0.1, solvers=("NOPE",))
        assert not r.ok and r.value is None
        assert "NOPE" in r.info.attempts[0]

    def test_infeasible_problem_is_not_optimal(self):
        # KL ≤ 1e-6 around π_o but entropy 5 nats above it: no Gaussian satisfies both.
        r = ref.reference_kl_joint(
            np.zeros(2),
            np.eye(2),
            np.zeros(2),
            np.eye(2),
            eps=1e-6,
            entropy_bound=la.entropy(np.eye(2)) + 5.0,
        )
        assert not r.ok and r.value is None
        assert "infeasible" in r.info.status

    def test_unsolved_references_fail_the_check(self):
        cfg = Config(cases=2, dims=(2,), solvers=("NOPE",))
        report = run_checks(cfg, checks=_checks("frobenius_projection"))
        (row,) = report.results
        assert row.unsolved == 2 and not row.passed and not report.passed
        assert "reference not solved" in row.note


class TestAggregate:
    def test_limits_and_unsolved_fraction(self):
        (check,) = _checks("frobenius_projection")
        tol = Tolerances()
        good = [CaseResult(rel_err=1e-6), CaseResult(rel_err=2e-6)]
        assert aggregate(check, good, tol).passed
        assert not aggregate(check, [*good, CaseResult(rel_err=1e-2)], tol).passed
        assert not aggregate(check, [*good, CaseResult(violation=1e-3)], tol).passed
        # At most max(1, 10% of the cases) unsolved references, and never all of them.
        assert aggregate(check, [*good, CaseResult(solved=False)], tol).passed
        assert not aggregate(check, [*good, *[CaseResult(solved=False)] * 2], tol).passed
        assert not aggregate(check, [CaseResult(solved=False)], tol).passed
        row = aggregate(check, [*good, CaseResult(rel_err=1e-2)], tol)
        assert row.max_rel_err == pytest.approx(1e-2) and row.cases == 3


# --------------------------------------------------------------- planted wrong implementations


def _misscaled_frobenius(mean, cov, old_mean, old_cov, *, eps_mean, eps_cov, diag=False):
    """Eq. 7-8 with η mis-scaled by 10% (still a convex combination, but off the bound)."""
    import trpl_math as tm

    good = tm.frobenius_projection(
        mean, cov, old_mean, old_cov, eps_mean=eps_mean, eps_cov=eps_cov, diag=diag
    )
    dist = np.sum((cov - old_cov) ** 2, axis=-1 if diag else (-2, -1))
    eta = np.maximum(np.sqrt(dist / eps_cov) - 1.0, 0.0) * 1.1
    return good._replace(cov=(cov + eta * old_cov) / (1.0 + eta))


def _identity_kl(mean, cov, old_mean, old_cov, *, eps_mean, eps_cov, diag=False):
    """A 'projection' that forgets to project."""
    import trpl_math as tm

    return tm.Gaussian(mean, cov)


def _halved_kl_divergence(mean, cov, old_mean, old_cov, *, diag=False):
    import trpl_math as tm

    parts = tm.kl_divergence(mean, cov, old_mean, old_cov, diag=diag)
    return parts._replace(cov=0.5 * parts.cov)


def _half_gradient_frobenius(mean, cov, old_mean, old_cov, **kwargs):
    """Right values, covariance gradient halved (value + ½(x - x.detach()))."""
    import trpl_math as tm

    res = tm.frobenius_projection(mean, cov, old_mean, old_cov, **kwargs)
    return res._replace(cov=res.cov.detach() + 0.5 * (res.cov - res.cov.detach()))


@pytest.fixture(scope="module")
def impl() -> Implementation:
    return default_implementation()


class TestPlantedErrorsAreCaught:
    cfg = Config(cases=3, dims=(2, 3), mc_samples=20_000)

    def test_misscaled_eta(self, impl):
        names = ("frobenius_projection", "frobenius_projection[diag]")
        good = run_checks(self.cfg, impl, checks=_checks(*names))
        bad = run_checks(
            self.cfg,
            dataclasses.replace(impl, frobenius_projection=_misscaled_frobenius),
            checks=_checks(*names),
        )
        assert good.passed, render_markdown(good)
        assert not bad.passed
        for row in bad.results:
            assert not row.passed and row.max_rel_err > 1e-3 and row.max_bound_gap > 1e-3
        assert "FAIL" in render_markdown(bad)

    def test_unprojected_output_violates_bound(self, impl):
        bad = run_checks(
            self.cfg,
            dataclasses.replace(impl, kl_projection=_identity_kl),
            checks=_checks("kl_projection"),
        )
        (row,) = bad.results
        assert not row.passed and row.max_violation > 1e-2

    def test_wrong_divergence_caught_by_closed_form_and_monte_carlo(self, impl):
        names = ("divergences[closed forms]", "kl_divergence[monte carlo]")
        bad = run_checks(
            self.cfg,
            dataclasses.replace(impl, kl_divergence=_halved_kl_divergence),
            checks=_checks(*names),
        )
        assert [r.passed for r in bad.results] == [False, False]

    def test_wrong_gradient_caught_by_gradcheck(self, impl):
        cfg = dataclasses.replace(self.cfg, gradcheck_dims=(2,))
        good = run_checks(cfg, impl, checks=_checks("gradcheck[frobenius_projection]"))
        assert good.passed, render_markdown(good)
        bad = run_checks(
            cfg,
            dataclasses.replace(impl, frobenius_projection=_half_gradient_frobenius),
            checks=_checks("gradcheck[frobenius_projection]"),
        )
        (row,) = bad.results
        assert not row.passed and "gradcheck failed" in row.note and row.max_abs_err > 1e-2

    def test_wrong_kl_gradient_caught_by_reference_differences(self, impl):
        # Values right, gradient halved: the reference's finite differences disagree.
        def half_gradient_kl(mean, cov, old_mean, old_cov, **kwargs):
            import trpl_math as tm

            res = tm.kl_projection(mean, cov, old_mean, old_cov, **kwargs)
            return res._replace(cov=res.cov.detach() + 0.5 * (res.cov - res.cov.detach()))

        cfg = Config(cases=1, dims=(2,), fd_directions=1)
        names = ("jacobian[kl] vs reference FD",)
        good = run_checks(cfg, impl, checks=_checks(*names))
        bad = run_checks(
            cfg, dataclasses.replace(impl, kl_projection=half_gradient_kl), checks=_checks(*names)
        )
        assert good.passed, render_markdown(good)
        (row,) = bad.results
        assert not row.passed and row.max_rel_err > 1e-2


# --------------------------------------------------------------- report and CLI


class TestReport:
    def test_markdown_and_json(self, tmp_path):
        cfg = Config(cases=2, dims=(1, 2))
        report = run_checks(cfg, checks=_checks("divergences[closed forms]"))
        md_path, json_path = write_report(report, tmp_path)
        md = md_path.read_text()
        assert "| divergences[closed forms] | 2 | 0 |" in md
        data = json.loads(json_path.read_text())
        assert data["passed"] is report.passed
        (row,) = data["checks"]
        assert row["cases"] == 2 and row["max_rel_err"] <= 1e-9
        assert data["config"]["dims"] == [1, 2]

    def test_cli_writes_report_and_exit_code(self, tmp_path, capsys):
        code = main(["--quick", "--checks", "divergences*", "--out", str(tmp_path), "--quiet"])
        assert code == 0
        assert (tmp_path / "verification_report.json").exists()
        assert "trpl_math verification report" in capsys.readouterr().out

    def test_cli_bad_arguments(self, tmp_path):
        assert main(["--checks", "no-such-check", "--out", str(tmp_path)]) == 2
        with pytest.raises(SystemExit) as info:
            main(["--dims", "0,1"])
        assert info.value.code == 2

    def test_config_validation(self):
        with pytest.raises(ValueError, match="cases"):
            Config(cases=0)
        with pytest.raises(ValueError, match="dtype"):
            Config(dtype="float16")


@pytest.mark.slow
def test_quick_run_passes(tmp_path):
    """The documented command: ``python -m verification --quick`` passes."""
    assert main(["--quick", "--out", str(tmp_path), "--quiet"]) == 0


def test_every_check_is_in_the_docs():
    """docs/verification.md shows a report row for every check (regenerate it when adding one)."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "verification.md").read_text()
    missing = [c.name for c in CHECKS if f"| {c.name} |" not in docs]
    assert not missing, missing


class TestIndependentEvaluators:
    """The float64 evaluators the report measures with, on hand-computed values."""

    def test_kl_1d(self):
        # KL(N(1, 2) ‖ N(0, 1)) = ½·1 + ½(2 - 1 - log 2).
        m, c = la.kl_parts(np.array([1.0]), np.array([[2.0]]), np.zeros(1), np.eye(1))
        assert m == pytest.approx(0.5) and c == pytest.approx(0.5 * (1 - math.log(2)))

    def test_w2_diagonal(self):
        a, b = np.array([4.0, 1.0]), np.array([1.0, 9.0])
        mean, old_mean = np.array([1.0, 2.0]), np.zeros(2)
        m, c = la.w2_parts(mean, np.diag(a), old_mean, np.diag(b), scaled=False)
        assert m == pytest.approx(5.0) and c == pytest.approx(1.0 + 4.0)
        # Scaled: whitened by b, mean part 1/1 + 4/9, cov part Σ (sqrt(a/b) - 1)².
        m, c = la.w2_parts(mean, np.diag(a), old_mean, np.diag(b), scaled=True)
        assert m == pytest.approx(1 + 4 / 9) and c == pytest.approx(1.0 + (1 / 3 - 1) ** 2)

    def test_frobenius_and_entropy(self):
        m, c = la.frobenius_parts(np.ones(2), 2 * np.eye(2), np.zeros(2), np.eye(2))
        assert m == pytest.approx(2.0) and c == pytest.approx(2.0)
        assert la.entropy(np.array([[3.0]])) == pytest.approx(
            0.5 * math.log(2 * math.pi * math.e * 3)
        )

    @pytest.mark.parametrize("structure", ["general", "commuting", "diagonal"])
    def test_random_instances(self, structure):
        rng = np.random.default_rng(8)
        inst = la.random_instance(rng, 4, structure=structure, log_scale=1.0)
        for cov in (inst.cov, inst.old_cov):
            w = np.linalg.eigvalsh(cov)
            assert w.min() >= math.exp(-1) - 1e-12 and w.max() <= math.e + 1e-12
        commute = np.abs(inst.cov @ inst.old_cov - inst.old_cov @ inst.cov).max()
        assert (commute < 1e-12) == (structure != "general")
        if structure == "diagonal":
            assert np.count_nonzero(inst.cov - np.diag(np.diag(inst.cov))) == 0
        with pytest.raises(ValueError, match="structure"):
            la.random_instance(rng, 2, structure="banded")


def test_float32_library_passes_float32_tolerances():
    cfg = Config(cases=2, dims=(2, 3), dtype="float32", tolerances=Tolerances.for_dtype("float32"))
    report = run_checks(cfg, checks=_checks("kl_projection", "divergences[closed forms]"))
    assert report.passed, render_markdown(report)


def _entropy_scales_cov_not_std(cov, entropy_bound, *, equality=False, diag=False):
    """Algorithm 1 read literally: Σ scaled by exp((β - H)/d), H moves only halfway."""
    import trpl_math as tm

    h = tm.entropy(cov, diag=diag)
    log_scale = (entropy_bound - h) / cov.shape[-1]
    if not equality:
        log_scale = np.clip(log_scale, 0.0, None)
    return np.exp(log_scale)[(...,) + (None,) * (1 if diag else 2)] * cov


def _entropy_always_equal(cov, entropy_bound, *, equality=False, diag=False):
    """The inequality form that forgets it is one: also shrinks where H ≥ β."""
    import trpl_math as tm

    return tm.entropy_projection(cov, entropy_bound=entropy_bound, equality=True, diag=diag)


def _schedule_with_kappa(
    *, step, total_steps, initial_entropy, target_per_dim, dim, kind, temperature
):
    """The authors' linear schedule (κ instead of dκ)."""
    import trpl_math as tm

    if kind == "linear":
        return initial_entropy + (step / total_steps) * (target_per_dim - initial_entropy)
    return tm.entropy_schedule(
        step, total_steps, initial_entropy, target_per_dim, dim, kind=kind, temperature=temperature
    )


class TestEntropyControlAndDomain:
    cfg = Config(cases=8, dims=(2, 3))

    @pytest.mark.parametrize(
        ("field", "wrong", "check"),
        [
            ("entropy_projection", _entropy_scales_cov_not_std, "entropy_projection[control]"),
            ("entropy_projection", _entropy_always_equal, "entropy_projection[control]"),
            ("entropy_schedule", _schedule_with_kappa, "entropy_schedule"),
        ],
    )
    def test_planted_entropy_errors_fail(self, impl, field, wrong, check):
        good = run_checks(self.cfg, impl, checks=_checks(check))
        bad = run_checks(
            self.cfg, dataclasses.replace(impl, **{field: wrong}), checks=_checks(check)
        )
        assert good.passed, render_markdown(good)
        assert not bad.passed

    def test_report_header_states_the_domain(self):
        report = run_checks(self.cfg, default_implementation(), checks=_checks("entropy_schedule"))
        text = render_markdown(report)
        assert "Domain covered: d ∈ {2, 3}; covariances Q diag(exp(u)) Qᵀ with u ∈ [-1, 1]" in text
        assert "(condition ≤ 7.39)" in text and "library dtype float64" in text

    def test_hard_mode_covers_ill_conditioned_rescaled_cases(self, tmp_path, capsys):
        args = ["--quick", "--hard", "--checks", "divergences*", "--out", str(tmp_path), "--quiet"]
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "condition ≤ 1e+04" in out and "variances scaled by 1e-3..1e3 (hard mode" in out
        assert "d ∈ {1, 3, 8}" in out
