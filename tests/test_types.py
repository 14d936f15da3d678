"""The views of :class:`trpl_math.Gaussian`: standard deviations, Cholesky factor, a
``torch.distributions`` object, and the constructors from standard deviations / a factor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import trpl_math as tm
from trpl_math import Gaussian


class TestFromStd:
    def test_squares_the_standard_deviations(self) -> None:
        g = Gaussian.from_std(np.zeros(2), np.array([0.5, 2.0]))
        np.testing.assert_array_equal(g.cov, [0.25, 4.0])
        t = Gaussian.from_std(torch.zeros(2), torch.tensor([0.5, 2.0]))
        assert torch.equal(t.cov, torch.tensor([0.25, 4.0]))

    def test_std_round_trip_and_gradient(self) -> None:
        std = torch.tensor([0.3, 1.7], dtype=torch.float64, requires_grad=True)
        g = Gaussian.from_std(torch.zeros(2, dtype=torch.float64), std)
        back = g.std(diag=True)
        torch.testing.assert_close(back, std.detach(), rtol=1e-15, atol=0)
        (grad,) = torch.autograd.grad(back.sum(), std)
        torch.testing.assert_close(grad, torch.ones(2, dtype=torch.float64))

    def test_from_scale_tril(self) -> None:
        L = np.array([[2.0, 0.0], [1.0, 3.0]])
        g = Gaussian.from_scale_tril(np.zeros(2), L)
        np.testing.assert_array_equal(g.cov, [[4.0, 2.0], [2.0, 10.0]])
        np.testing.assert_allclose(g.scale_tril(diag=False), L, rtol=1e-15)
        Lt = torch.tensor(L)[None].expand(3, 2, 2)
        gt = Gaussian.from_scale_tril(torch.zeros(3, 2, dtype=torch.float64), Lt)
        torch.testing.assert_close(gt.scale_tril(diag=False), Lt)


class TestViews:
    def test_std_of_a_full_covariance_is_refused(self) -> None:
        with pytest.raises(ValueError, match="scale_tril"):
            Gaussian(np.zeros(2), np.eye(2)).std(diag=False)

    def test_shape_must_fit_diag(self) -> None:
        with pytest.raises(ValueError, match=r"cov has shape \(3, 2\), expected \(\.\.\., d, d\)"):
            Gaussian(np.zeros((3, 2)), np.ones((3, 2))).scale_tril(diag=False)
        with pytest.raises(ValueError, match=r"cov has shape \(2, 3\), expected \(\.\.\., d\)"):
            Gaussian(np.zeros(2), np.ones((2, 3))).std(diag=True)

    def test_diag_scale_tril_is_the_diagonal_of_stds(self) -> None:
        var = np.array([[4.0, 9.0]])
        np.testing.assert_array_equal(
            Gaussian(np.zeros((1, 2)), var).scale_tril(diag=True), [[[2.0, 0.0], [0.0, 3.0]]]
        )
        t = Gaussian(torch.zeros(1, 2), torch.tensor(var)).scale_tril(diag=True)
        assert torch.equal(t, torch.tensor([[[2.0, 0.0], [0.0, 3.0]]], dtype=torch.float64))

    def test_numpy_results_use_the_same_type(self) -> None:
        old = np.array([1.0, 1.0])
        p = tm.kl_projection(
            np.zeros(2),
            np.array([4.0, 0.25]),
            np.ones(2),
            old,
            eps_mean=0.01,
            eps_cov=0.01,
            diag=True,
        )
        assert isinstance(p, Gaussian)
        np.testing.assert_allclose(p.std(diag=True), np.sqrt(p.cov), rtol=0)
        with pytest.raises(TypeError, match="to_distribution needs torch tensors"):
            p.to_distribution(diag=True)


class TestToDistribution:
    def test_diagonal_is_independent_normal(self) -> None:
        g = Gaussian(torch.tensor([[0.0, 1.0]]), torch.tensor([[4.0, 0.25]]))
        dist = g.to_distribution(diag=True)
        assert isinstance(dist, torch.distributions.Independent)
        assert dist.batch_shape == (1,) and dist.event_shape == (2,)
        x = torch.tensor([[1.0, 1.0]])
        # by hand: N(1; 0, 4) N(1; 1, 1/4)
        expect = (
            -0.5 * (1 / 4) - 0.5 * math.log(2 * math.pi * 4) - 0.5 * math.log(2 * math.pi * 0.25)
        )
        assert float(dist.log_prob(x)) == pytest.approx(expect, rel=1e-6)

    def test_full_is_multivariate_normal(self) -> None:
        cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
        dist = Gaussian(torch.zeros(2, dtype=torch.float64), cov).to_distribution(diag=False)
        assert isinstance(dist, torch.distributions.MultivariateNormal)
        torch.testing.assert_close(dist.covariance_matrix, cov)
        torch.testing.assert_close(dist.entropy(), tm.entropy(cov))

    def test_state_independent_cov_broadcasts(self) -> None:
        g = Gaussian(torch.zeros(5, 2), torch.tensor([1.0, 2.0]))
        assert g.to_distribution(diag=True).batch_shape == (5,)
        g = Gaussian(torch.zeros(5, 2), torch.eye(2))
        assert g.to_distribution(diag=False).batch_shape == (5,)
