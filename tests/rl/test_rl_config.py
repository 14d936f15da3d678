"""Every shipped YAML parses into TrainConfig; overrides and errors; spot checks of Tables 2-4."""

from __future__ import annotations

import dataclasses

import pytest

from trpl_math.rl.config import (
    CONFIG_DIR,
    FAMILIES,
    METHODS,
    TrainConfig,
    config_from_dict,
    config_path,
    family_of,
    load_config,
    parse_overrides,
)


def test_every_method_and_family_has_a_config():
    expected = {f"{m}_{f}.yaml" for m in METHODS for f in FAMILIES}
    assert expected == {p.name for p in CONFIG_DIR.glob("*.yaml")}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_file_parses(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert path.stem.startswith(cfg.method)
    assert cfg.rollout_steps % cfg.num_envs == 0


def test_table2_values():
    kl = load_config(config_path("kl", "mujoco"))
    assert (kl.eps_mean, kl.eps_cov, kl.epochs, kl.lr, kl.vf_lr) == (0.03, 0.001, 20, 5e-5, 4.5e-4)
    assert (kl.minibatch_size, kl.alpha, kl.norm_rewards, kl.rollout_steps) == (
        32,
        8.0,
        False,
        2048,
    )
    ppo = load_config(config_path("ppo", "mujoco"))
    assert (ppo.epochs, ppo.lr, ppo.vf_lr, ppo.minibatch_size) == (10, 3e-4, 2.5e-4, 64)
    assert (ppo.norm_rewards, ppo.reward_clip, ppo.obs_clip, ppo.vf_clip) == (True, 10.0, 10.0, 0.2)
    assert ppo.lr_decay and ppo.max_grad_norm is not None
    ppo_m = load_config(config_path("ppo_m", "mujoco"))
    assert not ppo_m.norm_rewards and not ppo_m.lr_decay and ppo_m.vf_clip is None


def test_table3_and_table4_values():
    w2 = load_config(config_path("w2", "humanoid"))
    assert (w2.eps_mean, w2.eps_cov, w2.rollout_steps, w2.minibatch_size) == (
        0.05,
        0.01,
        16384,
        256,
    )
    assert (w2.temperature, w2.entropy_equality) == (0.2, True)
    frob = load_config(config_path("frob", "reacher_sparse"))
    assert (frob.eps_cov, frob.epochs, frob.lr) == (5e-5, 20, 3e-4)


def test_overrides_are_typed():
    cfg = load_config(
        method="w2",
        env_id="Walker2d-v5",
        overrides=[
            "seed=7",
            "obs_clip=none",
            "hidden_sizes=[32, 16]",
            "lr=1e-3",
            "contextual_cov=true",
        ],
    )
    assert cfg.method == "w2" and cfg.env_id == "Walker2d-v5" and cfg.seed == 7
    assert cfg.obs_clip is None and cfg.hidden_sizes == [32, 16]
    assert cfg.lr == 1e-3 and cfg.contextual_cov is True


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"not_a_key": 1}, "unknown config keys"),
        ({"method": "trpo"}, "method"),
        ({"seed": "1.5"}, "integer"),
        ({"norm_obs": "maybe"}, "true/false"),
        ({"rollout_steps": 100, "num_envs": 3}, "multiple"),
        ({"cov_type": "banded"}, "cov_type"),
        ({"method": "ppo", "entropy_control": True}, "entropy_control"),
    ],
)
def test_bad_values_raise(data, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(data)


def test_parse_overrides_needs_equals():
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["seed"])


def test_family_of():
    assert family_of("Humanoid-v5") == "humanoid"
    assert family_of("ReacherSparse-v0") == "reacher_sparse"
    assert family_of("Hopper-v5") == "mujoco"


def test_paper_budgets_per_task():
    """Hopper 1M; HalfCheetah, Walker2d, Ant 3M; Humanoid 10M (the paper's Figure 4 axes),
    unless the command line sets one."""
    from trpl_math.rl.config import load_config

    for env, steps in (
        ("Hopper-v5", 1_000_000),
        ("HalfCheetah-v5", 3_000_000),
        ("Walker2d-v5", 3_000_000),
        ("Ant-v5", 3_000_000),
        ("Humanoid-v5", 10_000_000),
    ):
        for method in ("kl", "ppo"):
            assert load_config(method=method, env_id=env).total_steps == steps, (env, method)
    assert load_config(env_id="HalfCheetah-v5", overrides=["total_steps=5000"]).total_steps == 5000


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("truncation", "cut"),
        ("cov_source", "first"),
        ("net_dtype", "float16"),
        ("advantage_norm", "epoch"),
    ],
)
def test_released_behaviour_keys_are_checked(key, bad):
    from trpl_math.rl.config import load_config

    with pytest.raises(ValueError, match=key):
        load_config(overrides={key: bad})


def test_paper_defaults_of_the_released_behaviour_keys():
    """The paper's choices are the defaults; the released code's are opt-in."""
    from trpl_math.rl.config import load_config

    cfg = load_config(method="kl", env_id="Hopper-v5")
    assert (cfg.advantage_norm, cfg.clip_actions, cfg.truncation) == ("batch", True, "bootstrap")
    assert (cfg.cov_source, cfg.net_dtype) == ("batch", "float32")


