"""Run a grid of seeds x methods x tasks in parallel worker processes.

Each job trains into ``<out>/<env_id>/<method>/seed_<k>`` and is resumable. With ``slice_iters``
the grid runs in rounds: every job advances by that many iterations per round (round-robin),
so that all runs make equal progress and a deadline leaves comparable partial runs; calling the
grid again continues every run where it stopped.

Two back ends run the jobs, chosen by ``run_grid(..., backend=)``: ``"local"`` (the default), a
pool of worker processes on this machine, and ``"ray"``, Ray tasks on a local or an existing Ray
cluster (:mod:`trpl_math.rl.grid_ray`, needs the ``cluster`` extra; imported only when chosen).
Both train every job through :func:`_run_job`, i.e. ``train(cfg, folder, resume=True)``, so they
write the same folders and logs.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trpl_math.rl.config import load_config, split_method


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
                m, entropy = split_method(method)
                o = ov + ((("entropy_control", "true"),) if entropy else ())
                folder = str(Path(out) / env / method / f"seed_{seed}")
                jobs.append(Job(env, m, seed, folder, o))
    return jobs


def run_setup(setup: Sequence[str]) -> None:
    """Import each ``"module"`` or ``"module:function"`` of ``setup`` (and call the function).

    Runs in every job's process before training, e.g. to register custom Gymnasium tasks
    (``tests/rl/toy_env.py``: ``"toy_env:register"``); the module must be importable there.
    """
    for spec in setup:
        module, _, func = spec.partition(":")
        mod = importlib.import_module(module)
        if func:
            getattr(mod, func)()


def _run_job(args: tuple[Job, int | None, Sequence[str]]) -> tuple[str, str]:
    """Train ``job`` (resuming its folder) up to ``max_iterations``; ``(folder, status)``."""
    job, max_iterations, setup = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from trpl_math.rl.run import train

    try:
        run_setup(setup)
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
    *,
    backend: str = "local",
    address: str | None = None,
    cpus_per_job: float | None = None,
    setup: Sequence[str] = (),
) -> dict[str, str]:
    """Run ``jobs`` with ``workers`` processes (or on Ray); returns ``{folder: status}``.

    Args:
        slice_iters: iterations per job per round (None: each job runs to completion at once).
        deadline: UNIX time at which running jobs are stopped (each continues from its last
            checkpoint when the grid is run again) and nothing new is started.
        backend: ``"local"`` (worker processes) or ``"ray"`` (see
            :func:`trpl_math.rl.grid_ray.run_grid_ray`; ``workers`` is then the CPU count of
            the local Ray instance started when ``address`` is None).
        address: Ray only: the cluster to connect to (``"auto"``, ``"HOST:PORT"``).
        cpus_per_job: Ray only: CPUs each job asks for (default: its ``torch_threads``).
        setup: ``"module[:function]"`` imported (and called) in every job's process before
            training, e.g. to register custom tasks (:func:`run_setup`).

    Raises:
        ValueError: an unknown ``backend``, or Ray-only options with the local one.
    """
    if backend == "ray":
        from trpl_math.rl.grid_ray import run_grid_ray

        return run_grid_ray(
            jobs,
            slice_iters,
            deadline,
            log,
            address=address,
            num_cpus=workers,
            cpus_per_job=cpus_per_job,
            setup=tuple(setup),
        )
    if backend != "local":
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if address is not None or cpus_per_job is not None:
        raise ValueError("address and cpus_per_job need backend='ray'")
    ctx = mp.get_context("spawn")
    status: dict[str, str] = {}
    with ctx.Pool(workers, maxtasksperchild=1) as pool:
        round_no = 0
        while True:
            if deadline is not None and time.time() >= deadline:
                log("deadline reached, stopping")
                break
            if slice_iters is not None:
                round_no += 1
            tasks = [(j, m, tuple(setup)) for j, m in round_tasks(jobs, status, slice_iters)]
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
            if all_finished(jobs) or not results:
                break
    return status


def round_tasks(
    jobs: list[Job], status: dict[str, str], slice_iters: int | None
) -> list[tuple[Job, int | None]]:
    """``(job, max_iterations)`` of the next round: all jobs to completion (no slices), or each
    job not failed so far ``slice_iters`` iterations past what its folder holds."""
    if slice_iters is None:
        return [(j, None) for j in jobs]
    return [
        (j, _iterations_done(j.folder) + slice_iters)
        for j in jobs
        if status.get(j.folder, "ok") == "ok"
    ]


def all_finished(jobs: list[Job]) -> bool:
    """Whether every job's folder holds its full budget of iterations."""
    return all(_iterations_done(j.folder) >= _total_iters(j) for j in jobs)


def _total_iters(job: Job) -> int:
    cfg = load_config(method=job.method, env_id=job.env_id, overrides=dict(job.overrides))
    return cfg.num_iterations
