"""Beyond the paper: the KL covariance constraint as a function of ``η`` and the root found.

The KL projection (Eq. 10-11) interpolates precisions, ``Λ̃(η) = (η Λ_o + Λ)/(η + 1)``, with
the multiplier ``η`` the root of ``KLcov(Σ̃(η) ‖ Σ_o) = ε_Σ``. The curve ``KLcov(η)`` is drawn
from the eigenvalue form of docs/math.md §3.7 ``½ Σ_i [1/ν_i - 1 + log ν_i]``, ``ν_i = (η +
λ_i)/(η + 1)``;
the roots are what ``trpl_math.kl_projection`` returns for several bounds: ``η`` is recovered
from the projected covariance and the library's ``kl_divergence`` of the projection is shown to
equal the bound. Panel (b) plots the same curve as ``log KLcov`` against ``log t``,
``t = 1/(1+η)``, where it is nearly a straight line (why Newton there converges fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import trpl_math as tm
from figures._common import (
    MEASURE_COLORS,
    OKABE_ITO,
    kl_cov_along_eta,
    label_panel,
    make_figure,
    new_figure,
    recover_eta_kl,
)

NAME = "kl_root"
DIM = 3
#: bounds as fractions of the unprojected KL covariance part.
BOUND_FRACTIONS = (0.5, 0.1, 0.01)
BOUND_COLORS = (OKABE_ITO["vermillion"], OKABE_ITO["reddish_purple"], OKABE_ITO["sky_blue"])


def random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    """A well-conditioned random covariance ``A Aᵀ / d + 0.2 I``, ``(d, d)``."""
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.2 * np.eye(d)


def compute(seed: int = 0) -> dict[str, Any]:
    """One random ``d = 3`` pair, projected by ``kl_projection`` onto three bounds."""
    rng = np.random.default_rng(seed)
    old_cov, cov = random_cov(rng, DIM), random_cov(rng, DIM)
    zero = np.zeros(DIM)
    kl0 = float(tm.kl_divergence(zero, cov, zero, old_cov).cov)
    eps = kl0 * np.asarray(BOUND_FRACTIONS)
    k = eps.shape[0]
    zeros = np.zeros((k, DIM))
    covs = np.broadcast_to(cov, (k, DIM, DIM)).copy()
    olds = np.broadcast_to(old_cov, (k, DIM, DIM)).copy()
    proj = tm.kl_projection(zeros, covs, zeros, olds, eps_mean=1.0, eps_cov=eps).cov
    eta_root = recover_eta_kl(proj, covs, olds)
    eta = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 400)])
    return {
        "description": "KLcov(eta) along the precision interpolation and kl_projection's roots",
        "cov": cov,
        "old_cov": old_cov,
        "kl_cov_unprojected": kl0,
        "eta": eta,
        "kl_cov": kl_cov_along_eta(cov, old_cov, eta),
        "bound_fraction": list(BOUND_FRACTIONS),
        "eps": eps,
        "projected_cov": proj,
        "eta_root": eta_root,
        "kl_cov_at_projection": tm.kl_divergence(zeros, proj, zeros, olds).cov,
        "kl_cov_curve_at_root": kl_cov_along_eta(cov, old_cov, eta_root),
    }


def plot(data: dict[str, Any]) -> Any:
    """(a) ``KLcov`` against ``η`` with the bounds and roots; (b) the same in log-log of ``t``."""
    fig, axes = new_figure(7.2, 2.6, ncols=2)
    eta = np.asarray(data["eta"])
    klc = np.asarray(data["kl_cov"])
    pos = eta > 0
    kl_col = MEASURE_COLORS["kl"]
    ax = axes[0]
    ax.plot(eta[pos], klc[pos], color=kl_col, lw=1.6, label=r"$\mathrm{KL_{cov}}(\eta)$")
    for f, e, r, col in zip(
        data["bound_fraction"], data["eps"], data["eta_root"], BOUND_COLORS, strict=True
    ):
        ax.axhline(e, color=col, ls=":", lw=0.9)
        ax.plot(
            [r],
            [e],
            "o",
            color=col,
            ms=5,
            label=rf"$\varepsilon = {f:g}\,\mathrm{{KL_{{cov}}}}(0)$: $\eta^* = {r:.3g}$",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\eta$")
    ax.set_ylabel(r"$\mathrm{KL_{cov}}(\tilde\Sigma(\eta)\,\|\,\Sigma_{old})$ (nats)")
    ax.set_xlim(eta[pos].min(), eta.max())
    ax.legend(frameon=False, loc="lower left")
    label_panel(ax, "(a) KL constraint and the roots of kl_projection")

    ax = axes[1]
    t = 1.0 / (1.0 + eta)
    ax.plot(t, klc, color=kl_col, lw=1.6)
    for e, r, col in zip(data["eps"], data["eta_root"], BOUND_COLORS, strict=True):
        ax.plot([1.0 / (1.0 + r)], [e], "o", color=col, ms=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$t = 1/(1+\eta)$")
    ax.set_ylabel(r"$\mathrm{KL_{cov}}$ (nats)")
    label_panel(ax, r"(b) the same curve against $t$ (log-log)")
    return fig


def make(out: Path, formats: tuple[str, ...], seed: int = 0) -> list[Path]:
    """Compute, plot and save the figure into ``out``; returns the written paths."""
    return make_figure(NAME, compute, plot, out, formats, seed)
