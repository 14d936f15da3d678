"""Which public functions run on any array-API-standard namespace (docs/backends.md, "Which
functions need a back end"), tested with ``array_api_strict``, which offers nothing beyond the
standard and has no back end in ``trpl_math._backends``.

* ``STANDARD``: the functions (and options) that compute with standard operations only. On every
  namespace of the ``xp_std`` fixture (NumPy, torch, JAX, ``array_api_strict``) they return
  arrays of the input's namespace and dtype whose values equal NumPy's to 1e-12 relative.
* ``NEEDS_BACKEND``: every other (function, ``diag``): on ``array_api_strict`` it raises
  ``NotImplementedError`` naming the namespace, never a silent NumPy result nor an
  ``AttributeError`` from a missing non-standard method.

The input checks run on ``array_api_strict`` too: they read values through
``_backend.stop_gradient`` (the identity for a namespace without a back end: the standard has no
autograd) and limits through ``_checks.finfo`` (NumPy's, by the dtype's name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_strict
import numpy as np
import pytest
from _helpers import asarray, assert_close, diag_problem, problem

import trpl_math as tm

Array = Any
Case = Callable[[ModuleType, tuple[Array, ...], str], Any]

#: Three states, diagonal: state 0 inside every bound, states 1 and 2 active.
RAW_DIAG = diag_problem(seed=3, batch=3)
SCALE = np.array([2.0, 0.5, 1e-3])
_FRO = tm.frobenius_distance(*RAW_DIAG, diag=True)
_W2 = tm.wasserstein_distance(*RAW_DIAG, diag=True)
_W2_PLAIN = tm.wasserstein_distance(*RAW_DIAG, diag=True, scaled=False)
_H = tm.entropy(RAW_DIAG[1], diag=True)


def _bounds(xp: ModuleType, parts: tm.DivergenceParts, dtype: str) -> dict[str, Array]:
    """Per-state bounds ``SCALE * parts`` as arrays of ``xp``: state 0 inactive, 1 and 2 active."""
    return {
        "eps_mean": asarray(xp, SCALE * parts.mean, dtype),
        "eps_cov": asarray(xp, SCALE * parts.cov, dtype),
    }


#: (function, options) that use standard operations only, all with ``diag=True``.
STANDARD: dict[str, Case] = {
    "frobenius_distance": lambda xp, a, dt: tm.frobenius_distance(*a, diag=True),
    "wasserstein_distance": lambda xp, a, dt: tm.wasserstein_distance(*a, diag=True),
    "wasserstein_distance[plain]": lambda xp, a, dt: tm.wasserstein_distance(
        *a, diag=True, scaled=False
    ),
    "entropy": lambda xp, a, dt: tm.entropy(a[1], diag=True),
    "frobenius_projection": lambda xp, a, dt: tm.frobenius_projection(
        *a, **_bounds(xp, _FRO, dt), diag=True
    ),
    "frobenius_projection[float bounds]": lambda xp, a, dt: tm.frobenius_projection(
        *a, eps_mean=0.1, eps_cov=0.05, diag=True
    ),
    "wasserstein_projection": lambda xp, a, dt: tm.wasserstein_projection(
        *a, **_bounds(xp, _W2, dt), diag=True
    ),
    "wasserstein_projection[exact]": lambda xp, a, dt: tm.wasserstein_projection(
        *a, **_bounds(xp, _W2, dt), diag=True, exact=True
    ),
    "wasserstein_projection[plain]": lambda xp, a, dt: tm.wasserstein_projection(
        *a, **_bounds(xp, _W2_PLAIN, dt), diag=True, scaled=False
    ),
    "wasserstein_projection[exact, plain]": lambda xp, a, dt: tm.wasserstein_projection(
        *a, **_bounds(xp, _W2_PLAIN, dt), diag=True, exact=True, scaled=False
    ),
    "wasserstein_commuting_cov_part": lambda xp, a, dt: tm.wasserstein_commuting_cov_part(
        a[1], a[3], diag=True
    ),
    "wasserstein_commuting_cov_part[plain]": lambda xp, a, dt: tm.wasserstein_commuting_cov_part(
        a[1], a[3], diag=True, scaled=False
    ),
    "entropy_projection": lambda xp, a, dt: tm.entropy_projection(
        a[1], entropy_bound=asarray(xp, _H + np.array([-1.0, 0.5, 1.0]), dt), diag=True
    ),
    "entropy_projection[equality]": lambda xp, a, dt: tm.entropy_projection(
        a[1], entropy_bound=0.5, equality=True, diag=True
    ),
}


def _needs(fn: Callable[..., Any], diag: bool, **kw: Any) -> Callable[[tuple[Array, ...]], Any]:
    return lambda a: fn(*a, diag=diag, **kw)


#: Every other (function, ``diag``): full covariances need a Cholesky factor with a failure flag
#: (and triangular solves, eigendecompositions, matrix square roots); the diagonal KL functions
#: need ``x_minus_log1p``'s custom gradient and the KL projection's custom gradient and solver.
NEEDS_BACKEND: dict[str, Callable[[tuple[Array, ...]], Any]] = {
    "kl_divergence[full]": _needs(tm.kl_divergence, False),
    "wasserstein_distance[full]": _needs(tm.wasserstein_distance, False),
    "wasserstein_distance[full, plain]": _needs(tm.wasserstein_distance, False, scaled=False),
    "frobenius_distance[full]": _needs(tm.frobenius_distance, False),
    "entropy[full]": lambda a: tm.entropy(a[1]),
    "kl_projection[full]": _needs(tm.kl_projection, False, eps_mean=0.1, eps_cov=0.05),
    "kl_joint_projection[full]": _needs(tm.kl_joint_projection, False, eps=0.1),
    "wasserstein_projection[full]": _needs(
        tm.wasserstein_projection, False, eps_mean=0.1, eps_cov=0.05
    ),
    "wasserstein_projection[full, exact]": _needs(
        tm.wasserstein_projection, False, eps_mean=0.1, eps_cov=0.05, exact=True
    ),
    "frobenius_projection[full]": _needs(
        tm.frobenius_projection, False, eps_mean=0.1, eps_cov=0.05
    ),
    "entropy_projection[full]": lambda a: tm.entropy_projection(a[1], entropy_bound=0.5),
    "wasserstein_commuting_cov_part[full]": lambda a: tm.wasserstein_commuting_cov_part(a[1], a[3]),
    "kl_divergence[diag]": _needs(tm.kl_divergence, True),
    "kl_projection[diag]": _needs(tm.kl_projection, True, eps_mean=0.1, eps_cov=0.05),
    "kl_joint_projection[diag]": _needs(tm.kl_joint_projection, True, eps=0.1),
}


def _arrays(out: Any) -> tuple[Array, ...]:
    return tuple(out) if isinstance(out, tuple) else (out,)


def _checked(xp: ModuleType) -> contextlib.AbstractContextManager[None]:
    """The input checks run on every back end, ``array_api_strict`` included."""
    return contextlib.nullcontext()


def _strict_inputs(diag: bool) -> tuple[Array, ...]:
    raw = diag_problem() if diag else problem()
    return tuple(asarray(array_api_strict, a) for a in raw)


@pytest.mark.parametrize("case", sorted(STANDARD))
def test_standard_matches_numpy(xp_std: ModuleType, case: str) -> None:
    """Float64: the namespace and dtype of the input, NumPy's values to 1e-12 relative."""
    fn = STANDARD[case]
    want = _arrays(fn(np, RAW_DIAG, "float64"))
    args = tuple(asarray(xp_std, a) for a in RAW_DIAG)
    with _checked(xp_std):
        got = _arrays(fn(xp_std, args, "float64"))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert isinstance(w, np.ndarray)
        assert_close(g, asarray(xp_std, w), rtol=1e-12)  # namespace, dtype, shape, values


