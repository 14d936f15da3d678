"""Shared fixtures: the ``xp`` back-end fixture (NumPy, torch, JAX) for the core's unit tests."""

from __future__ import annotations

from types import ModuleType

import array_api_compat.numpy as np_xp
import array_api_compat.torch as torch_xp
import pytest
import torch

torch.set_num_threads(1)  # the test machine is shared; tiny problems gain nothing from threads

try:  # JAX is an optional extra: without it the suite runs on NumPy and torch
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 as on the other back ends
    import jax.numpy as jax_xp

    BACKENDS = ["numpy", "torch", "jax"]
except ImportError:  # pragma: no cover
    jax_xp = None
    BACKENDS = ["numpy", "torch"]


@pytest.fixture(params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> ModuleType:
    """The array namespace under test: ``array_api_compat.numpy``, ``array_api_compat.torch``
    or ``jax.numpy`` (with x64 enabled).

    Build inputs with ``xp.asarray(values, dtype=xp.float64)``; compare results with
    :func:`_helpers.assert_close`, which also checks that the namespace is ``xp``.
    """
    return {"numpy": np_xp, "torch": torch_xp, "jax": jax_xp}[request.param]
