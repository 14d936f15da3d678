"""The JAX back end (docs/backends.md): every public function takes and returns ``jax.numpy``
arrays, agrees with NumPy, works under ``jax.jit`` and ``jax.vmap``, and its custom gradients
(the implicit KL gradients, the matrix square root) equal torch's in float64."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import trpl_math as tm

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

from trpl_math._backends import jax as jax_backend  # noqa: E402

D = 3


def _problem(seed: int = 0, n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, n, D, D))
    return {
        "mean": rng.normal(size=(n, D)),
        "old_mean": rng.normal(size=(n, D)),
        "cov": a @ a.transpose(0, 2, 1) + np.eye(D),
        "old_cov": b @ b.transpose(0, 2, 1) + np.eye(D),
        "var": rng.uniform(0.2, 3.0, (n, D)),
        "old_var": rng.uniform(0.5, 2.0, (n, D)),
    }


P = _problem()
FULL = (P["mean"], P["cov"], P["old_mean"], P["old_cov"])
DIAG = (P["mean"], P["var"], P["old_mean"], P["old_var"])
B = {"eps_mean": 0.05, "eps_cov": 0.05}

#: (name, function, NumPy arguments, keyword arguments): every public array function.
CASES: list[tuple[str, Callable[..., Any], tuple[np.ndarray, ...], dict[str, Any]]] = [
    ("kl_divergence", tm.kl_divergence, FULL, {}),
    ("kl_divergence_diag", tm.kl_divergence, DIAG, {"diag": True}),
    ("wasserstein_distance", tm.wasserstein_distance, FULL, {}),
    ("frobenius_distance", tm.frobenius_distance, FULL, {}),
    ("entropy", tm.entropy, (P["cov"],), {}),
    ("wasserstein_commuting_cov_part", tm.wasserstein_commuting_cov_part, FULL[1::2], {}),
    ("kl_projection", tm.kl_projection, FULL, B),
    ("kl_projection_diag", tm.kl_projection, DIAG, {**B, "diag": True}),
    ("wasserstein_projection", tm.wasserstein_projection, FULL, B),
    ("wasserstein_projection_exact", tm.wasserstein_projection, FULL, {**B, "exact": True}),
    ("wasserstein_projection_diag", tm.wasserstein_projection, DIAG, {**B, "diag": True}),
    ("frobenius_projection", tm.frobenius_projection, FULL, B),
    ("kl_joint_projection", tm.kl_joint_projection, FULL, {"eps": 0.05}),
    ("kl_joint_entropy", tm.kl_joint_projection, FULL, {"eps": 0.05, "entropy_bound": 4.0}),
    ("entropy_projection", tm.entropy_projection, (P["cov"],), {"entropy_bound": 4.0}),
]
IDS = [c[0] for c in CASES]


def _tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, tuple) else (x,)


def _close(actual: Any, expected: Any, rtol: float = 1e-11) -> None:
    for a, e in zip(_tuple(actual), _tuple(expected), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * float(np.max(np.abs(e))))


def _sym(c: Any) -> Any:
    return 0.5 * (c + jnp.swapaxes(c, -1, -2))


def _loss(out: Any, lib: Any) -> Any:
    return sum(lib.sum(lib.sin(x)) for x in _tuple(out))


@pytest.mark.parametrize(("name", "fn", "args", "kw"), CASES, ids=IDS)
class TestEveryFunction:
    def test_jax_in_jax_out_equal_to_numpy(self, name, fn, args, kw) -> None:
        out = fn(*map(jnp.asarray, args), **kw)
        assert all(isinstance(x, jax.Array) for x in _tuple(out))
        _close(out, fn(*args, **kw))

    def test_jit(self, name, fn, args, kw) -> None:
        with tm.no_validation():  # input checks need concrete values
            out = jax.jit(lambda *a: fn(*a, **kw))(*map(jnp.asarray, args))
        _close(out, fn(*args, **kw))

    def test_vmap(self, name, fn, args, kw) -> None:
        with tm.no_validation():
            out = jax.vmap(lambda *a: fn(*a, **kw))(*map(jnp.asarray, args))
        _close(out, fn(*args, **kw))

    def test_gradient_equals_torch(self, name, fn, args, kw) -> None:
        grads = jax.grad(lambda *a: _loss(fn(*a, **kw), jnp), argnums=tuple(range(len(args))))(
            *map(jnp.asarray, args)
        )
        ts = [torch.tensor(a, requires_grad=True) for a in args]
        _loss(fn(*ts, **kw), torch).backward()
        for g, t in zip(grads, ts, strict=True):
            np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-10, atol=1e-10)


class TestCustomGradients:
    def test_sqrtm_check_grads(self) -> None:
        check_grads(jax_backend.sqrtm_psd, (jnp.asarray(P["cov"]),), order=1, modes=["rev"])

    def test_sqrtm_repeated_eigenvalues_finite(self) -> None:
        g = jax.grad(lambda a: jnp.sum(jax_backend.sqrtm_psd(a)))(jnp.eye(3) * 2.0)
        np.testing.assert_allclose(np.asarray(g), np.ones((3, 3)) / (2 * np.sqrt(2.0)), rtol=1e-12)

    @pytest.mark.parametrize("diag", [False, True])
    def test_kl_projection_check_grads(self, diag: bool) -> None:
        args = DIAG if diag else FULL

        def f(*a):  # the finite differences hand in NumPy arrays
            mean, cov, old_mean, old_cov, eps = map(jnp.asarray, a)
            cov, old_cov = (c if diag else _sym(c) for c in (cov, old_cov))
            return tm.kl_projection(
                mean, cov, old_mean, old_cov, eps_mean=eps, eps_cov=eps, diag=diag
            )

        with tm.no_validation():  # the finite differences perturb symmetric inputs asymmetrically
            check_grads(f, (*map(jnp.asarray, args), jnp.asarray(0.05)), order=1, modes=["rev"])

    def test_kl_projection_inactive_is_identity(self) -> None:
        mean, cov = map(jnp.asarray, FULL[:2])
        g = jax.grad(
            lambda c: jnp.sum(
                jnp.sin(tm.kl_projection(mean, c, mean, c + 0.0, eps_mean=0.1, eps_cov=0.1).cov)
            )
        )(cov)
        np.testing.assert_allclose(np.asarray(g), np.cos(np.asarray(cov)), rtol=1e-13)

    def test_kl_joint_check_grads(self) -> None:
        def f(*a):
            mean, cov, old_mean, old_cov = map(jnp.asarray, a)
            return tm.kl_joint_projection(mean, _sym(cov), old_mean, _sym(old_cov), eps=0.05)

        with tm.no_validation():
            check_grads(f, tuple(map(jnp.asarray, FULL)), order=1, modes=["rev"])


def test_float32_keeps_dtype() -> None:
    args = [jnp.asarray(a, dtype=jnp.float32) for a in FULL]
    out = tm.kl_projection(*args, **B)
    assert out.mean.dtype == jnp.float32 and out.cov.dtype == jnp.float32
    _close(out, tm.kl_projection(*(np.float32(a) for a in FULL), **B), rtol=1e-5)


def test_not_positive_definite_raises() -> None:
    bad = jnp.asarray(-np.asarray(P["cov"]))
    with pytest.raises(ValueError, match="positive definite"):
        tm.kl_divergence(
            jnp.asarray(P["mean"]), bad, jnp.asarray(P["old_mean"]), jnp.asarray(P["old_cov"])
        )


@pytest.mark.parametrize("diag", [False, True])
def test_gaussian_scale_tril_stays_jax(diag: bool) -> None:
    cov = P["var"] if diag else P["cov"]
    tril = tm.Gaussian(jnp.asarray(P["mean"]), jnp.asarray(cov)).scale_tril(diag=diag)
    assert isinstance(tril, jax.Array)
    _close(tril, tm.Gaussian(P["mean"], cov).scale_tril(diag=diag))


def test_joint_landing_is_one_loop_under_jit(monkeypatch: pytest.MonkeyPatch) -> None:
    # the bracketing landing runs as lax.while_loop under jit: the curve is traced 10 times (the
    # Newton loop, the landing's first steps, each loop body once), not once per unrolled step
    # (FEASIBLE_ITER = 60: 69 traces and ~30 s of compilation at 64 x 6 before)
    from trpl_math.projections import kl_joint as KJ

    traces: list[int] = []
    real = KJ._kl_parts

    def counted(*args: Any) -> Any:
        traces.append(1)
        return real(*args)

    monkeypatch.setattr(KJ, "_kl_parts", counted)
    args = [jnp.asarray(a) for a in DIAG]
    with tm.no_validation():
        out = jax.jit(lambda *a: tm.kl_joint_projection(*a, eps=0.05, diag=True))(*args)
    ref = tm.kl_joint_projection(*DIAG, eps=0.05, diag=True)
    np.testing.assert_allclose(np.asarray(out.cov), ref.cov, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(out.mean), ref.mean, rtol=1e-13, atol=1e-15)
    assert len(traces) < 20, len(traces)
