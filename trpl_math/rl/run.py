"""A training run on disk: config, CSV + TensorBoard logs, checkpoints, resume.

Layout of a run folder::

    config.yaml          the full TrainConfig
    progress.csv         one row per iteration (see Trainer.iterate for the columns)
    tb/                  TensorBoard event files (rewritten from progress.csv on resume)
    checkpoints/latest.pt  full trainer state at the last checkpointed iteration boundary
    checkpoints/iter_<k>.pt   (only with keep_checkpoints)
    agent.pt             policy + observation normaliser + config of the last completed
                         iteration, written whenever training stops (budget reached,
                         ``max_iterations``, deadline, Ctrl-C or SIGTERM)

Rules: training into a folder that already holds a run is refused unless ``resume`` (continue
from the checkpoint, with the same settings) or ``overwrite`` (delete the run's files first).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from trpl_math.rl.config import TrainConfig, config_from_dict, save_config
from trpl_math.rl.trainer import Trainer

CKPT_NAME = "latest.pt"
#: The files and folders of a run; ``overwrite`` deletes these and nothing else.
RUN_FILES = ("config.yaml", "progress.csv", "tb", "checkpoints", "agent.pt")
_AGENT_KEYS = ("config", "policy", "obs_norm", "iteration", "global_step")


class RunError(Exception):
    """A user error about a run folder or checkpoint (the CLI prints it without a traceback)."""


class CheckpointError(RunError):
    """A checkpoint or agent file that cannot be read back."""


def _corrupted(path: Path | str, why: BaseException | str) -> CheckpointError:
    text = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
    return CheckpointError(
        f"checkpoint {path} is corrupted or incomplete: {' '.join(text.split())}"
    )


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CsvLogger:
    """Append rows (dicts with the same keys) to a CSV file, flushing after every row."""

    def __init__(self, path: Path, keep_until: int | None = None) -> None:
        """Open ``path``; with ``keep_until`` keep only existing rows with iteration <= it."""
        self.path = path
        self.fields: list[str] | None = None
        self.kept: list[dict[str, str]] = []
        if keep_until is not None and path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or [])
                self.kept = [r for r in reader if int(r["iteration"]) <= keep_until]
        self.file = path.open("w", newline="")
        self.writer: csv.DictWriter | None = None
        if self.fields:
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields)
            self.writer.writeheader()
            self.writer.writerows(self.kept)
            self.file.flush()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        if self.writer is None:
            self.fields = list(row)
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields)
            self.writer.writeheader()
        self.writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def _tb_scalars(writer: Any, row: dict[str, Any], step: int) -> None:
    """Log a progress row's numbers (not ``iteration``/``global_step``, not NaN) at ``step``."""
    for k, v in row.items():
        if k in ("iteration", "global_step"):
            continue
        v = float(v)
        if not math.isnan(v):
            writer.add_scalar(k, v, step)


def agent_state(trainer: Trainer) -> dict[str, Any]:
    """What evaluation needs, copied: policy weights, observation normaliser, config."""
    return copy.deepcopy(
        {
            "config": trainer.cfg.to_dict(),
            "policy": trainer.policy.state_dict(),
            "obs_norm": trainer.obs_norm.state_dict(),
            "iteration": trainer.iteration,
            "global_step": trainer.global_step,
        }
    )


def save_agent(trainer: Trainer, path: Path) -> None:
    """Write what evaluation needs: policy weights, observation normaliser, config."""
    _atomic_save(agent_state(trainer), path)


