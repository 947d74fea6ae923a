"""Small pieces the learners share: the episode window behind the ``rollout/*`` metrics,
parameter copies, and the task samplers a config describes."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metarim.config import TrainConfig
from metarim.tasks.samplers import TaskSampler, make_sampler

__all__ = ["EpisodeWindow", "copy_into", "make_task_samplers", "parameter_values"]


class EpisodeWindow:
    """The last ``size`` finished episodes and the ``rollout/*`` metrics every learner reports.

    Example:
        >>> w = EpisodeWindow(size=2)
        >>> w.extend([{"return": 0.0, "success": 0.0, "length": 9.0},
        ...           {"return": 0.5, "success": 1.0, "length": 5.0},
        ...           {"return": 0.9, "success": 1.0, "length": 1.0}])
        >>> w.metrics()
        {'rollout/return_mean': 0.7, 'rollout/success_rate': 1.0, 'rollout/length_mean': 3.0, 'rollout/episodes': 3.0}
        >>> w.metrics()["rollout/episodes"]
        0.0
    """

    def __init__(self, size: int = 100) -> None:
        self.episodes: deque[dict[str, float]] = deque(maxlen=size)
        self.new = 0

    def extend(self, episodes: list[dict[str, float]]) -> None:
        """Adds finished episodes."""
        self.episodes.extend(episodes)
        self.new += len(episodes)

    def metrics(self) -> dict[str, float]:
        """``rollout/return_mean``, ``rollout/success_rate``, ``rollout/length_mean`` over
        the window (NaN while it is empty) and ``rollout/episodes``, the episodes
        finished since the last call."""
        ep = list(self.episodes)
        mean = lambda key: float(np.mean([e[key] for e in ep])) if ep else float("nan")  # noqa: E731
        new, self.new = self.new, 0
        return {"rollout/return_mean": mean("return"), "rollout/success_rate": mean("success"),
                "rollout/length_mean": mean("length"), "rollout/episodes": float(new)}

    def state_dict(self) -> list[dict[str, Any]]:
        """Plain data: the episodes of the window."""
        return [dict(e) for e in self.episodes]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.episodes.clear()
        self.episodes.extend(state)


def parameter_values(module: nn.Module) -> dict[str, Tensor]:
    """Detached copies of ``module``'s parameters, by name."""
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@torch.no_grad()
def copy_into(module: nn.Module, values: Mapping[str, Tensor]) -> None:
    """Writes ``values`` into ``module``'s parameters in place (names must exist).

    Raises:
        ValueError: a name of ``values`` is not a parameter of ``module``.
    """
    params = dict(module.named_parameters())
    for name, value in values.items():
        if name not in params:
            raise ValueError(f"unknown parameter {name!r}")
        params[name].copy_(value)


def make_task_samplers(config: TrainConfig) -> tuple[TaskSampler, TaskSampler]:
    """``(train, held_out)`` samplers over ``config.env`` from ``config.task_sampler``.

    ``seeds``: ``num_tasks`` disjoint seed ranges; ``missions``: one task per (colour,
    object) family. ``held_out`` of the tasks are kept for fast-adaptation evaluation.

    Example:
        >>> cfg = TrainConfig(env="BabyAI-GoToLocalS6N2-v0", num_tasks=10, held_out=0.2)
        >>> train, held = make_task_samplers(cfg)
        >>> len(train.tasks), len(held.tasks)
        (8, 2)
    """
    if config.task_sampler == "seeds":
        sampler = make_sampler("seeds", level=config.env, num_tasks=config.num_tasks, seed=config.seed)
    else:
        sampler = make_sampler("missions", level=config.env, seed=config.seed)
    return sampler.split(config.held_out)
