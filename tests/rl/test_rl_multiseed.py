"""Many seeds in one process (trpl_math.rl.multiseed): independence, resume, the run folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_env import register

from trpl_math.rl.cli import main
from trpl_math.rl.config import load_config
from trpl_math.rl.multiseed import (
    MultiSeedTrainer,
    StackedAdam,
    clip_grad_norm_per_seed,
    seed_configs,
    stacked_linear,
    train_seeds,
)
from trpl_math.rl.run import load_trainer, train
from trpl_math.rl.trainer import Trainer

TOY = register()
FAST = {
    "env_id": TOY,
    "total_steps": 2000,
    "rollout_steps": 400,
    "num_envs": 4,
    "epochs": 4,
    "vf_epochs": 2,
    "minibatch_size": 50,
    "lr": 3e-4,
    "vf_lr": 1e-3,
    "eval_episodes": 2,
    "checkpoint_every": 2,
}
HOPPER = {
    "total_steps": 768,
    "rollout_steps": 256,
    "epochs": 2,
    "vf_epochs": 1,
    "eval_episodes": 1,
    "checkpoint_every": 1,
}


def toy_config(method: str, **extra):
    return load_config(method=method, env_id=TOY, overrides={**FAST, **extra})


def read_rows(folder: Path) -> list[dict[str, str]]:
    """progress.csv without the wall-clock columns."""
    with (folder / "progress.csv").open(newline="") as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("time") and k != "steps_per_s"}
            for r in csv.DictReader(f)
        ]


def agent_params(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "agent.pt", weights_only=False)["policy"]


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise-equal logs (all but wall-clock columns) and final policies."""
    assert read_rows(a) == read_rows(b)
    pa, pb = agent_params(a), agent_params(b)
    assert pa.keys() == pb.keys()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


class TestIndependence:
    """Seed k's run does not depend on which seeds share its process."""

    @pytest.mark.parametrize("method", ["kl", "ppo", "w2", "frob"])
    @pytest.mark.parametrize("contextual", [False, True])
    def test_seed_3_beside_seeds_0_to_2_equals_seed_3_alone(self, tmp_path, method, contextual):
        cfg = toy_config(method, contextual_cov=contextual)
        train_seeds(cfg, [3], tmp_path / "alone", progress=False, tensorboard=False)
        train_seeds(cfg, [0, 1, 2, 3], tmp_path / "beside", progress=False, tensorboard=False)
        assert_same_run(tmp_path / "alone" / "seed_3", tmp_path / "beside" / "seed_3")
        assert read_rows(tmp_path / "beside" / "seed_0") != read_rows(
            tmp_path / "beside" / "seed_3"
        )

    def test_many_seeds(self, tmp_path):
        """17 seeds: the covariance parameters (17 x 2) span more than one vectorised chunk
        of softplus, whose vectorised body and scalar remainder round differently."""
        cfg = toy_config("kl", total_steps=800)
        train_seeds(cfg, [3], tmp_path / "alone", progress=False, tensorboard=False)
        train_seeds(cfg, range(17), tmp_path / "beside", progress=False, tensorboard=False)
        assert_same_run(tmp_path / "alone" / "seed_3", tmp_path / "beside" / "seed_3")

    @pytest.mark.parametrize("contextual", [False, True])
    def test_full_covariance_too(self, tmp_path, contextual):
        cfg = toy_config("kl", diag=False, contextual_cov=contextual, total_steps=800)
        train_seeds(cfg, [3], tmp_path / "alone", progress=False, tensorboard=False)
        train_seeds(cfg, [1, 3], tmp_path / "beside", progress=False, tensorboard=False)
        assert_same_run(tmp_path / "alone" / "seed_3", tmp_path / "beside" / "seed_3")

    @pytest.mark.parametrize("method", ["kl_joint", "w2_exact"])
    def test_entropy_control_and_the_other_projections(self, tmp_path, method):
        cfg = toy_config(method, total_steps=800, entropy_control=True, target_per_dim=-1.0)
        train_seeds(cfg, [3], tmp_path / "alone", progress=False, tensorboard=False)
        train_seeds(cfg, [2, 3], tmp_path / "beside", progress=False, tensorboard=False)
        assert_same_run(tmp_path / "alone" / "seed_3", tmp_path / "beside" / "seed_3")

    @pytest.mark.parametrize("method", ["kl", "ppo"])
    def test_on_hopper_with_the_papers_minibatches(self, tmp_path, method):
        cfg = load_config(method=method, env_id="Hopper-v5", overrides=HOPPER)
        train_seeds(cfg, [3], tmp_path / "alone", progress=False, tensorboard=False)
        train_seeds(cfg, [0, 1, 2, 3], tmp_path / "beside", progress=False, tensorboard=False)
        assert_same_run(tmp_path / "alone" / "seed_3", tmp_path / "beside" / "seed_3")

    @pytest.mark.parametrize("method", ["kl", "ppo"])
    def test_close_to_the_single_seed_trainer(self, method):
        """Against :class:`Trainer` of the same seed: equal up to float32 rounding.

        The two ops that round differently: (1) the sum over the minibatch of a gradient that
        broadcasts (a bias, a non-contextual covariance parameter): ``F.linear``'s backward
        sums it in the memory layout it arrives in, which the projection's backward chooses
        differently for some batch shapes, while the stacked path sums a contiguous copy so
        that the order does not depend on S; (2) softplus of the covariance parameters, which
        the stacked path pads per seed to whole vectorised chunks, where the single run's few
        entries take torch's scalar remainder loop. Each is an ulp (~6e-8) now and then, which
        training then carries along: after 3 iterations the parameters differ by
        < 1e-5 and the logged statistics by a relative 1e-4."""
        cfg = toy_config(method, seed=3, total_steps=1200)
        single = Trainer(cfg)
        stack = MultiSeedTrainer([cfg])
        for _ in range(cfg.num_iterations):
            a, (b,) = single.iterate(), stack.iterate()
            for k in a:
                if not k.startswith("time"):
                    assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6, nan_ok=True), k
        pa, pb = single.policy.state_dict(), stack.trainers[0].policy.state_dict()
        for k in pa:
            torch.testing.assert_close(pb[k], pa[k], rtol=0, atol=1e-5)
        single.close()
        stack.close()


