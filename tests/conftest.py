"""Shared fixtures: the ``xp`` back-end fixture (NumPy, torch, JAX) for the core's unit tests, and
``xp_std`` (the same plus ``array_api_strict``) for the functions that use standard operations
only (docs/backends.md, "Which functions need a back end")."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import array_api_compat.numpy as np_xp
import array_api_compat.torch as torch_xp
import pytest
import torch

torch.set_num_threads(1)  # the test machine is shared; tiny problems gain nothing from threads

#: JAX is an optional extra: without it the suite runs on NumPy and torch. It is imported only
#: when a test asks for it (an import costs seconds and starts XLA's thread pools).
BACKENDS = ["numpy", "torch"] + (["jax"] if importlib.util.find_spec("jax") else [])


def _jax_xp() -> ModuleType:
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 as on the other back ends
    import jax.numpy as jnp

    return jnp


@pytest.fixture(params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> ModuleType:
    """The array namespace under test: ``array_api_compat.numpy``, ``array_api_compat.torch``
    or ``jax.numpy`` (with x64 enabled).

    Build inputs with ``xp.asarray(values, dtype=xp.float64)``; compare results with
    :func:`_helpers.assert_close`, which also checks that the namespace is ``xp``.
    """
    if request.param == "jax":
        return _jax_xp()
    return {"numpy": np_xp, "torch": torch_xp}[request.param]


#: ``xp_std``: the back ends plus ``array_api_strict``, a namespace with nothing beyond the array
#: API standard (and no back end in ``trpl_math._backends``).
STD_NAMESPACES = [*BACKENDS, "array_api_strict"]


@pytest.fixture(params=STD_NAMESPACES)
def xp_std(request: pytest.FixtureRequest) -> ModuleType:
    """The ``xp`` namespaces plus ``array_api_strict``: for the tests of the functions documented
    to run on any array-API-standard namespace (``tests/test_backend_strict.py``)."""
    if request.param == "array_api_strict":
        import array_api_strict

        return array_api_strict
    if request.param == "jax":
        return _jax_xp()
    return {"numpy": np_xp, "torch": torch_xp}[request.param]
