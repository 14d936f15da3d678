"""Argument types shared by the benchmark scripts (a mistake is one line and exit code 2)."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """argparse type: an integer ≥ 1 (a batch, a dimension, a count of repetitions)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value
