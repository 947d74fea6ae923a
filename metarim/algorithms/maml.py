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
(:func:`~metarim.algorithms.objectives.rollout_loss`). The meta-gradient goes
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

import torch

from metarim.algorithms.base import adam, register_learner
from metarim.algorithms.objectives import rollout_loss
from metarim.algorithms.task_learner import TaskLearner
from metarim.config import TrainConfig
from metarim.meta.backends import quiet_nonleaf_grad
from metarim.tasks.task import Task

__all__ = ["MAML"]


@register_learner("maml")
class MAML(TaskLearner):
    """MAML learner (see the module docstring for the update).

    Args:
        config: uses ``memory``, ``inner_lr``, ``inner_steps``, ``meta_batch``,
            ``first_order``, ``num_envs``, ``num_steps``, ``task_sampler``, ``lr``.
    """

    adaptation_rule = "sgd"

    def __init__(self, config: TrainConfig) -> None:
        import learn2learn as l2l

        super().__init__(config)
        c = self.config
        self.maml = l2l.algorithms.MAML(self.policy, lr=c.inner_lr, first_order=c.first_order, allow_unused=True)
        self.optimizer = adam(self.policy.parameters(), c.lr, c.adam_eps)
        self.stateful = {"optimizer": self.optimizer, **self.stateful}

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
                rollout = self.collectors.collect(task, learner)
                loss, _, _ = rollout_loss(learner, rollout, c)
                learner.adapt(loss)
                frames += rollout.num_frames
                inner.append(loss.item())
            rollout = self.collectors.collect(task, learner)
            frames += rollout.num_frames
            self.recent.extend(rollout.episodes)
            loss, _, _ = rollout_loss(learner, rollout, c)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at update {self.updates}")
            (loss / len(tasks)).backward()  # one backward per task: its graph is freed
            outer.append(loss.item())
        norm = self.clip_and_step(self.optimizer)
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
