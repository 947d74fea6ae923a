r"""MAML for recurrent policies (LSTM or RIM memory), with learn2learn's ``MAML``.

For a meta-batch of tasks :math:`\tau_1..\tau_m` drawn from the training task sampler
(disjoint seed ranges or mission families of ``config.env``), with all parameters
:math:`\theta` adapted:

.. math::
    \theta'_{j,0} = \theta, \qquad
    \theta'_{j,s+1} = \theta'_{j,s} - \alpha \nabla L_{\tau_j}(\theta'_{j,s}; D_{j,s}),
    \quad s < S,

    \theta \gets \mathrm{Adam}\Big(\nabla_\theta \frac{1}{m} \sum_j
    L_{\tau_j}(\theta'_{j,S}; D'_j)\Big),

where :math:`D_{j,s}` is a fresh rollout of ``num_steps × num_envs`` frames of task
:math:`\tau_j` collected by :math:`\theta'_{j,s}`, :math:`D'_j` one collected by the
adapted :math:`\theta'_{j,S}`, and :math:`L` the A2C loss
(:func:`~metarim.algorithms.meta_common.rollout_a2c_loss`). The meta-gradient goes
through the :math:`S` = ``inner_steps`` inner steps (second order) unless
``first_order=True``. As in most MAML-RL code, the dependence of the sampling
distribution on :math:`\theta` (the DiCE term) is left out.

References:
    Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
    Networks". ICML 2017. arXiv:1703.03400.
    Arnold et al. "learn2learn: A Library for Meta-Learning Research". arXiv:2008.12284.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from metarim.algorithms.base import Learner, adam, build_policy, register_learner
from metarim.algorithms.meta_common import (
    EpisodeWindow,
    make_task_samplers,
    quiet_nonleaf_grad,
    rollout_a2c_loss,
)
from metarim.config import TrainConfig
from metarim.envs.minigrid import make_env, make_vec_env
from metarim.rl.rollout import RolloutCollector
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["MAML", "TaskCollectors", "num_actions", "setup_task_learner"]


def num_actions(task: Task, vocab: Vocab) -> int:
    """Size of ``task``'s discrete action space (builds and closes one env)."""
    env = make_env(task, vocab, 0)
    n = int(env.action_space.n)
    env.close()
    return n


def setup_task_learner(learner: Learner, config: TrainConfig) -> None:
    """The state every task-based meta-learner (MAML, Reptile) starts from: seeded torch,
    train/held-out task samplers, the policy and one rollout collector per task."""
    torch.manual_seed(config.seed)
    learner.train_tasks, learner.held_out_tasks = make_task_samplers(config)
    n = num_actions(learner.train_tasks.tasks[0], learner.vocab)
    learner.policy = build_policy(config, n, learner.vocab)
    learner.tasks = TaskCollectors(config, learner)


class TaskCollectors:
    """One :class:`RolloutCollector` (and vector env) per task, built on first use.

    Envs keep running between uses, like PPO's, so each task's episodes continue where
    they stopped; the policy of a collection is passed at :meth:`collect` time.
    """

    def __init__(self, config: TrainConfig, learner: Learner) -> None:
        self.config, self.learner = config, learner
        self.collectors: dict[Task, RolloutCollector] = {}

    def get(self, task: Task) -> RolloutCollector:
        """The collector of ``task``."""
        if task not in self.collectors:
            c = self.config
            seed = c.seed + 7919 * (len(self.collectors) + 1)
            envs = make_vec_env(task, c.num_envs, seed=seed, vocab=self.learner.vocab,
                                backend=c.env_backend)
            self.collectors[task] = RolloutCollector(envs, self.learner.policy, c.num_steps)
        return self.collectors[task]

    def collect(self, task: Task, policy: torch.nn.Module) -> Any:
        """A rollout of ``task`` by ``policy``."""
        col = self.get(task)
        col.policy = policy
        return col.collect()

    def close(self) -> None:
        """Closes every env."""
        for col in self.collectors.values():
            col.envs.close()


@register_learner("maml")
class MAML(Learner):
    """MAML learner (see the module docstring for the update).

    Args:
        config: uses ``memory``, ``inner_lr``, ``inner_steps``, ``meta_batch``,
            ``first_order``, ``num_envs``, ``num_steps``, ``task_sampler``, ``lr``.
    """

    def __init__(self, config: TrainConfig) -> None:
        import learn2learn as l2l

        super().__init__(config)
        setup_task_learner(self, config)
        self.maml = l2l.algorithms.MAML(self.policy, lr=config.inner_lr,
                                        first_order=config.first_order, allow_unused=True)
        self.optimizer = adam(self.policy.parameters(), config.lr)
        self.recent = EpisodeWindow()

    def step(self, tasks: list[Task] | None = None) -> dict[str, float]:
        """One meta-update over ``tasks`` (default: ``meta_batch`` sampled training tasks)."""
        with quiet_nonleaf_grad():
            return self._step(tasks)

    def _step(self, tasks: list[Task] | None) -> dict[str, float]:
        c = self.config
        t0 = time.perf_counter()
        tasks = tasks if tasks is not None else self.train_tasks.sample(c.meta_batch)
        self.optimizer.zero_grad(set_to_none=True)
        frames, inner, outer = 0, [], []
        for task in tasks:
            learner = self.maml.clone()
            for _ in range(c.inner_steps):
                rollout = self.tasks.collect(task, learner)
                loss, _, _ = rollout_a2c_loss(learner, rollout, c)
                learner.adapt(loss)
                frames += rollout.num_frames
                inner.append(loss.item())
            rollout = self.tasks.collect(task, learner)
            frames += rollout.num_frames
            self.recent.extend(rollout.episodes)
            loss, _, _ = rollout_a2c_loss(learner, rollout, c)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at update {self.updates}")
            (loss / len(tasks)).backward()
            outer.append(loss.item())
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
        if not torch.isfinite(norm):
            raise FloatingPointError(f"non-finite gradient norm at update {self.updates}")
        self.optimizer.step()
        self.frames += frames
        self.updates += 1
        return {
            "frames": float(self.frames),
            **self.recent.metrics(),
            "losses/inner": sum(inner) / max(len(inner), 1),
            "losses/outer": sum(outer) / len(outer),
            "losses/grad_norm": float(norm),
            "time/fps": frames / (time.perf_counter() - t0),
        }

    def state_dict(self) -> dict[str, Any]:
        """Policy, optimiser, task-sampler RNG and episode window (envs restart on load)."""
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler": self.train_tasks.state_dict(), "recent": self.recent.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_tasks.load_state_dict(state["sampler"])
        self.recent.load_state_dict(state["recent"])

    def close(self) -> None:
        """Closes the envs."""
        self.tasks.close()
