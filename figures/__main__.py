"""Command line: ``python -m figures [--out DIR] [--format png,pdf] [--seed N] [--only ...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from figures import FIGURES, FORMATS, generate


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the figures and print where every file went; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m figures",
        description="Regenerate the trpl_math figures (images and the plotted data as JSON).",
    )
    parser.add_argument(
        "--out", default="build/figures", help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--format",
        default="png,pdf",
        help=f"comma-separated image formats from {','.join(FORMATS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random examples (default: 0)"
    )
    parser.add_argument("--dpi", type=float, default=200.0, help="PNG resolution (default: 200)")
    parser.add_argument(
        "--small-png", action="store_true", help="256-colour PNGs, about 3x smaller (for docs/img)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(FIGURES),
        metavar="NAME",
        help=f"figures to make: {', '.join(FIGURES)}",
    )
    args = parser.parse_args(argv)
    try:
        paths = generate(
            args.out,
            args.format.split(","),
            seed=args.seed,
            only=args.only,
            dpi=args.dpi,
            small_png=args.small_png,
        )
    except ValueError as err:
        parser.error(str(err))
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} files to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
