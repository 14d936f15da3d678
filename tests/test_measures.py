"""The measure registry: each entry's projection lands within the divergence it names, and its
mean part is that divergence's mean part for equal covariances."""

from __future__ import annotations

import numpy as np
import pytest

import trpl_math as tm
from trpl_math.measures import MEASURES, get_measure


def _inputs(diag: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    old_mean = rng.normal(size=(6, 3))
    mean = old_mean + rng.normal(size=(6, 3))
    if diag:
        old_cov = rng.uniform(0.5, 1.5, (6, 3))
        cov = old_cov * np.exp(rng.normal(size=(6, 3)))
    else:
        a, b = rng.normal(size=(2, 6, 3, 3))
        old_cov = a @ np.swapaxes(a, -1, -2) + np.eye(3)
        cov = b @ np.swapaxes(b, -1, -2) + np.eye(3)
    return mean, cov, old_mean, old_cov


@pytest.mark.parametrize("name", list(MEASURES))
@pytest.mark.parametrize("diag", [True, False])
@pytest.mark.parametrize("scaled", [True, False])
def test_projection_meets_its_own_divergence(name, diag, scaled):
    m = get_measure(name)
    x = _inputs(diag)
    proj = m.project(*x, eps_mean=0.03, eps_cov=1e-3, eps=0.03, scaled=scaled, diag=diag)
    parts = m.divergence(proj.mean, proj.cov, x[2], x[3], scaled=scaled, diag=diag)
    if m.joint:
        assert np.max(parts.total) <= 0.03 * (1 + 1e-9)
        np.testing.assert_allclose(parts.total, 0.03, rtol=1e-8)  # every state was outside
    else:
        assert np.max(parts.mean) <= 0.03 * (1 + 1e-9)
        assert np.max(parts.cov) <= 1e-3 * (1 + 1e-9)


@pytest.mark.parametrize("name", list(MEASURES))
@pytest.mark.parametrize("diag", [True, False])
@pytest.mark.parametrize("scaled", [True, False])
def test_mean_part_is_the_divergences_for_equal_covariances(name, diag, scaled):
    m = get_measure(name)
    mean, cov, old_mean, _ = _inputs(diag, seed=1)
    full = m.divergence(mean, cov, old_mean, cov, scaled=scaled, diag=diag)
    np.testing.assert_allclose(
        m.mean_part(mean, old_mean, cov, scaled=scaled, diag=diag), full.mean, rtol=1e-12
    )
    np.testing.assert_allclose(full.cov, 0.0, atol=1e-12)


def test_kl_mean_factor_by_hand():
    # d = 1, variance 4: KL mean part 0.5 * (1 - 0)^2 / 4 = 0.125, Frobenius's 0.25
    t, m, c = np.array([[1.0]]), np.array([[0.0]]), np.array([[4.0]])
    assert get_measure("kl").mean_part(t, m, c, diag=True)[0] == pytest.approx(0.125)
    assert get_measure("frob").mean_part(t, m, c, diag=True)[0] == pytest.approx(0.25)
    assert get_measure("w2").mean_part(t, m, c, scaled=False, diag=True)[0] == pytest.approx(1.0)


def test_unknown_and_misused():
    with pytest.raises(ValueError, match="measure must be one of"):
        get_measure("kl2")
    x = _inputs(True)
    with pytest.raises(ValueError, match="eps"):
        get_measure("kl_joint").project(*x, diag=True)
    with pytest.raises(ValueError, match="entropy_bound"):
        get_measure("kl").project(*x, eps_mean=0.1, eps_cov=0.1, diag=True, entropy_bound=1.0)
    assert tm.kl_projection is get_measure("kl")._project
