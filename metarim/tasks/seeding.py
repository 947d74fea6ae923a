"""How a task's envs and episodes are seeded, written once for every env backend.

A vector env of ``B`` envs built with base seed ``s`` gives env ``b`` the seed
``env_seeds(s, B)[b]`` (from NumPy's ``SeedSequence(s).spawn(B)``). Each env owns a
generator ``default_rng(env seed)`` and starts every episode with :func:`draw_episode`:
it draws an episode seed uniformly from the task's range ``[seed_start, seed_stop)`` and,
while the task's :class:`~metarim.tasks.task.MissionFilter` rejects the mission of that
episode, draws again (at most :data:`MAX_FILTER_TRIES` times). The minigrid envs and the
tensor env both call these two functions, so they meet the same episodes in the same
order.

Example:
    >>> import numpy as np
    >>> from metarim.tasks.task import MissionFilter, Task
    >>> task = Task("BabyAI-GoToLocal-v0", seed_start=0, seed_stop=10,
    ...             mission_filter=MissionFilter(colors=("red",)))
    >>> missions = {s: ("go to the red ball" if s % 3 == 0 else "go to a blue key") for s in range(10)}
    >>> seed, mission = draw_episode(task, np.random.default_rng(0), missions.get, mission=str)
    >>> seed % 3, mission
    (0, 'go to the red ball')
    >>> env_seeds(0, 2) == env_seeds(0, 2) and len(set(env_seeds(0, 4))) == 4
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from metarim.tasks.task import Task

__all__ = ["MAX_FILTER_TRIES", "draw_episode", "draw_seed", "env_seeds"]

MAX_FILTER_TRIES = 1000
"""Episode seeds drawn for one episode before a mission filter is declared unsatisfiable."""

E = TypeVar("E")


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """The per-env seeds of a vector env with base seed ``seed``.

    Env ``b`` gets the first 32-bit word of the ``b``-th child of
    ``numpy.random.SeedSequence(seed)``.
    """
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(num_envs)]


def draw_seed(task: Task, rng: np.random.Generator) -> int:
    """One episode seed, uniform in ``[task.seed_start, task.seed_stop)``."""
    return int(rng.integers(task.seed_start, task.seed_stop))


def draw_episode(
    task: Task,
    rng: np.random.Generator,
    make: Callable[[int], E],
    *,
    mission: Callable[[E], str],
) -> tuple[int, E]:
    """Draws episode seeds until the task's mission filter accepts the episode.

    Args:
        task: the task whose seed range and mission filter apply.
        rng: the env's generator; it advances by one draw per try.
        make: builds the episode of a seed (a reset env, a layout).
        mission: the mission string of an episode ``make`` built.

    Returns:
        ``(episode seed, episode)`` of the first accepted draw (the first draw if the task
        has no filter).

    Raises:
        RuntimeError: no mission passed the filter in :data:`MAX_FILTER_TRIES` draws.
    """
    mf = task.mission_filter
    for _ in range(MAX_FILTER_TRIES):
        seed = draw_seed(task, rng)
        episode = make(seed)
        if mf is None or mf.matches(mission(episode)):
            return seed, episode
    raise RuntimeError(f"no mission of {task.level} passed {mf} in {MAX_FILTER_TRIES} tries")
