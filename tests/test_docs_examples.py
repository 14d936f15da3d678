"""Every ```python block of the README and of the core's docs pages runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    "README.md",
    "docs/divergences.md",
    "docs/projections.md",
    "docs/entropy.md",
    "docs/torch_layer.md",
]


def _blocks(page: str) -> list[tuple[str, str]]:
    path = ROOT / page
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [(f"{page}#{i}", code) for i, code in enumerate(found)]


CASES = [case for page in PAGES for case in _blocks(page)]


def test_pages_have_examples() -> None:
    assert len(_blocks("README.md")) >= 4


@pytest.mark.parametrize(("name", "code"), CASES, ids=[name for name, _ in CASES])
def test_example_runs(name: str, code: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": "__docs__"})


def test_torch_layer_ppo_example_holds_its_bounds() -> None:
    """docs/torch_layer.md's PPO loop: the projected policy within both bounds at every
    iteration, the std parameter set from the projection, and the task learned."""
    import torch

    (code,) = [c for _, c in _blocks("docs/torch_layer.md") if "history.append" in c]
    ns: dict = {"__name__": "__docs__"}
    exec(compile(code, "docs/torch_layer.md#ppo", "exec"), ns)
    layer, history = ns["layer"], ns["history"]
    assert len(history) == ns["iterations"] == 20
    for mean_part, cov_part in history:
        assert mean_part <= layer.eps_mean * (1 + 1e-9)
        assert cov_part <= layer.eps_cov * (1 + 1e-9)
    assert max(m for m, _ in history) > 0.5 * layer.eps_mean  # the bound was active
    # the re-projection: the std that acts next is within the covariance bound of the last old
    assert ns["log_std"].shape == (ns["act_dim"],)
    with torch.no_grad():
        var = (2 * ns["log_std"]).exp()
        old = ns["old"]
        kl_cov = layer.divergence(old.mean, var, old.mean, old.cov).cov
    assert float(kl_cov.max()) <= layer.eps_cov * (1 + 1e-9)
    assert ns["returns"][-1] > 0.5 * ns["returns"][0]  # rewards are negative: it learned


def test_regression_unbatched_torch_kl_joint() -> None:
    """A single state without batch dimensions: the host Newton solve returns a NumPy scalar."""
    import torch

    import trpl_math as tm

    for diag in (True, False):
        cov = torch.full((2,), 2.0, dtype=torch.float64) if diag else 2.0 * torch.eye(2).double()
        old = torch.ones(2, dtype=torch.float64) if diag else torch.eye(2).double()
        p = tm.kl_joint_projection(
            torch.ones(2).double(), cov, torch.zeros(2).double(), old, eps=0.1, diag=diag
        )
        kl = tm.kl_divergence(*p, torch.zeros(2).double(), old, diag=diag).total
        assert p.cov.shape == cov.shape and abs(float(kl) / 0.1 - 1) < 1e-10
