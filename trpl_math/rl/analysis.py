"""Aggregate run folders: learning curves (Fig. 4 style) and Table 1 style summaries.

A run folder is recognised by its ``config.yaml`` and ``progress.csv``; runs are grouped by
``(env_id, method, entropy_control)`` read from the config, so any folder layout works.
"""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from trpl_math.rl.config import method_label


@dataclass
class Run:
    """One training run: its folder, config and logged columns (float arrays)."""

    path: Path
    env_id: str
    method: str
    seed: int
    columns: dict[str, np.ndarray]
    group: str | None = None

    @property
    def label(self) -> str:
        """Method name as in Table 1 (``KL``, ``KL-E``, ``PPO-M``, ...), or the run's group
        (:func:`load_runs` with ``by_root``)."""
        return self.group or self.method.upper().replace("_", "-")


def read_progress(path: Path) -> dict[str, np.ndarray] | None:
    """The columns of a ``progress.csv`` as float arrays (None: no rows yet).

    A last row cut short (the run is writing it, or was killed while it did) is left out with a
    warning on stderr.

    Raises:
        ValueError: a row before the last that is incomplete or not numbers (file and line named).
    """
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))

    def parse(row: dict) -> list[float] | None:
        try:
            return [float(row[k]) for k in rows[0]]
        except (TypeError, ValueError):  # a missing field is None, an empty one ''
            return None

    values = [parse(r) for r in rows]
    if values and values[-1] is None:
        print(f"warning: {path}: the last row is incomplete (a run still writing it?); "
              "left out", file=sys.stderr)  # fmt: skip
        values.pop()
    for i, v in enumerate(values):
        if v is None:
            raise ValueError(f"{path}, line {i + 2}: not a complete row of numbers")
    if not values:
        return None
    table = np.array(values, dtype=np.float64).reshape(len(values), len(rows[0]))
    return {k: table[:, j].copy() for j, k in enumerate(rows[0])}


