"""Shared pieces of the figure scripts: palette, style, ellipses, small linear algebra, output.

Nothing here re-implements a projection: the figures call :mod:`trpl_math`. The helpers below
are the few closed forms of docs/math.md §3.3-§3.7 that the library does not expose as functions
of ``η``
(the KL constraint along the precision interpolation, recovering ``η`` from a projected KL
covariance).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "MEASURE_COLORS",
    "MEASURE_LABELS",
    "OKABE_ITO",
    "ellipse_xy",
    "kl_cov_along_eta",
    "new_figure",
    "recover_eta_kl",
    "rotated_cov",
    "save_data",
    "save_figure",
    "sqrtm_psd",
    "style",
]

#: The Okabe-Ito palette (Okabe & Ito 2008), distinguishable under the common colour-vision
#: deficiencies.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: One colour per similarity measure, used by every figure.
MEASURE_COLORS: dict[str, str] = {
    "frob": OKABE_ITO["orange"],
    "w2": OKABE_ITO["blue"],
    "kl": OKABE_ITO["bluish_green"],
}
MEASURE_LABELS: dict[str, str] = {"frob": "Frobenius", "w2": "Wasserstein", "kl": "KL"}

#: Style for a figure printed at the width of a paper's text (about 7 inches).
RC_PARAMS: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "pdf.fonttype": 42,
}


def new_figure(width: float, height: float, **subplots_kw: Any) -> tuple[Figure, Any]:
    """A figure of ``width`` x ``height`` inches with constrained layout.

    Create, draw and save it inside :func:`style` so that the shared font sizes apply. Extra
    keyword arguments go to :meth:`Figure.subplots` (``nrows``, ``ncols``, ...).
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the non-interactive Agg back end, without touching pyplot's state
    axes = fig.subplots(**subplots_kw)
    return fig, axes


def style() -> Any:
    """Context manager applying :data:`RC_PARAMS` (use around plotting and saving)."""
    return matplotlib.rc_context(RC_PARAMS)


def rotated_cov(std: Sequence[float], angle_deg: float) -> np.ndarray:
    """2-D covariance ``R diag(std²) Rᵀ`` with ``R`` the rotation by ``angle_deg`` degrees."""
    if len(std) != 2 or min(std) <= 0:
        raise ValueError(f"std must be two positive numbers, got {std!r}")
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return rot @ np.diag(np.square(std)) @ rot.T


def sqrtm_psd(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of symmetric positive semi-definite ``(..., d, d)`` matrices."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)


def ellipse_xy(
    mean: np.ndarray, cov: np.ndarray, n_std: float = 1.0, n: int = 181
) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(x, y)`` of the ``n_std``-standard-deviation contour of a 2-D Gaussian.

    The contour is ``{μ + n_std Σ^{1/2} u : ‖u‖ = 1}``; ``mean (2,)``, ``cov (2, 2)``.
    """
    cov = np.asarray(cov, dtype=float)
    if cov.shape != (2, 2):
        raise ValueError(f"cov must have shape (2, 2), got {cov.shape}")
    angle = np.linspace(0.0, 2.0 * np.pi, n)
    circle = np.stack([np.cos(angle), np.sin(angle)])
    pts = n_std * sqrtm_psd(cov) @ circle + np.asarray(mean, dtype=float).reshape(2, 1)
    return pts[0], pts[1]


def kl_cov_along_eta(cov: np.ndarray, old_cov: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """``KLcov(Σ̃(η) ‖ Σ_o)`` along the precision interpolation ``Λ̃ = (ηΛ_o + Λ)/(η + 1)``.

    docs/math.md §3.7: with ``λ_i`` the eigenvalues of ``Σ_o^{1/2} Λ Σ_o^{1/2}`` and
    ``ν_i = (η + λ_i)/(η + 1)``, ``KLcov(η) = ½ Σ_i [1/ν_i - 1 + log ν_i]`` (Eq. 10-11).
    ``cov, old_cov (d, d)``, ``eta (n,)`` -> ``(n,)``.
    """
    old_root = sqrtm_psd(old_cov)
    lam = np.linalg.eigvalsh(old_root @ np.linalg.solve(cov, old_root))
    eta = np.asarray(eta, dtype=float)[..., None]
    nu = (eta + lam) / (eta + 1.0)
    return 0.5 * np.sum(1.0 / nu - 1.0 + np.log(nu), axis=-1)


def recover_eta_kl(proj_cov: np.ndarray, cov: np.ndarray, old_cov: np.ndarray) -> np.ndarray:
    """The ``η`` with ``Λ̃ = (ηΛ_o + Λ)/(η + 1)`` for a projected covariance (least squares).

    From ``Λ̃ - Λ = η (Λ_o - Λ̃)``: ``η = ⟨Λ̃ - Λ, Λ_o - Λ̃⟩ / ‖Λ_o - Λ̃‖_F²``.
    All arguments ``(..., d, d)`` -> ``(...)``; returns 0 where ``Λ̃ = Λ_o`` cannot be told apart.
    """
    p, p_new, p_old = (np.linalg.inv(c) for c in (proj_cov, cov, old_cov))
    num = np.sum((p - p_new) * (p_old - p), axis=(-2, -1))
    den = np.sum((p_old - p) ** 2, axis=(-2, -1))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def save_figure(fig: Figure, out: Path, name: str, formats: Iterable[str]) -> list[Path]:
    """Write ``fig`` as ``out/name.<fmt>`` for each format, return the paths."""
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, format=fmt)
        paths.append(path)
    return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "detach"):  # a torch tensor
        return _jsonable(obj.detach().cpu().numpy())
    return obj


def save_data(data: dict[str, Any], out: Path, name: str) -> Path:
    """Write the plotted numbers as ``out/name.json`` (arrays become nested lists)."""
    path = out / f"{name}.json"
    path.write_text(json.dumps(_jsonable(data), indent=1) + "\n")
    return path


def label_panel(ax: Axes, text: str) -> None:
    """Title a panel ``(a) ...`` left-aligned, as in the paper."""
    ax.set_title(text, loc="left")


def make_figure(
    name: str,
    compute: Callable[[int], dict[str, Any]],
    plot: Callable[[dict[str, Any]], Figure],
    out: Path,
    formats: Iterable[str],
    seed: int = 0,
) -> list[Path]:
    """Compute a figure's data, plot it in the shared style, save both; returns the paths."""
    data = compute(seed)
    with style():
        paths = save_figure(plot(data), out, name, formats)
    paths.append(save_data(data, out, name))
    return paths
