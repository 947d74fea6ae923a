"""Tasks over MiniGrid/BabyAI levels: descriptions, samplers, env construction.

``Task``, the samplers and ``Vocab`` need no env package; :func:`make_env` and
:func:`make_vec_env` import gymnasium and minigrid when this package is imported.
"""

from __future__ import annotations

from metarim.tasks.envs import TaskEnv, check_level, make_env, make_vec_env
from metarim.tasks.samplers import (
    SAMPLERS,
    LevelSampler,
    MissionSampler,
    SeedRangeSampler,
    TaskSampler,
    make_sampler,
    register_sampler,
)
from metarim.tasks.task import MissionFilter, Task
from metarim.tasks.vocab import Vocab

__all__ = [
    "SAMPLERS",
    "LevelSampler",
    "MissionFilter",
    "MissionSampler",
    "SeedRangeSampler",
    "Task",
    "TaskEnv",
    "TaskSampler",
    "Vocab",
    "check_level",
    "make_env",
    "make_sampler",
    "make_vec_env",
    "register_sampler",
]