class TestResume:
    def test_resume_continues_all_seeds_bitwise(self, tmp_path):
        cfg = toy_config("kl")
        train_seeds(cfg, [0, 1, 2], tmp_path / "full", progress=False, tensorboard=False)
        train_seeds(
            cfg, [0, 1, 2], tmp_path / "cut", progress=False, tensorboard=False, max_iterations=3
        )
        # a killed run may have logged past its checkpoint: resume must drop those rows
        with (tmp_path / "cut" / "seed_1" / "progress.csv").open("a") as f:
            f.write("99,0\n")
        train_seeds(cfg, [0, 1, 2], tmp_path / "cut", resume=True, progress=False)
        for s in (0, 1, 2):
            assert_same_run(tmp_path / "full" / f"seed_{s}", tmp_path / "cut" / f"seed_{s}")

    def test_lagging_seeds_are_brought_level_first(self, tmp_path):
        """A kill between two seeds' checkpoints leaves them at different iterations."""
        cfg = toy_config("ppo")
        train_seeds(cfg, [0, 1, 2], tmp_path / "full", progress=False, tensorboard=False)
        train_seeds(
            cfg, [0, 1, 2], tmp_path / "cut", progress=False, tensorboard=False, max_iterations=2
        )
        train_seeds(
            cfg, [1], tmp_path / "cut", resume=True, progress=False, tensorboard=False,
            max_iterations=4,
        )  # fmt: skip
        train_seeds(cfg, [0, 1, 2], tmp_path / "cut", resume=True, progress=False)
        for s in (0, 1, 2):
            assert_same_run(tmp_path / "full" / f"seed_{s}", tmp_path / "cut" / f"seed_{s}")

    def test_on_mujoco(self, tmp_path):
        cfg = load_config(method="ppo", env_id="Hopper-v5", overrides=HOPPER)
        train_seeds(cfg, [0, 5], tmp_path / "full", progress=False, tensorboard=False)
        train_seeds(
            cfg, [0, 5], tmp_path / "cut", progress=False, tensorboard=False, max_iterations=1
        )
        train_seeds(cfg, [0, 5], tmp_path / "cut", resume=True, progress=False, tensorboard=False)
        for s in (0, 5):
            assert_same_run(tmp_path / "full" / f"seed_{s}", tmp_path / "cut" / f"seed_{s}")


