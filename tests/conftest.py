"""Shared fixtures: the ``xp`` back-end fixture (NumPy and torch) for the core's unit tests."""

from __future__ import annotations

from types import ModuleType

import array_api_compat.numpy as np_xp
import array_api_compat.torch as torch_xp
import pytest
import torch

torch.set_num_threads(1)  # the test machine is shared; tiny problems gain nothing from threads


@pytest.fixture(params=["numpy", "torch"])
def xp(request: pytest.FixtureRequest) -> ModuleType:
    """The array namespace under test: ``array_api_compat.numpy`` or ``array_api_compat.torch``.

    Build inputs with ``xp.asarray(values, dtype=xp.float64)``; compare results with
    :func:`_helpers.assert_close`, which also checks that the namespace is ``xp``.
    """
    return np_xp if request.param == "numpy" else torch_xp
