"""Tasks as data: descriptions, samplers, the vocabulary and the seeding of episodes.

Nothing here steps an env or imports an env package; :mod:`metarim.envs` builds envs from
tasks.
"""

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
from metarim.tasks.seeding import MAX_FILTER_TRIES, draw_episode, env_seeds
from metarim.tasks.task import MissionFilter, Task
from metarim.tasks.vocab import Vocab

__all__ = [
    "MAX_FILTER_TRIES",
    "SAMPLERS",
    "LevelSampler",
    "MissionFilter",
    "MissionSampler",
    "SeedRangeSampler",
    "Task",
    "TaskSampler",
    "Vocab",
    "draw_episode",
    "env_seeds",
    "make_sampler",
    "register_sampler",
]