def test_released_w2_halfcheetah_config():
    """The authors' released W2 HalfCheetah settings; everything else as Table 2's W2."""
    path = CONFIG_DIR / "released" / "w2_halfcheetah.yaml"
    cfg = load_config(path)
    assert (cfg.method, cfg.env_id, cfg.eps_mean, cfg.eps_cov, cfg.alpha) == (
        "w2",
        "HalfCheetah-v5",
        0.085,
        5e-5,
        1.0,
    )
    assert (cfg.vf_lr, cfg.minibatch_size, cfg.rollout_steps // cfg.minibatch_size) == (
        7.5e-4,
        16,
        128,
    )
    assert cfg.total_steps == 3_000_000
    table2 = load_config(config_path("w2", "mujoco"), env_id="HalfCheetah-v5").to_dict()
    changed = {k for k, v in cfg.to_dict().items() if table2[k] != v}
    assert changed == {"eps_mean", "eps_cov", "alpha", "vf_lr", "minibatch_size"}


@pytest.mark.parametrize(("key", "value"), [("eps_mean", "abc"), ("epochs", "2.5"), ("lr", "x")])
def test_conversion_errors_name_the_key(key, value):
    from trpl_math.rl.config import coerce_field

    with pytest.raises(ValueError, match=rf"^{key} expects"):
        coerce_field(key, value)
    with pytest.raises(ValueError, match=key):
        load_config(overrides={key: value})


class TestMethodNames:
    """One registry of the measures (trpl_math.measures) and one reading of the ``_e`` suffix."""

    def test_projection_methods_are_the_registry(self):
        from trpl_math.measures import MEASURES
        from trpl_math.rl.config import PROJECTION_METHODS
        from trpl_math.torch import MEASURES as LAYER_MEASURES

        assert PROJECTION_METHODS == tuple(MEASURES) == LAYER_MEASURES

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("kl", ("kl", False)),
            ("kl_e", ("kl", True)),
            ("kl_joint_e", ("kl_joint", True)),
            ("ppo", ("ppo", False)),
            ("papi", ("papi", False)),
        ],
    )
    def test_split_method(self, name, expected):
        from trpl_math.rl.config import method_label, split_method

        assert split_method(name) == expected
        assert method_label(*expected) == name

    @pytest.mark.parametrize("name", ["ppo_e", "papi_e", "klx", "", "_e"])
    def test_split_method_rejects(self, name):
        from trpl_math.rl.config import split_method

        with pytest.raises(ValueError, match="method must be one of"):
            split_method(name)


class TestLegacyKeys:
    """Runs saved by earlier versions load: their renamed keys map to today's."""

    def test_committed_run_configs_load(self):
        from pathlib import Path

        import yaml

        root = Path(__file__).resolve().parents[2] / "docs" / "results" / "runs"
        paths = sorted(root.rglob("config.yaml"))
        assert len(paths) >= 20
        for path in paths:
            data = yaml.safe_load(path.read_text())
            cfg = config_from_dict(data)
            assert cfg.diag == (data.get("cov_type", "diag") == "diag")

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ({"cov_type": "full"}, ("diag", False)),
            ({"cov_type": "diag"}, ("diag", True)),
            ({"bootstrap_truncation": False}, ("truncation", "terminal")),
            ({"bootstrap_truncation": "true"}, ("truncation", "bootstrap")),
            ({"norm_advantages": False}, ("advantage_norm", "none")),
        ],
    )
    def test_mapping(self, old, new):
        assert getattr(config_from_dict(old), new[0]) == new[1]

    def test_contradiction_and_bad_values(self):
        with pytest.raises(ValueError, match="contradicts"):
            config_from_dict({"cov_type": "full", "diag": True})
        with pytest.raises(ValueError, match="cov_type"):
            config_from_dict({"cov_type": "banded"})


def test_legacy_override_wins_over_the_file():
    assert load_config(method="w2", overrides={"cov_type": "full"}).diag is False


def test_one_name_per_setting_with_the_layer():
    """The config's names of the layer's settings are the layer's: eps, diag, target_per_dim."""
    import inspect

    from trpl_math.torch import EntropySchedule, TrustRegionLayer

    layer_args = set(inspect.signature(TrustRegionLayer).parameters)
    sched_args = {f.name for f in dataclasses.fields(EntropySchedule)}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in ("eps_mean", "eps_cov", "eps", "scaled", "diag"):
        assert name in layer_args and name in names, name
    for name in ("target_per_dim", "temperature"):
        assert name in sched_args and name in names, name
    assert {"eps_joint", "cov_type", "target_entropy"}.isdisjoint(names)
    old = {"eps_joint": 0.02, "target_entropy": -1.0, "cov_type": "full"}
    cfg = config_from_dict(old)
    assert (cfg.eps, cfg.target_per_dim, cfg.diag) == (0.02, -1.0, False)