@pytest.mark.parametrize("case", sorted(STANDARD))
def test_standard_keeps_float32(xp_std: ModuleType, case: str) -> None:
    """Float32 in, float32 out, in the input's namespace (close to NumPy's float32 result)."""
    fn = STANDARD[case]
    raw32 = tuple(a.astype(np.float32) for a in RAW_DIAG)
    want = _arrays(fn(np, raw32, "float32"))
    args = tuple(asarray(xp_std, a, "float32") for a in RAW_DIAG)
    with _checked(xp_std):
        got = _arrays(fn(xp_std, args, "float32"))
    for g, w in zip(got, want, strict=True):
        assert w.dtype == np.float32
        assert_close(g, asarray(xp_std, w, "float32"), rtol=1e-5)


def test_strict_results_are_strict_arrays() -> None:
    """Not NumPy arrays in disguise: every result is an ``array_api_strict`` array."""
    args = tuple(asarray(array_api_strict, a) for a in RAW_DIAG)
    for case, fn in STANDARD.items():
        with tm.no_validation():
            out = _arrays(fn(array_api_strict, args, "float64"))
        for x in out:
            assert type(x) is type(args[0]), (case, type(x))
            assert x.dtype == array_api_strict.float64, (case, x.dtype)


@pytest.mark.parametrize("checks", [True, False], ids=["checks", "no_validation"])
@pytest.mark.parametrize("case", sorted(NEEDS_BACKEND))
def test_needs_backend_raises_on_strict(case: str, checks: bool) -> None:
    """``NotImplementedError`` naming the namespace, not a NumPy fallback, not an AttributeError
    (with the checks on, the first check raises it; without, the first back-end operation)."""
    args = _strict_inputs(diag=case.endswith("[diag]"))
    ctx = contextlib.nullcontext() if checks else tm.no_validation()
    with ctx, pytest.raises(NotImplementedError, match="'array_api_strict'"):
        NEEDS_BACKEND[case](args)


