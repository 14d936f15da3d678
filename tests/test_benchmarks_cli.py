"""The benchmark scripts refuse a bad count or shape with one line naming the argument and exit
code 2, before any work (a batch of 0 used to run, or end in a traceback)."""

from __future__ import annotations

import platform
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


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc's mallopt",
)
def test_keep_freed_memory_stops_the_page_faults_of_reused_temporaries() -> None:
    """``keep_freed_memory`` (``bench_projections.py --keep-freed-memory``) does what its help
    says: a loop that frees and reallocates a few megabyte-sized temporaries stops faulting."""
    code = f"""
import resource, sys
import numpy as np
sys.path.insert(0, {str(BENCH)!r})
from _cli import keep_freed_memory

def faults_per_call():
    def call():
        a = [np.ones(150_000) for _ in range(6)]  # 1.2 MB each, freed at the end
        return sum(float(x[0]) for x in a)
    for _ in range(3):
        call()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        call()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 20

before = faults_per_call()
keep_freed_memory()
after = faults_per_call()
print(before, after)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    before, after = map(float, res.stdout.split())
    assert before > 500 and after < 20, (before, after)
