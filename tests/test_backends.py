"""The back-end boundary (docs/backends.md): the core never imports the torch layer, NumPy users
never import torch, and a namespace without a back end raises instead of taking NumPy's path."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import array_api_strict
import numpy as np
import pytest

import trpl_math as tm
from trpl_math import _backend as B
from trpl_math import _backends

ROOT = pathlib.Path(tm.__file__).parent
#: The core: every module of the package outside the torch layer, the RL loop and the back ends.
CORE = sorted(
    p
    for p in ROOT.rglob("*.py")
    if not {"torch", "rl", "_backends"} & set(p.relative_to(ROOT).parts[:-1])
)


def _imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """Every module an ``import`` or ``from ... import`` of ``path`` names, with its depth in
    the tree (0: module level; function-level and ``TYPE_CHECKING`` imports count too)."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.col_offset) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [(node.module, node.col_offset)]
            out += [(f"{node.module}.{a.name}", node.col_offset) for a in node.names]
    return out


class TestCoreImports:
    def test_core_is_found(self) -> None:
        names = {p.name for p in CORE}
        assert {"_backend.py", "divergences.py", "kl.py", "kl_joint.py", "_checks.py"} <= names

    @pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
    def test_core_does_not_import_the_torch_layer(self, path: pathlib.Path) -> None:
        """The glue imports the core, never the reverse (STYLE.md)."""
        for name, _ in _imports(path):
            assert not name.startswith("trpl_math.torch"), (path, name)
            assert not name.startswith("trpl_math._backends."), (path, name)  # only via get()

    @pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
    def test_core_does_not_import_torch_at_module_level(self, path: pathlib.Path) -> None:
        for name, col in _imports(path):
            assert not (name.split(".")[0] == "torch" and col == 0), (path, name)

    @pytest.mark.parametrize("name", ["numpy", "torch"])
    def test_back_ends_import_no_layer(self, name: str) -> None:
        for mod, _ in _imports(ROOT / "_backends" / f"{name}.py"):
            assert not mod.startswith(("trpl_math.torch", "trpl_math.rl")), mod


def test_numpy_functions_import_no_torch() -> None:
    """``import trpl_math`` and every NumPy projection leave torch unimported."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import trpl_math as tm
        rng = np.random.default_rng(0)
        m, om = rng.normal(size=(4, 3)), np.zeros((4, 3))
        a = rng.normal(size=(4, 3, 3))
        c, oc = a @ a.transpose(0, 2, 1) + np.eye(3), np.broadcast_to(np.eye(3), (4, 3, 3))
        tm.kl_projection(m, c, om, oc, eps_mean=0.01, eps_cov=0.01)
        tm.kl_projection(m, np.ones((4, 3)) * 3, om, np.ones((4, 3)), eps_mean=0.01,
                         eps_cov=0.01, diag=True)
        tm.kl_joint_projection(m, c, om, oc, eps=0.01)
        tm.wasserstein_projection(m, c, om, oc, eps_mean=0.01, eps_cov=0.01, exact=True)
        tm.frobenius_projection(m, c, om, oc, eps_mean=0.01, eps_cov=0.01)
        tm.entropy_projection(c, entropy_bound=0.5)
        tm.kl_divergence(m, c, om, oc); tm.wasserstein_distance(m, c, om, oc)
        assert "torch" not in sys.modules, sorted(k for k in sys.modules if "torch" in k)
        print("ok")
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=300
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


class TestUnknownNamespace:
    def test_dispatch_names_the_namespace(self) -> None:
        with pytest.raises(NotImplementedError, match="array_api_strict"):
            _backends.get(array_api_strict)

    def test_made_up_namespace(self) -> None:
        class Fake:
            __name__ = "made_up_arrays"

        with pytest.raises(NotImplementedError, match="made_up_arrays"):
            _backends.get(Fake())

    def test_strict_arrays_raise_instead_of_taking_numpy(self) -> None:
        x = array_api_strict
        m, c = x.asarray([[1.0, 0.0]]), x.asarray([[[2.0, 0.0], [0.0, 1.0]]])
        om, oc = x.asarray([[0.0, 0.0]]), x.asarray([[[1.0, 0.0], [0.0, 1.0]]])
        with pytest.raises(NotImplementedError, match="array_api_strict"):
            tm.kl_projection(m, c, om, oc, eps_mean=0.01, eps_cov=0.01)
        with pytest.raises(NotImplementedError, match="array_api_strict"):
            tm.kl_divergence(m, c, om, oc)

    def test_numpy_and_torch_dispatch(self) -> None:
        import array_api_compat

        assert _backends.get(array_api_compat.array_namespace(np.ones(1))).autograd is False


class TestWhileLoop:
    """``_backend.while_loop``: a Python loop on eager back ends, ``lax.while_loop`` when
    traced (its body traced once, not unrolled)."""

    def test_eager_runs_the_body_until_cond_fails(self) -> None:
        calls = []

        def body(state):
            calls.append(state[0])
            return state[0] + 1, state[1] * 2.0

        out = B.while_loop(lambda st: st[0] < 5, body, (0, np.ones(2)), np)
        assert out[0] == 5 and np.array_equal(out[1], np.full(2, 32.0)) and calls == [0, 1, 2, 3, 4]

    def test_under_jit_the_body_is_traced_once_and_stops_early(self) -> None:
        jax = pytest.importorskip("jax")
        jnp = jax.numpy
        traces = []

        def run(x):
            def body(state):
                traces.append(1)
                return state[0] + 1, state[1] * 0.5

            return B.while_loop(lambda st: (st[0] < 60) & jnp.any(st[1] > 1.0), body, (0, x), jnp)

        i, x = jax.jit(run)(jnp.asarray([8.0, 2.0]))
        assert int(i) == 3 and np.array_equal(np.asarray(x), [1.0, 0.25])
        assert len(traces) == 1


class TestSelect:
    """``_backend.select``: ``where`` without the select where every state is taken."""

    def test_all_true_returns_the_first_operand_itself_with_its_gradient(self) -> None:
        import torch

        a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        xp = B.namespace(a)
        assert B.select(torch.ones(4, 1, dtype=torch.bool), a, b, xp) is a
        mixed = torch.tensor([[True], [False], [True], [True]])
        out = B.select(mixed, a, b, xp)
        assert torch.equal(out, torch.where(mixed, a, b))
        out.sum().backward()
        assert torch.equal(b.grad, (~mixed).double().expand(4, 3))

    def test_shapes_that_broadcast_still_select(self) -> None:
        a, b = np.ones((2, 3)), np.zeros(3)
        out = B.select(np.ones((2, 1), dtype=bool), a, b, np)
        assert out is not a and out.shape == (2, 3)

    def test_under_jit_it_selects(self) -> None:
        jax = pytest.importorskip("jax")
        jnp = jax.numpy
        f = jax.jit(lambda c, a, b: B.select(c, a, b, jnp))
        out = f(jnp.array([True, False]), jnp.ones(2), jnp.zeros(2))
        assert np.array_equal(np.asarray(out), [1.0, 0.0])

    def test_a_namespace_without_a_back_end(self) -> None:
        xps = pytest.importorskip("array_api_strict")
        a, b = xps.asarray([1.0, 2.0]), xps.asarray([3.0, 4.0])
        assert B.select(xps.asarray([True, True]), a, b, xps) is a
        out = B.select(xps.asarray([True, False]), a, b, xps)
        assert [float(v) for v in out] == [1.0, 4.0]
