"""Command line: ``trpl train|evaluate|plot|table|diagnostics|grid``; ``python -m trpl_math.rl``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path

from trpl_math.rl.config import METHODS


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default: the shipped one for method and task)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set eps_mean=0.05 (repeatable)",
    )
    p.add_argument("--steps", type=int, help="total environment steps (config: total_steps)")


def _method_arg(value: str) -> str:
    base = value[:-2] if value.endswith("_e") else value
    if base not in METHODS:
        raise argparse.ArgumentTypeError(f"method must be one of {METHODS} (optionally + '_e')")
    return value


def _overrides(args: argparse.Namespace) -> list[str]:
    ov = list(args.overrides)
    if getattr(args, "steps", None):
        ov.append(f"total_steps={args.steps}")
    return ov


def cmd_train(args: argparse.Namespace) -> int:
    from trpl_math.rl.config import load_config
    from trpl_math.rl.run import train

    method = args.method
    overrides = [*_overrides(args), f"seed={args.seed}"]
    if method and method.endswith("_e"):
        method = method[:-2]
        overrides.append("entropy_control=true")
    cfg = load_config(args.config, method=method, env_id=args.env, overrides=overrides)
    if args.seeds:  # several seeds in one process: OUT/seed_<k> each
        from trpl_math.rl.multiseed import train_seeds

        folders = train_seeds(
            cfg,
            args.seeds,
            args.out or f"runs/{cfg.env_id}/{args.method or cfg.method}",
            resume=args.resume,
            progress=not args.no_progress,
            max_iterations=args.max_iterations,
            tensorboard=not args.no_tensorboard,
        )
        print("run folders: " + " ".join(str(f) for f in folders))
        return 0
    out = args.out or f"runs/{cfg.env_id}/{args.method or cfg.method}/seed_{cfg.seed}"
    folder = train(
        cfg,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        max_iterations=args.max_iterations,
        tensorboard=not args.no_tensorboard,
    )
    print(f"run folder: {folder}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from trpl_math.rl.run import load_trainer

    trainer = load_trainer(args.checkpoint)
    returns = trainer.evaluate(args.episodes, seed_stream=args.seed_stream)
    trainer.close()
    print(
        f"{trainer.cfg.method} on {trainer.cfg.env_id}, iteration {trainer.iteration} "
        f"({trainer.global_step} steps): {args.episodes} deterministic episodes"
    )
    print("returns: " + " ".join(f"{r:.1f}" for r in returns))
    print(f"mean {np.mean(returns):.1f} +- {np.std(returns):.1f} (std)")
    return 0


def _load_runs(paths: list[str]) -> list | None:
    """The run folders under ``paths``, or None (said on stderr) when there are none."""
    from trpl_math.rl.analysis import load_runs

    runs = load_runs(paths)
    if not runs:
        print("no runs found", file=sys.stderr)
        return None
    return runs


def _report(args: argparse.Namespace, render: Callable[[list], str]) -> int:
    """Print ``render(runs)`` for the runs under ``args.runs``; also write it to ``args.out``."""
    runs = _load_runs(args.runs)
    if runs is None:
        return 1
    text = render(runs)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from trpl_math.rl.analysis import plot_curves

    runs = _load_runs(args.runs)
    if runs is None:
        return 1
    path = plot_curves(runs, args.out, args.column, args.smooth)
    print(f"wrote {path} from {len(runs)} runs")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from trpl_math.rl.analysis import format_table, table_rows

    return _report(
        args,
        lambda runs: format_table(
            table_rows(runs, args.column, args.window, args.planned_steps, args.ci), args.format
        ),
    )


def cmd_diagnostics(args: argparse.Namespace) -> int:
    from trpl_math.rl.analysis import diagnostics_rows, format_diagnostics

    return _report(args, lambda runs: format_diagnostics(diagnostics_rows(runs)))


def cmd_grid(args: argparse.Namespace) -> int:
    from trpl_math.rl.config import parse_overrides
    from trpl_math.rl.grid import make_jobs, run_grid

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    deadline = None
    if args.deadline:
        deadline = dt.datetime.fromisoformat(args.deadline)
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=dt.UTC)
        deadline = deadline.timestamp()
    jobs = make_jobs(
        args.out, args.envs, args.methods, args.seeds, parse_overrides(_overrides(args))
    )
    print(f"{len(jobs)} jobs, {args.workers} workers -> {args.out}", flush=True)
    status = run_grid(
        jobs,
        args.workers,
        args.slice,
        deadline,
        log=lambda s: print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {s}", flush=True),
    )
    bad = [f for f, s in status.items() if s != "ok"]
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``trpl`` argument parser."""
    parser = argparse.ArgumentParser(prog="trpl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one agent")
    p.add_argument("--env", help="Gymnasium id, e.g. Hopper-v5 or ReacherSparse-v0")
    p.add_argument(
        "--method",
        type=_method_arg,
        help=f"one of {', '.join(METHODS)}; append _e for entropy control (kl_e)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="train these seeds in one process (stacked networks), into OUT/seed_<k> each "
        "(default OUT: runs/<env>/<method>); replaces --seed",
    )
    p.add_argument("--out", help="run folder (default runs/<env>/<method>/seed_<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the folder's checkpoint")
    p.add_argument("--max-iterations", type=int, help="stop after this many iterations in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true", help="CSV logs only")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="deterministic episodes of a saved agent")
    p.add_argument("checkpoint", help="agent.pt or checkpoints/latest.pt")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed-stream", type=int, default=99, help="evaluation seed stream")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="mean +- 95%% CI learning curves over seeds")
    p.add_argument("runs", nargs="+", help="folders containing run folders")
    p.add_argument("--out", default="curves.png")
    p.add_argument("--column", default="eval_return")
    p.add_argument("--smooth", type=int, default=1, help="moving average over this many iterations")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("table", help="Table 1 format: 20%% and final windows, mean +- 95%% CI")
    p.add_argument("runs", nargs="+")
    p.add_argument("--column", default="eval_return")
    p.add_argument("--window", type=int, default=20, help="epochs per window")
    p.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    p.add_argument(
        "--planned-steps",
        type=int,
        help="place the 20%% window at 20%% of this budget (runs stopped early)",
    )
    p.add_argument(
        "--ci",
        choices=["epochs", "seeds"],
        default="epochs",
        help="interval over all (seed, epoch) values (Table 1) or over the seeds' window means",
    )
    p.add_argument("--out", help="also write the table here")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser(
        "diagnostics", help="trust-region behaviour per method: KL, constraint parts, entropy"
    )
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", help="also write the table here")
    p.set_defaults(func=cmd_diagnostics)

    p = sub.add_parser("grid", help="seeds x methods x tasks in parallel processes")
    p.add_argument("--envs", nargs="+", default=["Hopper-v5"])
    p.add_argument("--methods", nargs="+", type=_method_arg, default=["kl", "w2", "frob", "ppo"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="runs/grid")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--slice", type=int, help="iterations per job per round (round-robin)")
    p.add_argument(
        "--deadline", help="ISO time (UTC if no zone) at which running jobs stop (resumable)"
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_grid)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trpl`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "config", None) and args.command == "grid":
        print("--config is not supported by grid (use --set)", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
