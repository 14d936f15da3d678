"""Command line: ``trpl train|evaluate|plot|table|diagnostics|grid``; ``python -m trpl_math.rl``.

User errors (a bad option or config value, an unknown task, a run folder that is taken, a
corrupted checkpoint, a missing file) end with one message on stderr and exit code 2; the
global ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from trpl_math.rl.config import METHODS, split_method

#: Exit code of a user error (as argparse uses for a bad option).
USAGE_ERROR = 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` for options that have a default value (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``trpl train: error: ...``."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {n}")
    return n


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
    p.add_argument(
        "--steps",
        type=_positive_int,
        help="total environment steps (default: the config's total_steps, 1,000,000 in the "
        "shipped MuJoCo configs)",
    )


def _method_arg(value: str) -> str:
    try:
        split_method(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items plus ``--steps``, each checked: unknown keys and bad values are named."""
    from trpl_math.rl.config import TrainConfig, coerce_field, parse_overrides

    ov = list(args.overrides)
    if getattr(args, "steps", None) is not None:
        ov.append(f"total_steps={args.steps}")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key, value in parse_overrides(ov).items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"--set {key}={value}: unknown config key{hint}")
        try:
            coerce_field(key, value)
        except ValueError as exc:
            raise ValueError(f"--set {key}={value}: {exc}") from exc
    return ov


def _deadline(text: str | None) -> float | None:
    """UNIX time of an ISO date-time (UTC without a zone), or None."""
    if not text:
        return None
    try:
        deadline = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--deadline: not an ISO date-time: {text!r}") from None
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=dt.UTC)
    return deadline.timestamp()


def cmd_train(args: argparse.Namespace) -> int:
    from trpl_math.rl.config import load_config
    from trpl_math.rl.run import train

    method = args.method
    overrides = [*_overrides(args), f"seed={0 if args.seed is None else args.seed}"]
    if method:
        method, entropy = split_method(method)
        if entropy:
            overrides.append("entropy_control=true")
    cfg = load_config(args.config, method=method, env_id=args.env, overrides=overrides)
    options = {  # the same for one seed and for several
        "resume": args.resume,
        "overwrite": args.overwrite,
        "compare": _requested_fields(args),
        "progress": not args.no_progress,
        "max_iterations": args.max_iterations,
        "deadline": _deadline(args.deadline),
        "tensorboard": not args.no_tensorboard,
    }
    if args.seeds:  # several seeds in one process: OUT/seed_<k> each
        from trpl_math.rl.multiseed import train_seeds

        if args.seed is not None:
            raise ValueError("--seeds replaces --seed: give one of them")

        out = args.out or f"runs/{cfg.env_id}/{args.method or cfg.method}"
        folders = train_seeds(cfg, args.seeds, out, **options)
        print("run folders: " + " ".join(str(f) for f in folders))
        return 0
    out = args.out or f"runs/{cfg.env_id}/{args.method or cfg.method}/seed_{cfg.seed}"
    folder = train(cfg, out, **options)
    print(f"run folder: {folder}")
    return 0


def _requested_fields(args: argparse.Namespace) -> list[str] | None:
    """The config fields this command line asks for (a resume must match them); None: all
    (``--config`` gives a whole config)."""
    from trpl_math.rl.config import parse_overrides

    if args.config:
        return None
    keys = list(parse_overrides(_overrides(args)))
    if args.method:
        keys += ["method", "entropy_control"]
    if args.env:
        keys.append("env_id")
    if args.seed is not None:
        keys.append("seed")
    return list(dict.fromkeys(keys))


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from trpl_math.rl.run import load_trainer

    trainer = load_trainer(args.path)
    returns = trainer.evaluate(args.episodes, seed_stream=args.seed_stream)
    trainer.close()
    print(
        f"{trainer.cfg.method} on {trainer.cfg.env_id}, iteration {trainer.iteration} "
        f"({trainer.global_step} steps): {args.episodes} deterministic episodes"
    )
    print("returns: " + " ".join(f"{r:.1f}" for r in returns))
    print(f"mean {np.mean(returns):.1f} +- {np.std(returns):.1f} (std)")
    return 0


