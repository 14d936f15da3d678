"""The fuzz command (``python -m verification.fuzz``): a small sample passes, planted bugs fail."""

from __future__ import annotations

import numpy as np
import pytest

from verification import fuzz


def _run(monkeypatch: pytest.MonkeyPatch | None = None, *args: str) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = fuzz.main(["--quiet", *args])
    return code, buf.getvalue()


def test_small_sample_passes() -> None:
    code, text = _run(None, "--calls", "300", "--seed", "11")
    assert code == 0, text
    assert "RESULT: PASS" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "calls" not in line]
    assert {r.split("|")[1].strip() for r in rows} == set(fuzz.PROJECTIONS)
    assert sum(int(r.split("|")[2]) for r in rows) == 300
    assert "tolerance: d(result, old) <= eps + 4 (R + R_o) + 64 u eps" in text
    assert "condition numbers up to 1e+08 (float64), 1e+04 (float32)" in text


def _planted(scale: float, projections: tuple[str, ...]):
    real = fuzz.call_library

    def call(case: fuzz.Case):
        out = real(case)
        if case.projection not in projections:
            return out
        return type(out)(out.mean * scale, out.cov * scale)

    return call


def test_planted_violation_is_confirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Means and covariances scaled by 1 + 1e-6 (inside states too) for the KL projection.
    monkeypatch.setattr(fuzz, "call_library", _planted(1.0 + 1e-6, ("kl",)))
    code, text = _run(monkeypatch, "--calls", "120", "--seed", "3", "--dtype", "float64")
    assert code == 1
    row = next(line for line in text.splitlines() if line.startswith("| kl |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert int(cells[6]) > 0  # failures: inside states changed
    assert int(cells[9]) > 0  # confirmed violations
    assert "CONFIRMED" in text and "--replay" in text


def test_nonfinite_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "call_library", _planted(float("nan"), ("frobenius",)))
    code, text = _run(monkeypatch, "--calls", "60", "--seed", "4", "--backend", "numpy")
    assert code == 1
    assert "nonfinite" in text


def test_refusal_at_the_documented_floor_is_counted_apart() -> None:
    # Seed 0, index 16618: an inside part's eps_cov = 8.64e-13 for a float32 result, below
    # (16u)² = 9.09e-13 of docs/divergences.md: the library's ValueError is the documented one.
    case = fuzz.draw_case(0, 16618, ["float64", "float32"], ["numpy", "torch"])
    assert fuzz.below_documented_floor(case)
    out = fuzz.run_case(case)
    assert out.status == "limit" and "eps_cov" in out.message


def test_refusal_inside_the_documented_limits_is_a_failure(monkeypatch) -> None:
    # A library that refused ordinary bounds (a floor set too high) must fail the fuzz.
    def refuse(case: fuzz.Case):
        raise ValueError("eps_cov is below what float64 can resolve (planted)")

    monkeypatch.setattr(fuzz, "call_library", refuse)
    code, text = _run(monkeypatch, "--calls", "30", "--seed", "5", "--dtype", "float64")
    assert code == 1
    rows = [line for line in text.splitlines() if line.startswith("| ") and "calls" not in line]
    cells = [[c.strip() for c in r.split("|")[1:-1]] for r in rows]
    refused = sum(int(c[5]) for c in cells if c[0] != "entropy")
    limit = sum(int(c[4]) for c in cells)
    assert refused > 0 and limit == 0


def test_replay_rebuilds_the_case() -> None:
    code, text = _run(None, "--seed", "11", "--replay", "7")
    assert code == 0
    case = fuzz.draw_case(11, 7, ["float64", "float32"], ["numpy", "torch"])
    namespace: dict = {}
    exec(text.split("# status")[0].replace("import torch", "pass"), namespace)
    full = np.diag(namespace["cov"]) if case.diag else namespace["cov"]
    assert np.array_equal(np.asarray(full, np.float64), case.cov)
    assert np.array_equal(np.asarray(namespace["mean"], np.float64), case.mean)


def test_bad_arguments() -> None:
    assert fuzz.main(["--calls", "-1"]) == 2


def test_interrupted_run_reports_the_calls_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    real, seen = fuzz.run_case, []

    def run_case(case: fuzz.Case) -> fuzz.Outcome:
        seen.append(case.index)
        if len(seen) == 30:
            raise KeyboardInterrupt
        return real(case)

    monkeypatch.setattr(fuzz, "run_case", run_case)
    code, text = _run(monkeypatch, "--calls", "100", "--seed", "2")
    assert code == 0
    assert text.startswith("trpl_math fuzz: 29 calls, seed 2")


def test_merged_shards_equal_one_run(tmp_path) -> None:
    # Two shards of one run (--start), merged, give the tallies and worst cases of the whole run.
    _, whole = _run(None, "--calls", "80", "--seed", "5", "--worst", "4")
    files = []
    for start, calls in ((0, "30"), (30, "50")):
        _, text = _run(None, "--calls", calls, "--seed", "5", "--start", str(start), "--worst", "4")
        files.append(tmp_path / f"shard{start}.txt")
        files[-1].write_text("progress lines before the report are skipped\n" + text)
    code, merged = _run(None, "--merge", *map(str, files[::-1]), "--worst", "4")
    assert code == (1 if "RESULT: FAIL" in whole else 0)
    table = lambda t: [ln for ln in t.splitlines() if ln.startswith("| ")]  # noqa: E731
    worst = lambda t: [ln for ln in t.splitlines() if ln.startswith(("- index", "  reproduce"))]  # noqa: E731
    assert table(merged) == table(whole) and len(table(whole)) == 1 + len(fuzz.PROJECTIONS)
    assert worst(merged) == worst(whole) and len(worst(whole)) == 8
    assert merged.startswith("trpl_math fuzz: 80 calls, seed 5, start 0,")
    assert "call indices: 0-79" in merged


def test_merge_refuses_overlaps_and_mixed_runs(tmp_path) -> None:
    texts = {
        "a": _run(None, "--calls", "10", "--seed", "5")[1],
        "b": _run(None, "--calls", "10", "--seed", "5", "--start", "5")[1],
        "c": _run(None, "--calls", "10", "--seed", "6", "--start", "10")[1],
        "d": _run(None, "--calls", "10", "--seed", "5", "--start", "30")[1],
        "e": "RESULT: PASS",
    }
    for k, v in texts.items():
        (tmp_path / k).write_text(v)
    f = lambda *ks: [str(tmp_path / k) for k in ks]  # noqa: E731
    assert fuzz.main(["--merge", *f("a", "b")]) == 2  # indices 5-9 twice
    assert fuzz.main(["--merge", *f("a", "c")]) == 2  # another seed
    assert fuzz.main(["--merge", *f("a", "e")]) == 2  # not a report
    assert fuzz.main(["--merge", *f("a", "missing")]) == 2
    _, text = _run(None, "--merge", *f("d", "a"))
    assert "call indices: 0-9, 30-39" in text and text.startswith("trpl_math fuzz: 20 calls")


@pytest.mark.parametrize("folder", ["fuzz_1e6", "fuzz_1e6_e63a8fb"])
def test_the_full_run_on_the_page_is_what_its_shards_give(folder: str) -> None:
    # docs/verification.md shows the merged report of the committed shard reports, verbatim
    # (the current full run and the one before the square-root refinement).
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shards = sorted((root / "docs" / "results" / folder).glob("shard_*.txt"))
    assert len(shards) == 10
    merged, code = fuzz.merge([fuzz.parse_report(p.read_text(), p.name) for p in shards], 10)
    assert merged.startswith("trpl_math fuzz: 1000000 calls, seed 0, start 0,")
    assert "call indices: 0-999999" in merged
    page = (root / "docs" / "verification.md").read_text()
    assert f"```\n{merged}\n```" in page
    assert ("RESULT: PASS" in merged) == (code == 0)


def test_only_runs_one_projections_calls_at_their_full_run_indices(tmp_path) -> None:
    # --only draws every index as a full run does and runs the calls of the named projection,
    # so a re-run after a change covers the same cases; the merge counts indices, not calls
    import contextlib
    import io

    expected = [
        i for i in range(200) if fuzz.draw_case(0, i, ["float64"], ["numpy"]).projection == "kl"
    ]
    texts = []
    for start in (0, 100):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = fuzz.main(
                ["--quiet", "--calls", "100", "--start", str(start), "--only", "kl",
                 "--dtype", "float64", "--backend", "numpy"]
            )  # fmt: skip
        assert code == 0
        texts.append(buf.getvalue())
    first = fuzz.parse_report(texts[0])
    n0 = sum(1 for i in expected if i < 100)
    assert first.calls == n0 and first.indices == 100 and first.only == "kl"
    assert first.tallies["kl"].calls == n0
    assert all(t.calls == 0 for p, t in first.tallies.items() if p != "kl")
    merged, code = fuzz.merge([fuzz.parse_report(t) for t in texts], 5)
    assert code == 0
    assert merged.startswith(f"trpl_math fuzz: {len(expected)} calls at 200 indices, only kl,")
    assert "call indices: 0-199" in merged
    full = fuzz.parse_report(_run(None, "--calls", "100", "--dtype", "float64", "--backend",
                                  "numpy")[1])  # fmt: skip
    with pytest.raises(ValueError, match="--only"):
        fuzz.merge([full, fuzz.parse_report(texts[1])], 5)


@pytest.mark.parametrize(
    ("folder", "head"),
    [
        ("fuzz_1e6_joint_entropy", "110811 calls at 1000000 indices, only kl_joint_entropy"),
        ("fuzz_1e6_eq9_b6e9664", "222482 calls at 1000000 indices, only w2_eq9/w2_eq9_plain"),
        (
            "fuzz_1e6_joint_1fa487d",
            "221968 calls at 1000000 indices, only kl_joint/kl_joint_entropy",
        ),
        ("fuzz_1e6_kl_616a9b5", "111291 calls at 1000000 indices, only kl"),
    ],
)
def test_the_reruns_on_the_page_are_what_their_shards_give(folder: str, head: str) -> None:
    # the re-runs of single projections after a change, at the full run's indices
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shards = sorted((root / "docs" / "results" / folder).glob("shard_*.txt"))
    assert len(shards) == 2
    merged, code = fuzz.merge([fuzz.parse_report(p.read_text(), p.name) for p in shards], 10)
    assert merged.startswith(f"trpl_math fuzz: {head}, seed 0, start 0,")
    assert "call indices: 0-999999" in merged and code == 0
    page = (root / "docs" / "verification.md").read_text()
    assert f"```\n{merged}\n```" in page
