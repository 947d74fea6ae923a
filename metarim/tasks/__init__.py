"""Tasks as data: descriptions, samplers, schedules, the vocabulary and the seeding of episodes.

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
from metarim.tasks.schedule import (
    Phase,
    Schedule,
    TaskStream,
    column_stream,
    load_schedule,
    sequential_schedule,
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
    "Phase",
    "Schedule",
    "SeedRangeSampler",
    "Task",
    "TaskSampler",
    "TaskStream",
    "Vocab",
    "column_stream",
    "draw_episode",
    "env_seeds",
    "load_schedule",
    "make_sampler",
    "register_sampler",
    "sequential_schedule",
]