def _load_runs(paths: list[str], by_folder: bool = False) -> list | None:
    """The run folders under ``paths``, or None (said on stderr) when there are none."""
    import errno

    from trpl_math.rl.analysis import load_runs

    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
    runs = load_runs(paths, by_root=by_folder)
    if not runs:
        print("no runs found", file=sys.stderr)
        return None
    return runs


def _report(args: argparse.Namespace, render: Callable[[list], str]) -> int:
    """Print ``render(runs)`` for the runs under ``args.runs``; also write it to ``args.out``."""
    runs = _load_runs(args.runs, args.by_folder)
    if runs is None:
        return 1
    text = render(runs)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from trpl_math.rl.analysis import plot_curves

    runs = _load_runs(args.runs, args.by_folder)
    if runs is None:
        return 1
    path = plot_curves(runs, args.out, args.column, args.smooth)
    print(f"wrote {path} from {len(runs)} runs")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from trpl_math.rl.analysis import format_table, table_rows

    def render(runs: list) -> str:
        rows = table_rows(runs, args.column, args.window, args.planned_steps, args.ci)
        for row in rows:
            for note in row["warnings"]:
                print(f"trpl table: warning: {note}", file=sys.stderr)
        return format_table(rows, args.format)

    return _report(args, render)


def cmd_diagnostics(args: argparse.Namespace) -> int:
    from trpl_math.rl.analysis import diagnostics_rows, format_diagnostics

    return _report(args, lambda runs: format_diagnostics(diagnostics_rows(runs)))


def cmd_grid(args: argparse.Namespace) -> int:
    from trpl_math.rl.config import parse_overrides
    from trpl_math.rl.grid import make_jobs, run_grid

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    deadline = _deadline(args.deadline)
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
        backend=args.backend,
        address=args.address,
        cpus_per_job=args.cpus_per_job,
        setup=args.setup,
    )
    bad = [f for f, s in status.items() if s != "ok"]
    return 1 if bad else 0


