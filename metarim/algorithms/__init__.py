"""Learners, registered by name: ``ppo`` and ``a2c`` here; meta-learners plug in."""

from __future__ import annotations

from metarim.algorithms import maml, meta_rim, reptile  # noqa: F401,E402  (registers metarim, maml, reptile)
from metarim.algorithms.base import LEARNERS, Learner, build_policy, make_learner, register_learner
from metarim.algorithms.ppo import A2C, PPO

__all__ = ["A2C", "LEARNERS", "PPO", "Learner", "build_policy", "make_learner", "register_learner"]
