"""Hash the policy and value parameters after a few Hopper iterations: a bitwise check that a
change leaves training unchanged (run before and after, compare the printed lines).

    OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell python benchmarks/hash_training.py [--iterations 2]

OPENBLAS_CORETYPE pins the kernels of NumPy's OpenBLAS (the rollout's NumPy actor multiplies by
them): without it OpenBLAS picks its kernels by CPU, and on a machine with AVX-512 four of the five
hashes differ from those in the commit messages, which the Haswell kernels reproduce (as they
reproduce the committed ablation logs of docs/results/). The first line printed says which
kernels were used.

Cases: kl (diagonal; contextual), ppo, w2 with a full covariance, frob with regression steps.
Each line: method, overrides, the first 16 hex digits of the SHA-256 over every parameter's
bytes, the last iteration's evaluation return.
"""

from __future__ import annotations

import argparse
import hashlib
import os

from _cli import positive

from trpl_math.rl.config import load_config
from trpl_math.rl.trainer import Trainer

CASES = [
    ("kl", {}),
    ("kl", {"contextual_cov": "true"}),
    ("ppo", {}),
    ("w2", {"diag": "false"}),
    ("frob", {"regression_steps": "1"}),
]


def run(method: str, overrides: dict[str, str], iterations: int) -> tuple[str, float]:
    cfg = load_config(
        method=method, env_id="Hopper-v5", overrides={"eval_episodes": 1, **overrides}
    )
    trainer = Trainer(cfg)
    rows = [trainer.iterate() for _ in range(iterations)]
    h = hashlib.sha256()
    for module in (trainer.policy, trainer.vf):
        for name, value in module.state_dict().items():
            h.update(name.encode())
            h.update(value.detach().cpu().numpy().tobytes())
    trainer.close()
    return h.hexdigest()[:16], rows[-1]["eval_return"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=positive, default=2)
    args = p.parse_args()
    print("# OPENBLAS_CORETYPE =", os.environ.get("OPENBLAS_CORETYPE", "unset (chosen by CPU)"))
    for method, overrides in CASES:
        digest, ret = run(method, overrides, args.iterations)
        print(method, overrides, digest, ret, flush=True)


if __name__ == "__main__":
    main()
