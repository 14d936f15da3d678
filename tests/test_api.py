"""The public API: ``trpl_math.__all__`` matches the contract, every public name is documented
with an example, and the doctests of the core modules pass."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import trpl_math
import trpl_math.torch

#: The public names the docs promise, plus ``wasserstein_commuting_cov_part`` (the covariance
#: part that ``wasserstein_projection(exact=False)`` bounds, exported so that it can be measured).
CONTRACT = {
    "kl_divergence",
    "wasserstein_distance",
    "frobenius_distance",
    "entropy",
    "frobenius_projection",
    "wasserstein_projection",
    "kl_projection",
    "kl_joint_projection",
    "entropy_projection",
    "entropy_schedule",
    "Gaussian",
    "DivergenceParts",
    "no_validation",
}
EXTRA = {"wasserstein_commuting_cov_part"}
TORCH_CONTRACT = {"TrustRegionLayer", "EntropySchedule"}

CORE_MODULES = [
    "trpl_math._backend",
    "trpl_math.divergences",
    "trpl_math.projections.frobenius",
    "trpl_math.projections.wasserstein",
    "trpl_math.projections.kl",
    "trpl_math.projections.kl_joint",
    "trpl_math.projections.entropy",
    "trpl_math.torch.layer",
]

DOCUMENTED = [("trpl_math", n) for n in sorted(CONTRACT | EXTRA)] + [
    ("trpl_math.torch", n) for n in sorted(TORCH_CONTRACT)
]


class TestAll:
    def test_matches_contract(self) -> None:
        assert set(trpl_math.__all__) == CONTRACT | EXTRA
        assert len(trpl_math.__all__) == len(set(trpl_math.__all__))

    def test_every_name_importable(self) -> None:
        for name in trpl_math.__all__:
            assert getattr(trpl_math, name) is not None

    def test_torch_names(self) -> None:
        assert TORCH_CONTRACT <= set(trpl_math.torch.__all__)
        for name in trpl_math.torch.__all__:
            assert hasattr(trpl_math.torch, name)

    def test_core_does_not_import_rl(self) -> None:
        """The RL loop imports the core, never the other way round (STYLE.md)."""
        for mod in CORE_MODULES:
            src = inspect.getsource(importlib.import_module(mod))
            assert "trpl_math.rl" not in src, mod


class TestSignatures:
    """Only the arrays are positional; every bound and option is keyword-only (a swapped
    ``eps_mean``/``eps_cov`` or an ``entropy_bound`` read as ``diag`` cannot happen silently)."""

    ARRAYS = ("mean", "cov", "old_mean", "old_cov")
    FUNCTIONS = sorted(
        CONTRACT - {"Gaussian", "DivergenceParts", "no_validation", "entropy_schedule"}
    )

    @pytest.mark.parametrize("name", FUNCTIONS)
    def test_only_arrays_positional(self, name: str) -> None:
        params = inspect.signature(getattr(trpl_math, name)).parameters.values()
        positional = [p.name for p in params if p.kind is not p.KEYWORD_ONLY]
        assert positional and all(n in self.ARRAYS for n in positional), positional
        bounds = [p for p in params if p.name.startswith("eps") or p.name == "entropy_bound"]
        assert all(p.kind is p.KEYWORD_ONLY for p in bounds)

    def test_entropy_bound_positional_refused(self) -> None:
        import numpy as np

        with pytest.raises(TypeError):
            trpl_math.entropy_projection(np.eye(2), 1.0)  # type: ignore[misc]


class TestDocstrings:
    @pytest.mark.parametrize("where", DOCUMENTED, ids=lambda w: f"{w[0]}.{w[1]}")
    def test_has_docstring_with_example(self, where: tuple[str, str]) -> None:
        obj = getattr(importlib.import_module(where[0]), where[1])
        doc = inspect.getdoc(obj) or ""
        assert len(doc.splitlines()[0] if doc else "") > 10, "missing one-line summary"
        assert "Example" in doc and ">>>" in doc


class TestDoctests:
    @pytest.mark.parametrize("module", CORE_MODULES)
    def test_module_doctests_pass(self, module: str) -> None:
        mod = importlib.import_module(module)
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0
        assert result.attempted > 0, f"{module} has no doctest"
