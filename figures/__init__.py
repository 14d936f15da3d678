"""Figures of trpl_math: the paper's Figure 1 and three figures beyond the paper.

Every figure is computed with the library's own functions (:mod:`trpl_math`), drawn with
Matplotlib's non-interactive Agg back end, and saved as images plus the plotted numbers (JSON)
so that tests can check what each figure claims. Regenerate all of them with::

    python -m figures --out build/figures --format png,pdf

Modules (one per figure), each with ``compute(seed) -> dict``, ``plot(data) -> Figure`` and
``make(out, formats, seed) -> list[Path]``:

* :mod:`figures.interpolation` -- ``fig1_interpolation``: the paper's Figure 1 (a)-(d).
* :mod:`figures.wasserstein_exact` -- ``w2_exact_vs_eq9``: geodesic W2 projection vs Eq. 9.
* :mod:`figures.kl_root` -- ``kl_root``: ``KLcov(η)`` and the roots of ``kl_projection``.
* :mod:`figures.batch_projection` -- ``batch_projection``: a batch of states, shrinking bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

from figures import batch_projection, interpolation, kl_root, wasserstein_exact

__all__ = ["FIGURES", "FORMATS", "generate", "palette_png"]

#: figure name -> ``make(out, formats, seed)``.
FIGURES: dict[str, Callable[[Path, tuple[str, ...], int], list[Path]]] = {
    interpolation.NAME: interpolation.make,
    wasserstein_exact.NAME: wasserstein_exact.make,
    kl_root.NAME: kl_root.make,
    batch_projection.NAME: batch_projection.make,
}
#: image formats a figure can be written in.
FORMATS = ("png", "pdf", "svg")


def generate(
    out: Path | str,
    formats: Iterable[str] = ("png", "pdf"),
    *,
    seed: int = 0,
    only: Iterable[str] | None = None,
    dpi: float = 200.0,
    small_png: bool = False,
) -> list[Path]:
    """Regenerate figures into ``out`` (created if missing); return every written path.

    Args:
        out: output directory.
        formats: image formats, a subset of :data:`FORMATS`.
        seed: seed of the random examples (the same seed gives the same files' numbers).
        only: figure names (keys of :data:`FIGURES`) to make; all if ``None``.
        dpi: resolution of raster images (PNG).
        small_png: re-save PNGs with a 256-colour palette (about 3x smaller; for docs/img).

    Raises:
        ValueError: an unknown format or figure name, or no format.
    """
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    if not formats:
        raise ValueError("formats: give at least one image format")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"formats: unsupported {bad}; choose from {list(FORMATS)}")
    if not dpi > 0:
        raise ValueError(f"dpi: must be positive, got {dpi}")
    names = list(FIGURES) if only is None else list(only)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"only: unknown figures {unknown}; choose from {list(FIGURES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with matplotlib.rc_context({"savefig.dpi": dpi}):
        for name in names:
            paths.extend(FIGURES[name](out, formats, seed))
    if small_png:
        for p in paths:
            if p.suffix == ".png":
                palette_png(p)
    return paths


def palette_png(path: Path) -> None:
    """Re-save the PNG at ``path`` with an adaptive 256-colour palette, in place."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
