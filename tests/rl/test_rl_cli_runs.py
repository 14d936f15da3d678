"""The command line never loses a run: taken folders, resume rules, TensorBoard across a resume,
one-line user errors, an agent at every stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_env import register

from trpl_math.rl import run as run_mod
from trpl_math.rl.cli import main
from trpl_math.rl.config import load_config
from trpl_math.rl.trainer import Trainer

TOY = register()
TINY = [
    "--set",
    "rollout_steps=200",
    "--set",
    "num_envs=2",
    "--set",
    "epochs=1",
    "--set",
    "vf_epochs=1",
    "--set",
    "minibatch_size=100",
    "--set",
    "eval_episodes=1",
    "--set",
    "checkpoint_every=2",
]
ROOT = Path(__file__).resolve().parents[2]


def _counting_iterate(calls: list) -> object:
    original = Trainer.iterate

    def iterate(self):
        calls.append(1)
        return original(self)

    return iterate


def _train(out: Path, *extra: str, steps: int = 1000) -> int:
    return main(
        [
            "train",
            "--env",
            TOY,
            "--method",
            "kl",
            "--steps",
            str(steps),
            "--out",
            str(out),
            "--no-progress",
            *TINY,
            *extra,
        ]
    )


def _rows(out: Path) -> list[str]:
    return (out / "progress.csv").read_text().splitlines()[1:]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _tb_steps(out: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: list[int] = []
    for f in sorted((out / "tb").iterdir()):
        acc = EventAccumulator(str(f))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars(tag)]
    return sorted(steps)


def _tb_values(out: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


class TestRunFolder:
    def test_existing_run_is_refused_without_resume(self, tmp_path, capsys):
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "2") == 0
        before = (out / "progress.csv").read_text()
        tb_before = sorted(p.name for p in (out / "tb").iterdir())
        capsys.readouterr()
        assert _train(out) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
        assert (out / "progress.csv").read_text() == before
        assert sorted(p.name for p in (out / "tb").iterdir()) == tb_before

    def test_overwrite_clears_logs_and_tensorboard(self, tmp_path):
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "3") == 0
        (out / "notes.txt").write_text("mine")
        assert _train(out, "--max-iterations", "1", "--overwrite") == 0
        assert len(_rows(out)) == 1
        assert _tb_steps(out, "kl_mean") == [200]  # nothing of the first run is left
        assert torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["iteration"] == 1
        assert (out / "notes.txt").read_text() == "mine"  # only the run's own files go

    def test_resume_and_overwrite_exclude_each_other(self, tmp_path, capsys):
        with pytest.raises(SystemExit) as exc:
            _train(tmp_path / "r", "--resume", "--overwrite")
        assert exc.value.code == 2
        assert "not allowed with" in _one_error_line(capsys.readouterr().err)

    def test_an_empty_existing_folder_is_fine(self, tmp_path):
        out = tmp_path / "r"
        out.mkdir()
        assert _train(out, "--max-iterations", "1") == 0


@pytest.mark.parametrize("steps", ["0", "-5", "many"])
def test_steps_must_be_a_positive_integer(tmp_path, capsys, steps):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--env", TOY, "--steps", steps, "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    assert "--steps" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


class TestResume:
    def test_different_settings_stop_and_are_listed(self, tmp_path, capsys):
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "1") == 0
        before = (out / "progress.csv").read_text()
        capsys.readouterr()
        rc = main(
            [
                "train",
                "--env",
                "Pendulum-v1",
                "--method",
                "w2",
                "--steps",
                "2000",
                "--out",
                str(out),
                "--resume",
                *TINY,
                "--set",
                "eps_mean=0.05",
            ]
        )
        assert rc == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert "cannot resume" in lines[0] and "config.yaml" in lines[0]
        diffs = sorted(line.strip() for line in lines[1:])
        assert diffs == [
            "env_id: saved 'TrplPointGoal-v0', requested 'Pendulum-v1'",
            "eps_mean: saved 0.03, requested 0.05",
            "method: saved 'kl', requested 'w2'",
            "total_steps: saved 1000, requested 2000",
        ]
        assert (out / "progress.csv").read_text() == before

    def test_entropy_control_counts_as_a_different_method(self, tmp_path, capsys):
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "1") == 0
        capsys.readouterr()
        args = ["train", "--env", TOY, "--method", "kl_e", "--steps", "1000", "--out", str(out)]
        assert main([*args, "--resume", *TINY]) == 2
        assert "entropy_control: saved False, requested True" in capsys.readouterr().err

    def test_same_settings_or_none_given_resume(self, tmp_path):
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "1") == 0
        assert _train(out, "--max-iterations", "2", "--resume") == 0
        # only --out: the saved config is used as it is
        assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
        assert len(_rows(out)) == 5

    def test_a_field_the_saved_config_lacks_takes_its_default(self, tmp_path):
        import yaml

        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "1") == 0
        saved = yaml.safe_load((out / "config.yaml").read_text())
        del saved["clip_actions"]  # a run written before the field existed
        (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
        # grid-style: the whole requested config is compared
        cfg = load_config(method="kl", env_id=TOY, overrides=_tiny_overrides(1000))
        run_mod.train(cfg, out, resume=True, progress=False, max_iterations=2)
        assert len(_rows(out)) == 2

    def test_tensorboard_holds_every_iteration_once(self, tmp_path):
        """A crash after iteration 3 was logged but before its checkpoint: the resume from
        iteration 2 keeps iteration 2 (the checkpointed one) and logs 3 to 5 anew."""
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "2") == 0
        ckpt = out / "checkpoints" / "latest.pt"
        shutil.copy(ckpt, tmp_path / "iter2.pt")
        assert _train(out, "--max-iterations", "3", "--resume") == 0
        assert _tb_steps(out, "kl_mean") == [200, 400, 600]
        shutil.copy(tmp_path / "iter2.pt", ckpt)  # the checkpoint of iteration 3 was lost
        assert _train(out, "--resume") == 0
        expected = [200, 400, 600, 800, 1000]
        for tag in ("kl_mean", "entropy", "value_loss"):
            assert _tb_steps(out, tag) == expected, tag
        csv_rows = [r.split(",") for r in _rows(out)]
        header = (out / "progress.csv").read_text().splitlines()[0].split(",")
        col = header.index("entropy")
        tb = _tb_values(out, "entropy")
        for r in csv_rows:
            assert tb[int(r[1])] == pytest.approx(float(r[col]), rel=1e-6)

    def test_resume_without_checkpoint_starts_over(self, tmp_path, capsys):
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "2") == 0
        shutil.rmtree(out / "checkpoints")
        assert _train(out, "--max-iterations", "1", "--resume") == 0
        assert "no checkpoint in" in capsys.readouterr().err
        assert len(_rows(out)) == 1 and _tb_steps(out, "kl_mean") == [200]


def _tiny_overrides(steps: int) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in TINY[1::2])
    return {**pairs, "total_steps": str(steps), "seed": "0"}


def _checkpointed_run(tmp_path: Path) -> Path:
    out = tmp_path / "r"
    assert _train(out, "--max-iterations", "1") == 0
    return out


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a checkpoint")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_key(path: Path) -> None:
    state = torch.load(path, weights_only=False)
    del state["policy"]
    torch.save(state, path)


def _bad_weights(path: Path) -> None:
    state = torch.load(path, weights_only=False)
    state["policy"] = {"nonsense": torch.zeros(1)}
    torch.save(state, path)


class TestUserErrors:
    @pytest.mark.parametrize(
        ("extra", "needle"),
        [
            (["--set", "no_such_key=1"], "--set no_such_key=1: unknown config key"),
            (["--set", "eps_men=0.1"], "did you mean eps_mean?"),
            (["--set", "epochs=abc"], "--set epochs=abc: epochs expects int, got 'abc'"),
            (["--set", "epochs"], "override must look like key=value"),
            (["--set", "epochs=0"], "epochs must be >= 1"),
            (["--env", "NoSuchTask-v0"], "NoSuchTask"),
            (["--config", "missing.yaml"], "No such file or directory: missing.yaml"),
        ],
    )
    def test_bad_train_input(self, tmp_path, capsys, extra, needle):
        out = tmp_path / "r"
        rc = main(["train", "--env", TOY, "--out", str(out), "--no-progress", *TINY, *extra])
        assert rc == 2
        assert needle in _one_error_line(capsys.readouterr().err)
        assert not out.exists()  # nothing written for a run that never started

    def test_unwritable_folder(self, tmp_path, capsys):
        (tmp_path / "file").write_text("x")
        assert _train(tmp_path / "file" / "r") == 2
        assert "file" in _one_error_line(capsys.readouterr().err)
        assert _train(tmp_path / "file") == 2
        assert "it is a file" in _one_error_line(capsys.readouterr().err)

    @pytest.mark.parametrize("damage", [_garbage, _truncate, _drop_key, _bad_weights])
    def test_corrupted_checkpoint_on_resume_and_evaluate(self, tmp_path, capsys, damage):
        out = _checkpointed_run(tmp_path)
        ckpt = out / "checkpoints" / "latest.pt"
        damage(ckpt)
        (out / "agent.pt").unlink()
        capsys.readouterr()
        assert _train(out, "--resume") == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"checkpoint {ckpt} is corrupted or incomplete: " in line
        assert main(["evaluate", str(out), "--episodes", "1"]) == 2
        assert "is corrupted or incomplete" in _one_error_line(capsys.readouterr().err)

    def test_corrupted_agent(self, tmp_path, capsys):
        out = _checkpointed_run(tmp_path)
        _truncate(out / "agent.pt")
        capsys.readouterr()
        assert main(["evaluate", str(out / "agent.pt")]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"checkpoint {out / 'agent.pt'} is corrupted or incomplete" in line

    def test_missing_files(self, tmp_path, capsys):
        assert main(["evaluate", str(tmp_path / "nothing.pt")]) == 2
        assert "no such checkpoint or agent file" in _one_error_line(capsys.readouterr().err)
        assert main(["evaluate", str(tmp_path)]) == 2
        assert "neither agent.pt nor checkpoints/latest.pt" in capsys.readouterr().err

    @pytest.mark.parametrize("cmd", ["table", "plot", "diagnostics"])
    def test_missing_run_folder(self, tmp_path, capsys, cmd):
        assert main([cmd, str(tmp_path / "nowhere")]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line == f"trpl {cmd}: error: No such file or directory: {tmp_path / 'nowhere'}"

    def test_debug_shows_the_traceback(self, tmp_path):
        with pytest.raises(ValueError, match="unknown config key"):
            main(["--debug", "train", "--set", "nope=1", "--out", str(tmp_path / "r")])
        with pytest.raises(run_mod.RunError, match="no such checkpoint"):
            main(["evaluate", str(tmp_path / "x.pt"), "--debug"])

    def test_console_entry_point_exit_code(self, tmp_path):
        bad = tmp_path / "bad.pt"
        _garbage(bad)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        res = subprocess.run(
            [sys.executable, "-m", "trpl_math.rl", "evaluate", str(bad)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert res.returncode == 2
        line = _one_error_line(res.stderr)
        assert line.startswith("trpl evaluate: error: checkpoint ") and "corrupted" in line


class TestAgentAtEveryStop:
    def test_max_iterations_writes_the_agent(self, tmp_path, capsys):
        out = tmp_path / "r"
        assert _train(out, "--max-iterations", "2") == 0
        agent = torch.load(out / "agent.pt", weights_only=False)
        assert agent["iteration"] == 2 and agent["global_step"] == 400
        capsys.readouterr()
        assert main(["evaluate", str(out), "--episodes", "2"]) == 0
        assert "iteration 2 (400 steps)" in capsys.readouterr().out
        (out / "agent.pt").unlink()  # a folder with only a checkpoint also evaluates
        assert main(["evaluate", str(out), "--episodes", "2"]) == 0
        assert "iteration 2" in capsys.readouterr().out

    def test_keyboard_interrupt_writes_the_last_completed_iteration(
        self, tmp_path, capsys, monkeypatch
    ):
        original = Trainer.iterate
        calls = []

        def iterate(self):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
            return original(self)

        monkeypatch.setattr(Trainer, "iterate", iterate)
        out = tmp_path / "r"
        assert _train(out) == 130
        assert "interrupted" in capsys.readouterr().err
        agent = torch.load(out / "agent.pt", weights_only=False)
        assert agent["iteration"] == 3 and len(_rows(out)) == 3
        ckpt = torch.load(out / "checkpoints" / "latest.pt", weights_only=False)
        assert ckpt["iteration"] == 2  # checkpoint_every=2: the resume point
        monkeypatch.setattr(Trainer, "iterate", original)
        assert _train(out, "--resume") == 0
        assert len(_rows(out)) == 5

    def test_deadline_checkpoints_and_writes_the_agent(self, tmp_path, monkeypatch):
        clock = iter([0.0, 0.0, 0.0])

        class FakeTime:
            perf_counter = staticmethod(time.perf_counter)

            @staticmethod
            def time() -> float:
                return next(clock, 1e12)

        monkeypatch.setattr(run_mod, "time", FakeTime)
        cfg = load_config(
            method="ppo",
            env_id=TOY,
            overrides={
                "total_steps": 1000,
                "rollout_steps": 200,
                "num_envs": 2,
                "epochs": 1,
                "minibatch_size": 100,
                "eval_episodes": 0,
                "checkpoint_every": 10,
            },
        )
        out = run_mod.train(cfg, tmp_path / "r", progress=False, deadline=1e6)
        assert len(_rows(out)) == 3
        assert torch.load(out / "agent.pt", weights_only=False)["iteration"] == 3
        assert torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["iteration"] == 3

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_a_signal_in_the_bookkeeping_is_held_until_it_is_done(
        self, tmp_path, monkeypatch, signum
    ):
        # A handler's exception raised inside TensorBoard's add_scalar once lost the writer
        # thread's wake-up, and close() hung for its next timed flush: the signal must wait for
        # the bookkeeping of the iteration, then stop the run before the next one.
        original = run_mod._tb_scalars
        done = []

        def tb_scalars(writer, row, step):
            if row["iteration"] == 2:
                signal.raise_signal(signum)
            original(writer, row, step)
            done.append(row["iteration"])

        monkeypatch.setattr(run_mod, "_tb_scalars", tb_scalars)
        monkeypatch.setattr(Trainer, "iterate", _counting_iterate(calls := []))
        out = tmp_path / "r"
        if signum == signal.SIGTERM:
            with pytest.raises(SystemExit) as exc:
                _train(out)
            assert exc.value.code == 143
        else:
            assert _train(out) == 130  # KeyboardInterrupt, reported by the command
        assert done == [1, 2] and len(calls) == 2  # iteration 2 fully logged, no iteration 3
        assert len(_rows(out)) == 2
        assert torch.load(out / "agent.pt", weights_only=False)["iteration"] == 2
        assert torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["iteration"] == 2

    def test_a_signal_held_at_the_last_iteration_still_stops_with_its_code(
        self, tmp_path, monkeypatch
    ):
        original = run_mod._tb_scalars

        def tb_scalars(writer, row, step):
            if row["iteration"] == 3:
                signal.raise_signal(signal.SIGTERM)
            original(writer, row, step)

        monkeypatch.setattr(run_mod, "_tb_scalars", tb_scalars)
        out = tmp_path / "r"
        with pytest.raises(SystemExit) as exc:
            _train(out, "--max-iterations", "3")
        assert exc.value.code == 143
        assert len(_rows(out)) == 3
        assert torch.load(out / "agent.pt", weights_only=False)["iteration"] == 3

    def test_a_signal_during_an_iteration_stops_it_at_once(self, tmp_path, monkeypatch):
        original = Trainer.iterate
        finished = []

        def iterate(self):
            if self.iteration == 2:  # during the third iteration
                signal.raise_signal(signal.SIGTERM)
            row = original(self)
            finished.append(self.iteration)
            return row

        monkeypatch.setattr(Trainer, "iterate", iterate)
        out = tmp_path / "r"
        with pytest.raises(SystemExit) as exc:
            _train(out)
        assert exc.value.code == 143 and finished == [1, 2]
        assert torch.load(out / "agent.pt", weights_only=False)["iteration"] == 2
        # the handlers are the ones from before the run again
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def test_sigterm_writes_the_agent(self, tmp_path):
        out = tmp_path / "r"
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(Path(__file__).parent)}
        code = (
            "import sys; from toy_env import register; register(); "
            "from trpl_math.rl.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        args = ["train", "--env", TOY, "--method", "ppo", "--steps", "2000000", "--out", str(out)]
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args, "--no-progress", *TINY],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            t0 = time.time()
            while not ((out / "progress.csv").exists() and len(_rows(out)) >= 2):
                assert proc.poll() is None and time.time() - t0 < 120
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
        agent = torch.load(out / "agent.pt", weights_only=False)
        assert agent["iteration"] >= 2 and agent["iteration"] in (
            len(_rows(out)),
            len(_rows(out)) - 1,
        )


class TestTableWindows:
    def test_short_run_warns_on_stderr(self, tmp_path, capsys):
        out = tmp_path / "runs" / "r"
        assert _train(out, "--max-iterations", "3") == 0
        capsys.readouterr()
        assert main(["table", str(tmp_path / "runs")]) == 0  # 3 iterations, windows of 20
        captured = capsys.readouterr()
        assert captured.err.startswith("trpl table: warning: TrplPointGoal-v0 KL: 3 iterations")
        assert "fewer than --window 20" in captured.err
        assert "| TrplPointGoal-v0 | KL | 1 |" in captured.out  # the table is still printed
        assert main(["table", str(tmp_path / "runs"), "--window", "1"]) == 0
        assert capsys.readouterr().err == ""  # iterations 1 and 3: nothing to warn about

    def test_overlapping_and_equal_windows(self):
        from trpl_math.rl.analysis import Run, table1_windows, table_rows, window_warnings

        w20, wend = table1_windows(30)  # 7-26 and 11-30
        (note,) = window_warnings("T K", 30, 20, w20, wend)
        assert note == "T K: the 20% window (iterations 7-26) and the final one (11-30) overlap"
        w20, wend = table1_windows(22)  # 0.2 * 22 -> 4, moved to 2 to fit: both are 3-22
        notes = window_warnings("T K", 22, 20, w20, wend)
        assert notes == [
            "T K: the 20% and the final window are the same, iterations 3-22",
            "T K: the 20% window starts at iteration 3, not at 20% of training (5), "
            "to fit in the 22 logged iterations",
        ]
        assert window_warnings("T K", 100, 20, *table1_windows(100)) == []
        cols = {"eval_return": np.arange(30.0), "global_step": 100.0 * np.arange(1, 31)}
        (row,) = table_rows([Run(Path("s0"), "T", "k", 0, cols)])
        assert row["warnings"] == [note]


def test_help_shows_defaults(capsys):
    for cmd in ("train", "evaluate", "table"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: " in text, cmd
        if cmd == "train":
            assert "1,000,000" in text and "random seed (default: 0)" in text
        if cmd == "evaluate":
            assert "episodes to run (default: 10)" in text


def test_readme_training_command_says_its_budget():
    text = (ROOT / "README.md").read_text()
    block = text[text.index("trpl train --env Hopper-v5") - 200 : text.index("trpl train") + 300]
    assert "1M" in block or "1,000,000" in block or "--steps" in block


class TestFolderLock:
    """A second process training the same run folder is refused (it would interleave its logs
    and checkpoints with the first one's), naming the holder's pid."""

    HOLD = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.seek(0); f.truncate(); f.write('4242'); f.flush(); print('held', flush=True); "
        "time.sleep(60)"
    )

    def _hold(self, folder: Path):
        import subprocess

        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-c", self.HOLD, str(folder / ".lock")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    def test_single_run(self, tmp_path):
        out = tmp_path / "r"
        proc = self._hold(out)
        try:
            cfg = load_config(method="kl", env_id=TOY, overrides=_tiny_overrides(1000))
            with pytest.raises(
                run_mod.RunError, match=r"being trained by another process \(pid 4242\)"
            ):
                run_mod.train(cfg, out, progress=False)
            assert not (out / "progress.csv").exists()
        finally:
            proc.kill()
            proc.wait()
        run_mod.train(cfg, out, progress=False, max_iterations=1)  # free again
        assert len(_rows(out)) == 1

    def test_many_seeds_and_the_cli(self, tmp_path, capsys):
        from trpl_math.rl.multiseed import train_seeds

        proc = self._hold(tmp_path / "seed_1")
        try:
            cfg = load_config(method="kl", env_id=TOY, overrides=_tiny_overrides(1000))
            with pytest.raises(run_mod.RunError, match="seed_1 is being trained"):
                train_seeds(cfg, [0, 1], tmp_path, progress=False)
            assert not (tmp_path / "seed_0" / "progress.csv").exists()
            rc = main(["train", "--env", TOY, "--method", "kl", "--seeds", "0", "1",
                       "--out", str(tmp_path), "--no-progress"])  # fmt: skip
            assert rc == 2 and "pid 4242" in capsys.readouterr().err
        finally:
            proc.kill()
            proc.wait()
