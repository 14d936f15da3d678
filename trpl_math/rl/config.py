"""Typed training configuration, YAML loading and ``--set key=value`` overrides.

One :class:`TrainConfig` holds every knob of a run. The YAML files in ``trpl_math/rl/configs/``
(``<method>_<family>.yaml``, family in ``mujoco``, ``humanoid``, ``reacher_sparse``) reproduce
Tables 2, 3 and 4 of Otto et al. (ICLR 2021); fields a file does not set keep the defaults below.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from trpl_math.measures import MEASURES

#: Methods implemented: the trust-region projections (the measures of
#: :mod:`trpl_math.measures`, the one registry of their names) and the baselines.
PROJECTION_METHODS: tuple[str, ...] = tuple(MEASURES)
PPO_METHODS: tuple[str, ...] = ("ppo", "ppo_m")
#: PAPI (Akrour et al., 2019) on top of PPO's policy epochs, the paper's third baseline.
PAPI_METHODS: tuple[str, ...] = ("papi",)
METHODS: tuple[str, ...] = PROJECTION_METHODS + PPO_METHODS + PAPI_METHODS
#: Task families that have a YAML file per method.
FAMILIES: tuple[str, ...] = ("mujoco", "humanoid", "reacher_sparse")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: A method name with this suffix (``kl_e``) is the method with entropy control (``-E``).
ENTROPY_SUFFIX = "_e"


def split_method(name: str) -> tuple[str, bool]:
    """``"kl_e" -> ("kl", True)``, ``"kl" -> ("kl", False)``: the method and whether the name
    asks for entropy control (the paper's -E variants).

    Raises:
        ValueError: for an unknown method, or the suffix on a method without a projection.
    """
    entropy = name.endswith(ENTROPY_SUFFIX) and name not in METHODS
    method = name[: -len(ENTROPY_SUFFIX)] if entropy else name
    if method not in METHODS or (entropy and method not in PROJECTION_METHODS):
        raise ValueError(
            f"method must be one of {METHODS} (a projection optionally + {ENTROPY_SUFFIX!r} for "
            f"entropy control), got {name!r}"
        )
    return method, entropy


def method_label(method: str, entropy_control: bool) -> str:
    """The name :func:`split_method` reads back: ``("kl", True) -> "kl_e"``."""
    return method + (ENTROPY_SUFFIX if entropy_control else "")


@dataclass
class TrainConfig:
    """Everything that defines a training run (defaults: Table 2, KL projection, Hopper)."""

    # --- task and budget -------------------------------------------------------------------
    env_id: str = "Hopper-v5"
    """Gymnasium id of the task (any registered id, e.g. ``Hopper-v5`` or ``ReacherSparse-v0``)."""
    method: str = "kl"
    """One of ``frob, w2, w2_exact, kl, kl_joint, ppo, ppo_m, papi``."""
    seed: int = 0
    """Seeds torch, NumPy and the environments; equal seeds give bitwise-equal runs."""
    total_steps: int = 1_000_000
    """Environment steps of training. :func:`load_config` sets the paper's budget of the task
    (:data:`PAPER_BUDGETS`) unless the file or an override gives one."""
    num_envs: int = 1
    """Parallel copies of the environment (SyncVectorEnv); ``rollout_steps`` is split over them."""
    rollout_steps: int = 2048
    """Samples per iteration, over all environments ("rollouts" in Tables 2-4)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_actions: bool = True
    """Clip the sampled action to the action bounds before the environment step. ``False``
    sends it unclipped, as the authors' released code does (MuJoCo clamps the control, and the
    control cost is then charged on the raw action). Either way the sampled action is what the
    log-density is evaluated at."""
    truncation: str = "bootstrap"
    """What a time-limit cut is worth. ``bootstrap``: the value of the final observation (the
    cut is not the task's end). ``terminal``: 0, where the cut is the task's true end
    (ReacherSparse: the step count is observed and no reward follows step 200).
    ``zero_advantage``: the cut step gets advantage 0 and no bootstrap, as the authors'
    released code does (its value target is then its own value)."""

    # --- networks ------------------------------------------------------------------------
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the policy."""
    vf_hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the value network."""
    activation: str = "tanh"
    """Hidden activation: ``tanh`` or ``relu``."""
    diag: bool = True
    """Diagonal covariance (variances), as the layer's and the functions' ``diag``; ``False``:
    a full, Cholesky-parametrised covariance."""
    contextual_cov: bool = False
    """State-dependent covariance (a network head) instead of a free parameter."""
    init_std: float = 1.0
    """Initial standard deviation of every action dimension."""
    min_std: float = 1e-5
    """Lower bound added to the standard deviation (numerical safety)."""
    net_dtype: str = "float32"
    """dtype of the networks and of the minibatch tensors: ``float32`` or ``float64`` (the
    authors' released code)."""

    # --- optimisation -------------------------------------------------------------------
    epochs: int = 20
    """Policy epochs per iteration."""
    vf_epochs: int = 10
    """Value-function epochs per iteration (own optimizer)."""
    lr: float = 5e-5
    """Policy Adam learning rate."""
    vf_lr: float = 4.5e-4
    """Value Adam learning rate."""
    minibatch_size: int = 32
    """Samples per policy minibatch (Tables 2-4 "minibatch size")."""
    vf_minibatch_size: int | None = None
    """Samples per value minibatch; ``None``: same as ``minibatch_size``."""
    adam_eps: float = 1e-5
    """Adam epsilon of both optimizers."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm of each network (PPO code-level setting); ``None``: off."""
    lr_decay: bool = False
    """Linearly decay both learning rates to 0 over training (PPO code-level setting)."""
    advantage_norm: str = "batch"
    """Standardise advantages: ``batch`` (over the iteration's batch, the paper's PPO setting),
    ``minibatch`` (within each minibatch, as the authors' released code does) or ``none``."""
    entropy_coef: float = 0.0
    """Entropy bonus weight ("entropy loss penalty", 0 in the paper)."""

    # --- trust region (projections) -----------------------------------------------------
    eps_mean: float = 0.03
    """Bound of the mean part (epsilon_mu)."""
    eps_cov: float = 0.001
    """Bound of the covariance part (epsilon_Sigma)."""
    eps: float | None = None
    """Joint KL bound for ``kl_joint`` (``None``: eps_mean + eps_cov) and the expected-KL bound
    of ``papi`` (its configs: 0.015)."""
    scaled: bool = True
    """W2 in the metric of the old covariance (the paper's default)."""
    alpha: float = 8.0
    """Weight of the trust-region regression penalty (Eq. 12)."""
    cov_source: str = "batch"
    """Where a non-contextual covariance is set from after the policy epochs: ``batch`` (the
    projection of the updated policy on the iteration's batch, Sec. 4.4) or ``last_minibatch``
    (the projection computed for the last minibatch, before its optimiser step, as the
    authors' released code does)."""
    regression_steps: int = 0
    """Extra supervised regression steps towards the projection after the policy epochs."""
    regression_lr: float | None = None
    """Learning rate of those steps (``None``: ``lr``)."""
    entropy_control: bool = False
    """Entropy control (the paper's -E variants, Sec. 4.2)."""
    entropy_schedule: str = "exp"
    """``exp`` or ``linear`` schedule of the entropy bound."""
    target_per_dim: float = 0.0
    """Per-dimension target entropy kappa."""
    temperature: float = 0.5
    """Temperature tau of the exponential schedule."""
    entropy_equality: bool = False
    """Equality (True) or inequality entropy constraint."""

    # --- PPO ----------------------------------------------------------------------------
    clip_ratio: float = 0.2
    """Importance-ratio clip of PPO / PPO-M."""
    vf_clip: float | None = None
    """Clip of the value update around the old values; ``None``: off."""

    # --- normalisation ------------------------------------------------------------------
    norm_obs: bool = True
    """Running observation normalisation (saved with the agent)."""
    obs_clip: float | None = None
    """Clip normalised observations to +-obs_clip; ``None``: off."""
    norm_rewards: bool = False
    """Scale rewards by the running std of the discounted return."""
    reward_clip: float | None = None
    """Clip scaled rewards to +-reward_clip; ``None``: off."""

    # --- evaluation, logging, checkpoints ----------------------------------------------
    eval_episodes: int = 5
    """Deterministic evaluation episodes per evaluation (0: none)."""
    eval_every: int = 1
    """Evaluate every this many iterations."""
    checkpoint_every: int = 10
    """Checkpoint every this many iterations (and always at the end)."""
    torch_threads: int = 1
    """torch.set_num_threads for the run."""

    @property
    def num_iterations(self) -> int:
        """Training iterations: ``total_steps // rollout_steps`` (at least 1)."""
        return max(1, self.total_steps // self.rollout_steps)

    @property
    def steps_per_env(self) -> int:
        """Rollout length of each environment copy."""
        return self.rollout_steps // self.num_envs

    @property
    def is_projection(self) -> bool:
        """Whether the method uses the trust-region layer."""
        return self.method in PROJECTION_METHODS

    def validate(self) -> TrainConfig:
        """Raise ValueError on inconsistent settings; return ``self``."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {self.activation!r}")
        for name, allowed in (
            ("truncation", ("bootstrap", "terminal", "zero_advantage")),
            ("cov_source", ("batch", "last_minibatch")),
            ("net_dtype", ("float32", "float64")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.advantage_norm not in ("batch", "minibatch", "none"):
            raise ValueError(
                "advantage_norm must be 'batch', 'minibatch' or 'none', "
                f"got {self.advantage_norm!r}"
            )
        if self.entropy_schedule not in ("exp", "linear"):
            raise ValueError(
                f"entropy_schedule must be 'exp' or 'linear', got {self.entropy_schedule!r}"
            )
        if self.num_envs < 1 or self.rollout_steps % self.num_envs:
            raise ValueError(
                f"rollout_steps ({self.rollout_steps}) must be a positive multiple of num_envs "
                f"({self.num_envs})"
            )
        for name in ("minibatch_size", "epochs", "vf_epochs", "total_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.minibatch_size > self.rollout_steps:
            raise ValueError("minibatch_size must not exceed rollout_steps")
        for name in ("eps_mean", "eps_cov", "lr", "vf_lr", "gamma"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.method == "papi":
            if self.contextual_cov:
                raise ValueError("papi needs a non-contextual covariance (contextual_cov: false)")
            if self.eps is None or self.eps <= 0:
                raise ValueError(f"papi needs eps > 0, got {self.eps!r}")
        if self.entropy_control and not self.is_projection:
            raise ValueError("entropy_control needs a projection method")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)


_HINTS = typing.get_type_hints(TrainConfig)


def coerce_field(name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the type of field ``name``.

    Raises:
        ValueError: naming ``name``, the type it expects and the value, when it does not
            convert.
    """
    try:
        return _coerce(name, value)
    except (TypeError, ValueError) as exc:
        if name in str(exc):
            raise ValueError(str(exc)) from None
        hint = _HINTS[name]
        raise ValueError(
            f"{name} expects {getattr(hint, '__name__', hint)}, got {value!r}"
        ) from None


def _coerce(name: str, value: Any) -> Any:
    hint = _HINTS[name]
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if is_union else ()
    optional = type(None) in args
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", "~"):
            return None
        value = yaml.safe_load(text) if text else text
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name} may not be None")
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    origin = typing.get_origin(base)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} expects a list, got {value!r}")
        return [int(v) for v in value]
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} expects true/false, got {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError(f"{name} expects an integer, got {value!r}")
        return int(float(value))
    if base is float:
        if isinstance(value, bool):
            raise ValueError(f"{name} expects a number, got {value!r}")
        return float(value)
    if base is str:
        return str(value)
    return value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse ``["key=value", ...]`` (values as YAML scalars) into a dict of typed values."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"override must look like key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


#: Keys of earlier versions, each with the function that maps its value to today's key.
LEGACY_KEYS: dict[str, tuple[str, Any]] = {
    "cov_type": ("diag", lambda v: {"diag": True, "full": False}[str(v)]),
    "bootstrap_truncation": ("truncation", lambda v: "bootstrap" if v else "terminal"),
    "norm_advantages": ("advantage_norm", lambda v: "batch" if v else "none"),
    "eps_joint": ("eps", lambda v: None if v is None else float(v)),
    "target_entropy": ("target_per_dim", float),
}


def migrate_legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of earlier versions (:data:`LEGACY_KEYS`) renamed, so that saved
    runs (config.yaml, checkpoints) of those versions load; a key given both ways must agree.

    Raises:
        ValueError: a legacy value that does not map, or that contradicts today's key.
    """
    out = dict(data)
    for old, (new, convert) in LEGACY_KEYS.items():
        if old not in out:
            continue
        value = out.pop(old)
        try:
            converted = convert(_coerce_yaml(value))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{old} (now {new}): cannot read {value!r}") from None
        if new in out and coerce_field(new, out[new]) != converted:
            raise ValueError(f"{old}={value!r} contradicts {new}={out[new]!r}")
        out[new] = converted
    return out


def _coerce_yaml(value: Any) -> Any:
    return yaml.safe_load(value) if isinstance(value, str) else value


def config_from_dict(data: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Build a validated config from ``data`` on top of ``base`` (default: the defaults).

    Raises:
        ValueError: on an unknown key or a value of the wrong type.
    """
    data = migrate_legacy_keys(data)
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config keys: {unknown}")
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    for key, value in data.items():
        setattr(cfg, key, coerce_field(key, value))
    return cfg.validate()


def config_path(method: str, family: str = "mujoco") -> Path:
    """Path of the shipped YAML file for ``method`` and task ``family``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    path = CONFIG_DIR / f"{method}_{family}.yaml"
    if not path.exists():
        raise ValueError(f"no shipped config for method {method!r} on the {family} tasks")
    return path


#: Training budgets of the paper (environment steps; Sec. 5, Figure 4's axes): 1M for Hopper,
#: 3M for HalfCheetah, Walker2d and Ant, 10M for Humanoid. Tasks not listed keep the config's.
PAPER_BUDGETS: dict[str, int] = {
    "Hopper": 1_000_000,
    "HalfCheetah": 3_000_000,
    "Walker2d": 3_000_000,
    "Ant": 3_000_000,
    "Humanoid": 10_000_000,
}


def paper_budget(env_id: str) -> int | None:
    """The paper's ``total_steps`` for a Gymnasium id (``HalfCheetah-v5`` -> 3M), or None."""
    return PAPER_BUDGETS.get(env_id.split("-")[0])


def family_of(env_id: str) -> str:
    """Task family of a Gymnasium id: ``humanoid``, ``reacher_sparse`` or ``mujoco``."""
    if env_id.startswith("ReacherSparse"):
        return "reacher_sparse"
    if env_id.startswith("Humanoid"):
        return "humanoid"
    return "mujoco"


def load_config(
    path: str | Path | None = None,
    *,
    method: str | None = None,
    env_id: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> TrainConfig:
    """Load a config: the YAML file ``path`` (default: the shipped one for method/env family),
    then ``method``/``env_id`` if given, then ``overrides`` (dict or ``key=value`` strings).
    """
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = migrate_legacy_keys(dict(overrides or {}))  # an override wins over the file
    if path is None:
        m = method or overrides.get("method") or TrainConfig.method
        e = env_id or overrides.get("env_id") or TrainConfig.env_id
        path = config_path(str(m), family_of(str(e)))
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at top level")
    if method is not None:
        data["method"] = method
    if env_id is not None:
        data["env_id"] = env_id
    data.update(overrides)
    if "total_steps" not in data:  # the shipped files leave the budget to the task
        budget = paper_budget(str(data.get("env_id", TrainConfig.env_id)))
        if budget is not None:
            data["total_steps"] = budget
    return config_from_dict(data)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