def _debug_arg(p: argparse.ArgumentParser, default: object = False) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of an error instead of a one-line message",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``trpl`` argument parser."""
    parser = _Parser(prog="trpl", description=__doc__, formatter_class=_HelpFormatter)
    _debug_arg(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help, description=help.replace("%%", "%"), formatter_class=_HelpFormatter
        )
        _debug_arg(p, argparse.SUPPRESS)  # also accepted after the command
        return p

    p = add("train", "train one agent")
    p.add_argument(
        "--env", help="Gymnasium id, e.g. Hopper-v5 or ReacherSparse-v0 (default: Hopper-v5)"
    )
    p.add_argument(
        "--method",
        type=_method_arg,
        help=f"one of {', '.join(METHODS)}; append _e for entropy control (kl_e) (default: kl)",
    )
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--out", help="run folder (default: runs/<env>/<method>/seed_<seed>)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint; the settings given here must "
        "match the saved config.yaml",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run in --out (logs, TensorBoard files, checkpoints, agent) first",
    )
    p.add_argument(
        "--max-iterations",
        type=_positive_int,
        help="stop after this many iterations in total (checkpoint and agent.pt written)",
    )
    p.add_argument(
        "--deadline",
        help="ISO time (UTC if no zone) after which no new iteration starts (resumable)",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        help="train these seeds in one process (stacked networks), into OUT/seed_<k> each "
        "(default OUT: runs/<env>/<method>); replaces --seed",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true", help="CSV logs only")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = add("evaluate", "deterministic episodes of a saved agent")
    p.add_argument(
        "path", help="a run folder (its agent.pt, else checkpoints/latest.pt) or a .pt file"
    )
    p.add_argument("--episodes", type=_positive_int, default=10, help="episodes to run")
    p.add_argument("--seed-stream", type=int, default=99, help="evaluation seed stream")
    p.set_defaults(func=cmd_evaluate)

    p = add("plot", "mean +- 95%% CI learning curves over seeds")
    p.add_argument("runs", nargs="+", help="folders containing run folders")
    p.add_argument(
        "--by-folder",
        action="store_true",
        help="one group per folder given, labelled by its name (e.g. variants of one method), "
        "instead of one group per method",
    )
    p.add_argument("--out", default="curves.png", help="image file to write")
    p.add_argument("--column", default="eval_return", help="progress.csv column")
    p.add_argument(
        "--smooth", type=_positive_int, default=1, help="moving average over this many iterations"
    )
    p.set_defaults(func=cmd_plot)

    p = add("table", "Table 1 format: 20%% and final windows, mean +- 95%% CI")
    p.add_argument("runs", nargs="+", help="folders containing run folders")
    p.add_argument(
        "--by-folder",
        action="store_true",
        help="one group per folder given, labelled by its name (e.g. variants of one method), "
        "instead of one group per method",
    )
    p.add_argument("--column", default="eval_return", help="progress.csv column")
    p.add_argument("--window", type=_positive_int, default=20, help="epochs per window")
    p.add_argument("--format", choices=["markdown", "csv"], default="markdown", help="output")
    p.add_argument(
        "--planned-steps",
        type=_positive_int,
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

    p = add("diagnostics", "trust-region behaviour per method: KL, constraint parts, entropy")
    p.add_argument("runs", nargs="+", help="folders containing run folders")
    p.add_argument(
        "--by-folder",
        action="store_true",
        help="one group per folder given, labelled by its name (e.g. variants of one method), "
        "instead of one group per method",
    )
    p.add_argument("--out", help="also write the table here")
    p.set_defaults(func=cmd_diagnostics)

    p = add("grid", "seeds x methods x tasks in parallel processes")
    p.add_argument("--envs", nargs="+", default=["Hopper-v5"], help="Gymnasium ids")
    p.add_argument(
        "--methods",
        nargs="+",
        type=_method_arg,
        default=["kl", "w2", "frob", "ppo"],
        help="methods (as for train)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="random seeds")
    p.add_argument("--out", default="runs/grid", help="root of the run folders")
    p.add_argument("--workers", type=_positive_int, default=2, help="parallel processes")
    p.add_argument("--slice", type=_positive_int, help="iterations per job per round (round-robin)")
    p.add_argument(
        "--deadline", help="ISO time (UTC if no zone) at which running jobs stop (resumable)"
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: --workers processes here; ray: one Ray task per job (needs the cluster "
        "extra; with no --address a local Ray instance of --workers CPUs)",
    )
    p.add_argument(
        "--address",
        help="ray: the cluster to join (auto: the one `ray start` made on this node; HOST:PORT)",
    )
    p.add_argument(
        "--cpus-per-job",
        type=float,
        help="ray: CPUs each job asks for (default: its torch_threads, 1)",
    )
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="MODULE[:FUNC]",
        help="import MODULE (and call FUNC) in every job's process first, e.g. to register a "
        "custom task (repeatable)",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_grid)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: reported in one line, exit code 2."""
    import gymnasium
    import yaml

    from trpl_math.rl.run import RunError

    return (RunError, ValueError, OSError, yaml.YAMLError, gymnasium.error.Error)


def _message(exc: BaseException) -> str:
    from trpl_math.rl.run import RunError

    if isinstance(exc, RunError):  # written for the user (a resume lists its differences)
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trpl`` console script."""
    args = build_parser().parse_args(argv)
    prog = f"trpl {args.command}"
    if getattr(args, "config", None) and args.command == "grid":
        print(f"{prog}: error: --config is not supported by grid (use --set)", file=sys.stderr)
        return USAGE_ERROR
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        hint = ""
        if args.command == "train":
            hint = (
                " (agent.pt holds the last completed iteration; --resume continues from the "
                "last checkpoint)"
            )
        print(f"{prog}: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or not isinstance(exc, _user_errors()):
            raise
        print(f"{prog}: error: {_message(exc)}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
