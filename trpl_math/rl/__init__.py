"""Reinforcement learning with trust-region projection layers (Otto et al., ICLR 2021).

Train Gaussian MLP policies on Gymnasium tasks with the projections (``frob``, ``w2``,
``w2_exact``, ``kl``, ``kl_joint``, optionally with entropy control) or the PPO baselines
(``ppo``, ``ppo_m``). Entry points: the ``trpl`` command (:mod:`trpl_math.rl.cli`),
:func:`trpl_math.rl.run.train` and :class:`trpl_math.rl.trainer.Trainer` (many seeds in one
process: :func:`trpl_math.rl.multiseed.train_seeds`); see docs/rl.md.
This package imports the core; the core never imports it.
"""
