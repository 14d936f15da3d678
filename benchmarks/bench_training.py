"""End-to-end training throughput on Hopper-v5 with the paper's settings (Table 2), one thread.

For each method (default kl, w2, frob, ppo) build the trainer from the shipped mujoco config,
run a warm-up iteration, then ``--iterations`` timed iterations (rollout + GAE + policy epochs +
value epochs + diagnostics; the per-iteration deterministic evaluation is switched off here and
timed separately), and print env steps/s and the time per phase. If stable-baselines3 is
importable, time its PPO with the same rollout/epoch/minibatch settings (2048 steps, 10 epochs,
minibatches of 64, 64-64 tanh, VecNormalize for observations and rewards) and print our time
per iteration as a ratio to it.

    OMP_NUM_THREADS=1 python benchmarks/bench_training.py --iterations 10

``--seeds-in-process 1 2 4 8`` instead times S seeds trained in one process
(:class:`trpl_math.rl.multiseed.MultiSeedTrainer`) against one seed per process: for each
method, the single-seed Trainer and a stack of every S are built, warmed up, and then iterated
in turn (round-robin, the order reversed every other round, so that the load of the
machine falls on all of them alike); it prints the
aggregate env steps per CPU second, the ratio to the single-seed Trainer's (S separate runs of
one thread each do S times its steps in S times its CPU time) and the CPU seconds of each phase.

    OMP_NUM_THREADS=1 python benchmarks/bench_training.py --seeds-in-process 1 2 4 8 --iterations 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import torch
from _cli import positive

from trpl_math.rl.config import load_config
from trpl_math.rl.trainer import Trainer

PHASES = ("rollout", "gae", "policy", "value", "diagnostics")


def bench_ours(method: str, iterations: int, env_id: str) -> dict[str, float]:
    """Mean seconds per iteration (total and per phase) and steps/s of our trainer."""
    cfg = load_config(
        method=method, env_id=env_id, overrides={"eval_episodes": 0, "seed": 0, "torch_threads": 1}
    )
    trainer = Trainer(cfg)
    trainer.iterate()  # warm-up
    rows, start, cpu_start = [], time.perf_counter(), time.process_time()
    for _ in range(iterations):
        rows.append(trainer.iterate())
    total = (time.perf_counter() - start) / iterations
    cpu = (time.process_time() - cpu_start) / iterations
    t0 = time.perf_counter()
    trainer.evaluate(5, seed_stream=12345)
    eval_time = time.perf_counter() - t0
    trainer.close()
    out = {f"time_{p}": float(np.mean([r[f"time_{p}"] for r in rows])) for p in PHASES}
    out.update(
        total=total,
        cpu=cpu,
        steps_per_s=cfg.rollout_steps / total,
        cpu_steps_per_s=cfg.rollout_steps / cpu,
        eval_5_episodes=eval_time,
    )
    return out


MS_PHASES = ("rollout", "update_policy", "update_value", "other")


def _timed(obj: object, name: str, acc: dict[str, float], key: str) -> None:
    """Wrap ``obj.name`` so that its CPU time is added to ``acc[key]``."""
    orig = getattr(obj, name)

    def wrapper(*args, **kwargs):
        t0 = time.process_time()
        try:
            return orig(*args, **kwargs)
        finally:
            acc[key] += time.process_time() - t0

    setattr(obj, name, wrapper)


def bench_seeds_in_process(
    method: str, sizes: list[int], iterations: int, env_id: str
) -> list[dict[str, float]]:
    """CPU seconds per iteration (total and per phase) of the single-seed Trainer (S = 0 in
    the result) and of a stack of each size, iterated round-robin after a warm-up."""
    from trpl_math.rl.multiseed import MultiSeedTrainer, seed_configs

    cfg = load_config(
        method=method, env_id=env_id, overrides={"eval_episodes": 0, "seed": 0, "torch_threads": 1}
    )
    runs: list[tuple[int, object, dict[str, float]]] = []
    for S in [0, *sizes]:
        acc = dict.fromkeys(("total", *MS_PHASES), 0.0)
        if S == 0:
            obj: object = Trainer(cfg)
            seeds = [obj]
            _timed(obj, "update_policy", acc, "update_policy")
            _timed(obj, "update_value", acc, "update_value")
        else:
            obj = MultiSeedTrainer(seed_configs(cfg, range(S)))
            seeds = obj.trainers  # type: ignore[attr-defined]
            _timed(obj, "update_policy", acc, "update_policy")
            _timed(obj, "update_value", acc, "update_value")
        for tr in seeds:
            _timed(tr, "collect", acc, "rollout")
        obj.iterate()  # type: ignore[attr-defined]  # warm-up
        for k in acc:
            acc[k] = 0.0
        runs.append((S, obj, acc))
    for i in range(iterations):
        for _, obj, acc in runs if i % 2 == 0 else runs[::-1]:  # ABBA: no favoured position
            t0 = time.process_time()
            obj.iterate()  # type: ignore[attr-defined]
            acc["total"] += time.process_time() - t0
    out = []
    for S, obj, acc in runs:
        acc["other"] = acc["total"] - sum(acc[p] for p in MS_PHASES[:-1])
        n = max(S, 1)
        row = {"S": S, **{k: v / iterations for k, v in acc.items()}}
        row["steps_per_cpu_s"] = n * cfg.rollout_steps / row["total"]
        out.append(row)
        obj.close()  # type: ignore[attr-defined]
    base = out[0]["steps_per_cpu_s"]
    for row in out:
        row["ratio"] = row["steps_per_cpu_s"] / base
    return out


def main_seeds_in_process(args: argparse.Namespace) -> None:
    """Print the table of :func:`bench_seeds_in_process` for every method."""
    print(
        f"# {args.env}, {args.iterations} iterations of 2048 steps per seed (after a warm-up), "
        f"1 thread, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"load avg {os.getloadavg()[0]:.2f}; CPU seconds per iteration of the whole stack"
    )
    header = (
        "method",
        "S",
        "steps/CPU-s (all seeds)",
        "x one seed per process",
        "CPU s/iter",
        "rollout",
        "policy update",
        "value update",
        "rest",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for m in args.methods:
        for r in bench_seeds_in_process(m, args.seeds_in_process, args.iterations, args.env):
            cells = [
                m,
                "Trainer" if r["S"] == 0 else str(r["S"]),
                f"{r['steps_per_cpu_s']:.0f}",
                f"{r['ratio']:.2f}",
                f"{r['total']:.2f}",
                f"{r['rollout']:.2f}",
                f"{r['update_policy']:.2f}",
                f"{r['update_value']:.2f}",
                f"{r['other']:.2f}",
            ]
            print("| " + " | ".join(cells) + " |", flush=True)


def bench_sb3(iterations: int, env_id: str) -> tuple[float, float] | None:
    """Wall and CPU seconds per 2048-step iteration of SB3's PPO, or None if SB3 is missing."""
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize
    except ImportError:
        return None
    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=0), clip_obs=10.0, clip_reward=10.0)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=2048,
        batch_size=64,
        n_epochs=10,
        learning_rate=3e-4,
        clip_range=0.2,
        clip_range_vf=0.2,
        max_grad_norm=0.5,
        gae_lambda=0.95,
        gamma=0.99,
        policy_kwargs={
            "net_arch": {"pi": [64, 64], "vf": [64, 64]},
            "activation_fn": torch.nn.Tanh,
        },
        device="cpu",
        seed=0,
        verbose=0,
    )
    model.learn(total_timesteps=2048)  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=2048 * iterations, reset_num_timesteps=False)
    wall = (time.perf_counter() - start) / iterations
    return wall, (time.process_time() - cpu_start) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=positive, default=10)
    parser.add_argument("--methods", nargs="+", default=["kl", "w2", "frob", "ppo"])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--no-sb3", action="store_true")
    parser.add_argument(
        "--seeds-in-process",
        nargs="+",
        type=positive,
        metavar="S",
        help="time S seeds in one process against the single-seed Trainer (no SB3 then)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.seeds_in_process:
        main_seeds_in_process(args)
        return
    print(
        f"# {args.env}, {args.iterations} iterations of 2048 steps, 1 thread, torch "
        f"{torch.__version__}, {platform.processor() or platform.machine()}, "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    header = (
        "method",
        "steps/s (CPU)",
        "steps/s (wall)",
        "CPU s/iter",
        *(f"{p}" for p in PHASES),
        "eval(5 ep)",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    results = {}
    for m in args.methods:
        r = bench_ours(m, args.iterations, args.env)
        results[m] = r
        cells = [
            m,
            f"{r['cpu_steps_per_s']:.0f}",
            f"{r['steps_per_s']:.0f}",
            f"{r['cpu']:.2f}",
            *(f"{r[f'time_{p}']:.3f}" for p in PHASES),
            f"{r['eval_5_episodes']:.2f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
    sb3 = None if args.no_sb3 else bench_sb3(args.iterations, args.env)
    if sb3 is None:
        print("\nstable-baselines3 not importable (or --no-sb3): no SB3 comparison")
        return
    wall, cpu = sb3
    print(
        f"\nSB3 PPO (same rollout/epochs/minibatch): {cpu:.2f} CPU s/iter = {2048 / cpu:.0f} "
        f"steps/s (wall {wall:.2f} s/iter = {2048 / wall:.0f} steps/s)"
    )
    for m, r in results.items():
        print(f"ours {m}: {r['cpu'] / cpu:.2f} x SB3's CPU time per iteration")


if __name__ == "__main__":
    main()
