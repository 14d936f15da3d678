"""Bad input: every error path raises ``ValueError`` naming the argument (``TypeError`` for
NumPy and torch mixed), and ``no_validation()`` turns the checks off (:mod:`trpl_math._checks`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import asarray

import trpl_math as tm
from trpl_math.torch import EntropySchedule, TrustRegionLayer

PAIR_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "kl_divergence": lambda a, diag: tm.kl_divergence(*a["pair"], diag=diag),
    "wasserstein_distance": lambda a, diag: tm.wasserstein_distance(*a["pair"], diag=diag),
    "wasserstein_distance_plain": lambda a, diag: tm.wasserstein_distance(
        *a["pair"], scaled=False, diag=diag
    ),
    "frobenius_distance": lambda a, diag: tm.frobenius_distance(*a["pair"], diag=diag),
    "frobenius_projection": lambda a, diag: tm.frobenius_projection(
        *a["pair"], eps_mean=a["eps_mean"], eps_cov=a["eps_cov"], diag=diag
    ),
    "wasserstein_projection": lambda a, diag: tm.wasserstein_projection(
        *a["pair"], eps_mean=a["eps_mean"], eps_cov=a["eps_cov"], diag=diag
    ),
    "wasserstein_projection_exact_plain": lambda a, diag: tm.wasserstein_projection(
        *a["pair"],
        eps_mean=a["eps_mean"],
        eps_cov=a["eps_cov"],
        exact=True,
        scaled=False,
        diag=diag,
    ),
    "kl_projection": lambda a, diag: tm.kl_projection(
        *a["pair"], eps_mean=a["eps_mean"], eps_cov=a["eps_cov"], diag=diag
    ),
    "kl_joint_projection": lambda a, diag: tm.kl_joint_projection(
        *a["pair"], eps=a["eps"], entropy_bound=a["entropy_bound"], diag=diag
    ),
}
PROJECTIONS = [n for n in PAIR_FUNCTIONS if n.endswith(("projection", "projection_exact_plain"))]
PAIR_NAMES = ("mean", "cov", "old_mean", "old_cov")


def names(name: str) -> str:
    """A regex matching ``name`` as a word not preceded by ``old_`` (``cov`` ≠ ``old_cov``)."""
    return rf"(?<![\w]){re.escape(name)}\b"


def good(xp: ModuleType, diag: bool, dtype: str = "float64") -> dict[str, Any]:
    """Valid arguments: a batch of 2 in d = 2, with active projections."""
    mean = asarray(xp, [[1.0, 0.0], [0.5, -1.0]], dtype)
    old_mean = asarray(xp, [[0.0, 0.0], [0.0, 0.0]], dtype)
    if diag:
        cov, old_cov = (
            asarray(xp, [[3.0, 0.5], [2.0, 2.0]], dtype),
            asarray(xp, np.ones((2, 2)), dtype),
        )
    else:
        cov = asarray(xp, [[[3.0, 0.5], [0.5, 1.0]], [[2.0, 0.0], [0.0, 2.0]]], dtype)
        old_cov = asarray(xp, np.stack([np.eye(2)] * 2), dtype)
    return {
        "pair": [mean, cov, old_mean, old_cov],
        "eps_mean": 0.01,
        "eps_cov": 0.01,
        "eps": 0.01,
        "entropy_bound": 1.0,
    }


def with_arg(a: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    a = {**a, "pair": list(a["pair"])}
    if name in PAIR_NAMES:
        a["pair"][PAIR_NAMES.index(name)] = value
    else:
        a[name] = value
    return a


def poison(x: Any, value: float) -> Any:
    """A copy of ``x`` with its first entry replaced by ``value`` (symmetric for matrices)."""
    if y_at := getattr(x, "at", None):  # JAX: immutable arrays
        idx = (0, 0, 0) if x.ndim >= 3 and x.shape[-1] == x.shape[-2] else (0,) * min(x.ndim, 2)
        return y_at[idx].set(value)
    y = x.clone() if isinstance(x, torch.Tensor) else x.copy()
    if y.ndim >= 3 and y.shape[-1] == y.shape[-2]:
        y[0, 0, 0] = value
    elif y.ndim == 2:
        y[0, 0] = value
    else:
        y[0] = value
    return y


@pytest.fixture(params=list(PAIR_FUNCTIONS))
def fn(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return PAIR_FUNCTIONS[request.param]


class TestPairArguments:
    """Checks shared by every function of a new and an old Gaussian."""

    def test_valid_input_passes(self, xp: ModuleType, fn: Callable[..., Any]) -> None:
        for diag in (False, True):
            fn(good(xp, diag), diag)

    @pytest.mark.parametrize("arg", PAIR_NAMES)
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize("diag", [False, True])
    def test_non_finite(
        self, xp: ModuleType, fn: Callable[..., Any], arg: str, value: float, diag: bool
    ) -> None:
        a = good(xp, diag)
        bad = poison(a["pair"][PAIR_NAMES.index(arg)], value)
        with pytest.raises(ValueError, match=names(arg)):
            fn(with_arg(a, arg, bad), diag)

    @pytest.mark.parametrize("arg", ["mean", "old_mean"])
    def test_scalar_mean(self, xp: ModuleType, fn: Callable[..., Any], arg: str) -> None:
        a = with_arg(good(xp, False), arg, asarray(xp, 1.0))
        with pytest.raises(ValueError, match=names(arg)):
            fn(a, False)

    @pytest.mark.parametrize("arg", ["cov", "old_cov"])
    @pytest.mark.parametrize("shape", [(2,), (2, 2, 3)])
    def test_cov_wrong_rank_or_not_square(
        self, xp: ModuleType, fn: Callable[..., Any], arg: str, shape: tuple[int, ...]
    ) -> None:
        a = with_arg(good(xp, False), arg, asarray(xp, np.ones(shape)))
        with pytest.raises(ValueError, match=names(arg)):
            fn(a, False)

    @pytest.mark.parametrize("arg", ["mean", "old_mean"])
    @pytest.mark.parametrize("diag", [False, True])
    def test_mean_dimension_mismatch(
        self, xp: ModuleType, fn: Callable[..., Any], arg: str, diag: bool
    ) -> None:
        a = with_arg(good(xp, diag), arg, asarray(xp, np.zeros((2, 3))))
        with pytest.raises(ValueError, match=names(arg)):
            fn(a, diag)

    @pytest.mark.parametrize("diag", [False, True])
    def test_old_cov_dimension_mismatch(
        self, xp: ModuleType, fn: Callable[..., Any], diag: bool
    ) -> None:
        bad = asarray(xp, np.ones((2, 3)) if diag else np.stack([np.eye(3)] * 2))
        with pytest.raises(ValueError, match=names("old_cov")):
            fn(with_arg(good(xp, diag), "old_cov", bad), diag)

    @pytest.mark.parametrize("diag", [False, True])
    def test_cov_dimension_mismatch_raises(
        self, xp: ModuleType, fn: Callable[..., Any], diag: bool
    ) -> None:
        bad = asarray(xp, np.ones((2, 3)) if diag else np.stack([np.eye(3)] * 2))
        with pytest.raises(ValueError, match="dimension mismatch"):
            fn(with_arg(good(xp, diag), "cov", bad), diag)

    @pytest.mark.parametrize("arg", ["mean", "old_mean"])
    def test_batch_shapes_do_not_broadcast(
        self, xp: ModuleType, fn: Callable[..., Any], arg: str
    ) -> None:
        a = with_arg(good(xp, False), arg, asarray(xp, np.zeros((3, 2))))
        with pytest.raises(
            ValueError, match=rf"batch shapes do not broadcast.*{names(arg)} \(3, 2\)"
        ):
            fn(a, False)

    @pytest.mark.parametrize("arg", ["cov", "old_cov"])
    def test_non_symmetric(self, xp: ModuleType, fn: Callable[..., Any], arg: str) -> None:
        bad = asarray(xp, np.stack([[[2.0, 0.5], [0.0, 2.0]]] * 2))
        with pytest.raises(ValueError, match=names(arg) + ".*not symmetric"):
            fn(with_arg(good(xp, False), arg, bad), False)

    @pytest.mark.parametrize("arg", ["cov", "old_cov"])
    def test_not_positive_definite_full(
        self, xp: ModuleType, fn: Callable[..., Any], arg: str
    ) -> None:
        bad = asarray(xp, np.stack([[[1.0, 2.0], [2.0, 1.0]]] * 2))
        with pytest.raises(ValueError, match=names(arg) + ".*positive definite"):
            fn(with_arg(good(xp, False), arg, bad), False)

    @pytest.mark.parametrize("arg", ["cov", "old_cov"])
    @pytest.mark.parametrize("value", [0.0, -1.0])
    def test_not_positive_diag(
        self, xp: ModuleType, fn: Callable[..., Any], arg: str, value: float
    ) -> None:
        a = good(xp, True)
        bad = poison(a["pair"][PAIR_NAMES.index(arg)], value)
        with pytest.raises(ValueError, match=names(arg) + ".*positive"):
            fn(with_arg(a, arg, bad), True)

    @pytest.mark.parametrize("arg", PAIR_NAMES)
    def test_integer_dtype(self, xp: ModuleType, fn: Callable[..., Any], arg: str) -> None:
        a = good(xp, False)
        bad = xp.astype(a["pair"][PAIR_NAMES.index(arg)], xp.int64)
        with pytest.raises(ValueError, match=names(arg) + ".*floating"):
            fn(with_arg(a, arg, bad), False)

    @pytest.mark.parametrize("arg", ["cov", "old_mean", "old_cov"])
    def test_mixed_float32_float64(self, xp: ModuleType, fn: Callable[..., Any], arg: str) -> None:
        a = good(xp, False)
        bad = xp.astype(a["pair"][PAIR_NAMES.index(arg)], xp.float32)
        with pytest.raises(ValueError, match=names(arg) + ".*dtype"):
            fn(with_arg(a, arg, bad), False)

    @pytest.mark.parametrize("arg", PAIR_NAMES)
    def test_mixed_numpy_torch(self, fn: Callable[..., Any], arg: str) -> None:
        import array_api_compat.numpy as np_xp

        a = good(np_xp, False)
        bad = torch.from_numpy(np.asarray(a["pair"][PAIR_NAMES.index(arg)]))
        with pytest.raises(TypeError, match="one kind"):
            fn(with_arg(a, arg, bad), False)

    def test_no_validation_skips_checks(self, xp: ModuleType, fn: Callable[..., Any]) -> None:
        """A (slightly) non-symmetric covariance raises, but not inside ``no_validation()``."""
        a = good(xp, False)
        bad = asarray(xp, np.stack([[[3.0, 0.5], [0.4, 1.0]]] * 2))
        a = with_arg(a, "cov", bad)
        with pytest.raises(ValueError, match="not symmetric"):
            fn(a, False)
        with tm.no_validation():
            fn(a, False)
        with pytest.raises(ValueError, match="not symmetric"):  # restored on exit
            fn(a, False)


@pytest.mark.parametrize("fname", PROJECTIONS)
class TestBounds:
    def _args_and_bounds(self, fname: str) -> list[str]:
        return ["eps"] if fname == "kl_joint_projection" else ["eps_mean", "eps_cov"]

    @pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
    def test_bad_scalar_bound(self, xp: ModuleType, fname: str, value: float) -> None:
        for bound in self._args_and_bounds(fname):
            a = with_arg(good(xp, False), bound, value)
            with pytest.raises(ValueError, match=names(bound)):
                PAIR_FUNCTIONS[fname](a, False)

    def test_bad_array_bound(self, xp: ModuleType, fname: str) -> None:
        for bound in self._args_and_bounds(fname):
            for value, what in (([0.1, -0.1], "> 0"), ([0.1, 0.2, 0.3], "broadcast")):
                a = with_arg(good(xp, False), bound, asarray(xp, value))
                with pytest.raises(ValueError, match=names(bound) + ".*" + re.escape(what)):
                    PAIR_FUNCTIONS[fname](a, False)

    def test_bound_of_other_kind(self, fname: str) -> None:
        import array_api_compat.numpy as np_xp

        for bound in self._args_and_bounds(fname):
            a = with_arg(good(np_xp, False), bound, torch.tensor(0.1, dtype=torch.float64))
            with pytest.raises(TypeError):
                PAIR_FUNCTIONS[fname](a, False)

    def test_bool_bound(self, xp: ModuleType, fname: str) -> None:
        for bound in self._args_and_bounds(fname):
            with pytest.raises(ValueError, match=names(bound)):
                PAIR_FUNCTIONS[fname](with_arg(good(xp, False), bound, True), False)


class TestEntropyBoundArgument:
    @pytest.mark.parametrize("value", [math.nan, math.inf])
    def test_kl_joint_entropy_bound_non_finite(self, xp: ModuleType, value: float) -> None:
        a = with_arg(good(xp, False), "entropy_bound", value)
        with pytest.raises(ValueError, match=names("entropy_bound")):
            PAIR_FUNCTIONS["kl_joint_projection"](a, False)

    @pytest.mark.parametrize("value", [math.nan, -math.inf])
    def test_entropy_projection_bound_non_finite(self, xp: ModuleType, value: float) -> None:
        with pytest.raises(ValueError, match=names("entropy_bound")):
            tm.entropy_projection(asarray(xp, np.eye(2)), entropy_bound=value)

    def test_entropy_projection_bound_does_not_broadcast(self, xp: ModuleType) -> None:
        with pytest.raises(ValueError, match=names("entropy_bound")):
            tm.entropy_projection(
                asarray(xp, np.ones((2, 3))), entropy_bound=asarray(xp, [1.0, 2.0, 3.0]), diag=True
            )


LONE_COV = {
    "entropy": lambda c, diag: tm.entropy(c, diag=diag),
    "entropy_projection": lambda c, diag: tm.entropy_projection(c, entropy_bound=1.0, diag=diag),
}


@pytest.mark.parametrize("fname", list(LONE_COV))
class TestLoneCovariance:
    @pytest.mark.parametrize(
        ("value", "diag", "what"),
        [
            ([[1.0, 2.0], [2.0, 1.0]], False, "positive definite"),
            ([[1.0, 0.5], [0.0, 1.0]], False, "not symmetric"),
            ([[1.0, math.nan], [math.nan, 1.0]], False, "non-finite"),
            ([1.0, 2.0], False, "shape"),
            ([1.0, 0.0], True, "positive"),
            ([1.0, math.inf], True, "non-finite"),
        ],
    )
    def test_bad_cov(self, xp: ModuleType, fname: str, value: Any, diag: bool, what: str) -> None:
        with pytest.raises(ValueError, match=names("cov") + ".*" + re.escape(what)):
            LONE_COV[fname](asarray(xp, value), diag)

    def test_integer_cov(self, xp: ModuleType, fname: str) -> None:
        with pytest.raises(ValueError, match=names("cov") + ".*floating"):
            LONE_COV[fname](xp.asarray([[1, 0], [0, 1]]), False)

    def test_no_validation(self, xp: ModuleType, fname: str) -> None:
        bad = asarray(xp, [[1.0, 0.5], [0.4, 1.0]])
        with tm.no_validation():
            LONE_COV[fname](bad, False)


class TestWassersteinCommutingCovPartChecks:
    def test_not_positive_definite_old_cov(self, xp: ModuleType) -> None:
        with pytest.raises(ValueError, match=names("old_cov")):
            tm.wasserstein_commuting_cov_part(
                asarray(xp, np.eye(2)), asarray(xp, [[1.0, 2.0], [2.0, 1.0]])
            )

    def test_mixed_numpy_torch(self) -> None:
        with pytest.raises(TypeError):
            tm.wasserstein_commuting_cov_part(np.eye(2), torch.eye(2, dtype=torch.float64))


class TestEntropyScheduleChecks:
    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"kind": "cosine"}, "kind"),
            ({"temperature": 0.0}, "temperature"),
            ({"temperature": 1.5}, "temperature"),
            ({"step": -1}, "step"),
            ({"step": 11}, "step"),
            ({"total_steps": 0}, "total_steps"),
            ({"dim": 0}, "dim"),
            ({"initial_entropy": math.nan}, "initial_entropy"),
            ({"target_per_dim": math.inf}, "target_per_dim"),
        ],
    )
    def test_bad_argument(self, kwargs: dict[str, Any], name: str) -> None:
        args = {
            "step": 1,
            "total_steps": 10,
            "initial_entropy": 1.0,
            "target_per_dim": 0.0,
            "dim": 2,
        }
        args.update(kwargs)
        with pytest.raises(ValueError, match=names(name)):
            tm.entropy_schedule(**args)


class TestTorchLayerChecks:
    def test_unknown_measure(self) -> None:
        with pytest.raises(ValueError, match="measure"):
            TrustRegionLayer("kl2", eps_mean=0.1, eps_cov=0.1)

    @pytest.mark.parametrize("name", ["eps_mean", "eps_cov", "eps"])
    @pytest.mark.parametrize("value", [0.0, -1.0, math.nan])
    def test_bad_bound(self, name: str, value: float) -> None:
        kw = {"eps_mean": 0.1, "eps_cov": 0.1, name: value}
        with pytest.raises(ValueError, match=names(name)):
            TrustRegionLayer("kl_joint", **kw)

    def test_entropy_schedule_bad_kind(self) -> None:
        with pytest.raises(ValueError, match="kind"):
            EntropySchedule(kind="cosine")

    def test_entropy_schedule_bad_total_steps(self) -> None:
        with pytest.raises(ValueError, match="total_steps"):
            EntropySchedule(total_steps=0)

    def test_validate_false_skips_checks(self) -> None:
        bad = torch.tensor([[[3.0, 0.5], [0.4, 1.0]]], dtype=torch.float64)
        old = torch.eye(2, dtype=torch.float64)[None]
        mean = torch.zeros(1, 2, dtype=torch.float64)
        with pytest.raises(ValueError, match="not symmetric"):
            TrustRegionLayer("frob", eps_mean=0.1, eps_cov=0.1, diag=False)(mean, bad, mean, old)
        TrustRegionLayer("frob", eps_mean=0.1, eps_cov=0.1, diag=False, validate=False)(
            mean, bad, mean, old
        )
