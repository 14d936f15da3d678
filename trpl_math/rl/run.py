"""A training run on disk: config, CSV + TensorBoard logs, checkpoints, resume.

Layout of a run folder::

    config.yaml          the full TrainConfig
    progress.csv         one row per iteration (see Trainer.iterate for the columns)
    tb/                  TensorBoard event files
    checkpoints/latest.pt  full trainer state at the last checkpointed iteration boundary
    checkpoints/iter_<k>.pt   (only with keep_checkpoints)
    agent.pt             policy + observation normaliser + config, written at the end
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from trpl_math.rl.config import TrainConfig, config_from_dict, save_config
from trpl_math.rl.trainer import Trainer

CKPT_NAME = "latest.pt"


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
        rows: list[dict[str, str]] = []
        if keep_until is not None and path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or [])
                rows = [r for r in reader if int(r["iteration"]) <= keep_until]
        self.file = path.open("w", newline="")
        self.writer: csv.DictWriter | None = None
        if self.fields:
            self.writer = csv.DictWriter(self.file, fieldnames=self.fields)
            self.writer.writeheader()
            self.writer.writerows(rows)
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


def save_agent(trainer: Trainer, path: Path) -> None:
    """Write what evaluation needs: policy weights, observation normaliser, config."""
    _atomic_save(
        {
            "config": trainer.cfg.to_dict(),
            "policy": trainer.policy.state_dict(),
            "obs_norm": trainer.obs_norm.state_dict(),
            "iteration": trainer.iteration,
            "global_step": trainer.global_step,
        },
        path,
    )


def load_trainer(path: str | Path) -> Trainer:
    """A Trainer restored from a checkpoint (``latest.pt``) or an agent file (``agent.pt``).

    An agent file restores only the policy and observation normaliser (enough to evaluate).
    """
    state = torch.load(path, weights_only=False)
    cfg = config_from_dict(state["config"])
    trainer = Trainer(cfg)
    if "pi_opt" in state:
        trainer.load_state_dict(state)
    else:
        trainer.policy.load_state_dict(state["policy"])
        trainer.obs_norm.load_state_dict(state["obs_norm"])
        trainer.iteration = int(state["iteration"])
        trainer.global_step = int(state["global_step"])
    return trainer


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    max_iterations: int | None = None,
    tensorboard: bool = True,
    keep_checkpoints: bool = False,
) -> Path:
    """Train ``cfg`` into ``out_dir``; returns the folder.

    Args:
        resume: continue from ``out_dir/checkpoints/latest.pt`` (the saved config wins over
            ``cfg``); logs after the checkpoint are dropped, so the result is identical to an
            uninterrupted run.
        progress: show a tqdm bar (steps/s, recent return, KL, entropy).
        max_iterations: stop after this many iterations in total (for tests / time slices); the
            final agent is only written when the full budget is reached.
        tensorboard: also log to TensorBoard.
        keep_checkpoints: keep every checkpoint as ``iter_<k>.pt`` besides ``latest.pt``.
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / CKPT_NAME
    if resume and ckpt.exists():
        trainer = load_trainer(ckpt)
        cfg = trainer.cfg
    else:
        if resume:
            print(f"no checkpoint in {ckpt_dir}, starting from scratch")
        trainer = Trainer(cfg)
    save_config(cfg, out / "config.yaml")
    logger = CsvLogger(out / "progress.csv", keep_until=trainer.iteration if resume else None)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=trainer.global_step or None)
    total_iters = cfg.num_iterations
    stop = total_iters if max_iterations is None else min(total_iters, max_iterations)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total_iters * cfg.rollout_steps,
            initial=trainer.global_step,
            unit="step",
            dynamic_ncols=True,
            desc=f"{cfg.method} {cfg.env_id} s{cfg.seed}",
        )
    try:
        while trainer.iteration < stop:
            t0 = time.perf_counter()
            row = trainer.iterate()
            row["time_iteration"] = time.perf_counter() - t0
            row["steps_per_s"] = cfg.rollout_steps / row["time_iteration"]
            logger.write(row)
            if writer is not None:
                for k, v in row.items():
                    if k not in ("iteration", "global_step") and not math.isnan(v):
                        writer.add_scalar(k, v, trainer.global_step)
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
            done = trainer.iteration >= total_iters
            if done or trainer.iteration % cfg.checkpoint_every == 0 or trainer.iteration == stop:
                state = trainer.state_dict()
                _atomic_save(state, ckpt)
                if keep_checkpoints:
                    _atomic_save(state, ckpt_dir / f"iter_{trainer.iteration:06d}.pt")
            if done:
                save_agent(trainer, out / "agent.pt")
    finally:
        logger.close()
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
        trainer.close()
    return out
