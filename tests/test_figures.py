"""Tests of the figure scripts: every file is written, and the saved data show what is claimed.

The command runs once, in-process, into a temporary directory. The checks recompute the
quantities from the saved covariances with plain NumPy/SciPy formulas written out from
docs/math.md §3.3-§3.7, §6
(not with trpl_math), so a wrong projection or a mislabelled curve fails them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

pytest.importorskip("matplotlib")

from figures import FIGURES, generate
from figures.__main__ import main
from figures._common import ellipse_xy, rotated_cov
from figures.batch_projection import compute as batch_compute
from figures.interpolation import interpolate

# --- independent reference formulas (docs/math.md §3, §6), plain NumPy/SciPy ---------------


def sqrtm(a: np.ndarray) -> np.ndarray:
    return np.real(scipy.linalg.sqrtm(a))


def logdet(a: np.ndarray) -> float:
    sign, val = np.linalg.slogdet(a)
    assert sign > 0
    return float(val)


def entropy(cov: np.ndarray) -> float:
    d = cov.shape[-1]
    return 0.5 * d * np.log(2 * np.pi * np.e) + 0.5 * logdet(cov)


def kl_cov(cov: np.ndarray, old: np.ndarray) -> float:
    d = cov.shape[-1]
    return 0.5 * (np.trace(np.linalg.solve(old, cov)) - d + logdet(old) - logdet(cov))


def w2_scaled_cov(cov: np.ndarray, old: np.ndarray) -> float:
    """True W2 covariance part after whitening with old^{-1/2}: tr(A + I - 2 A^{1/2})."""
    w = np.linalg.inv(sqrtm(old))
    a = w @ cov @ w
    return float(np.trace(a + np.eye(len(a)) - 2 * sqrtm(a)))


def w2_plain_cov(a: np.ndarray, b: np.ndarray) -> float:
    rb = sqrtm(b)
    return float(np.trace(a + b - 2 * sqrtm(rb @ a @ rb)))


def eq9_measure(cov: np.ndarray, old: np.ndarray) -> float:
    """The paper's scaled W2 covariance measure ||old^{-1/2} cov^{1/2} - I||_F^2."""
    m = np.linalg.solve(sqrtm(old), sqrtm(cov)) - np.eye(len(cov))
    return float(np.sum(m * m))


def maha(x: np.ndarray, y: np.ndarray, cov: np.ndarray) -> float:
    d = x - y
    return float(d @ np.linalg.solve(cov, d))


# --- one run of the command ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("figures")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["--out", str(out), "--format", "png,pdf"])
    assert status == 0
    return out, buf.getvalue()


