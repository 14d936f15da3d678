"""The Ray back end of :func:`trpl_math.rl.grid.run_grid`: every job is one Ray task.

Each task asks for the CPUs its job uses (``num_cpus``: ``cpus_per_job``, by default the job's
``torch_threads``, i.e. 1) and runs the local back end's job function,
:func:`trpl_math.rl.grid._run_job`, which trains into the job's folder with
``train(cfg, folder, resume=True)``. The folders and logs are therefore those of the local back
end, and a sweep that was stopped (deadline, Ctrl-C, lost nodes) continues when it is run again:
every job resumes from its last checkpoint. Rounds (``slice_iters``) and the deadline behave as
in the local back end; at the deadline the outstanding tasks are cancelled with ``ray.cancel``
(first a ``KeyboardInterrupt``, then, after ``grace`` seconds, killed).

On a cluster the workers write the run folders themselves and the driver reads their
``progress.csv`` between rounds, so the output folder must be on storage shared by every node
and mounted at the same path (folders are made absolute on the driver); ``trpl_math[rl]`` must
be installed on every node, and modules named in ``setup`` (e.g. the registration of a custom
task) importable there. A task lost with its node is retried by Ray (``max_retries``) and resumes
from the job's checkpoint.

A job is whatever :func:`~trpl_math.rl.grid._run_job` trains in one process (today one seed of
one method on one task); a job that trains several seeds in one process only needs its own CPU
count, through ``cpus_per_job``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

from trpl_math.rl.config import load_config
from trpl_math.rl.grid import Job, _iterations_done, _run_job, all_finished, round_tasks

try:
    import ray
except ImportError as e:  # pragma: no cover - exercised only without Ray
    raise ImportError(
        "the Ray back end of `trpl grid` needs Ray: pip install 'trpl_math[cluster]'"
    ) from e

MAX_RETRIES = 3
"""Times Ray reruns a job whose worker or node died (the rerun resumes from the checkpoint)."""

POLL_S = 5.0
"""With a deadline, the driver looks at the clock at least this often while jobs run."""


@ray.remote(max_retries=MAX_RETRIES)
def _train_job(job: Job, max_iterations: int | None, setup: tuple[str, ...]) -> tuple[str, str]:
    """One job as a Ray task: :func:`trpl_math.rl.grid._run_job` in the worker."""
    return _run_job((job, max_iterations, setup))


def job_cpus(job: Job, cpus_per_job: float | None = None) -> float:
    """CPUs a job's Ray task asks for: ``cpus_per_job``, else the job's ``torch_threads``."""
    if cpus_per_job is not None:
        if cpus_per_job <= 0:
            raise ValueError(f"cpus_per_job must be > 0, got {cpus_per_job}")
        return float(cpus_per_job)
    cfg = load_config(method=job.method, env_id=job.env_id, overrides=dict(job.overrides))
    return float(cfg.torch_threads)


def _cancel(refs: list[Any], grace: float) -> None:
    """Interrupt ``refs`` (KeyboardInterrupt in the task), kill those still running after
    ``grace`` seconds."""
    for ref in refs:
        ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=grace)
    for ref in left:
        ray.cancel(ref, force=True)


def _result(ref: Any, job: Job) -> tuple[str, str]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:  # the worker died MAX_RETRIES + 1 times, or similar
        return job.folder, f"error: {type(e).__name__}: {e}"


def run_grid_ray(
    jobs: list[Job],
    slice_iters: int | None = None,
    deadline: float | None = None,
    log: Any = print,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_job: float | None = None,
    setup: Sequence[str] = (),
    grace: float = 10.0,
) -> dict[str, str]:
    """Run ``jobs`` as Ray tasks; returns ``{folder: status}`` as ``run_grid`` does.

    Args:
        jobs, slice_iters, deadline, log: as for :func:`trpl_math.rl.grid.run_grid`.
        address: the cluster for ``ray.init(address=...)`` (``"auto"``: the one started on
            this node with ``ray start``; ``"HOST:PORT"``; ``"ray://HOST:10001"``). None:
            start a private local Ray instance with ``num_cpus`` CPUs (None: all cores). Either
            is shut down at the end; when Ray is already initialised in this process (e.g. by
            ``ray.init(address=..., runtime_env=...)`` of the caller) that instance is used
            and left running.
        cpus_per_job: CPUs each task asks for (default: the job's ``torch_threads``, 1).
        setup: ``"module[:function]"`` run in each task before training
            (:func:`trpl_math.rl.grid.run_setup`).
        grace: seconds between interrupting the tasks at the deadline and killing them.
    """
    started = not ray.is_initialized()
    if not started:
        log("using the Ray instance this process is connected to")
    elif address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    # workers may run elsewhere: give them (and compare statuses by) absolute folders
    given = {os.path.abspath(j.folder): j.folder for j in jobs}
    jobs = [dataclasses.replace(j, folder=os.path.abspath(j.folder)) for j in jobs]
    cpus = {j.folder: job_cpus(j, cpus_per_job) for j in jobs}
    status: dict[str, str] = {}
    pending: list[Any] = []
    total = ray.cluster_resources().get("CPU", 0)
    log(f"Ray: {total:g} CPUs in the cluster")
    if cpus and max(cpus.values()) > total:  # Ray waits for a node that large to join
        log(f"warning: a job asks for {max(cpus.values()):g} CPUs, the cluster has {total:g}")
    try:
        while True:
            if deadline is not None and time.time() >= deadline:
                log("deadline reached, stopping")
                break
            refs = {
                _train_job.options(num_cpus=cpus[j.folder]).remote(j, m, tuple(setup)): j
                for j, m in round_tasks(jobs, status, slice_iters)
            }
            pending = list(refs)
            n_results = 0
            while pending:
                timeout = None
                if deadline is not None:
                    timeout = min(max(deadline - time.time(), 0.0), POLL_S)
                done, pending = ray.wait(pending, num_returns=1, timeout=timeout)
                if not done and deadline is not None and time.time() < deadline:
                    continue
                if not done:  # the running jobs resume from their checkpoints next time
                    _cancel(pending, grace)
                    log(f"deadline reached, cancelled {len(pending)} outstanding jobs")
                    pending = []
                    return {given[f]: s for f, s in status.items()}
                for ref in done:
                    folder, st = _result(ref, refs[ref])
                    status[folder] = st
                    n_results += 1
                    head = st.splitlines()[0] if st.startswith("error") else st
                    log(f"{folder}: {head} ({_iterations_done(folder)} iterations)")
                    if st.startswith("error"):
                        log(st)
            if slice_iters is None or all_finished(jobs) or not n_results:
                break
    finally:
        if pending:  # interrupted (Ctrl-C in the driver): stop the tasks too
            for ref in pending:
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
    return {given[f]: s for f, s in status.items()}