class TestRunFolders:
    def test_layout_equals_a_single_runs(self, tmp_path):
        cfg = toy_config("kl", seed=3)
        train(cfg, tmp_path / "single", progress=False)
        train_seeds(cfg, [0, 3], tmp_path / "multi", progress=False)

        def files(folder: Path) -> list[str]:
            """Relative paths; TensorBoard event files by their folder (names hold a time)."""
            rel = [p.relative_to(folder) for p in folder.rglob("*") if p.is_file()]
            return sorted(str(r.parent if r.parent.name == "tb" else r) for r in rel)

        single, multi = tmp_path / "single", tmp_path / "multi" / "seed_3"
        assert files(single) == files(multi)
        assert (single / "config.yaml").read_text() == (multi / "config.yaml").read_text()
        assert read_rows(single)[0].keys() == read_rows(multi)[0].keys()
        a = torch.load(single / "checkpoints" / "latest.pt", weights_only=False)
        b = torch.load(multi / "checkpoints" / "latest.pt", weights_only=False)
        assert a.keys() == b.keys()
        for key in ("pi_opt", "vf_opt", "reg_opt"):
            assert a[key]["param_groups"] == b[key]["param_groups"]
            assert a[key]["state"].keys() == b[key]["state"].keys()
            for i, st in a[key]["state"].items():
                assert st.keys() == b[key]["state"][i].keys()
                for name, v in st.items():
                    assert v.shape == b[key]["state"][i][name].shape
        assert torch.equal(a["torch_global"], b["torch_global"])
        for key in ("policy", "vf"):  # saved as tensors of their own, not views of the stack
            for v in b[key].values():
                assert v.untyped_storage().nbytes() == v.numel() * v.element_size()
        agent_a = torch.load(single / "agent.pt", weights_only=False)
        agent_b = torch.load(multi / "agent.pt", weights_only=False)
        assert agent_a.keys() == agent_b.keys()
        # a single-seed trainer loads the stacked run's checkpoint and agent
        trainer = load_trainer(multi / "checkpoints" / "latest.pt")
        assert trainer.iteration == cfg.num_iterations
        trainer.close()

    def test_cli_seeds_then_table_and_evaluate(self, tmp_path, capsys):
        out = tmp_path / "kl"
        args = ["train", "--env", TOY, "--method", "kl", "--seeds", "0", "1", "--out", str(out)]
        sets = [f"{k}={v}" for k, v in FAST.items() if k != "env_id"]
        assert main([*args, "--no-progress", *[x for s in sets for x in ("--set", s)]]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["seed_0", "seed_1"]
        assert main(["table", str(tmp_path), "--window", "2"]) == 0
        assert "kl" in capsys.readouterr().out
        assert main(["evaluate", str(out / "seed_1" / "agent.pt"), "--episodes", "2"]) == 0

    def test_cli_seeds_folder_rules(self, tmp_path, capsys):
        """As for a single run: an existing run is refused without --resume/--overwrite (one
        line, exit 2), --overwrite starts over, and --seeds with --seed is a usage error."""
        out = tmp_path / "kl"
        sets = [f"{k}={v}" for k, v in FAST.items() if k != "env_id"]
        args = [
            "train",
            "--env",
            TOY,
            "--method",
            "kl",
            "--seeds",
            "0",
            "1",
            "--out",
            str(out),
            "--no-progress",
            "--max-iterations",
            "1",
            *[x for s in sets for x in ("--set", s)],
        ]
        assert main(args) == 0
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "already holds a run" in err and len(err.strip().splitlines()) == 1
        assert main([*args, "--overwrite"]) == 0
        rows = (out / "seed_1" / "progress.csv").read_text().splitlines()
        assert len(rows) == 2  # header + the one iteration of the new run, nothing kept
        assert main([*args, "--seed", "3"]) == 2


class TestErrors:
    def test_papi_is_refused(self):
        with pytest.raises(ValueError, match="papi is not supported"):
            MultiSeedTrainer(seed_configs(toy_config("papi", eps=0.015), [0, 1]))

    def test_configs_must_differ_only_in_the_seed(self):
        with pytest.raises(ValueError, match=r"except the seed: \['lr'\]"):
            MultiSeedTrainer([toy_config("kl", seed=0), toy_config("kl", seed=1, lr=1e-3)])

    def test_seeds_must_be_distinct(self, tmp_path):
        with pytest.raises(ValueError, match="distinct"):
            train_seeds(toy_config("kl"), [1, 1], tmp_path)


class TestStackedPrimitives:
    """The stacked operations equal the per-seed ones bitwise, seed by seed."""

    @pytest.mark.parametrize("shape", [(32, 11, 64), (64, 64, 64), (32, 64, 3), (64, 64, 1)])
    def test_stacked_linear_is_f_linear_per_seed(self, shape):
        B, i, o = shape
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(4, B, i, generator=gen, requires_grad=True)
        w = torch.randn(4, o, i, generator=gen, requires_grad=True)
        b = torch.randn(4, o, generator=gen, requires_grad=True)
        g = torch.randn(4, B, o, generator=gen)
        stacked_linear(x, w, b).backward(g)
        for k in range(4):
            xk, wk, bk = (t.detach()[k].clone().requires_grad_() for t in (x, w, b))
            y = torch.nn.functional.linear(xk, wk, bk)
            assert torch.equal(y, stacked_linear(x[k : k + 1], w[k : k + 1], b[k : k + 1])[0])
            y.backward(g[k])
            for got, want in ((x.grad[k], xk.grad), (w.grad[k], wk.grad), (b.grad[k], bk.grad)):
                assert torch.equal(got, want)

    @pytest.mark.parametrize("measure", ["frob", "w2", "w2_exact", "kl", "kl_joint"])
    def test_layer_projects_s_b_means_with_s_1_covariances(self, measure):
        """The layer on ``(S, B, d)`` means with non-contextual ``(S, 1, d)`` covariances equals
        its S calls on ``(B, d)`` means with ``(1, d)`` covariances: values and gradients,
        bitwise."""
        from trpl_math.torch import TrustRegionLayer

        layer = TrustRegionLayer(measure, eps_mean=0.01, eps_cov=1e-3, diag=True, validate=False)
        gen = torch.Generator().manual_seed(3)
        S, B, d = 4, 32, 3
        old_mean = torch.randn(S, B, d, generator=gen)
        old_var = torch.rand(S, 1, d, generator=gen) + 0.5
        mean = (old_mean + 0.3 * torch.randn(S, B, d, generator=gen)).requires_grad_()
        var = (old_var * (1 + 0.5 * torch.rand(S, 1, d, generator=gen))).requires_grad_()
        proj = layer(mean, var, old_mean, old_var)
        assert proj.mean.shape == (S, B, d)
        (proj.mean.sum(-1) + proj.cov.sum(-1)).sum().backward()
        for k in range(S):
            mk, vk = mean.detach()[k].requires_grad_(), var.detach()[k].requires_grad_()
            pk = layer(mk, vk, old_mean[k], old_var[k])
            assert torch.equal(proj.mean[k], pk.mean)
            assert torch.equal(proj.cov[k].expand(B, d), pk.cov.expand(B, d))
            (pk.mean.sum(-1) + pk.cov.expand(B, d).sum(-1)).sum().backward()
            assert torch.equal(mean.grad[k], mk.grad)
            assert torch.equal(var.grad[k], vk.grad)

    def test_stacked_adam_is_torch_adam_per_seed(self):
        shapes = [(2,), (64, 11), (64,), (3, 64)]
        gen = torch.Generator().manual_seed(1)
        stack = [torch.randn(5, *s, generator=gen, requires_grad=True) for s in shapes]
        per_seed = [[p.detach()[k].clone().requires_grad_() for p in stack] for k in range(5)]
        opt = StackedAdam(stack, lr=3e-4, eps=1e-5)
        opts = [torch.optim.Adam(ps, lr=3e-4, eps=1e-5, fused=True) for ps in per_seed]
        for _ in range(30):
            for j, p in enumerate(stack):
                g = torch.randn(p.shape, generator=gen) * torch.rand(1, generator=gen) * 10
                p.grad = g
                for k in range(5):
                    per_seed[k][j].grad = g[k].clone()
            opt.step()
            for o in opts:
                o.step()
        for k in range(5):
            for j, p in enumerate(stack):
                assert torch.equal(p.detach()[k], per_seed[k][j].detach())
                st, ref = opt.state[p], opts[k].state[per_seed[k][j]]
                assert torch.equal(st["exp_avg_sq"][k], ref["exp_avg_sq"])
                assert torch.equal(st["step"], ref["step"])

    def test_clipping_per_seed_is_clip_grad_norm_per_seed(self):
        gen = torch.Generator().manual_seed(2)
        stack = [torch.zeros(3, *s, requires_grad=True) for s in [(64, 11), (64,), (3, 64)]]
        for p in stack:
            p.grad = torch.randn(p.shape, generator=gen)
        with torch.no_grad():
            stack[0].grad[1] *= 1e-3  # seed 1 within the bound: unchanged
        refs = [[p.grad[k].clone() for p in stack] for k in range(3)]
        clip_grad_norm_per_seed(stack, 0.5)
        for k in range(3):
            params = [torch.zeros_like(g, requires_grad=True) for g in refs[k]]
            for p, g in zip(params, refs[k], strict=True):
                p.grad = g
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            for p, q in zip(stack, params, strict=True):
                assert torch.equal(p.grad[k], q.grad)
        norm1 = np.sqrt(sum(float((p.grad[1] ** 2).sum()) for p in stack))
        assert norm1 < 0.5


class FakeClock:
    """``time`` for trpl_math.rl.multiseed whose ``time()`` passes the deadline at call ``n``."""

    def __init__(self, n: int, deadline: float):
        self.calls, self.n, self.deadline = 0, n, deadline
        self.perf_counter = __import__("time").perf_counter

    def time(self) -> float:
        self.calls += 1
        return self.deadline + (1.0 if self.calls >= self.n else -1.0)


class TestStops:
    """Every stop leaves each seed a checkpoint and agent of its last completed iteration."""

    def test_deadline_stops_checkpoints_and_resumes_bitwise(self, tmp_path, monkeypatch):
        import trpl_math.rl.multiseed as ms

        cfg = toy_config("kl")  # checkpoint_every=2: iteration 3 is saved only by the deadline
        train_seeds(cfg, [0, 2], tmp_path / "full", progress=False, tensorboard=False)
        monkeypatch.setattr(ms, "time", FakeClock(4, deadline=1e9))
        train_seeds(cfg, [0, 2], tmp_path / "cut", progress=False, tensorboard=False, deadline=1e9)
        for s in (0, 2):
            f = tmp_path / "cut" / f"seed_{s}"
            assert len(read_rows(f)) == 3
            assert torch.load(f / "checkpoints" / "latest.pt", weights_only=False)["iteration"] == 3
            assert torch.load(f / "agent.pt", weights_only=False)["iteration"] == 3
        monkeypatch.undo()
        train_seeds(cfg, [0, 2], tmp_path / "cut", resume=True, progress=False, tensorboard=False)
        for s in (0, 2):
            assert_same_run(tmp_path / "full" / f"seed_{s}", tmp_path / "cut" / f"seed_{s}")

    def test_agent_written_at_max_iterations(self, tmp_path):
        cfg = toy_config("ppo")
        train_seeds(cfg, [0, 1], tmp_path, progress=False, tensorboard=False, max_iterations=3)
        for s in (0, 1):
            agent = torch.load(tmp_path / f"seed_{s}" / "agent.pt", weights_only=False)
            assert agent["iteration"] == 3

    def test_deadline_while_lagging_seeds_catch_up(self, tmp_path, monkeypatch):
        """The deadline passing during the catch-up ends the call (no endless recursion)."""
        import trpl_math.rl.multiseed as ms

        cfg = toy_config("ppo")
        train_seeds(cfg, [0, 1], tmp_path, progress=False, tensorboard=False, max_iterations=2)
        train_seeds(cfg, [1], tmp_path, resume=True, progress=False, tensorboard=False,
                    max_iterations=4)  # fmt: skip
        clock = FakeClock(2, deadline=1e9)  # one catch-up iteration, then past the deadline
        monkeypatch.setattr(ms, "time", clock)
        train_seeds(cfg, [0, 1], tmp_path, resume=True, progress=False, tensorboard=False,
                    deadline=1e9)  # fmt: skip
        assert [len(read_rows(tmp_path / f"seed_{s}")) for s in (0, 1)] == [3, 4]

    def test_cli_accepts_deadline_with_seeds(self, tmp_path, capsys):
        out = tmp_path / "runs"
        rc = main(["train", "--env", TOY, "--method", "ppo", "--seeds", "0", "1", "--out", str(out),
                   "--deadline", "2000-01-01T00:00:00", "--no-progress", "--no-tensorboard",
                   "--set", "total_steps=2000", "--set", "rollout_steps=400"])  # fmt: skip
        assert rc == 0
        for s in (0, 1):  # stopped before the first iteration, resumable
            assert read_rows(out / f"seed_{s}") == []
            assert torch.load(out / f"seed_{s}" / "agent.pt", weights_only=False)["iteration"] == 0


class TestResumeSettings:
    """--resume with other settings stops and lists them, as for a single run."""

    def test_different_setting_refused_with_the_difference(self, tmp_path):
        from trpl_math.rl.run import RunError

        cfg = toy_config("ppo")
        train_seeds(cfg, [0, 1], tmp_path, progress=False, tensorboard=False, max_iterations=1)
        other = toy_config("ppo", lr=1e-3)
        with pytest.raises(RunError, match=r"seed_0.*\n  lr: saved 0.0003, requested 0.001"):
            train_seeds(other, [0, 1], tmp_path, resume=True, progress=False, tensorboard=False)
        # only the fields asked for are compared (the CLI passes its command line's)
        train_seeds(other, [0, 1], tmp_path, resume=True, compare=["method"], progress=False,
                    tensorboard=False, max_iterations=2)  # fmt: skip
        assert len(read_rows(tmp_path / "seed_1")) == 2

    def test_cli_lists_the_difference(self, tmp_path, capsys):
        args = ["train", "--env", TOY, "--method", "ppo", "--seeds", "0", "1", "--out",
                str(tmp_path), "--no-progress", "--no-tensorboard", "--max-iterations", "1",
                "--set", "total_steps=2000", "--set", "rollout_steps=400"]  # fmt: skip
        assert main(args) == 0
        assert main([*args, "--resume", "--set", "lr=0.5"]) == 2
        assert "lr: saved" in capsys.readouterr().err


def test_tensorboard_holds_every_iteration_once_across_resumes(tmp_path):
    """A crash after iteration 3 was logged but before its checkpoint: the resume from iteration
    2 keeps iteration 2's events (the checkpointed one) and logs 3 and after anew, per seed."""
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def steps(folder: Path) -> list[int]:
        found: list[int] = []
        for f in sorted((folder / "tb").iterdir()):
            acc = EventAccumulator(str(f))
            acc.Reload()
            found += [e.step for e in acc.Scalars("kl_mean")]
        return sorted(found)

    cfg = toy_config("kl", checkpoint_every=100)
    train_seeds(cfg, [0, 1], tmp_path, progress=False, max_iterations=2)
    for s in (0, 1):
        shutil.copy(tmp_path / f"seed_{s}/checkpoints/latest.pt", tmp_path / f"iter2_{s}.pt")
    train_seeds(cfg, [0, 1], tmp_path, resume=True, progress=False, max_iterations=3)
    assert steps(tmp_path / "seed_1") == [400, 800, 1200]
    for s in (0, 1):  # iteration 3's checkpoint was lost
        shutil.copy(tmp_path / f"iter2_{s}.pt", tmp_path / f"seed_{s}/checkpoints/latest.pt")
    train_seeds(cfg, [0, 1], tmp_path, resume=True, progress=False)
    for s in (0, 1):
        assert steps(tmp_path / f"seed_{s}") == [400, 800, 1200, 1600, 2000]


class TestStopSignals:
    def test_sigterm_in_the_bookkeeping_waits_for_every_seed_to_be_logged(
        self, tmp_path, monkeypatch
    ):
        # as for one run (tests/rl/test_rl_cli_runs.py): a handler's exception inside
        # TensorBoard's writer can hang its close(); the signal is held until the seeds' rows are
        # written, then stops the run before the next iteration
        import signal

        from trpl_math.rl import run as run_mod

        original = run_mod._tb_scalars
        logged = []

        def tb_scalars(writer, row, step):
            if row["iteration"] == 2 and not logged.count(2):
                signal.raise_signal(signal.SIGTERM)
            original(writer, row, step)
            logged.append(row["iteration"])

        monkeypatch.setattr(run_mod, "_tb_scalars", tb_scalars)
        cfg = toy_config("ppo", total_steps=4000)
        with pytest.raises(SystemExit) as exc:
            train_seeds(cfg, [0, 1], tmp_path, progress=False)
        assert exc.value.code == 143
        assert logged == [1, 1, 2, 2]
        for seed in (0, 1):
            folder = tmp_path / f"seed_{seed}"
            assert len(read_rows(folder)) == 2
            assert torch.load(folder / "agent.pt", weights_only=False)["iteration"] == 2