def load(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


class TestCommand:
    def test_writes_png_pdf_and_data_for_every_figure(self, run):
        out, printed = run
        for name in FIGURES:
            png, pdf, data = (out / f"{name}.{ext}" for ext in ("png", "pdf", "json"))
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert pdf.read_bytes()[:5] == b"%PDF-"
            assert isinstance(json.loads(data.read_text()), dict)
            for p in (png, pdf, data):
                assert str(p) in printed.splitlines()

    def test_four_figures(self):
        assert set(FIGURES) == {
            "fig1_interpolation",
            "w2_exact_vs_eq9",
            "kl_root",
            "batch_projection",
        }

    def test_bad_format_is_rejected(self, tmp_path, capsys):
        with pytest.raises(SystemExit) as err:
            main(["--out", str(tmp_path), "--format", "jpeg"])
        assert err.value.code == 2
        assert "jpeg" in capsys.readouterr().err
        assert not list(tmp_path.iterdir())

    def test_unknown_figure_is_rejected(self, tmp_path):
        with pytest.raises(ValueError, match="only"):
            generate(tmp_path, ["png"], only=["fig9"])

    def test_png_only_and_one_figure(self, tmp_path):
        paths = generate(tmp_path, ["png"], only=["kl_root"], small_png=True)
        assert sorted(p.name for p in paths) == ["kl_root.json", "kl_root.png"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kl_root.json", "kl_root.png"]

    def test_seed_fixes_the_random_examples(self):
        a, b, c = batch_compute(0), batch_compute(0), batch_compute(1)
        np.testing.assert_array_equal(a["cov"], b["cov"])
        np.testing.assert_array_equal(
            a["measures"]["kl"]["by_bound"][2]["cov"], b["measures"]["kl"]["by_bound"][2]["cov"]
        )
        assert not np.allclose(a["cov"], c["cov"])


class TestHelpers:
    def test_ellipse_points_lie_on_the_contour(self):
        mean, cov = np.array([0.5, -1.0]), np.array([[2.0, 0.6], [0.6, 0.5]])
        x, y = ellipse_xy(mean, cov, n_std=2.0, n=50)
        pts = np.stack([x, y], axis=1)
        r2 = [maha(p, mean, cov) for p in pts]
        np.testing.assert_allclose(r2, 4.0, rtol=1e-12)
        np.testing.assert_allclose(pts[0], pts[-1])  # closed curve

    def test_rotated_cov(self):
        c = rotated_cov((2.0, 0.5), 90.0)
        np.testing.assert_allclose(c, np.diag([0.25, 4.0]), atol=1e-12)
        with pytest.raises(ValueError, match="std"):
            rotated_cov((1.0, -1.0), 0.0)

    def test_interpolate_rejects_bad_input(self):
        cov = np.eye(2)
        with pytest.raises(ValueError, match="alpha"):
            interpolate("kl", cov, 2 * cov, np.array([0.5, 1.5]))
        with pytest.raises(ValueError, match="measure"):
            interpolate("tv", cov, 2 * cov, np.array([0.5]))


class TestFigure1:
    def test_endpoints_have_equal_entropy_and_do_not_commute(self, run):
        d = load(run[0], "fig1_interpolation")
        cov, old = np.array(d["cov"]), np.array(d["old_cov"])
        assert entropy(cov) == pytest.approx(entropy(old), abs=1e-12)
        assert d["entropy_pi"] == pytest.approx(entropy(cov), abs=1e-12)
        assert np.linalg.norm(cov @ old - old @ cov) > 0.1

    def test_interpolants_are_the_paper_formulas(self, run):
        """Eq. 7 (covariances), Eq. 9 (square roots), Eq. 11 (precisions) at each saved η."""
        d = load(run[0], "fig1_interpolation")
        cov, old = np.array(d["cov"]), np.array(d["old_cov"])
        root, old_root = sqrtm(cov), sqrtm(old)
        prec, old_prec = np.linalg.inv(cov), np.linalg.inv(old)
        for k, a in enumerate(d["alpha"]):
            expected = {
                "frob": (1 - a) * cov + a * old,
                "w2": np.linalg.matrix_power((1 - a) * root + a * old_root, 2),
                "kl": np.linalg.inv((1 - a) * prec + a * old_prec),
            }
            if d["eta"][k] is not None:
                assert d["eta"][k] == pytest.approx(a / (1 - a))
            for m, e in expected.items():
                np.testing.assert_allclose(d["measures"][m]["cov"][k], e, atol=1e-9, rtol=1e-9)

    def test_entropy_curves_obey_theorem_1(self, run):
        """Frobenius and W2 at or above the linear blend of the endpoint entropies, KL below."""
        d = load(run[0], "fig1_interpolation")
        alpha = np.array(d["alpha"])
        cov, old = np.array(d["cov"]), np.array(d["old_cov"])
        blend = (1 - alpha) * entropy(cov) + alpha * entropy(old)
        np.testing.assert_allclose(d["entropy_linear_blend"], blend, atol=1e-12)
        h = {}
        for m in ("frob", "w2", "kl"):
            h[m] = np.array([entropy(np.array(c)) for c in d["measures"][m]["cov"]])
            np.testing.assert_allclose(d["measures"][m]["entropy"], h[m], atol=1e-10)
        mid = len(alpha) // 2
        for m in ("frob", "w2"):
            assert np.all(h[m] >= blend - 1e-10)
            assert h[m][mid] - blend[mid] > 0.1  # strictly above in between
        assert np.all(h["kl"] <= blend + 1e-10)
        assert blend[mid] - h["kl"][mid] > 0.1
        # the ordering visible in panel (d): Frobenius > W2 > blend > KL inside (0, 1)
        inner = slice(1, -1)
        assert np.all(h["frob"][inner] > h["w2"][inner])

    def test_ellipses_are_points_of_the_curves(self, run):
        d = load(run[0], "fig1_interpolation")
        alpha = list(d["alpha"])
        for m in ("frob", "w2", "kl"):
            for a, c in zip(d["ellipse_alpha"], d["measures"][m]["ellipse_cov"], strict=True):
                k = int(np.argmin(np.abs(np.array(alpha) - a)))
                if abs(alpha[k] - a) < 1e-12:
                    np.testing.assert_allclose(c, d["measures"][m]["cov"][k], atol=1e-12)
        np.testing.assert_allclose(d["measures"]["kl"]["ellipse_cov"][0], d["cov"], atol=1e-12)
        np.testing.assert_allclose(d["measures"]["kl"]["ellipse_cov"][-1], d["old_cov"], atol=1e-12)


class TestWassersteinExact:
    def test_exact_projection_lies_on_the_bound(self, run):
        d = load(run[0], "w2_exact_vs_eq9")
        old = np.array(d["old_cov"])
        assert np.linalg.norm(np.array(d["cov"]) @ old - old @ np.array(d["cov"])) > 0.1
        assert d["w2_cov_part_true"] == pytest.approx(w2_scaled_cov(np.array(d["cov"]), old))
        for eps, c in zip(d["eps"], d["exact"]["cov"], strict=True):
            assert w2_scaled_cov(np.array(c), old) == pytest.approx(eps, rel=1e-8)

    def test_eq9_lies_inside_with_the_reported_gap(self, run):
        d = load(run[0], "w2_exact_vs_eq9")
        old = np.array(d["old_cov"])
        for k, (eps, c) in enumerate(zip(d["eps"], d["eq9"]["cov"], strict=True)):
            c = np.array(c)
            true = w2_scaled_cov(c, old)
            assert true < eps * (1 - 1e-3)  # strictly inside the true W2 ball
            assert d["eq9_slack"][k] == pytest.approx(eps - true, rel=1e-6, abs=1e-10)
            assert eq9_measure(c, old) == pytest.approx(eps, rel=1e-8)  # on its own bound
        sh, i = d["shown"], d["shown_index"]
        assert sh["eq9_slack"] == pytest.approx(d["eq9_slack"][i])
        assert sh["eq9_slack"] > 0.01 * sh["eps"]

    def test_exact_projection_is_closer_to_the_prediction(self, run):
        """The objective (whitened W2 to π) is smaller for the geodesic projection."""
        d = load(run[0], "w2_exact_vs_eq9")
        cov, old = np.array(d["cov"]), np.array(d["old_cov"])
        w = np.linalg.inv(sqrtm(old))
        for k in range(len(d["eps"])):
            obj = {
                key: w2_plain_cov(w @ np.array(d[key]["cov"][k]) @ w, w @ cov @ w)
                for key in ("exact", "eq9")
            }
            assert d["exact"]["w2_to_pi"][k] == pytest.approx(obj["exact"], rel=1e-6, abs=1e-10)
            assert d["eq9"]["w2_to_pi"][k] == pytest.approx(obj["eq9"], rel=1e-6, abs=1e-10)
            assert obj["exact"] < obj["eq9"]
            assert d["eq9_objective_excess"][k] == pytest.approx(
                obj["eq9"] / obj["exact"] - 1, rel=1e-5
            )
            # on the geodesic, W2(Σ(t), Σ) = (1 - t)² W2(Σ, Σ_o) with t = sqrt(ε / W2)
            t = np.sqrt(d["fraction"][k])
            assert obj["exact"] == pytest.approx((1 - t) ** 2 * d["w2_cov_part_true"], rel=1e-6)


class TestKLRoot:
    def test_curve_is_the_kl_along_the_precision_interpolation(self, run):
        d = load(run[0], "kl_root")
        cov, old = np.array(d["cov"]), np.array(d["old_cov"])
        eta, klc = np.array(d["eta"]), np.array(d["kl_cov"])
        for k in range(0, len(eta), 37):
            lam = (eta[k] * np.linalg.inv(old) + np.linalg.inv(cov)) / (eta[k] + 1)
            assert klc[k] == pytest.approx(kl_cov(np.linalg.inv(lam), old), rel=1e-9)
        assert klc[0] == pytest.approx(kl_cov(cov, old), rel=1e-12)
        assert np.all(np.diff(klc) < 0)  # falls monotonically

    def test_curve_crosses_the_bound_at_the_reported_root(self, run):
        d = load(run[0], "kl_root")
        cov, old = np.array(d["cov"]), np.array(d["old_cov"])
        eta, klc = np.array(d["eta"]), np.array(d["kl_cov"])
        for eps, root, proj in zip(d["eps"], d["eta_root"], d["projected_cov"], strict=True):
            proj = np.array(proj)
            assert kl_cov(proj, old) == pytest.approx(eps, rel=1e-9)  # on the bound
            lam = (root * np.linalg.inv(old) + np.linalg.inv(cov)) / (root + 1)
            np.testing.assert_allclose(proj, np.linalg.inv(lam), rtol=1e-8, atol=1e-10)
            # the saved curve changes sign around the root
            below, above = eta[eta < root], eta[eta > root]
            assert klc[eta == below.max()][0] > eps > klc[eta == above.min()][0]
        np.testing.assert_allclose(d["kl_cov_at_projection"], d["eps"], rtol=1e-9)
        np.testing.assert_allclose(d["kl_cov_curve_at_root"], d["eps"], rtol=1e-9)
        assert np.all(np.diff(d["eta_root"]) > 0)  # smaller bound, larger multiplier


class TestBatchProjection:
    @staticmethod
    def parts(m: str, mean, cov, old_mean, old_cov) -> tuple[float, float]:
        if m == "frob":
            return maha(mean, old_mean, old_cov), float(np.sum((cov - old_cov) ** 2))
        if m == "w2":
            return maha(mean, old_mean, old_cov), eq9_measure(cov, old_cov)
        return 0.5 * maha(mean, old_mean, old_cov), kl_cov(cov, old_cov)

    def test_parts_on_the_bound_when_active_else_unchanged(self, run):
        d = load(run[0], "batch_projection")
        mean, cov = np.array(d["mean"]), np.array(d["cov"])
        old_mean, old_cov = np.array(d["old_mean"]), np.array(d["old_cov"])
        n_active = n_inactive = 0
        for m, md in d["measures"].items():
            for row in md["by_bound"]:
                eps = row["eps"]
                for j in range(len(mean)):
                    pm, pc = self.parts(
                        m,
                        np.array(row["mean"][j]),
                        np.array(row["cov"][j]),
                        old_mean[j],
                        old_cov[j],
                    )
                    m0, c0 = self.parts(m, mean[j], cov[j], old_mean[j], old_cov[j])
                    assert md["unprojected_mean_part"][j] == pytest.approx(m0, rel=1e-9)
                    assert md["unprojected_cov_part"][j] == pytest.approx(c0, rel=1e-9)
                    assert row["mean_part"][j] == pytest.approx(pm, rel=1e-8, abs=1e-12)
                    assert row["cov_part"][j] == pytest.approx(pc, rel=1e-8, abs=1e-12)
                    if m0 > eps:
                        assert pm == pytest.approx(eps, rel=1e-8)
                        n_active += 1
                    else:
                        np.testing.assert_array_equal(row["mean"][j], mean[j])
                        n_inactive += 1
                    if c0 > eps:
                        assert pc == pytest.approx(eps, rel=1e-8)
                    else:
                        np.testing.assert_allclose(row["cov"][j], cov[j], atol=1e-14)
        assert n_active > 0 and n_inactive > 0  # the figure shows both cases

    def test_projections_approach_the_old_policy_as_the_bound_shrinks(self, run):
        d = load(run[0], "batch_projection")
        assert d["bounds"] == sorted(d["bounds"], reverse=True)
        old_mean = np.array(d["old_mean"])
        for md in d["measures"].values():
            dist = np.array(
                [np.linalg.norm(np.array(r["mean"]) - old_mean, axis=-1) for r in md["by_bound"]]
            )
            assert np.all(np.diff(dist, axis=0) <= 1e-12)
            assert np.all(np.diff([r["cov_part"] for r in md["by_bound"]], axis=0) <= 1e-12)