def load_runs(roots: list[str | Path], by_root: bool = False) -> list[Run]:
    """All run folders under ``roots`` (searched recursively), with at least one logged row.

    ``by_root``: the runs under each root form their own group, labelled ``"<METHOD>
    (<root's name>)"`` (to compare variants of one method, e.g. an ablation), instead of
    being grouped by method."""
    runs = []
    for root in roots:
        for cfg_path in sorted(Path(root).rglob("config.yaml")):
            csv_path = cfg_path.parent / "progress.csv"
            if not csv_path.exists():
                continue
            cfg = yaml.safe_load(cfg_path.read_text())
            cols = read_progress(csv_path)
            if cols is None:
                continue
            method = method_label(cfg["method"], bool(cfg.get("entropy_control")))
            run = Run(cfg_path.parent, cfg["env_id"], method, int(cfg["seed"]), cols)
            if by_root:
                run.group = f"{run.label} ({Path(root).resolve().name})"
            runs.append(run)
    return runs


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """``{(env_id, method): [runs]}``."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.env_id, r.group or r.method)].append(r)
    return dict(groups)


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the ``level`` confidence interval (Student t; 0 for n = 1)."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    if n == 1:
        return float(values[0]), 0.0
    sem = values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(stats.t.ppf(0.5 + level / 2, n - 1) * sem)


def table1_windows(
    n_iters: int, window: int = 20, planned_iters: int | None = None
) -> tuple[slice, slice]:
    """Iteration windows of Table 1: the ``window`` epochs after 20% of training and the last
    ``window`` epochs of the ``n_iters`` available.

    ``planned_iters`` (e.g. the paper's budget for a run that was stopped early) places the 20%
    window at 20% of that budget instead of 20% of what is available; it must then fit.
    """
    total = n_iters if planned_iters is None else planned_iters
    start = min(round(0.2 * total), max(n_iters - window, 0))
    if planned_iters is not None and round(0.2 * total) + window > n_iters:
        raise ValueError(
            f"the 20% window of a {planned_iters}-iteration budget needs "
            f"{round(0.2 * total) + window} iterations, only {n_iters} logged"
        )
    return slice(start, start + window), slice(max(n_iters - window, 0), n_iters)


def window_warnings(
    name: str, n_iters: int, window: int, w20: slice, wend: slice, planned: int | None = None
) -> list[str]:
    """What makes :func:`table1_windows`' two windows of a run of ``n_iters`` iterations not
    the paper's: fewer iterations than a window, the same or overlapping windows, a 20% window
    moved from 20% of training so that it fits."""
    a, b, c, e = w20.start + 1, w20.stop, wend.start + 1, wend.stop
    if n_iters < window:
        return [
            f"{name}: {n_iters} iterations logged, fewer than --window {window}: "
            f"both windows are iterations 1-{n_iters}"
        ]
    notes = []
    if (a, b) == (c, e):
        notes.append(f"{name}: the 20% and the final window are the same, iterations {a}-{b}")
    elif b >= c:
        notes.append(
            f"{name}: the 20% window (iterations {a}-{b}) and the final one ({c}-{e}) overlap"
        )
    nominal = round(0.2 * (n_iters if planned is None else planned))
    if w20.start != nominal:
        notes.append(
            f"{name}: the 20% window starts at iteration {a}, not at 20% of training "
            f"({nominal + 1}), to fit in the {n_iters} logged iterations"
        )
    return notes


CI_OVER = ("epochs", "seeds")


def table_rows(
    runs: list[Run],
    column: str = "eval_return",
    window: int = 20,
    planned_steps: int | None = None,
    ci_over: str = "epochs",
) -> list[dict]:
    """Table 1 rows: for each (env, method) the mean +- 95% CI of ``column`` in the two
    windows (runs truncated to the shortest).

    ``ci_over="epochs"`` (Table 1's way): the interval over all (seed, epoch) values of a
    window. ``"seeds"``: over the seeds' window means (n = seeds), which keeps the spread
    between seeds that pooling epochs hides; the mean is the same. Each row also holds every
    seed's window means (``seed_means``).

    ``planned_steps``: place the 20% window at 20% of this many environment steps (for runs
    stopped before their budget); by default at 20% of the logged iterations.
    """
    if ci_over not in CI_OVER:
        raise ValueError(f"ci_over must be one of {CI_OVER}, got {ci_over!r}")
    rows = []
    for (env, _method), group in sorted(group_runs(runs).items()):
        n = min(len(r.columns[column]) for r in group)
        planned = None
        if planned_steps is not None:
            per_iter = group[0].columns["global_step"][0]
            planned = int(planned_steps // per_iter)
        w20, wend = table1_windows(n, window, planned)
        notes = window_warnings(f"{env} {group[0].label}", n, window, w20, wend, planned)
        v20 = np.stack([r.columns[column][:n][w20] for r in group])  # (seeds, epochs)
        vend = np.stack([r.columns[column][:n][wend] for r in group])
        steps = int(group[0].columns["global_step"][n - 1])

        def summary(v: np.ndarray) -> tuple[float, float]:
            return mean_ci(v.reshape(-1) if ci_over == "epochs" else np.nanmean(v, axis=1))

        rows.append(
            {
                "env": env,
                "method": group[0].label,
                "seeds": len(group),
                "iterations": n,
                "steps": steps,
                "window_20": (w20.start, w20.stop),
                "window_final": (wend.start, wend.stop),
                "warnings": notes,
                "ci_over": ci_over,
                "20%": summary(v20),
                "final": summary(vend),
                "seed_means": {
                    r.seed: (float(np.nanmean(a)), float(np.nanmean(b)))
                    for r, a, b in zip(group, v20, vend, strict=True)
                },
            }
        )
    return rows


def format_table(rows: list[dict], fmt: str = "markdown") -> str:
    """Render :func:`table_rows` as a Markdown (or CSV) table, one line per (env, method)."""

    def cell(mc: tuple[float, float]) -> str:
        return f"{mc[0]:.0f} ± {mc[1]:.0f}"

    if fmt == "csv":
        lines = ["env,method,seeds,iterations,steps,mean_20,ci_20,mean_final,ci_final"]
        for r in rows:
            lines.append(
                f"{r['env']},{r['method']},{r['seeds']},{r['iterations']},{r['steps']},"
                f"{r['20%'][0]:.1f},{r['20%'][1]:.1f},{r['final'][0]:.1f},{r['final'][1]:.1f}"
            )
        return "\n".join(lines)
    per_seed = bool(rows) and rows[0]["ci_over"] == "seeds"
    head = "| env | method | seeds | steps | 20% | final |"
    lines = [head + " final per seed |" if per_seed else head]
    lines.append("|---|---|---|---|---|---|" + ("---|" if per_seed else ""))
    for r in rows:
        line = (
            f"| {r['env']} | {r['method']} | {r['seeds']} | {r['steps']} | "
            f"{cell(r['20%'])} | {cell(r['final'])} |"
        )
        if per_seed:
            line += " " + " / ".join(f"{v[1]:.0f}" for _, v in sorted(r["seed_means"].items()))
            line += " |"
        lines.append(line)
    if rows:
        a, b = rows[0]["window_20"]
        lines.append(
            f"\n20%: iterations {a + 1}-{b} (of the first row); final: the last {b - a} logged; "
            + (
                "mean ± 95% CI (Student t) over all (seed, epoch) values"
                if rows[0]["ci_over"] == "epochs"
                else "mean ± 95% CI (Student t) over the seeds' window means"
            )
        )
    return "\n".join(lines)


#: ``(row key, logged column, reduction over all iterations of all runs of a group)``.
DIAGNOSTICS: tuple[tuple[str, str, str], ...] = (
    ("kl_mean", "kl_mean", "mean"),
    ("kl_max", "kl_max", "max"),
    ("proj_kl_max", "proj_kl_max", "max"),
    ("mean_part_max", "mean_part_max", "max"),
    ("cov_part_max", "cov_part_max", "max"),
    ("maha_max", "maha_max", "max"),
    ("entropy_first", "entropy", "first"),
    ("entropy_last", "entropy", "last"),
)


def diagnostics_rows(runs: list[Run]) -> list[dict]:
    """Trust-region behaviour per (env, method) over every logged iteration of every seed
    (Fig. 2 of the paper in numbers): the mean and the worst per-state KL between successive
    policies (``kl_*``: the network that acts next; ``proj_kl_max``: the projection), the worst
    constraint parts, the worst Mahalanobis distance of the unprojected mean, and the mean
    entropy at the first and the last iteration (averaged over seeds)."""
    rows = []
    for (env, _method), group in sorted(group_runs(runs).items()):
        row: dict = {"env": env, "method": group[0].label, "seeds": len(group)}
        for key, col, how in DIAGNOSTICS:
            if how in ("first", "last"):
                row[key] = float(
                    np.mean([r.columns[col][0 if how == "first" else -1] for r in group])
                )
            else:
                allv = np.concatenate([r.columns[col] for r in group])
                row[key] = float(np.nanmax(allv) if how == "max" else np.nanmean(allv))
        rows.append(row)
    return rows


def format_diagnostics(rows: list[dict]) -> str:
    """Render :func:`diagnostics_rows` as a Markdown table."""
    head = ["env", "method", "seeds", *(k for k, _, _ in DIAGNOSTICS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["env"], r["method"], str(r["seeds"])]
        cells += [f"{r[k]:.3g}" for k, _, _ in DIAGNOSTICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` iterations (shorter at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    csum = np.cumsum(np.insert(np.asarray(values, np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def curve(
    group: list[Run], column: str = "eval_return", smooth_window: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, ci)`` of ``column`` over the runs of a group (truncated to the shortest),
    each run first smoothed by a trailing moving average of ``smooth_window`` iterations."""
    n = min(len(r.columns[column]) for r in group)
    data = np.stack([smooth(r.columns[column][:n], smooth_window) for r in group])
    steps = group[0].columns["global_step"][:n]
    mean = np.nanmean(data, axis=0)
    ci = np.array([mean_ci(data[:, i])[1] for i in range(n)])
    return steps, mean, ci


def plot_curves(
    runs: list[Run], out: str | Path, column: str = "eval_return", smooth_window: int = 1
) -> Path:
    """Fig. 4 style: one panel per task, mean +- 95% CI over seeds of ``column`` per method
    (Student t over seeds; runs smoothed over ``smooth_window`` iterations first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(runs)
    envs = sorted({env for env, _ in groups})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for (e, _method), group in sorted(groups.items()):
            if e != env:
                continue
            steps, mean, ci = curve(group, column, smooth_window)
            (line,) = ax.plot(steps, mean, label=f"{group[0].label} ({len(group)})")
            ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2, color=line.get_color())
        # the t-interval of 3 seeds can be very wide: keep the axis on the observed values
        seen = np.concatenate([r.columns[column] for r in runs if r.env_id == env])
        seen = seen[np.isfinite(seen)]
        if len(seen):
            pad = 0.05 * (seen.max() - seen.min() + 1e-9)
            ax.set_ylim(seen.min() - pad, seen.max() + pad)
        ax.set_title(env)
        ax.set_xlabel("samples")
        label = column.replace("_", " ")
        ax.set_ylabel(label if smooth_window == 1 else f"{label} (avg of {smooth_window} iters)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
