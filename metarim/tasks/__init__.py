"""Tasks as data: descriptions, samplers, the vocabulary. No env package is imported;
envs are built from tasks by :mod:`metarim.envs`."""

from __future__ import annotations

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
    "TaskSampler",
    "Vocab",
    "make_sampler",
    "register_sampler",
]
