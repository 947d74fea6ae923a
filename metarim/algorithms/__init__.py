"""Learners, registered by name: ``ppo`` and ``a2c``, ``metarim``, ``fastslow``, ``maml`` and
``reptile``.

Each declares its own facts (adaptation rule, default inner rate, supported switches,
config checks; :class:`~metarim.algorithms.base.Learner`), so the CLI, the sweep and the
evaluation look them up here instead of naming learners. Importing a learner's module
registers it.
"""

from __future__ import annotations

from metarim.algorithms.base import (
    LEARNERS,
    Learner,
    build_policy,
    learner_class,
    make_learner,
    prepare_config,
    register_learner,
)
from metarim.algorithms.fastslow import FastSlow
from metarim.algorithms.maml import MAML
from metarim.algorithms.meta_rim import MetaRIM
from metarim.algorithms.ppo import A2C, PPO
from metarim.algorithms.reptile import Reptile
from metarim.algorithms.task_learner import TaskLearner

__all__ = [
    "A2C",
    "LEARNERS",
    "FastSlow",
    "MAML",
    "PPO",
    "Learner",
    "MetaRIM",
    "Reptile",
    "TaskLearner",
    "build_policy",
    "learner_class",
    "make_learner",
    "prepare_config",
    "register_learner",
]