def read_state(path: str | Path) -> dict[str, Any]:
    """The dict saved in a checkpoint or agent file.

    Raises:
        RunError: the file does not exist.
        CheckpointError: it cannot be unpickled or lacks an agent's entries.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no such checkpoint or agent file: {path}")
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # UnpicklingError, EOFError, RuntimeError (zip), ...
        raise _corrupted(path, exc) from exc
    missing = [k for k in _AGENT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise _corrupted(path, f"missing {', '.join(missing)}")
    return state


def load_trainer(path: str | Path) -> Trainer:
    """A Trainer restored from a checkpoint (``latest.pt``), an agent file (``agent.pt``) or a
    run folder (its ``agent.pt``, else its ``checkpoints/latest.pt``).

    An agent file restores only the policy and observation normaliser (enough to evaluate).

    Raises:
        RunError: nothing to load at ``path``.
        CheckpointError: the file is corrupted or incomplete.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "agent.pt", path / "checkpoints" / CKPT_NAME):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise RunError(f"{path} holds neither agent.pt nor checkpoints/{CKPT_NAME}")
    return trainer_from_state(read_state(path), path)


def trainer_from_state(state: dict[str, Any], path: str | Path) -> Trainer:
    """A Trainer restored from :func:`read_state`'s dict (``path`` names it in errors)."""
    try:
        cfg = config_from_dict(state["config"])
    except (ValueError, TypeError) as exc:
        raise _corrupted(path, str(exc)) from exc
    trainer = Trainer(cfg)
    try:
        if "pi_opt" in state:
            trainer.load_state_dict(state)
        else:
            trainer.policy.load_state_dict(state["policy"])
            trainer.obs_norm.load_state_dict(state["obs_norm"])
            trainer.iteration = int(state["iteration"])
            trainer.global_step = int(state["global_step"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        trainer.close()
        raise _corrupted(path, exc) from exc
    return trainer


def config_differences(
    saved: dict[str, Any], requested: dict[str, Any], keys: list[str] | None = None
) -> list[str]:
    """One line per field (of ``keys``, default all) whose value differs."""
    names = keys if keys is not None else list(requested)
    return [
        f"{k}: saved {saved.get(k)!r}, requested {requested.get(k)!r}"
        for k in names
        if saved.get(k) != requested.get(k)
    ]


def _existing_run_files(out: Path) -> list[str]:
    return [name for name in RUN_FILES if (out / name).exists()]


def _clear_run(out: Path) -> None:
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


class StopSignals:
    """When SIGTERM and SIGINT may stop a run: at once while an iteration computes, held over
    the bookkeeping between iterations.

    SIGTERM (a grid's deadline, a batch system) becomes ``SystemExit(143)`` and SIGINT
    ``KeyboardInterrupt``, so that the ``finally`` blocks write the last completed iteration's
    agent. An exception raised by a signal handler lands between any two bytecodes, and in the
    bookkeeping that can be inside a lock that another thread waits on: raised within
    TensorBoard's ``add_scalar``, it lost the wake-up of the writer thread, and ``close()`` then
    waited for the thread's next timed flush (up to two minutes). So a signal that arrives
    outside :meth:`interruptible` is held and raised when the bookkeeping enters the next
    :meth:`interruptible` block or leaves :func:`_stop_signals`; the computation of an
    iteration, whose result a stop discards, stays interruptible.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.open = False

    def handler(self, signum: int, frame: Any) -> None:
        if self.open:
            self.raise_for(signum)
        if self.pending is None:
            self.pending = signum

    @staticmethod
    def raise_for(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def raise_pending(self) -> None:
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self.raise_for(signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block that a signal stops at once (one held from before stops it on entry)."""
        self.raise_pending()
        self.open = True
        try:
            yield
        finally:
            self.open = False


@contextlib.contextmanager
def _stop_signals() -> Iterator[StopSignals]:
    """Install :class:`StopSignals`'s handler for SIGTERM and SIGINT (in the main thread only,
    where Python handles signals; elsewhere the guard does nothing) and raise a held signal on
    leaving, unless another exception is already on its way."""
    guard = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        guard.open = True
        yield guard
        return
    previous = {s: signal.signal(s, guard.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield guard
    except BaseException:
        guard.pending = None
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    guard.raise_pending()


LOCK_NAME = ".lock"
_HELD_LOCKS: dict[Path, Any] = {}


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` (an exclusive ``flock``) while training into ``out``: a second process
    training the same run folder would interleave its logs and checkpoints with this one's, so
    it is refused. Re-entrant within a process; released when the process dies.

    Raises:
        RunError: another process holds the folder (its pid named).
    """
    key = out.resolve()
    if key in _HELD_LOCKS:
        yield
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no protection, as before
        yield
        return
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = (out / LOCK_NAME).open("a+")
    except OSError as exc:
        raise RunError(f"cannot write the run folder {out}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise RunError(
            f"{out} is being trained by another process (pid {pid}); wait for it to stop, "
            "or train into another folder"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _HELD_LOCKS[key] = f
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        # a folder made for a run that wrote nothing (a bad env id, ...) does not stay behind
        if created and [p.name for p in out.iterdir()] == [LOCK_NAME]:
            (out / LOCK_NAME).unlink()
            out.rmdir()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    compare: list[str] | None = None,
    progress: bool = True,
    max_iterations: int | None = None,
    deadline: float | None = None,
    tensorboard: bool = True,
    keep_checkpoints: bool = False,
) -> Path:
    """Train ``cfg`` into ``out_dir``; returns the folder.

    Args:
        resume: continue from ``out_dir/checkpoints/latest.pt``; logs after the checkpoint are
            dropped (TensorBoard's are rewritten from ``progress.csv``), so the result is
            identical to an uninterrupted run. Without a checkpoint, start from scratch.
        overwrite: delete the run files in ``out_dir`` (:data:`RUN_FILES`) and start over.
        compare: the config fields that must match the saved run's on resume (default: all);
            the CLI passes only what was asked for on its command line.
        progress: show a tqdm bar (steps/s, recent return, KL, entropy).
        max_iterations: stop after this many iterations in total (for tests / time slices).
        deadline: UNIX time after which no new iteration starts (checkpoint + agent written).
        tensorboard: also log to TensorBoard.
        keep_checkpoints: keep every checkpoint as ``iter_<k>.pt`` besides ``latest.pt``.

    ``agent.pt`` (the last completed iteration) is written at every stop, also on Ctrl-C and
    SIGTERM (then the exception propagates; continue with ``resume``).

    Raises:
        RunError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite`` is set;
            ``resume`` with settings that differ from the saved ones (one line per field);
            the folder cannot be written.
        CheckpointError: the checkpoint to resume from is corrupted or incomplete.

    Another process training ``out_dir`` at the same time is refused (:func:`folder_lock`).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"cannot use {out} as a run folder: it is a file")
    with folder_lock(out):
        return _train_unlocked(
            cfg,
            out,
            resume=resume,
            overwrite=overwrite,
            compare=compare,
            progress=progress,
            max_iterations=max_iterations,
            deadline=deadline,
            tensorboard=tensorboard,
            keep_checkpoints=keep_checkpoints,
        )


def _train_unlocked(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    compare: list[str] | None = None,
    progress: bool = True,
    max_iterations: int | None = None,
    deadline: float | None = None,
    tensorboard: bool = True,
    keep_checkpoints: bool = False,
) -> Path:
    """:func:`train` without the folder lock."""
    if resume and overwrite:
        raise RunError("resume and overwrite exclude each other")
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt = ckpt_dir / CKPT_NAME
    existing = _existing_run_files(out) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise RunError(f"cannot use {out} as a run folder: it is a file")
    if existing and not (resume or overwrite):
        raise RunError(
            f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it "
            "or --overwrite to delete it and start over"
        )
    resuming = resume and ckpt.exists()
    if resuming:
        state = read_state(ckpt)
        saved = state["config"]
        if (out / "config.yaml").is_file():
            import yaml

            with contextlib.suppress(yaml.YAMLError):
                saved = yaml.safe_load((out / "config.yaml").read_text()) or saved
        # fields the saved run predates take their defaults, as when its checkpoint loads
        saved = {**TrainConfig().to_dict(), **saved}
        diffs = config_differences(saved, cfg.to_dict(), compare)
        if diffs:
            raise RunError(
                f"cannot resume {out}: the requested settings differ from the saved run's "
                "(config.yaml):\n  " + "\n  ".join(diffs)
            )
        trainer = trainer_from_state(state, ckpt)
        cfg = trainer.cfg
    else:
        trainer = Trainer(cfg)
    try:
        if resume and not resuming and existing:
            print(
                f"no checkpoint in {ckpt_dir}: starting from scratch (the earlier attempt's "
                "files are deleted)",
                file=sys.stderr,
            )
        if overwrite or (resume and not resuming):
            _clear_run(out)  # without a checkpoint nothing of an earlier attempt is kept
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
        except OSError as exc:
            raise RunError(f"cannot write the run folder {out}: {exc.strerror or exc}") from exc
    except BaseException:
        trainer.close()
        raise
    with _stop_signals() as signals:
        return _loop(
            signals,
            trainer,
            out,
            ckpt,
            resuming,
            progress,
            max_iterations,
            deadline,
            tensorboard,
            keep_checkpoints,
        )


def _loop(
    signals: StopSignals,
    trainer: Trainer,
    out: Path,
    ckpt: Path,
    resuming: bool,
    progress: bool,
    max_iterations: int | None,
    deadline: float | None,
    tensorboard: bool,
    keep_checkpoints: bool,
) -> Path:
    cfg = trainer.cfg
    logger = CsvLogger(out / "progress.csv", keep_until=trainer.iteration if resuming else None)
    agent = agent_state(trainer)
    writer = None
    bar = None
    try:
        # Rewrite the events from the kept CSV rows: every iteration up to and including the
        # checkpointed one exactly once, whatever a reader does with purge steps.
        shutil.rmtree(out / "tb", ignore_errors=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
            for row in logger.kept:
                _tb_scalars(writer, row, int(float(row["global_step"])))
        total_iters = cfg.num_iterations
        stop = total_iters if max_iterations is None else min(total_iters, max_iterations)
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=total_iters * cfg.rollout_steps,
                initial=trainer.global_step,
                unit="step",
                dynamic_ncols=True,
                desc=f"{cfg.method} {cfg.env_id} s{cfg.seed}",
            )
        saved_iteration = trainer.iteration

        def checkpoint() -> None:
            nonlocal saved_iteration
            state = trainer.state_dict()
            _atomic_save(state, ckpt)
            if keep_checkpoints:
                _atomic_save(state, ckpt.parent / f"iter_{trainer.iteration:06d}.pt")
            saved_iteration = trainer.iteration

        while trainer.iteration < stop:
            if deadline is not None and time.time() >= deadline:
                break
            t0 = time.perf_counter()
            with signals.interruptible():
                row = trainer.iterate()
            row["time_iteration"] = time.perf_counter() - t0
            row["steps_per_s"] = cfg.rollout_steps / row["time_iteration"]
            logger.write(row)
            agent = agent_state(trainer)
            if writer is not None:
                _tb_scalars(writer, row, trainer.global_step)
            if bar is not None:
                bar.update(cfg.rollout_steps)
                bar.set_postfix(
                    sps=f"{row['steps_per_s']:.0f}",
                    ret=f"{row['train_return']:.0f}",
                    eval=f"{row['eval_return']:.0f}",
                    kl=f"{row['kl_mean']:.4f}",
                    ent=f"{row['entropy']:.2f}",
                    refresh=False,
                )
            if trainer.iteration >= stop or trainer.iteration % cfg.checkpoint_every == 0:
                checkpoint()
        if trainer.iteration != saved_iteration:  # stopped by the deadline
            checkpoint()
    finally:
        # the last completed iteration's agent, at every stop (also Ctrl-C / SIGTERM)
        _atomic_save(agent, out / "agent.pt")
        logger.close()
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
        trainer.close()
    return out
