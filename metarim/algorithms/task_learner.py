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


class TaskLearner(Learner):
    """A learner over a task split: seeded torch, :attr:`train_tasks` and
    :attr:`held_out_tasks` (:func:`~metarim.algorithms.common.make_task_samplers`), the
    policy, one collector per task (:attr:`collectors`) and the episode window
    (:attr:`recent`). The training sampler's RNG and the window are checkpointed (under
    ``"sampler"`` and ``"recent"``); the envs restart on load.

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
        self.stateful = {"sampler": self.train_tasks, "recent": self.recent}

    def env_collectors(self) -> list[RolloutCollector]:
        """The collectors of the tasks met so far (a schedule switches them)."""
        return list(self.collectors.collectors.values())

    def set_phase(self, phase: int) -> None:
        """:meth:`Learner.set_phase`, and the envs of tasks met later start in ``phase``."""
        self.collectors.phase = phase
        super().set_phase(phase)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:meth:`Learner.load_state_dict`; the envs, rebuilt on use, start in the saved phase."""
        super().load_state_dict(state)
        self.collectors.phase = self.phase

    def close(self) -> None:
        """Closes the envs."""
        self.collectors.close()
