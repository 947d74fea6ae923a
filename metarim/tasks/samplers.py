"""Task samplers, looked up by name.

A sampler owns a finite list of :class:`~metarim.tasks.task.Task` and a seeded NumPy
generator; :meth:`TaskSampler.sample` draws tasks from the list (with weights), and
:meth:`TaskSampler.split` returns a train and a held-out sampler whose tasks do not
overlap (checked with :meth:`Task.overlaps`, so the split is disjoint by construction
*and* by test).

Three samplers are registered:

* ``"levels"`` — one task per level id, drawn with weights;
* ``"seeds"`` — one level cut into ``num_tasks`` disjoint seed ranges;
* ``"missions"`` — one level, one task per (colour, object) mission family.

Example:
    >>> s = make_sampler("seeds", level="BabyAI-GoToLocal-v0", num_tasks=4, seed=0)
    >>> train, held = s.split(0.25)
    >>> len(train.tasks), len(held.tasks)
    (3, 1)
    >>> any(a.overlaps(b) for a in train.tasks for b in held.tasks)
    False
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from metarim.tasks.task import MAX_SEED, MissionFilter, Task

__all__ = [
    "SAMPLERS",
    "LevelSampler",
    "MissionSampler",
    "SeedRangeSampler",
    "TaskSampler",
    "make_sampler",
    "register_sampler",
]

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("ball", "box", "key")

SAMPLERS: dict[str, type[TaskSampler]] = {}


def register_sampler(name: str) -> Callable[[type[TaskSampler]], type[TaskSampler]]:
    """Class decorator that registers a sampler under ``name``."""

    def deco(cls: type[TaskSampler]) -> type[TaskSampler]:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is already registered")
        SAMPLERS[name] = cls
        return cls

    return deco


def make_sampler(name: str, **kwargs: Any) -> TaskSampler:
    """Builds the sampler registered as ``name`` with keyword arguments ``kwargs``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](**kwargs)


class TaskSampler:
    """Draws tasks from a fixed list with probabilities ``weights``.

    Args:
        tasks: the task list (non-empty).
        weights: non-negative weights, normalised; uniform if ``None``.
        seed: seed of the generator used by :meth:`sample`.
    """

    def __init__(
        self, tasks: Sequence[Task], weights: Sequence[float] | None = None, *, seed: int = 0
    ) -> None:
        if not tasks:
            raise ValueError("a sampler needs at least one task")
        w = np.ones(len(tasks)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(tasks),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(tasks)} non-negative numbers, got {weights}")
        self.tasks = list(tasks)
        self.weights = w / w.sum()
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int = 1) -> list[Task]:
        """Draws ``n`` tasks with replacement, deterministically for a given seed."""
        idx = self.rng.choice(len(self.tasks), size=n, p=self.weights)
        return [self.tasks[i] for i in idx]

    def split(self, held_out: float = 0.2) -> tuple[TaskSampler, TaskSampler]:
        """Splits the task list into a train and a held-out sampler.

        Args:
            held_out: fraction of tasks (at least one, at most all but one) held out.
        """
        n = len(self.tasks)
        if n < 2:
            raise ValueError("cannot split a sampler with fewer than two tasks")
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"held_out={held_out} must be in (0, 1)")
        n_held = min(n - 1, max(1, round(held_out * n)))
        order = np.random.default_rng(self.seed).permutation(n)
        held, train = sorted(order[:n_held]), sorted(order[n_held:])
        make = lambda ix: TaskSampler([self.tasks[i] for i in ix], self.weights[ix], seed=self.seed)  # noqa: E731
        a, b = make(train), make(held)
        if any(x.overlaps(y) for x in a.tasks for y in b.tasks):  # pragma: no cover - guard
            raise RuntimeError("split produced overlapping tasks")
        return a, b

    def state_dict(self) -> dict[str, Any]:
        """Generator state (JSON- and ``weights_only``-safe)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]


@register_sampler("levels")
class LevelSampler(TaskSampler):
    """One task per level id (full seed range), drawn with ``weights``.

    Args:
        levels: level ids, without duplicates.
        weights: sampling weights per level.
        seed: generator seed.
    """

    def __init__(
        self, levels: Sequence[str], weights: Sequence[float] | None = None, *, seed: int = 0
    ) -> None:
        if isinstance(levels, str):
            levels = [levels]
        if len(set(levels)) != len(levels):
            raise ValueError(f"levels contain duplicates: {list(levels)}")
        super().__init__([Task(lv) for lv in levels], weights, seed=seed)


@register_sampler("seeds")
class SeedRangeSampler(TaskSampler):
    r"""One level cut into ``num_tasks`` disjoint seed ranges.

    Task :math:`i` owns seeds :math:`[s_0 + i w, s_0 + (i+1) w)` with
    :math:`w = \lfloor (s_1 - s_0) / n \rfloor`.

    Args:
        level: the level id.
        num_tasks: number of tasks (ranges).
        seed_start: first seed of the whole range.
        seed_stop: end of the whole range (exclusive).
        seed: generator seed.
    """

    def __init__(
        self,
        level: str,
        num_tasks: int = 10,
        *,
        seed_start: int = 0,
        seed_stop: int = MAX_SEED,
        seed: int = 0,
    ) -> None:
        if num_tasks < 1 or seed_stop - seed_start < num_tasks:
            raise ValueError(f"cannot cut [{seed_start}, {seed_stop}) into {num_tasks} ranges")
        w = (seed_stop - seed_start) // num_tasks
        tasks = [
            Task(level, seed_start=seed_start + i * w, seed_stop=seed_start + (i + 1) * w)
            for i in range(num_tasks)
        ]
        super().__init__(tasks, seed=seed)


@register_sampler("missions")
class MissionSampler(TaskSampler):
    """One level, one task per (colour, object) mission family.

    Args:
        level: a BabyAI level whose missions name one colour and one object.
        colors: colours to use.
        objects: object types to use.
        seed: generator seed.
    """

    def __init__(
        self,
        level: str,
        colors: Sequence[str] = COLORS,
        objects: Sequence[str] = OBJECTS,
        *,
        seed: int = 0,
    ) -> None:
        bad = sorted(set(colors) - set(COLORS)) + sorted(set(objects) - set(OBJECTS + ("door",)))
        if bad:
            raise ValueError(f"unknown colours/objects {bad}; use {COLORS} and {OBJECTS}")
        tasks = [
            Task(level, mission_filter=MissionFilter(colors=(c,), objects=(o,)))
            for c, o in itertools.product(colors, objects)
        ]
        super().__init__(tasks, seed=seed)
