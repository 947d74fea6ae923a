"""The base of the task-based meta-learners (MAML, Reptile): a train/held-out task split
and one rollout collector per task.

Each meta-batch draws tasks from :attr:`TaskLearner.train_tasks`; a task's envs are
built on its first use and keep running afterwards, like PPO's, so its episodes continue
where they stopped. The acting policy (a clone for MAML, the adapted policy for Reptile)
is passed at collection time, which is why these learners support neither the env worker
nor ``compile``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metarim.algorithms.base import Learner, build_policy
from metarim.algorithms.common import EpisodeWindow, make_collector, make_envs, make_task_samplers
from metarim.config import TrainConfig
from metarim.envs import make_env
from metarim.rl.rollout import RolloutCollector
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["TaskCollectors", "TaskLearner", "num_actions"]


def num_actions(task: Task, vocab: Vocab) -> int:
    """Size of ``task``'s discrete action space (builds and closes one env)."""
    env = make_env(task, vocab, 0)
    n = int(env.action_space.n)
    env.close()
    return n


class TaskCollectors:
    """One :class:`RolloutCollector` (and vector env) per task, built on first use.

    Envs keep running between uses, like PPO's, so each task's episodes continue where
    they stopped; the policy of a collection is passed at :meth:`collect` time.

    Args:
        config: gives ``num_envs``, ``num_steps``, ``env_backend`` and the base ``seed``
            (the ``i``-th task built gets ``seed + 7919 * i``).
        policy: the policy the collectors are built with (replaced at each collection).
        vocab: the run's vocabulary, shared with the envs.
    """

    def __init__(self, config: TrainConfig, policy: nn.Module, vocab: Vocab) -> None:
        self.config, self.policy, self.vocab = config, policy, vocab
        self.collectors: dict[Task, RolloutCollector] = {}
        self.phase = 0
        """The schedule phase new envs start in (``config.schedule``; ``Learner.set_phase``)."""

    def get(self, task: Task) -> RolloutCollector:
        """The collector of ``task``."""
        if task not in self.collectors:
            c = self.config
            seed = c.seed + 7919 * (len(self.collectors) + 1)
            envs = make_envs(c, task, c.num_envs, seed=seed, vocab=self.vocab, phase=self.phase)
            self.collectors[task] = make_collector(envs, self.policy, c.num_steps)
        return self.collectors[task]

    def collect(self, task: Task, policy: nn.Module) -> Any:
        """A rollout of ``task`` by ``policy``."""
        col = self.get(task)
        col.policy = policy
        return col.collect()

    def close(self) -> None:
        """Closes every env."""
        for col in self.collectors.values():
            col.envs.close()

    def state_dict(self) -> list[dict[str, Any]]:
        """Each task met so far, in the order its envs were built (which fixes their
        seeds), with its collector's state (envs, observations, memory, counters)."""
        return [{"task": task.to_dict(), "collector": col.state_dict()} for task, col in self.collectors.items()]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Inverse of :meth:`state_dict`: rebuilds the saved tasks' collectors in their
        order and restores each one, so their episodes continue where they stopped."""
        self.close()
        self.collectors = {}
        for entry in state:
            self.get(Task.from_dict(entry["task"])).load_state_dict(entry["collector"])


class TaskLearner(Learner):
    """A learner over a task split: seeded torch, :attr:`train_tasks` and
    :attr:`held_out_tasks` (:func:`~metarim.algorithms.common.make_task_samplers`), the
    policy, one collector per task (:attr:`collectors`) and the episode window
    (:attr:`recent`). The training sampler's RNG, the window and every task's collector
    (envs included) are checkpointed (under ``"sampler"``, ``"recent"`` and
    ``"collectors"``), so a resumed run equals an uninterrupted one. Checkpoints written
    before ``"collectors"`` existed resume with fresh envs, as they were written.

    Args:
        config: the run configuration.
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        torch.manual_seed(self.config.seed)
        self.train_tasks, self.held_out_tasks = make_task_samplers(self.config)
        n = num_actions(self.train_tasks.tasks[0], self.vocab)
        self.policy = build_policy(self.config, n, self.vocab)
        self.collectors = TaskCollectors(self.config, self.policy, self.vocab)
        self.recent = EpisodeWindow(trials=self.config.hidden_task)
        self.stateful = {"sampler": self.train_tasks, "recent": self.recent, "collectors": self.collectors}

    def env_collectors(self) -> list[RolloutCollector]:
        """The collectors of the tasks met so far (a schedule switches them)."""
        return list(self.collectors.collectors.values())

    def set_phase(self, phase: int) -> None:
        """:meth:`Learner.set_phase`, and the envs of tasks met later start in ``phase``."""
        self.collectors.phase = phase
        super().set_phase(phase)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:meth:`Learner.load_state_dict`; the envs are rebuilt in the saved phase and
        restored (an older checkpoint without ``"collectors"``: rebuilt on use, fresh)."""
        if "collectors" not in state:
            state = {**state, "collectors": []}
        self.collectors.phase = int(state.get("schedule_phase", 0))
        super().load_state_dict(state)
        self.collectors.phase = self.phase

    def close(self) -> None:
        """Closes the envs."""
        self.collectors.close()
