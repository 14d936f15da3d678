"""The benchmark scripts refuse a bad count or shape with one line naming the argument and exit
code 2, before any work (a batch of 0 used to run, or end in a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

CASES = [
    ("bench_ab.py", ["--batch", "0"], "--batch"),
    ("bench_ab.py", ["--dtype", "float16"], "--dtype"),
    ("bench_itpal.py", ["--dim", "-1"], "--dim"),
    ("bench_itpal.py", ["--reps", "0"], "--reps"),
    ("bench_layer_step.py", ["--calls", "0"], "--calls"),
    ("bench_projections.py", ["--batch", "x"], "--batch"),
    ("bench_training.py", ["--iterations", "0"], "--iterations"),
    ("hash_training.py", ["--iterations", "-2"], "--iterations"),
    ("bench_compiled_floor.py", ["--reps", "0"], "--reps"),
]


@pytest.mark.parametrize(("script", "args", "name"), CASES)
def test_a_bad_argument_is_one_line_and_exit_code_2(
    script: str, args: list[str], name: str
) -> None:
    res = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert f"error: argument {name}" in last
