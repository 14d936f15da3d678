"""Verification of trpl_math: reference solvers, cross-checks and the report.

``python -m verification --quick`` runs every cross-check on random instances and writes
``verification_report/verification_report.{md,json}``. See docs/verification.md.
"""

from verification.checks import CHECKS, Check, CheckResult, Config, Implementation, Tolerances
from verification.report import Report, render_markdown, run_checks, write_report

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Config",
    "Implementation",
    "Report",
    "Tolerances",
    "render_markdown",
    "run_checks",
    "write_report",
]
