"""Figure 1 of the paper: the three covariance interpolations and their entropies (Sec. 4.3).

Every projection of the paper moves the covariance along an interpolation between the
prediction ``Σ`` (``η = 0``) and the old covariance ``Σ_o`` (``η → ∞``):

* Frobenius (Eq. 7):   ``Σ̃ = (Σ + η Σ_o) / (1 + η)``
* Wasserstein (Eq. 9): ``Σ̃^{1/2} = (Σ^{1/2} + η Σ_o^{1/2}) / (1 + η)``
* KL (Eq. 11):         ``Σ̃⁻¹ = (Σ⁻¹ + η Σ_o⁻¹) / (1 + η)``

The interpolant for a given ``η`` is obtained from the library's own projections by choosing the
bound that makes the projection's multiplier equal ``η``: ``ε = c / (1 + η)²`` for Frobenius and
Eq. 9 (``c`` the unprojected covariance part), and ``ε = KLcov(η)`` for KL. Panel (d) checks
Theorem 1: the Frobenius and W2 entropies lie above the linear blend of the endpoint entropies,
the KL entropy below it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

import trpl_math as tm
from figures._common import (
    MEASURE_COLORS,
    MEASURE_LABELS,
    OKABE_ITO,
    ellipse_xy,
    kl_cov_along_eta,
    label_panel,
    make_figure,
    new_figure,
    rotated_cov,
)

NAME = "fig1_interpolation"
MEASURES = ("frob", "w2", "kl")
#: π and π_old: equal standard deviations (so equal entropy), principal axes 75 degrees apart
#: (not 90, where the two would commute).
STD = (1.0, 0.25)
ANGLE_OLD, ANGLE_NEW = 10.0, 85.0
#: interpolation weights ``α = η / (1 + η)`` drawn as ellipses (0: π, 1: π_old).
ELLIPSE_ALPHAS = (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)


def interpolate(
    measure: str, cov: np.ndarray, old_cov: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    """Covariances on the ``measure``'s interpolation path at weights ``α = η / (1 + η)``.

    Computed with the library's projections: a bound is chosen so that the projection's
    multiplier is ``η = α / (1 - α)``; ``α = 1`` (``η = ∞``) is ``Σ_o`` itself.

    Args:
        measure: ``"frob"``, ``"w2"`` (Eq. 9, scaled) or ``"kl"``.
        cov, old_cov: ``(d, d)`` covariances of π and π_old.
        alpha: ``(n,)`` weights in ``[0, 1]``.

    Returns:
        ``(n, d, d)`` interpolated covariances.
    """
    alpha = np.asarray(alpha, dtype=float)
    if alpha.ndim != 1 or np.any((alpha < 0) | (alpha > 1)):
        raise ValueError("alpha must be a 1-D array of weights in [0, 1]")
    n, d = alpha.shape[0], cov.shape[-1]
    inner = alpha < 1.0
    a = alpha[inner]
    zeros = np.zeros((a.shape[0], d))
    covs = np.broadcast_to(cov, (a.shape[0], d, d)).copy()
    olds = np.broadcast_to(old_cov, (a.shape[0], d, d)).copy()
    if measure == "frob":
        c = tm.frobenius_distance(zeros, covs, zeros, olds).cov
        proj = tm.frobenius_projection(
            zeros, covs, zeros, olds, eps_mean=1.0, eps_cov=c * (1 - a) ** 2
        )
    elif measure == "w2":
        c = tm.wasserstein_commuting_cov_part(covs, olds, scaled=True)
        proj = tm.wasserstein_projection(
            zeros, covs, zeros, olds, eps_mean=1.0, eps_cov=c * (1 - a) ** 2, exact=False
        )
    elif measure == "kl":
        eps = kl_cov_along_eta(cov, old_cov, a / (1 - a))
        proj = tm.kl_projection(zeros, covs, zeros, olds, eps_mean=1.0, eps_cov=eps)
    else:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    out = np.empty((n, d, d))
    out[inner] = proj.cov
    out[~inner] = old_cov
    return out


def compute(seed: int = 0, n_curve: int = 101) -> dict[str, Any]:
    """The data of Figure 1 (deterministic; ``seed`` is unused and kept for a uniform API)."""
    del seed
    old_cov = rotated_cov(STD, ANGLE_OLD)
    cov = rotated_cov(STD, ANGLE_NEW)
    alpha = np.linspace(0.0, 1.0, n_curve)
    h_new, h_old = float(tm.entropy(cov)), float(tm.entropy(old_cov))
    data: dict[str, Any] = {
        "description": "Figure 1: covariance interpolations pi -> pi_old and their entropies",
        "cov": cov,
        "old_cov": old_cov,
        "alpha": alpha,
        "eta": [a / (1 - a) if a < 1 else None for a in alpha],  # None: eta = infinity
        "entropy_pi": h_new,
        "entropy_pi_old": h_old,
        "entropy_linear_blend": (1 - alpha) * h_new + alpha * h_old,
        "ellipse_alpha": list(ELLIPSE_ALPHAS),
        "measures": {},
    }
    for m in MEASURES:
        covs = interpolate(m, cov, old_cov, alpha)
        data["measures"][m] = {
            "cov": covs,
            "entropy": tm.entropy(covs),
            "ellipse_cov": interpolate(m, cov, old_cov, np.array(ELLIPSE_ALPHAS)),
        }
    return data


def plot(data: dict[str, Any]) -> Any:
    """Draw Figure 1 from :func:`compute`'s data; returns the matplotlib figure."""
    fig, axes = new_figure(7.2, 2.55, ncols=4)
    cmap = mpl.colormaps["cividis"]
    shade = 0.75  # stop before cividis' pale yellow end, which is hard to see on white

    def colour(a: float) -> Any:
        return cmap(shade * a)

    lim = 1.15 * max(STD)
    for ax, m, tag in zip(axes[:3], MEASURES, "abc", strict=True):
        for a, c in zip(data["ellipse_alpha"], data["measures"][m]["ellipse_cov"], strict=True):
            x, y = ellipse_xy(np.zeros(2), np.asarray(c))
            end = a in (0.0, 1.0)
            ax.plot(x, y, color=colour(a), lw=2.0 if end else 1.0, ls="--" if a == 1.0 else "-")
        ax.set_box_aspect(1)  # square box + equal limits = equal aspect
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel("$a_1$")
        label_panel(ax, f"({tag}) {MEASURE_LABELS[m]}")
    axes[0].set_ylabel("$a_2$")
    for ax in axes[1:3]:
        ax.tick_params(labelleft=False)
    axes[0].annotate(r"$\pi$", (0.12, 1.0), xytext=(0.35, 1.0), color=colour(0.0), va="center")
    axes[0].annotate(
        r"$\pi_{old}$", (1.0, 0.3), xytext=(0.72, 0.55), color=colour(1.0), va="center"
    )
    sm = ScalarMappable(norm=Normalize(0, 1 / shade), cmap=cmap)
    cb = fig.colorbar(sm, ax=axes[:3], location="bottom", shrink=0.6, aspect=40, pad=0.02)
    cb.set_ticks(np.linspace(0, 1, 7), labels=["0", "1/6", "1/3", "1/2", "2/3", "5/6", "1"])
    cb.ax.set_xlim(0, 1)
    cb.set_label(r"interpolation weight $\eta/(1+\eta)$ of $\pi_{old}$")

    ax = axes[3]
    alpha = np.asarray(data["alpha"])
    for m in MEASURES:
        ax.plot(
            alpha, data["measures"][m]["entropy"], color=MEASURE_COLORS[m], label=MEASURE_LABELS[m]
        )
    ax.plot(
        alpha,
        data["entropy_linear_blend"],
        color=OKABE_ITO["black"],
        ls=":",
        label="linear blend",
    )
    ax.set_xlabel(r"$\eta/(1+\eta)$")
    ax.set_ylabel("entropy (nats)")
    ax.set_xlim(0, 1)
    e_all = np.concatenate([np.asarray(data["measures"][m]["entropy"]) for m in MEASURES])
    lo, hi = float(e_all.min()), float(e_all.max())
    ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.45 * (hi - lo))  # headroom for the legend
    ax.set_yticks(np.arange(np.ceil(2 * lo) / 2, hi + 1e-9, 0.5))  # none in the legend's room
    ax.legend(frameon=False, loc="upper center", ncol=2, columnspacing=1.0, handlelength=1.6)
    label_panel(ax, "(d) Entropy")
    return fig


def make(out: Path, formats: tuple[str, ...], seed: int = 0) -> list[Path]:
    """Compute, plot and save Figure 1 into ``out``; returns the written paths."""
    return make_figure(NAME, compute, plot, out, formats, seed)
