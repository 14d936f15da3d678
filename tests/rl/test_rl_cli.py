"""The trpl command line: train, resume, evaluate, table, plot, grid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from toy_env import register

from trpl_math.rl.analysis import (
    Run,
    diagnostics_rows,
    format_diagnostics,
    format_table,
    load_runs,
    mean_ci,
    smooth,
    table1_windows,
    table_rows,
)
from trpl_math.rl.cli import main
from trpl_math.rl.grid import make_jobs

TOY = register()
TINY = [
    "--set",
    "rollout_steps=200",
    "--set",
    "num_envs=2",
    "--set",
    "epochs=2",
    "--set",
    "vf_epochs=1",
    "--set",
    "minibatch_size=50",
    "--set",
    "eval_episodes=2",
    "--set",
    "checkpoint_every=2",
]


def test_train_evaluate_table_plot(tmp_path, capsys):
    for seed in (0, 1):
        out = tmp_path / "runs" / f"s{seed}"
        assert (
            main(
                [
                    "train",
                    "--env",
                    TOY,
                    "--method",
                    "kl_e",
                    "--seed",
                    str(seed),
                    "--steps",
                    "1000",
                    "--out",
                    str(out),
                    *TINY,
                ]
            )
            == 0
        )
        assert (out / "agent.pt").exists() and (out / "checkpoints" / "latest.pt").exists()
        assert len((out / "progress.csv").read_text().splitlines()) == 1 + 5
        assert any((out / "tb").iterdir())
    assert main(["evaluate", str(tmp_path / "runs" / "s0" / "agent.pt"), "--episodes", "3"]) == 0
    assert "returns:" in capsys.readouterr().out
    assert main(["table", str(tmp_path / "runs"), "--window", "2"]) == 0
    table = capsys.readouterr().out
    assert "| TrplPointGoal-v0 | KL-E | 2 | 1000 |" in table
    assert (
        main(["plot", str(tmp_path / "runs"), "--out", str(tmp_path / "c.png"), "--smooth", "2"])
        == 0
    )
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_resume_flag_continues(tmp_path):
    out = str(tmp_path / "r")
    args = [
        "train",
        "--env",
        TOY,
        "--method",
        "ppo",
        "--steps",
        "800",
        "--out",
        out,
        "--no-progress",
        *TINY,
    ]
    assert main([*args, "--max-iterations", "2"]) == 0
    assert main([*args, "--resume"]) == 0
    assert len((tmp_path / "r" / "progress.csv").read_text().splitlines()) == 1 + 4


def test_table_statistics(tmp_path):
    assert table1_windows(100) == (slice(20, 40), slice(80, 100))
    assert table1_windows(30) == (slice(6, 26), slice(10, 30))
    # a 1M-step budget of 2048-step iterations stopped after 150 iterations
    assert table1_windows(150, 20, planned_iters=488) == (slice(98, 118), slice(130, 150))
    with pytest.raises(ValueError, match="needs 118 iterations"):
        table1_windows(100, 20, planned_iters=488)
    m, h = mean_ci([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.3027; sem = 1 / sqrt(3)
    assert m == 2.0 and h == pytest.approx(4.302653 / 3**0.5, rel=1e-5)
    assert mean_ci([5.0]) == (5.0, 0.0)
    np.testing.assert_allclose(smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])
    assert load_runs([tmp_path]) == [] and table_rows([]) == []


def _fake_run(seed: int, returns: list[float]) -> Run:
    n = len(returns)
    cols = {"eval_return": np.array(returns), "global_step": 100.0 * np.arange(1, n + 1)}
    return Run(Path(f"s{seed}"), "Toy-v0", "kl", seed, cols)


def test_table_ci_over_epochs_or_seeds():
    # 10 iterations, windows of 2: 20% window = iterations 3-4, final = 9-10.
    a = [0, 0, 1, 3, 0, 0, 0, 0, 10, 12]
    b = [0, 0, 5, 7, 0, 0, 0, 0, 20, 22]
    runs = [_fake_run(0, a), _fake_run(1, b)]
    (pooled,) = table_rows(runs, window=2)
    (seeds,) = table_rows(runs, window=2, ci_over="seeds")
    assert pooled["window_20"] == (2, 4) and pooled["seed_means"] == {
        0: (2.0, 11.0),
        1: (6.0, 21.0),
    }
    # pooled over (seed, epoch): values 1, 3, 5, 7 -> mean 4, t_{.975,3} * s / 2, s = sqrt(20/3)
    assert pooled["20%"][0] == 4.0
    assert pooled["20%"][1] == pytest.approx(3.182446 * (20 / 3) ** 0.5 / 2, rel=1e-6)
    # over seeds: window means 2 and 6 -> mean 4, t_{.975,1} * s / sqrt(2), s = sqrt(8)
    assert seeds["20%"][0] == 4.0
    assert seeds["20%"][1] == pytest.approx(12.706205 * 8**0.5 / 2**0.5, rel=1e-6)
    assert seeds["final"][0] == 16.0
    assert "over the seeds' window means" in format_table([seeds])
    assert "| Toy-v0 | KL | 2 | 1000 | 4 ± 25 | 16 ± 64 | 11 / 21 |" in format_table([seeds])
    assert "per seed" not in format_table([pooled])
    with pytest.raises(ValueError, match="ci_over"):
        table_rows(runs, ci_over="runs")


def test_diagnostics_rows_reduce_over_iterations_and_seeds():
    def run(seed, kl, ent):
        r = _fake_run(seed, [0.0, 0.0, 0.0])
        cols = {
            "kl_mean": np.array(kl),
            "kl_max": 2 * np.array(kl),
            "proj_kl_max": np.array(kl) / 2,
            "mean_part_max": np.array([0.01, 0.03, 0.02]),
            "cov_part_max": np.array([1e-4, 1e-3, np.nan]),
            "maha_max": np.array([0.1, 0.2, 0.3]) * (seed + 1),
            "entropy": np.array(ent),
        }
        r.columns.update(cols)
        return r

    runs = [run(0, [0.01, 0.02, 0.03], [4.0, 3.0, 2.0]), run(1, [0.05, 0.0, 0.01], [4.0, 3.5, 3.0])]
    (row,) = diagnostics_rows(runs)
    assert row["seeds"] == 2 and row["kl_mean"] == pytest.approx(0.12 / 6)
    assert row["kl_max"] == 0.1 and row["proj_kl_max"] == 0.025
    assert row["mean_part_max"] == 0.03 and row["cov_part_max"] == 1e-3  # nan ignored
    assert row["maha_max"] == pytest.approx(0.6)
    assert row["entropy_first"] == 4.0 and row["entropy_last"] == 2.5
    text = format_diagnostics([row])
    assert "| Toy-v0 | KL | 2 | 0.02 | 0.1 | 0.025 |" in text


def test_grid_jobs_layout(tmp_path):
    jobs = make_jobs(tmp_path, ["Hopper-v5"], ["kl", "ppo", "w2_e"], [0, 1], {"total_steps": 5})
    assert len(jobs) == 6
    assert jobs[0].folder.endswith("Hopper-v5/kl/seed_0") and jobs[3].seed == 1
    w2e = next(j for j in jobs if j.folder.endswith("w2_e/seed_0"))
    assert w2e.method == "w2" and ("entropy_control", "true") in w2e.overrides


def test_module_entry_point_help():
    res = subprocess.run(
        [sys.executable, "-m", "trpl_math.rl", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0
    for cmd in ("train", "evaluate", "plot", "table", "diagnostics", "grid"):
        assert cmd in res.stdout


def test_bad_method_is_rejected():
    with pytest.raises(SystemExit):
        main(["train", "--method", "trpo"])


@pytest.mark.slow
def test_grid_runs_in_rounds_and_resumes(tmp_path):
    common = [
        "--envs",
        "Pendulum-v1",
        "--methods",
        "w2",
        "ppo",
        "--seeds",
        "0",
        "--out",
        str(tmp_path),
        "--workers",
        "2",
        "--steps",
        "800",
        "--set",
        "rollout_steps=200",
        "--set",
        "epochs=1",
        "--set",
        "vf_epochs=1",
        "--set",
        "eval_episodes=1",
        "--set",
        "checkpoint_every=1",
    ]
    assert main(["grid", *common, "--slice", "2"]) == 0
    runs = load_runs([tmp_path])
    assert sorted(r.method for r in runs) == ["ppo", "w2"]
    assert all(len(r.columns["iteration"]) == 4 for r in runs)


def test_table_help_shows_percent_signs_once(capsys):
    """argparse %-formats help but not descriptions: the shared text must read right in both."""
    with pytest.raises(SystemExit):
        main(["table", "--help"])
    out = capsys.readouterr().out
    assert "Table 1 format: 20% and final windows" in out and "%%" not in out


def _write_run(folder: Path, seed: int, returns: list[float]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"env_id: Toy-v0\nmethod: kl\nseed: {seed}\n")
    rows = [f"{i + 1},{100 * (i + 1)},{r}" for i, r in enumerate(returns)]
    (folder / "progress.csv").write_text("\n".join(["iteration,global_step,eval_return", *rows]))


def test_table_by_folder_groups_variants_of_one_method(tmp_path, capsys):
    """Two ablation variants of kl: pooled by method without --by-folder, one row each with it."""
    for variant, base in (("lr_decay", 0.0), ("unclipped", 100.0)):
        for seed in (0, 1):
            _write_run(tmp_path / variant / f"seed_{seed}", seed, [base + seed] * 10)
    folders = [str(tmp_path / "lr_decay"), str(tmp_path / "unclipped")]
    assert main(["table", *folders, "--window", "2", "--format", "csv"]) == 0
    pooled = capsys.readouterr().out.splitlines()
    assert len(pooled) == 2 and ",KL,4," in pooled[1]
    assert main(["table", *folders, "--window", "2", "--format", "csv", "--by-folder"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split(",")[1:3] for r in rows] == [["KL (lr_decay)", "2"], ["KL (unclipped)", "2"]]
    assert [float(r.split(",")[7]) for r in rows] == [0.5, 100.5]  # final-window means
    out = tmp_path / "c.png"
    assert main(["plot", *folders, "--by-folder", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "from 4 runs" in capsys.readouterr().out


def test_runs_with_a_row_being_written(tmp_path, capsys):
    """A live run's last row cut short is left out with a warning; a broken row before the
    last is a named error (a raw float('') ValueError before)."""
    _write_run(tmp_path / "live" / "seed_0", 0, [1.0, 2.0, 3.0])
    path = tmp_path / "live" / "seed_0" / "progress.csv"
    path.write_text(path.read_text() + "\n4,400,")
    (run,) = load_runs([tmp_path / "live"])
    assert list(run.columns["eval_return"]) == [1.0, 2.0, 3.0]
    assert "last row is incomplete" in capsys.readouterr().err
    lines = path.read_text().splitlines()
    lines[2] = "2,200,oops"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"progress.csv, line 3: not a complete row"):
        load_runs([tmp_path / "live"])
    assert main(["table", str(tmp_path / "live")]) == 2
    assert "line 3" in capsys.readouterr().err
