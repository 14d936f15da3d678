"""Run a grid of seeds x methods x tasks in parallel worker processes.

Each job trains into ``<out>/<env_id>/<method>/seed_<k>`` and is resumable. With ``slice_iters``
the grid runs in rounds: every job advances by that many iterations per round (round-robin),
so that all runs make equal progress and a deadline leaves comparable partial runs; calling the
grid again continues every run where it stopped.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path
from typing import Any

from trpl_math.rl.config import load_config


@dataclasses.dataclass(frozen=True)
class Job:
    """One (env, method, seed) run and its folder."""

    env_id: str
    method: str
    seed: int
    folder: str
    overrides: tuple[tuple[str, str], ...] = ()


def make_jobs(
    out: str | Path,
    envs: list[str],
    methods: list[str],
    seeds: list[int],
    overrides: dict[str, Any] | None = None,
) -> list[Job]:
    """Jobs ordered seed-major (all methods of seed 0 first), folders under ``out``."""
    ov = tuple(sorted((k, str(v)) for k, v in (overrides or {}).items()))
    jobs = []
    for seed in seeds:
        for env in envs:
            for method in methods:
                m, entropy = (method[:-2], True) if method.endswith("_e") else (method, False)
                o = ov + ((("entropy_control", "true"),) if entropy else ())
                folder = str(Path(out) / env / method / f"seed_{seed}")
                jobs.append(Job(env, m, seed, folder, o))
    return jobs


def _run_job(args: tuple[Job, int | None]) -> tuple[str, str]:
    job, max_iterations = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from trpl_math.rl.run import train

    try:
        overrides = dict(job.overrides) | {"seed": str(job.seed)}
        cfg = load_config(method=job.method, env_id=job.env_id, overrides=overrides)
        train(cfg, job.folder, resume=True, progress=False, max_iterations=max_iterations)
        return job.folder, "ok"
    except Exception:  # report and keep the other jobs going
        return job.folder, "error: " + traceback.format_exc()


def _iterations_done(folder: str) -> int:
    path = Path(folder) / "progress.csv"
    if not path.exists():
        return 0
    return max(0, len(path.read_text().splitlines()) - 1)


def run_grid(
    jobs: list[Job],
    workers: int = 2,
    slice_iters: int | None = None,
    deadline: float | None = None,
    log: Any = print,
) -> dict[str, str]:
    """Run ``jobs`` with ``workers`` processes; returns ``{folder: status}``.

    Args:
        slice_iters: iterations per job per round (None: each job runs to completion at once).
        deadline: UNIX time at which running jobs are stopped (each continues from its last
            checkpoint when the grid is run again) and nothing new is started.
    """
    ctx = mp.get_context("spawn")
    status: dict[str, str] = {}
    with ctx.Pool(workers, maxtasksperchild=1) as pool:
        round_no = 0
        while True:
            if deadline is not None and time.time() >= deadline:
                log("deadline reached, stopping")
                break
            if slice_iters is None:
                tasks = [(j, None) for j in jobs]
            else:
                round_no += 1
                tasks = [
                    (j, _iterations_done(j.folder) + slice_iters)
                    for j in jobs
                    if status.get(j.folder, "ok") == "ok"
                ]
            results = []
            it = pool.imap_unordered(_run_job, tasks)
            while True:
                timeout = None if deadline is None else max(deadline - time.time(), 0.0)
                try:
                    folder, st = it.next(timeout=timeout)
                except StopIteration:
                    break
                except mp.TimeoutError:
                    pool.terminate()  # running jobs stop; they resume from their checkpoint
                    log("deadline reached, terminated running jobs")
                    return status
                status[folder] = st
                results.append(st)
                log(
                    f"{folder}: {st.splitlines()[0] if st.startswith('error') else st} "
                    f"({_iterations_done(folder)} iterations)"
                )
                if st.startswith("error"):
                    log(st)
            if slice_iters is None:
                break
            finished = all(_iterations_done(j.folder) >= _total_iters(j) for j in jobs)
            if finished or not results:
                break
    return status


def _total_iters(job: Job) -> int:
    cfg = load_config(method=job.method, env_id=job.env_id, overrides=dict(job.overrides))
    return cfg.num_iterations