@pytest.mark.parametrize("case", sorted(STANDARD))
def test_standard_with_checks_on_strict(case: str) -> None:
    """With the checks on (the default), the standard functions run on ``array_api_strict``."""
    args = tuple(asarray(array_api_strict, a) for a in RAW_DIAG)
    want = _arrays(STANDARD[case](np, RAW_DIAG, "float64"))
    got = _arrays(STANDARD[case](array_api_strict, args, "float64"))
    for g, w in zip(got, want, strict=True):
        assert_close(g, asarray(array_api_strict, w), rtol=1e-12)


def test_entropy_schedule_takes_no_arrays() -> None:
    """``entropy_schedule`` computes with Python floats only: any namespace's users call it."""
    beta = tm.entropy_schedule(30, 100, 2.0, -0.5, 3)
    assert type(beta) is float
    assert beta == tm.entropy_schedule(30.0, 100.0, 2.0, -0.5, 3)


def test_cases_cover_every_public_function() -> None:
    """Every public array function appears in one table or the other, for both ``diag``."""
    arrays = {n for n in tm.__all__ if n not in {"DivergenceParts", "Gaussian", "no_validation"}}
    arrays -= {"entropy_schedule"}  # no arrays
    base = lambda k: k.split("[")[0]  # noqa: E731
    diag_cases = {base(k) for k in STANDARD} | {
        base(k) for k in NEEDS_BACKEND if k.endswith("[diag]")
    }
    full_cases = {base(k) for k in NEEDS_BACKEND if "[full" in k}
    assert diag_cases == arrays
    assert full_cases == arrays
    assert not {base(k) for k in STANDARD} & {base(k) for k in NEEDS_BACKEND if "[diag]" in k}


def test_docs_table_matches() -> None:
    """docs/backends.md's table names each function once, on the side these tests put it."""
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parents[1] / "docs" / "backends.md").read_text()
    section = doc.split("## Which functions need a back end", 1)[1].split("\n## ", 1)[0]
    base = lambda k: k.split("[")[0]  # noqa: E731
    seen: dict[str, str] = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        names_cell, std_cell = row.split("|")[1:3]
        for name in re.findall(r"`(\w+)`", names_cell):
            assert name not in seen, name
            seen[name] = std_cell.strip()
    assert seen.pop("entropy_schedule").startswith("takes and returns Python floats")
    std = {base(k) for k in STANDARD}
    assert {n for n, c in seen.items() if c == "`diag=True`"} == std
    assert {n for n, c in seen.items() if c == "—"} == {
        base(k) for k in NEEDS_BACKEND if k.endswith("[diag]")
    }
    assert set(seen) == {base(k) for k in NEEDS_BACKEND}  # every function's full form
