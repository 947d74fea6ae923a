"""Small pieces the learners share: the episode window behind the ``rollout/*`` metrics,
parameter copies, the task samplers a config describes, and a learner's envs and
collector (:func:`make_envs`, :func:`make_collector`: plain ones, or hidden-task trials
with ``config.hidden_task``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metarim.config import TrainConfig
from metarim.envs import make_vec_env
from metarim.envs.hidden import HiddenTaskVecEnv, make_hidden_vec_env
from metarim.rl.rollout import Rollout, RolloutCollector
from metarim.tasks.samplers import TaskSampler, make_sampler
from metarim.tasks.schedule import Schedule
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["EpisodeWindow", "TrialCollector", "copy_into", "make_collector", "make_envs", "make_task_samplers",
           "parameter_values"]


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

    def __init__(self, size: int = 100, *, trials: bool = False) -> None:
        self.episodes: deque[dict[str, float]] = deque(maxlen=size)
        self.new = 0
        self.trials = trials
        """Hidden-task trials: the episodes carry their ``index`` in a trial, and
        :meth:`metrics` adds ``rollout/success_first`` (first episodes of trials) and
        ``rollout/success_later`` (the others)."""

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
        out = {"rollout/return_mean": mean("return"), "rollout/success_rate": mean("success"),
               "rollout/length_mean": mean("length"), "rollout/episodes": float(new)}
        if self.trials:
            for key, keep in (("first", lambda i: i == 0), ("later", lambda i: i > 0)):
                s = [e["success"] for e in ep if keep(e["index"])]
                out[f"rollout/success_{key}"] = float(np.mean(s)) if s else float("nan")
        return out

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


def make_envs(config: TrainConfig, task: Task | list[Task], num_envs: int, *, seed: int, vocab: Vocab,
              worker: bool = False, phase: int = 0) -> Any:
    """A learner's vector env of ``task``: :func:`~metarim.envs.make_vec_env` on
    ``config.env_backend``, or with ``config.hidden_task`` the hidden-task trials
    (:class:`~metarim.envs.hidden.HiddenTaskVecEnv`, ``config.trial_episodes`` per trial).
    With ``config.schedule`` the envs follow the schedule, starting in ``phase``
    (:class:`~metarim.envs.protocols.ScheduledVecEnv`).

    The trials draw their tasks from the tasks given when each names a target (a meta-learner's
    training tasks), else from the training split of ``config``'s ``missions`` sampler
    (PPO's ``Task(config.env)``).
    """
    if not config.hidden_task:
        kw = {} if config.schedule is None else {"schedule": Schedule.from_dict(config.schedule), "phase": phase}
        return make_vec_env(task, num_envs, seed=seed, vocab=vocab, backend=config.env_backend, worker=worker, **kw)
    given = [task] if isinstance(task, Task) else list(task)
    if all(t.mission_filter is not None for t in given):
        pool = list(dict.fromkeys(given))
    else:
        pool = make_task_samplers(config)[0].tasks
    return make_hidden_vec_env(pool, num_envs, seed=seed, vocab=vocab, trial_episodes=config.trial_episodes,
                               backend=config.env_backend)


class TrialCollector(RolloutCollector):
    """A :class:`~metarim.rl.rollout.RolloutCollector` over a
    :class:`~metarim.envs.hidden.HiddenTaskVecEnv` whose rollouts' episode records are the
    trials' episodes (with their ``index`` in the trial), not the trials."""

    def collect(self) -> Rollout:
        """A rollout, its ``episodes`` from :meth:`HiddenTaskVecEnv.drain`."""
        rollout = super().collect()
        rollout.episodes = self.envs.drain()
        return rollout


def make_collector(envs: Any, policy: nn.Module, num_steps: int, *, reset_memory: bool = True
                   ) -> RolloutCollector:
    """A :class:`TrialCollector` for hidden-task trials, else a plain
    :class:`~metarim.rl.rollout.RolloutCollector`."""
    cls = TrialCollector if isinstance(envs, HiddenTaskVecEnv) else RolloutCollector
    return cls(envs, policy, num_steps, reset_memory=reset_memory)
