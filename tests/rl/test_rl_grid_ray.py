"""``trpl grid --backend ray``: the same run folders and logs as the local back end, and a sweep
stopped at its deadline (running tasks cancelled mid-run) continues to the same logs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from toy_env import register

from trpl_math.rl.cli import main
from trpl_math.rl.grid import make_jobs, run_grid

ROOT = Path(__file__).parents[2]

TOY = register()
ITERS = 30  # long enough that a cancel lands mid-run on a loaded machine
SETUP = "toy_env:register"  # the toy task is registered in each job's process (Ray worker)
TINY = {
    "total_steps": 200 * ITERS,
    "rollout_steps": 200,
    "num_envs": 2,
    "epochs": 2,
    "vf_epochs": 1,
    "minibatch_size": 50,
    "eval_episodes": 2,
    "checkpoint_every": 1,
}
GRID = ["--envs", TOY, "--methods", "kl", "ppo", "--seeds", "0", "--setup", SETUP]
for _k, _v in TINY.items():
    GRID += ["--set", f"{_k}={_v}"]
WALL_CLOCK = ("time_", "steps_per_s")
FOLDERS = [f"{TOY}/kl/seed_0", f"{TOY}/ppo/seed_0"]


@pytest.fixture(scope="module")
def grid_ray():
    """``trpl_math.rl.grid_ray``; the test is skipped without Ray."""
    pytest.importorskip("ray")
    from trpl_math.rl import grid_ray

    return grid_ray


@pytest.fixture(scope="module")
def local_ray(grid_ray):
    """A private local Ray instance of 2 CPUs whose workers can import ``toy_env``."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        # the workers inherit the environment of the raylet started by ray.init
        path = [str(Path(__file__).parent), str(ROOT), *filter(None, [os.getenv("PYTHONPATH")])]
        mp.setenv("PYTHONPATH", os.pathsep.join(path))
        mp.setenv("OMP_NUM_THREADS", "1")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """The tiny grid run by the local back end (2 worker processes) in one go."""
    out = tmp_path_factory.mktemp("local")
    assert main(["grid", *GRID, "--out", str(out), "--workers", "2"]) == 0
    return out


def _logs(folder: Path) -> list[dict[str, str]]:
    """progress.csv without the wall-clock columns."""
    with (folder / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if not k.startswith(WALL_CLOCK)} for r in rows]


def _assert_same_runs(a: Path, b: Path) -> None:
    for rel in FOLDERS:
        la, lb = _logs(a / rel), _logs(b / rel)
        assert len(la) == ITERS and la == lb, rel
        assert (b / rel / "agent.pt").exists() and (b / rel / "config.yaml").exists()
        assert (a / rel / "config.yaml").read_text() == (b / rel / "config.yaml").read_text()


def test_ray_grid_gives_the_local_logs(local_ray, local_grid, tmp_path, capsys):
    out = tmp_path / "ray"
    args = ["grid", *GRID, "--out", str(out), "--backend", "ray", "--slice", "2"]
    assert main(args) == 0
    assert "Ray: 2 CPUs in the cluster" in capsys.readouterr().out
    _assert_same_runs(local_grid, out)


@pytest.mark.parametrize("grace", [10.0, 0.0], ids=["interrupted", "killed"])
def test_ray_grid_cancelled_at_deadline_resumes(
    grid_ray, local_ray, local_grid, tmp_path, monkeypatch, grace
):
    out = tmp_path / "ray"
    jobs = make_jobs(out, [TOY], ["kl", "ppo"], [0], TINY)
    # A clock that jumps past the deadline once both jobs are mid-run (>= 2 of ITERS iterations
    # logged, so past a checkpoint): the driver, which looks at it every 0.02 s, then cancels
    # both running tasks (KeyboardInterrupt in the task; grace 0: the worker is killed at once),
    # as a real deadline or a killed sweep would stop them.
    shift = [0.0]
    monkeypatch.setattr(
        grid_ray, "time", types.SimpleNamespace(time=lambda: time.time() + shift[0])
    )
    monkeypatch.setattr(grid_ray, "POLL_S", 0.02)

    def jump_when_mid_run() -> None:
        stop = time.time() + 120
        while time.time() < stop:
            rows = [_rows(out / rel) for rel in FOLDERS]
            if min(rows) >= 2:
                break
            time.sleep(0.01)
        shift[0] = 1e9

    watcher = threading.Thread(target=jump_when_mid_run, daemon=True)
    watcher.start()
    logs: list[str] = []
    status = grid_ray.run_grid_ray(
        jobs, deadline=time.time() + 1e6, log=logs.append, setup=[SETUP], grace=grace
    )
    watcher.join()
    assert status == {}, status
    assert "deadline reached, cancelled 2 outstanding jobs" in logs
    stopped_at = [_rows(out / rel) for rel in FOLDERS]
    assert all(2 <= n < ITERS for n in stopped_at), stopped_at
    assert all((out / rel / "checkpoints" / "latest.pt").exists() for rel in FOLDERS)
    monkeypatch.undo()

    # the same sweep again (here in slices of 3) continues each run from its checkpoint; after
    # the kill, from another process that joins the running instance as it would a cluster
    args = ["grid", *GRID, "--out", str(out), "--backend", "ray", "--slice", "3"]
    if grace > 0:
        assert main(args) == 0
    else:
        import ray

        address = ray.get_runtime_context().gcs_address
        res = subprocess.run(
            [sys.executable, "-m", "trpl_math.rl", *args, "--address", address],
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Ray: 2 CPUs in the cluster" in res.stdout
    _assert_same_runs(local_grid, out)


def _rows(folder: Path) -> int:
    path = folder / "progress.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_local_backend_rejects_ray_options(tmp_path):
    with pytest.raises(ValueError, match="backend='ray'"):
        run_grid([], address="auto")
    with pytest.raises(ValueError, match="backend must be"):
        run_grid([], backend="dask")


def test_job_cpus(grid_ray, tmp_path):
    (job,) = make_jobs(tmp_path, [TOY], ["kl"], [0], {"torch_threads": 3})
    assert grid_ray.job_cpus(job) == 3.0 and grid_ray.job_cpus(job, 0.5) == 0.5
    with pytest.raises(ValueError, match="cpus_per_job"):
        grid_ray.job_cpus(job, 0)


def test_local_backend_needs_no_ray():
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # import ray fails\n"
        "from trpl_math.rl.grid import run_grid\n"
        "assert run_grid([]) == {}\n"
        "try:\n"
        "    run_grid([], backend='ray')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "pip install 'trpl_math[cluster]'" in res.stdout
