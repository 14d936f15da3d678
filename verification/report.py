"""Running the checks and writing the report (Markdown for people, JSON for machines)."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verification.checks import (
    CHECKS,
    Check,
    CheckResult,
    Config,
    Implementation,
    aggregate,
    default_implementation,
)

__all__ = ["Report", "render_markdown", "run_checks", "write_report"]


@dataclass(frozen=True)
class Report:
    """All rows plus the configuration they were produced with."""

    config: Config
    results: tuple[CheckResult, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_json(self) -> dict:
        """A JSON-serialisable dict (NaN written as null)."""

        def clean(x: object) -> object:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {
            "passed": self.passed,
            "seconds": self.seconds,
            "config": dataclasses.asdict(self.config),
            "environment": _environment(),
            "checks": [
                {k: clean(v) for k, v in dataclasses.asdict(r).items()} for r in self.results
            ],
        }


def _environment() -> dict[str, str]:
    import cvxpy

    env = {"python": platform.python_version(), "numpy": np.__version__, "cvxpy": cvxpy.__version__}
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return env


def _seed_for(seed: int, name: str) -> np.random.Generator:
    """Each check gets its own stream, so a check's cases do not depend on which others ran."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def run_checks(
    config: Config,
    impl: Implementation | None = None,
    *,
    checks: Sequence[Check] = CHECKS,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run ``checks`` against ``impl`` (default: the library) and collect the report rows.

    A check that raises is reported as failed with the exception in its note, and the others
    still run.
    """
    impl = impl or default_implementation()
    start = time.perf_counter()
    rows = []
    for i, check in enumerate(checks, 1):
        t0 = time.perf_counter()
        try:
            cases = check.run(config, impl, _seed_for(config.seed, check.name))
            row = aggregate(check, cases, config.tolerances)
        except Exception as err:
            row = CheckResult(
                name=check.name,
                description=check.description,
                cases=0,
                unsolved=0,
                max_abs_err=math.nan,
                max_rel_err=math.nan,
                max_violation=math.nan,
                max_bound_gap=math.nan,
                tolerance=check.tolerance_text(config.tolerances),
                lib_ms=math.nan,
                ref_ms=math.nan,
                passed=False,
                note=f"raised {type(err).__name__}: {err}"[:200],
            )
        rows.append(row)
        if progress is not None:
            status = "PASS" if row.passed else "FAIL"
            progress(
                f"[{i:2d}/{len(checks)}] {status} {check.name} "
                f"({row.cases} cases, {time.perf_counter() - t0:.1f} s)"
            )
    return Report(config, tuple(rows), time.perf_counter() - start)


def _fmt(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    if x == 0:
        return "0"
    return f"{x:.1e}"


def render_markdown(report: Report) -> str:
    """The report as a Markdown document: a summary line, the table, the notes."""
    cfg = report.config
    verdict = "all checks passed" if report.passed else "SOME CHECKS FAILED"
    lines = [
        "# trpl_math verification report",
        "",
        f"**{verdict}** — {sum(r.passed for r in report.results)}/{len(report.results)} checks "
        f"passed in {report.seconds:.1f} s. Cases per check {cfg.cases}, dimensions "
        f"{list(cfg.dims)}, seed {cfg.seed}, library dtype {cfg.dtype}, solvers "
        f"{' → '.join(cfg.solvers)}.",
        "",
        f"Domain covered: {cfg.domain()}.",
        "",
        "Errors: abs/rel error against the reference (rel of a projection: "
        "‖x − x*‖/‖x*‖ for the mean and the covariance); violation and bound gap relative to the "
        "bound ε (violation max(0, d − ε)/ε; gap |d − ε|/ε over active parts). Times are medians "
        "per case (library call; reference solve including cvxpy's compilation).",
        "",
        "| check | cases | unsolved | max abs err | max rel err | max violation | max bound gap "
        "| tolerance | library ms | reference ms | result |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in report.results:
        lines.append(
            f"| {r.name} | {r.cases} | {r.unsolved} | {_fmt(r.max_abs_err)} | "
            f"{_fmt(r.max_rel_err)} | {_fmt(r.max_violation)} | {_fmt(r.max_bound_gap)} | "
            f"{r.tolerance} | {r.lib_ms:.2f} | {r.ref_ms:.1f} | "
            f"{'pass' if r.passed else '**FAIL**'} |"
        )
    notes = [r for r in report.results if r.note or r.solvers]
    if notes:
        lines += ["", "Notes (references solved by; remarks):", ""]
        for r in notes:
            text = "; ".join(x for x in (r.solvers and f"solved by {r.solvers}", r.note) if x)
            lines.append(f"- **{r.name}** ({r.description}): {text}")
    lines.append("")
    return "\n".join(lines)


def write_report(report: Report, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``verification_report.md`` and ``verification_report.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "verification_report.md", out / "verification_report.json"
    md.write_text(render_markdown(report))
    js.write_text(json.dumps(report.to_json(), indent=2, default=str))
    return md, js
